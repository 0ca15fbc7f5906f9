// saturation.cu: saturation, A/D-floor and dilution flags (algorithms.md section 2).
//
// Thread mapping: one thread per pixel p = y * nx + x, 1-D launch (any block size; 256 is
// what the launchers use, grid ceil(npix / 256)); threads with p >= npix return at once.
// Every thread walks its own ramp over the K resultants; no shared memory, no barriers.
//
// Layouts (pixel-fastest, common.cuh): data (K, npix) float32 DN; groupdq (K, npix) uint8;
// pixeldq, threshold (float32 DN, NaN = no check) and threshold_dq (uint32) (npix);
// per-resultant tables of length K: dilution_factor (float64, mean(P_k) / last(P_k)) and
// n_reads (int32, N_k).  mean_read0 = mean(P_0) and last_read2 = last(P_2) (float64; any
// value when K <= 2) come as scalars.
//
// Launch contract, mirroring cpu_fallback/saturation.py bit for bit:
// * n_pix_grow_sat == 0: one launch of saturation_pixel does everything (forward pass,
//   backward dilution, second-resultant rule, pixeldq |= threshold DQ, `backup` sweeps).
// * n_pix_grow_sat == n > 0 (neighbours are involved, so the work is split at the points
//   where a pixel needs its neighbours' flags; g, g2 are two (K, npix) uint8 buffers):
//     saturation_forward(data, g, ...)              forward pass and pixeldq, in place
//     saturation_grow(g -> g2, n)                   SATURATED grown by the (2n+1)^2 box
//     saturation_dilute_grown(data, g2 -> g, n)     dilution DO_NOT_USE, grown the same way
//     saturation_finish(data, g, ...)               second-resultant rule and `backup`
//   The grown kernels read their input buffer only and write only their own pixel of
//   the output buffer, so they stay pure per-thread.
//
// Precision follows the NumPy twin: threshold comparisons in float32, the dilution
// threshold S * f_k and the second-resultant extrapolation in float64, the second
// resultant's jump test in float32.

#include "common.cuh"

// Threshold actually used for a pixel (65536 DN, the A/D limit + 1, where the reference
// is NaN or flagged NO_SAT_CHECK); sets *no_check and ORs NO_SAT_CHECK into *ref_dq for NaN.
__device__ __forceinline__ float sat_threshold(float s, unsigned int* ref_dq, bool* no_check)
{
    const bool nan = isnan(s);
    if (nan) {
        *ref_dq |= PIX_NO_SAT_CHECK;
    }
    *no_check = nan || (*ref_dq & PIX_NO_SAT_CHECK) == PIX_NO_SAT_CHECK;
    return *no_check ? 65536.0f : s;
}

// Forward-pass flags of one resultant; *ever is the sticky "has reached the threshold".
__device__ __forceinline__ unsigned char sat_forward(unsigned char g, float d, float thr, bool* ever)
{
    *ever = *ever || d >= thr;
    if (*ever) {
        g |= GRP_SATURATED;
    }
    if (d <= 0.0f) {
        g |= GRP_AD_FLOOR | GRP_DO_NOT_USE;
    }
    return g;
}

// Whether resultant k (flags g, value d) is a diluted saturation: the next resultant is
// SATURATED, this one is not yet flagged and reached S * f_k (f_k = 1 on no-check pixels).
__device__ __forceinline__ bool sat_diluted(unsigned char g, unsigned char g_next, float d, float thr,
                                            bool no_check, double factor)
{
    if (factor == 1.0) {
        return false;  // single-read resultant: romancal skips it
    }
    const double scaled = (double)thr * (no_check ? 1.0 : factor);
    return (double)d >= scaled && (g & (GRP_SATURATED | GRP_DO_NOT_USE)) == 0 && (g_next & GRP_SATURATED) != 0;
}

// Saturation hidden inside the second resultant (K > 2): flags of resultant 1 given
// those of resultant 2.
__device__ __forceinline__ unsigned char sat_second_resultant(unsigned char g1, unsigned char g2, float d0, float d1,
                                                              float thr, double mean_read0, double last_read2,
                                                              int n_reads1)
{
    const bool below = ((double)d0 / mean_read0) * last_read2 < (double)thr;
    const bool jumped = (d1 - d0) > (thr - d0) / (float)n_reads1;
    if (below && jumped && (g2 & GRP_SATURATED) != 0 && (g1 & GRP_SATURATED) == 0) {
        g1 |= GRP_DO_NOT_USE;
    }
    return g1;
}

