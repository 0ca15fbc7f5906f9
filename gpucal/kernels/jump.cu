// Two-point-difference jump detection for uneven resultants: the GPU twin of
// cpu_fallback/jump.py (its module docstring gives the algorithm and the noise model).
//
// Thread mapping
//   jump_detect:    one thread per pixel p = blockIdx.x * blockDim.x + threadIdx.x, p < npix.
//   jump_neighbors: one thread per pixel, the same 1-D mapping over p = y * nx + x.
// Layouts (pixel index fastest, STYLE.md item 3; K = nres resultants, K - 1 differences)
//   data         (K, npix) float32, DN; read only.
//   groupdq      (K, npix) uint8 GroupFlag bits; JUMP_DET set / cleared in place.
//   readnoise    (npix) float32, DN per single read.
//   gain         (npix) float32, e-/DN; not positive and finite => the pixel is not searched.
//   diff_consts  (7, K - 1) float32, rows: 1/dt (1/s), dt (s), read (1/N_i + 1/N_{i+1}),
//                photon (tau_i + tau_{i+1} - 2 tbar_i, s), 1/dt**2, then for the
//                covariance of differences j and j + 1 (last entry unused): cov_read
//                (1/N_{j+1}) and cov_photon (tbar_{j+1} - tau_{j+1}), both divided by
//                dt_j dt_{j+1}.  cpu_fallback.jump.difference_noise in float64, then cast
//                to float32, exactly the NumPy backend's constants.
//   nbr_marks    (npix) uint32; bit i set = difference i of this pixel seeds its 4
//                neighbours (JUMP_DET on resultant i + 1, significance in (min, max)).
//                Written (possibly 0) by every jump_detect thread; read by jump_neighbors.
//   mode         (1) int, the frame-wide search mode below; read only, the same for every
//                thread (device memory, so that no host read-back decides it).
// Launch contract
//   1 <= K <= JUMP_MAX_RESULTANTS (the host checks; a larger K leaves the pixel untouched).
//   reference_rate: JUMP_REF_WEIGHTED (0, gpucal's leave-one-out weighted significance)
//     or JUMP_REF_MEDIAN (1, stcal's clipped median of |fd|): cpu_fallback's REFERENCE_RATES.
//   outlier2: np.float32(rejection_threshold) ** 2 computed on the host as NumPy does
//     (a float32 powf, not always the correctly rounded rejection * rejection); the weighted
//     reference leaves out the differences with |fd_j - m|**2 / s_j**2 > outlier2.
//   mode[0], decided over the whole frame as the NumPy backend does (usable resultants: K
//   less those flagged DO_NOT_USE on every pixel of the frame):
//     JUMP_MODE_NONE (0): fewer than 3 usable resultants, no search;
//     JUMP_MODE_ITERATIVE (1): the per-pixel iteration;
//     JUMP_MODE_SINGLE (2): >= 10 usable differences, one pass.
//   The host fills it without a read-back: on the device by array reductions over groupdq
//   (gpucal.backends.device.launch_ramp.jump_search_mode, enqueued before jump_detect on the
//   same stream), or as an uploaded constant when the caller knows the frame's mode (row
//   blocks must pass the whole frame's, launch_ramp.frame_search_mode).  Any other value
//   searches nothing, as JUMP_MODE_NONE.
//   Neighbour seeds and the SAT/DNU clearing run in every mode.  Thresholds are float32
//   sigma.  Launch jump_detect over all pixels, then (only when flag_4_neighbors)
//   jump_neighbors over all pixels with the same groupdq and nbr_marks: it reads its 4
//   neighbours' marks and writes only its own groupdq column, so no thread reads what
//   another one writes.
//
// Rounding: every float32 operation follows NumPy's order, and the products that the
// compiler could fuse into an FMA are written with *_rn intrinsics, so the flags are
// bit-for-bit those of the NumPy backend (GPU flush-to-zero of denormals aside; and where
// NumPy's iterative search carries a single pixel into a later pass with >= 8 differences,
// its axis-0 sums become pairwise sums, which can differ from these in the last bit).
// No __shared__, barriers, warp intrinsics or system includes (STYLE.md items 4-5).

#include "common.cuh"

// Per-thread arrays and the 32-bit masks over resultants bound K (as the ramp fits do:
// Roman MA tables have at most ~22 resultants).
#define JUMP_MAX_RESULTANTS 32
#define JUMP_MAX_DIFFS (JUMP_MAX_RESULTANTS - 1)

