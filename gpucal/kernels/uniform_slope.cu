// uniform_slope.cu -- flag-blind uniform-weight ramp slope, used for ``dumo``
// (spec algorithms.md 7.3; romancal's slopes_uniform_weights).
//
// Thread mapping: one thread per pixel, p = blockIdx.x * blockDim.x + threadIdx.x; threads
//   with p >= npix return at once.  1-D grid of ceil(npix / block) blocks, any block size.
//   Pure per-thread: no shared memory, barriers or warp intrinsics.
// Layouts: data (K, npix) float32 DN, pixel index fastest; weights (K,) float64 1/s from
//   cpu_fallback.uniform.uniform_weights (computed once on the host); slope (npix,) float64
//   DN/s out.  Launch contract: K = nres >= 1.
// Numerics: slope = sum_k w_k D_k accumulated in float64 over k in order, each product and
//   sum rounded separately (no FMA), exactly as cpu_fallback.uniform.uniform_slope.
#include "ramp_common.cuh"

extern "C" __global__ void uniform_slope(const float* data, const double* weights, int nres, int npix,
                                         double* slope) {
    const long long p = gc_thread_index();
    if (p >= npix) return;
    double acc = r_mul(weights[0], (double)data[p]);
    for (int k = 1; k < nres; ++k) acc = r_add(acc, r_mul(weights[k], (double)data[gc_at(k, npix, p)]));
    slope[p] = acc;
}