// romancal's `backup`: copy SATURATED back onto multi-read resultants, ascending sweeps.
__device__ __forceinline__ void sat_backup(unsigned char* groupdq, const int* n_reads, int nres, long long npix,
                                           long long p, int backup)
{
    for (int b = 0; b < backup; ++b) {
        for (int k = 0; k + 1 < nres; ++k) {
            if (n_reads[k] > 1) {
                groupdq[gc_at(k, npix, p)] |= groupdq[gc_at(k + 1, npix, p)] & GRP_SATURATED;
            }
        }
    }
}

// The whole step for n_pix_grow_sat == 0, in one pass over the ramp: resultant k-1 is
// diluted (and, for k-1 == 1, checked by the second-resultant rule) as soon as the
// forward flags of resultant k are known, then written once.
extern "C" __global__ void saturation_pixel(const float* __restrict__ data, unsigned char* __restrict__ groupdq,
                                            unsigned int* __restrict__ pixeldq, const float* __restrict__ threshold,
                                            const unsigned int* __restrict__ threshold_dq,
                                            const double* __restrict__ dilution_factor,
                                            const int* __restrict__ n_reads, double mean_read0, double last_read2,
                                            int nres, int npix, int backup)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    unsigned int ref_dq = threshold_dq[p];
    bool no_check;
    const float thr = sat_threshold(threshold[p], &ref_dq, &no_check);

    bool ever = false;
    float d0 = 0.0f, d_prev = 0.0f;
    unsigned char g_prev = 0;
    for (int k = 0; k < nres; ++k) {
        const float d = data[gc_at(k, npix, p)];
        const unsigned char g = sat_forward(groupdq[gc_at(k, npix, p)], d, thr, &ever);
        if (k > 0) {
            if (sat_diluted(g_prev, g, d_prev, thr, no_check, dilution_factor[k - 1])) {
                g_prev |= GRP_DO_NOT_USE;
            }
            if (k == 2) {
                g_prev = sat_second_resultant(g_prev, g, d0, d_prev, thr, mean_read0, last_read2, n_reads[1]);
            }
            groupdq[gc_at(k - 1, npix, p)] = g_prev;
        } else {
            d0 = d;
        }
        d_prev = d;
        g_prev = g;
    }
    if (nres > 0) {
        groupdq[gc_at(nres - 1, npix, p)] = g_prev;
    }
    pixeldq[p] |= ref_dq;
    sat_backup(groupdq, n_reads, nres, npix, p, backup);
}

// n_pix_grow_sat > 0, launch 1 of 4: forward pass in place, and pixeldq |= threshold DQ.
extern "C" __global__ void saturation_forward(const float* __restrict__ data, unsigned char* __restrict__ groupdq,
                                              unsigned int* __restrict__ pixeldq,
                                              const float* __restrict__ threshold,
                                              const unsigned int* __restrict__ threshold_dq, int nres, int npix)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    unsigned int ref_dq = threshold_dq[p];
    bool no_check;
    const float thr = sat_threshold(threshold[p], &ref_dq, &no_check);
    bool ever = false;
    for (int k = 0; k < nres; ++k) {
        const long long at = gc_at(k, npix, p);
        groupdq[at] = sat_forward(groupdq[at], data[at], thr, &ever);
    }
    pixeldq[p] |= ref_dq;
}

// n_pix_grow_sat > 0, launch 2 of 4: g_out = g_in with SATURATED added wherever a pixel of
// the (2n+1) x (2n+1) box (truncated at the frame edges) has SATURATED in the same resultant.
extern "C" __global__ void saturation_grow(const unsigned char* __restrict__ g_in, unsigned char* __restrict__ g_out,
                                           int nres, int ny, int nx, int n)
{
    const long long p = gc_thread_index();
    const long long npix = (long long)ny * nx;
    if (p >= npix) {
        return;
    }
    const int y = (int)(p / nx), x = (int)(p % nx);
    const int y0 = max(y - n, 0), y1 = min(y + n, ny - 1);
    const int x0 = max(x - n, 0), x1 = min(x + n, nx - 1);
    for (int k = 0; k < nres; ++k) {
        unsigned char g = g_in[gc_at(k, npix, p)];
        for (int yy = y0; yy <= y1 && (g & GRP_SATURATED) == 0; ++yy) {
            for (int xx = x0; xx <= x1; ++xx) {
                if ((g_in[gc_at(k, npix, (long long)yy * nx + xx)] & GRP_SATURATED) != 0) {
                    g |= GRP_SATURATED;
                    break;
                }
            }
        }
        g_out[gc_at(k, npix, p)] = g;
    }
}