#define JUMP_MODE_NONE 0
#define JUMP_MODE_ITERATIVE 1
#define JUMP_MODE_SINGLE 2

#define JUMP_REF_WEIGHTED 0
#define JUMP_REF_MEDIAN 1

#define JUMP_EXCLUDE (GRP_SATURATED | GRP_DO_NOT_USE)  // what makes a resultant unusable (stcal)
#define JUMP_FLT_MAX 3.402823466e+38f

typedef unsigned int jump_mask_t;  // one bit per resultant or per difference

// The difference table and the noise of one pixel.
struct JumpNoise {
    const float* inv_dt;
    const float* dt;
    const float* read;
    const float* photon;
    const float* inv_dt2;
    const float* cov_read;    // Cov(fd_j, fd_{j+1}) = rate/g cov_photon_j - rn2 cov_read_j
    const float* cov_photon;
    float rn2;       // read noise squared, DN^2
    float inv_g;     // 1 / gain, DN/e-
    float outlier2;  // squared outlier threshold of the weighted reference (kappa**2)
};

// |x - ref| / s_i(ref) for difference i (cpu_fallback.jump._ratio); false where NumPy's
// ratio is NaN (zero or NaN variance).
__device__ __forceinline__ bool jump_ratio(float x, float ref, int i, const JumpNoise& nz, float* out) {
    const float rate = ref < 0.0f ? 0.0f : ref;  // np.maximum(ref, 0)
    const float var = __fadd_rn(__fmul_rn(nz.rn2, nz.read[i]), __fmul_rn(__fmul_rn(rate, nz.inv_g), nz.photon[i]));
    if (!(var > 0.0f)) return false;
    *out = fabsf(x - ref) * nz.dt[i] / sqrtf(var);
    return true;
}

// The values fd[i] (or |fd[i]|) of the differences in `set`, ascending, into s; their count.
__device__ __forceinline__ int jump_sorted(const float* fd, jump_mask_t set, int nd, bool absolute, float* s) {
    int n = 0;
    for (int i = 0; i < nd; ++i) {
        if (!((set >> i) & 1u)) continue;
        const float x = absolute ? fabsf(fd[i]) : fd[i];
        int j = n++;
        while (j > 0 && s[j - 1] > x) {
            s[j] = s[j - 1];
            --j;
        }
        s[j] = x;
    }
    return n;
}

// Medians of a sorted list; false where NumPy's is NaN.
//   clipped (stcal, of |fd|): n >= 4 drop every copy of the largest, then median;
//   n == 3 median; n == 2 the smaller; n < 2 none.
__device__ __forceinline__ bool jump_clipped_median(const float* s, int n, float* out) {
    if (n < 2) return false;
    if (n == 2) {
        *out = s[0];
        return true;
    }
    int m = n;
    if (n >= 4) {
        const float top = s[n - 1];
        while (m > 0 && s[m - 1] == top) --m;
        if (m < 1) return false;
    }
    *out = 0.5f * (s[(m - 1) / 2] + s[m / 2]);
    return true;
}

__device__ __forceinline__ bool jump_plain_median(const float* s, int n, float* out) {
    if (n < 1) return false;
    *out = 0.5f * (s[(n - 1) / 2] + s[n / 2]);
    return true;
}

// ---------------------------------------------------------------------------------------
// Significance of each difference of `set` against the pixel's reference rate: sig[i] for
// the returned mask of differences where it is defined (not NaN in NumPy).  The reference
// rate estimates live only here: the search, the single pass and the neighbour seeds call
// jump_sig_search / jump_sig_plain and nothing else.
//   weighted (cpu_fallback.jump._loo_significance): one-sided z_i = (fd_i - r_i) / sqrt(V_i),
//     r_i the inverse-variance-weighted mean of the other differences of `set`, V_i the
//     variance of fd_i - r_i with the covariance of adjacent differences, at the noise rate
//     max(median of fd, 0); outliers about that median (|fd_j - m| / s_j > kappa) are left
//     out of every reference unless fewer than two differences would remain.
//   median, search (stcal): |a_i - m| / s_i(m), a = |fd|, m the clipped median of a.
//   plain: |fd_i - m0| / s_i(m0), m0 the median of fd (median single pass, neighbours).
// work: JUMP_MAX_DIFFS floats of workspace.
__device__ jump_mask_t jump_sig_plain(const float* fd, jump_mask_t set, int nd, const JumpNoise& nz, float* work,
                                      float* sig) {
    float m0;
    if (!jump_plain_median(work, jump_sorted(fd, set, nd, false, work), &m0)) return 0u;
    jump_mask_t valid = 0u;
    for (int i = 0; i < nd; ++i)
        if (((set >> i) & 1u) && jump_ratio(fd[i], m0, i, nz, &sig[i])) valid |= 1u << i;
    return valid;
}

