// dark_decay: subtract the decaying dark signal; and the per-pixel read-time model
// (romancal lib.basic_utils.frame_read_times, generalised to any frame as in
// cpu_fallback/dark_decay.py, whose module docstring gives the model).  GPU twin of that module.
//
// Thread mapping
//   frame_read_times, dark_decay: one thread per pixel p = blockIdx.x * blockDim.x + threadIdx.x,
//   p = y * nx + x < ny * nx.
// Layouts (pixel index fastest, STYLE.md item 3)
//   data          (K, ny, nx) float32, DN; dark_decay corrects it in place.  It holds rows
//                 [row0, row0 + ny) of a frame of frame_ny rows (a row block; row0 = 0 and
//                 frame_ny = ny for a whole frame): pixel (y, x) of data is frame pixel
//                 (row0 + y, x), and its read time is that of the whole frame's model.
//   read_offsets  (K + 1) int32: the reads of resultant k are reads[read_offsets[k] ..
//                 read_offsets[k + 1]), read_offsets[0] = 0 (CSR form of read_pattern).
//   reads         (read_offsets[K]) int32, 1-based read numbers in read_pattern order.
//   times         (ny, nx) float64, s (frame_read_times output).
// Launch contract
//   nx a positive multiple of 32 (32 channels), ny > 0, 0 <= row0 and row0 + ny <= frame_ny
//   (the host checks, as the NumPy backend raises for the frame shape); sca = WFI detector
//   number (1-18); every resultant has >= 1 read.  Row blocks of one frame give the very
//   values of a whole-frame launch (each pixel's arithmetic depends on its frame position
//   only).
//   frame_time, amplitude (DN) and time_constant (s) are float64 arguments.
//
// Per pixel, with t0 the read-time map and Δ = frame_time:
//   D_k -= mean_{r in P_k} A exp(-(t0 + (r - 1.5) Δ) / T)
// all in float64, then rounded to float32 once, as NumPy does.  The read-time map is
// computed per pixel with the NumPy code's operation order (including its repeated
// guide-window additions); the multiply-adds that the compiler could fuse use *_rn
// intrinsics, so the map is bit-for-bit NumPy's and only exp() may differ (<= 1 ulp in
// float64).  No __shared__, barriers, warp intrinsics or system includes (STYLE.md 4-5).

#include "common.cuh"

// The provisional timing model's structural constants (cpu_fallback/dark_decay.py).
#define DDK_NCHANNEL 32
#define DDK_PAD_CLOCKS 14
#define DDK_PIXEL_TIME 4.915263e-06  // s per clock
#define DDK_STRIDE_GW 256            // science rows between guide-window excursions
#define DDK_GW_PSEUDOTIME_FACTOR 1.5
#define DDK_FRAME_OFFSET 1.5  // the amplitude refers to the middle of the first read

// Clock count of (row, col) of one channel, before any flip; the guide-window excursions
// are added one at a time, as romancal does.
__device__ __forceinline__ double ddk_clock(int row, int col, int ncol, int n_gw, double per_gw) {
    double c = (double)(col + row * (ncol + DDK_PAD_CLOCKS));
    const int nadd = min(row / DDK_STRIDE_GW, n_gw - 1);
    for (int i = 0; i < nadd; ++i) c = __dadd_rn(c, per_gw);
    return c;
}

// Read time (s) of pixel (y, x) of an ny x nx frame of detector `sca`, frame 0.
__device__ double ddk_read_time(int y, int x, int ny, int nx, double frame_time, int sca) {
    const int ncol = nx / DDK_NCHANNEL;
    const int n_gw = max(ny / DDK_STRIDE_GW, 1);
    const double c0 = (double)(ncol - 1 + (ny - 1) * (ncol + DDK_PAD_CLOCKS));  // largest science clock
    const double gw_clocks = frame_time / DDK_PIXEL_TIME - c0;
    const double per_gw = gw_clocks / (double)n_gw * DDK_GW_PSEUDOTIME_FACTOR;
    // np.amax(clock): the last pixel of the frame, unless negative excursions (frame_time
    // shorter than the science clocks) make the last pixel of an earlier block later
    double cmax = ddk_clock(ny - 1, ncol - 1, ncol, n_gw, per_gw);
    if (per_gw < 0.0)
        for (int b = 0; b + 1 < n_gw; ++b)
            cmax = fmax(cmax, ddk_clock((b + 1) * DDK_STRIDE_GW - 1, ncol - 1, ncol, n_gw, per_gw));

    // SCAs with sca % 3 == 0 flip the columns, the others the rows; even channels read
    // left to right, odd ones right to left (a two-channel block tiled across the frame).
    const bool flip_columns = sca % 3 == 0;
    const int row = flip_columns ? y : ny - 1 - y;
    const int xx = flip_columns ? nx - 1 - x : x;
    const int q = xx % (2 * ncol);
    const int col = q < ncol ? q : 2 * ncol - 1 - q;
    return frame_time * ddk_clock(row, col, ncol, n_gw, per_gw) / (cmax + per_gw);
}

extern "C" __global__ void frame_read_times(double* __restrict__ times, int ny, int nx, double frame_time, int sca,
                                            double frame_number) {
    const long long p = gc_thread_index();
    if (p >= (long long)ny * nx) return;
    const int y = (int)(p / nx);
    const int x = (int)(p - (long long)y * nx);
    times[p] = __dadd_rn(ddk_read_time(y, x, ny, nx, frame_time, sca), __dmul_rn(frame_number, frame_time));
}

extern "C" __global__ void dark_decay(float* __restrict__ data, const int* __restrict__ read_offsets,
                                      const int* __restrict__ reads, int nres, int ny, int nx, double frame_time,
                                      double amplitude, double time_constant, int sca, int row0, int frame_ny) {
    const long long npix = (long long)ny * nx;
    const long long p = gc_thread_index();
    if (p >= npix) return;
    const int y = (int)(p / nx);
    const int x = (int)(p - (long long)y * nx);
    const double t0 = ddk_read_time(row0 + y, x, frame_ny, nx, frame_time, sca);
    for (int k = 0; k < nres; ++k) {
        const int first = read_offsets[k], last = read_offsets[k + 1];
        if (last <= first) continue;
        // summed in read order, then divided: romancal's np.mean over the reads' axis
        double total = 0.0;
        for (int j = first; j < last; ++j) {
            const double t = __dadd_rn(t0, __dmul_rn((double)reads[j] - DDK_FRAME_OFFSET, frame_time));
            total = __dadd_rn(total, __dmul_rn(amplitude, exp(-t / time_constant)));
        }
        const double mean = total / (double)(last - first);
        const long long i = gc_at(k, npix, p);
        data[i] = (float)((double)data[i] - mean);
    }
}