// n_pix_grow_sat > 0, launch 3 of 4: g_out = g_in with DO_NOT_USE added wherever a pixel of
// the box is a diluted saturation in g_in (every resultant's test reads only g_in, exactly
// as the NumPy backward pass, which never changes what a later test reads).
extern "C" __global__ void saturation_dilute_grown(const float* __restrict__ data,
                                                   const unsigned char* __restrict__ g_in,
                                                   unsigned char* __restrict__ g_out,
                                                   const float* __restrict__ threshold,
                                                   const unsigned int* __restrict__ threshold_dq,
                                                   const double* __restrict__ dilution_factor, int nres, int ny,
                                                   int nx, int n)
{
    const long long p = gc_thread_index();
    const long long npix = (long long)ny * nx;
    if (p >= npix) {
        return;
    }
    const int y = (int)(p / nx), x = (int)(p % nx);
    const int y0 = max(y - n, 0), y1 = min(y + n, ny - 1);
    const int x0 = max(x - n, 0), x1 = min(x + n, nx - 1);
    for (int k = 0; k < nres; ++k) {
        unsigned char g = g_in[gc_at(k, npix, p)];
        const double factor = k + 1 < nres ? dilution_factor[k] : 1.0;
        for (int yy = y0; yy <= y1 && factor != 1.0 && (g & GRP_DO_NOT_USE) == 0; ++yy) {
            for (int xx = x0; xx <= x1; ++xx) {
                const long long q = (long long)yy * nx + xx;
                unsigned int ref_dq = threshold_dq[q];
                bool no_check;
                const float thr = sat_threshold(threshold[q], &ref_dq, &no_check);
                if (sat_diluted(g_in[gc_at(k, npix, q)], g_in[gc_at(k + 1, npix, q)], data[gc_at(k, npix, q)], thr,
                                no_check, factor)) {
                    g |= GRP_DO_NOT_USE;
                    break;
                }
            }
        }
        g_out[gc_at(k, npix, p)] = g;
    }
}

// n_pix_grow_sat > 0, launch 4 of 4: second-resultant rule (K > 2) and `backup`, in place.
extern "C" __global__ void saturation_finish(const float* __restrict__ data, unsigned char* __restrict__ groupdq,
                                             const float* __restrict__ threshold,
                                             const unsigned int* __restrict__ threshold_dq,
                                             const int* __restrict__ n_reads, double mean_read0, double last_read2,
                                             int nres, int npix, int backup)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    if (nres > 2) {
        unsigned int ref_dq = threshold_dq[p];
        bool no_check;
        const float thr = sat_threshold(threshold[p], &ref_dq, &no_check);
        const long long at1 = gc_at(1, npix, p);
        groupdq[at1] = sat_second_resultant(groupdq[at1], groupdq[gc_at(2, npix, p)], data[gc_at(0, npix, p)],
                                            data[at1], thr, mean_read0, last_read2, n_reads[1]);
    }
    sat_backup(groupdq, n_reads, nres, npix, p, backup);
}

// Headroom below full well at the last usable resultant, run after the saturation kernels
// on their outputs (cpu_fallback/saturation.py's saturation_headroom): headroom (npix)
// float32 = threshold - data[k*] (one float32 subtraction), +inf where there is no usable
// resultant, the threshold is NaN or threshold_dq / pixeldq has NO_SAT_CHECK.
extern "C" __global__ void saturation_headroom(const float* __restrict__ data,
                                               const unsigned char* __restrict__ groupdq,
                                               const unsigned int* __restrict__ pixeldq,
                                               const float* __restrict__ threshold,
                                               const unsigned int* __restrict__ threshold_dq,
                                               float* __restrict__ headroom, int nres, int npix)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    const float s = threshold[p];
    const int k = gc_last_clean(groupdq, nres, npix, p);
    const bool no_level = k < 0 || isnan(s) || (threshold_dq[p] & PIX_NO_SAT_CHECK) == PIX_NO_SAT_CHECK ||
                          (pixeldq[p] & PIX_NO_SAT_CHECK) == PIX_NO_SAT_CHECK;
    headroom[p] = no_level ? __int_as_float(0x7f800000) : __fsub_rn(s, data[gc_at(k, npix, p)]);
}