__device__ jump_mask_t jump_sig_clipped(const float* fd, jump_mask_t set, int nd, const JumpNoise& nz, float* work,
                                        float* sig) {
    float m;
    if (!jump_clipped_median(work, jump_sorted(fd, set, nd, true, work), &m)) return 0u;
    jump_mask_t valid = 0u;
    for (int i = 0; i < nd; ++i)
        if (((set >> i) & 1u) && jump_ratio(fabsf(fd[i]), m, i, nz, &sig[i])) valid |= 1u << i;
    return valid;
}

// Cov(fd_j, fd_{j+1}) (rate units squared) at rate/gain `rate_g`.
__device__ __forceinline__ float jump_cov_next(int j, float rate_g, const JumpNoise& nz) {
    return __fsub_rn(__fmul_rn(rate_g, nz.cov_photon[j]), __fmul_rn(nz.rn2, nz.cov_read[j]));
}

// w_j w_{j+1} Cov(fd_j, fd_{j+1})
__device__ __forceinline__ float jump_pair(const float* w, int j, float rate_g, const JumpNoise& nz) {
    return __fmul_rn(__fmul_rn(w[j], w[j + 1]), jump_cov_next(j, rate_g, nz));
}

// NumPy's operation order, sums over differences in index order (its axis-0 reductions).
// Outliers (|fd_j - m|^2 w_j > outlier2 about the plain median m) get no weight in the
// references w_ref, unless fewer than two non-outliers would remain; the tested difference
// keeps its own variance s_i^2 either way.
__device__ jump_mask_t jump_sig_weighted(const float* fd, jump_mask_t set, int nd, const JumpNoise& nz, float* w,
                                         float* sig) {
    float m;
    if (!jump_plain_median(w, jump_sorted(fd, set, nd, false, w), &m)) return 0u;
    const float rate_g = (m < 0.0f ? 0.0f : m) * nz.inv_g;
    jump_mask_t usable = 0u, outlier = 0u;
    for (int i = 0; i < nd; ++i) {
        const float s2 =
            __fmul_rn(__fadd_rn(__fmul_rn(nz.rn2, nz.read[i]), __fmul_rn(rate_g, nz.photon[i])), nz.inv_dt2[i]);
        sig[i] = s2;  // the variance of fd_i until z_i replaces it
        w[i] = 0.0f;
        if (!((set >> i) & 1u) || !(s2 > 0.0f)) continue;
        usable |= 1u << i;
        w[i] = 1.0f / s2;
        const float dev = fabsf(fd[i] - m);
        if (__fmul_rn(__fmul_rn(dev, dev), w[i]) > nz.outlier2) outlier |= 1u << i;
    }
    if (__popc(usable & ~outlier) < 2) outlier = 0u;  // keep every usable difference
    // w now holds the reference weights w_ref (0 for outliers and unusable differences)
    float wsum = 0.0f, wfsum = 0.0f;
    for (int i = 0; i < nd; ++i) {
        if ((outlier >> i) & 1u) w[i] = 0.0f;
        wsum = __fadd_rn(wsum, w[i]);
        wfsum = __fadd_rn(wfsum, ((usable >> i) & 1u) ? __fmul_rn(fd[i], w[i]) : 0.0f);
    }
    float psum = 0.0f;
    for (int j = 0; j + 1 < nd; ++j) psum = __fadd_rn(psum, jump_pair(w, j, rate_g, nz));

    jump_mask_t valid = 0u;
    for (int i = 0; i < nd; ++i) {
        if (!((usable >> i) & 1u)) continue;
        const float u = 1.0f / __fsub_rn(wsum, w[i]);  // inverse reference weight of the others
        const float d = __fsub_rn(fd[i], __fmul_rn(__fsub_rn(wfsum, __fmul_rn(fd[i], w[i])), u));  // fd_i - r_i
        // V_i = s_i^2 + u_i (1 - 2 cov_i + 2 u_i pairs_i)
        float t = 1.0f;
        if (nd > 1) {
            float pairs = psum;
            if (i >= 1) pairs = __fsub_rn(pairs, jump_pair(w, i - 1, rate_g, nz));
            if (i + 1 < nd) pairs = __fsub_rn(pairs, jump_pair(w, i, rate_g, nz));
            pairs = __fmul_rn(pairs, u);
            if (i + 1 < nd) t = __fsub_rn(t, 2.0f * __fmul_rn(w[i + 1], jump_cov_next(i, rate_g, nz)));
            if (i >= 1) t = __fsub_rn(t, 2.0f * __fmul_rn(w[i - 1], jump_cov_next(i - 1, rate_g, nz)));
            t = __fadd_rn(t, 2.0f * pairs);
        }
        t = __fadd_rn(__fmul_rn(t, u), sig[i]);
        if (!(t > 0.0f)) continue;
        const float z = d / sqrtf(t);
        if (z == z) {
            sig[i] = z;
            valid |= 1u << i;
        }
    }
    return valid;
}

// The iterative search's and the single pass's significance.
__device__ __forceinline__ jump_mask_t jump_sig_search(int reference_rate, bool iterative, const float* fd,
                                                       jump_mask_t set, int nd, const JumpNoise& nz, float* work,
                                                       float* sig) {
    if (reference_rate == JUMP_REF_WEIGHTED) return jump_sig_weighted(fd, set, nd, nz, work, sig);
    return iterative ? jump_sig_clipped(fd, set, nd, nz, work, sig) : jump_sig_plain(fd, set, nd, nz, work, sig);
}
// ---------------------------------------------------------------------------------------

// The largest significance over `valid` and the differences attaining it (NumPy: fmax.reduce,
// then ratio == peak); false when `valid` is empty.
__device__ __forceinline__ bool jump_peak(const float* sig, jump_mask_t valid, int nd, float* peak,
                                          jump_mask_t* at) {
    bool have = false;
    for (int i = 0; i < nd; ++i) {
        if (!((valid >> i) & 1u)) continue;
        if (!have || sig[i] > *peak) {
            *peak = sig[i];
            *at = 1u << i;
            have = true;
        } else if (sig[i] == *peak) {
            *at |= 1u << i;
        }
    }
    return have;
}

// stcal's per-pixel iteration; returns the mask of flagged differences.
__device__ jump_mask_t jump_iterative(int reference_rate, const float* fd, jump_mask_t usable, int nd,
                                      const JumpNoise& nz, float rejection, float three_group, float four_group,
                                      float* work, float* sig) {
    jump_mask_t set = usable, flagged = 0u;
    for (int it = 0; it < nd; ++it) {
        const int n = __popc(set);
        if (n < 2) break;  // threshold infinite
        const float thr = n >= 4 ? rejection : (n == 3 ? four_group : three_group);
        const jump_mask_t valid = jump_sig_search(reference_rate, true, fd, set, nd, nz, work, sig);
        float peak = 0.0f;
        jump_mask_t at = 0u;
        if (!jump_peak(sig, valid, nd, &peak, &at) || !(peak > thr)) break;
        flagged |= at;
        set &= ~at;
    }
    return flagged;
}

extern "C" __global__ void jump_detect(const float* __restrict__ data, unsigned char* __restrict__ groupdq,
                                       const float* __restrict__ readnoise, const float* __restrict__ gain,
                                       const float* __restrict__ diff_consts, unsigned int* __restrict__ nbr_marks,
                                       int nres, long long npix, int reference_rate,
                                       const int* __restrict__ mode, float rejection, float three_group,
                                       float four_group, float outlier2, int flag_neighbors, float min_nbr,
                                       float max_nbr) {
    const long long p = gc_thread_index();
    if (p >= npix) return;
    if (nres < 1 || nres > JUMP_MAX_RESULTANTS) return;
    const int nd = nres - 1;

    jump_mask_t excluded = 0u, jump_in = 0u;  // over resultants
    for (int k = 0; k < nres; ++k) {
        const unsigned int g = groupdq[gc_at(k, npix, p)];
        if (g & JUMP_EXCLUDE) excluded |= 1u << k;
        if (g & GRP_JUMP_DET) jump_in |= 1u << k;
    }

    const float g = gain[p];
    const bool good_gain = g > 0.0f && g <= JUMP_FLT_MAX;
    const float rn = readnoise[p];
    JumpNoise nz;
    nz.inv_dt = diff_consts;
    nz.dt = diff_consts + nd;
    nz.read = diff_consts + 2 * nd;
    nz.photon = diff_consts + 3 * nd;
    nz.inv_dt2 = diff_consts + 4 * nd;
    nz.cov_read = diff_consts + 5 * nd;
    nz.cov_photon = diff_consts + 6 * nd;
    nz.rn2 = rn * rn;
    nz.inv_g = good_gain ? 1.0f / g : 0.0f;
    nz.outlier2 = outlier2;

    // rates of the usable differences: neither resultant SAT/DNU, finite
    float fd[JUMP_MAX_DIFFS], sig[JUMP_MAX_DIFFS], work[JUMP_MAX_DIFFS];
    jump_mask_t usable = 0u;
    if (good_gain) {
        float d0 = data[p];
        for (int i = 0; i < nd; ++i) {
            const float d1 = data[gc_at(i + 1, npix, p)];
            fd[i] = (d1 - d0) * nz.inv_dt[i];
            if (((excluded >> i) & 3u) == 0u && fabsf(fd[i]) <= JUMP_FLT_MAX) usable |= 1u << i;
            d0 = d1;
        }
    }

    const int search = mode[0];
    jump_mask_t flagged = 0u;  // over differences
    if (search == JUMP_MODE_ITERATIVE) {
        flagged = jump_iterative(reference_rate, fd, usable, nd, nz, rejection, three_group, four_group, work, sig);
    } else if (search == JUMP_MODE_SINGLE) {
        const jump_mask_t valid = jump_sig_search(reference_rate, false, fd, usable, nd, nz, work, sig);
        for (int i = 0; i < nd; ++i)
            if (((valid >> i) & 1u) && sig[i] > rejection) flagged |= 1u << i;
    }

    // JUMP_DET on the later resultant of each flagged difference (input flags included)
    const jump_mask_t jumped = jump_in | (flagged << 1);

    jump_mask_t marks = 0u;
    if (flag_neighbors && (jumped >> 1) != 0u) {
        const jump_mask_t valid = jump_sig_plain(fd, usable, nd, nz, work, sig);
        for (int i = 0; i < nd; ++i)
            if (((valid >> i) & 1u) && ((jumped >> (i + 1)) & 1u) && sig[i] > min_nbr && sig[i] < max_nbr)
                marks |= 1u << i;
    }
    nbr_marks[p] = marks;

    // stcal clears JUMP_DET on resultants that carry SATURATED or DO_NOT_USE
    const jump_mask_t change = (jumped & ~excluded) ^ jump_in;
    for (int k = 0; k < nres; ++k) {
        if (!((change >> k) & 1u)) continue;
        const long long q = gc_at(k, npix, p);
        groupdq[q] = (unsigned char)(groupdq[q] ^ GRP_JUMP_DET);
    }
}

extern "C" __global__ void jump_neighbors(unsigned char* __restrict__ groupdq,
                                          const unsigned int* __restrict__ nbr_marks, int nres, int ny, int nx) {
    const long long npix = (long long)ny * nx;
    const long long p = gc_thread_index();
    if (p >= npix) return;
    const int y = (int)(p / nx);
    const int x = (int)(p - (long long)y * nx);
    jump_mask_t seeds = 0u;
    if (y > 0) seeds |= nbr_marks[p - nx];
    if (y + 1 < ny) seeds |= nbr_marks[p + nx];
    if (x > 0) seeds |= nbr_marks[p - 1];
    if (x + 1 < nx) seeds |= nbr_marks[p + 1];
    for (int i = 0; i + 1 < nres && i < JUMP_MAX_DIFFS; ++i) {
        if (!((seeds >> i) & 1u)) continue;
        const long long q = gc_at(i + 1, npix, p);  // difference i flags resultant i + 1
        const unsigned int g = groupdq[q];
        if ((g & (JUMP_EXCLUDE | GRP_JUMP_DET)) == 0u) groupdq[q] = (unsigned char)(g | GRP_JUMP_DET);
    }
}
