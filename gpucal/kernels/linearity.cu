// linearity.cu: classic and read-level non-linearity correction with INL (algorithms.md section 6).
//
// Thread mapping: one thread per pixel p = y * nx + x, 1-D launch (any block size; 256 is
// what the launchers use, grid ceil(npix / 256)); threads with p >= npix return at once.
// Each thread reads its own ramp, coefficients and DQ and writes only its own outputs.
//
// Layouts (pixel-fastest, common.cuh): data (K, npix) float32 DN and groupdq (K, npix)
// uint8, both corrected in place; pixeldq and lin_dq (npix) uint32; lin_coeffs
// (ncoeff, npix) and ilin_coeffs (ncoeff_i, npix) float32, constant term first, never
// modified (ncoeff, ncoeff_i >= 2).  Read pattern, for linearity_read_level: `reads` holds
// every read number, resultant after resultant; resultant k owns
// reads[read_start[k] .. read_start[k + 1] - 1] (read_start has K + 1 entries) and
// mean_read[k] (float64) is the mean of those reads.
// INL (read-level only): inl_grid (inl_m,) float32 ascending, inl_table (nchannels, inl_m)
// float64, inl_valid (nchannels,) int32 (0 = all-NaN row, no correction); channel of a
// pixel = its column // inl_width.  inl_m == 0 switches INL off (pass 1-element dummies).
//
// Launch contract: exactly one of
//   linearity_classic(...)     no INVERSELINEARITY: D_k = P_lin(D_k) (float32)
//   linearity_read_level(...)  romancal's path (K >= 2), with optional INL
// per exposure; both prepare the coefficients on the fly (identity polynomial for
// NO_LIN_CORR, NaN or zero-linear-term pixels; pixeldq |= lin_dq, NO_LIN_CORR), leave
// SATURATED resultants unchanged and finish with romancal's clip (|D| > 1e6 -> +-1e6 and
// DO_NOT_USE).
//
// Precision: the NumPy twin (cpu_fallback/linearity.py) evaluates Horner's rule in float32
// for resultant values and in float64 for the per-read quantities; every multiply-add
// below is written with __fmul_rn/__fadd_rn (__dmul_rn/__dadd_rn) so that nvcc does not
// contract it into an FMA, and the results match NumPy to the last bit.

#include "common.cuh"

static constexpr float LIN_CLIP_LIMIT = 1.0e6f;

// Whether a pixel's coefficients are replaced by the identity (c_1 = 1, others 0);
// *newly_bad says whether that also earns NO_LIN_CORR (NaN coefficient or c_1 == 0 on a
// pixel not already flagged NO_LIN_CORR in the LINEARITY dq).
__device__ __forceinline__ bool lin_identity(const float* __restrict__ c, int n, long long npix, long long p,
                                             bool flagged, bool* newly_bad)
{
    bool has_nan = false;
    for (int j = 0; j < n; ++j) {
        has_nan = has_nan || isnan(__ldg(c + gc_at(j, npix, p)));
    }
    const bool zero = __ldg(c + gc_at(1, npix, p)) == 0.0f && !flagged && !has_nan;
    *newly_bad = has_nan || zero;
    return flagged || has_nan || zero;
}

__device__ __forceinline__ float lin_coeff(const float* __restrict__ c, int j, long long npix, long long p,
                                           bool identity)
{
    return identity ? (j == 1 ? 1.0f : 0.0f) : __ldg(c + gc_at(j, npix, p));
}

// sum_j c_j v^j in float32, Horner from the highest order, as cpu_fallback's _horner.
__device__ __forceinline__ float lin_horner_f(float v, const float* __restrict__ c, int n, long long npix,
                                              long long p, bool identity)
{
    float r = __fmul_rn(lin_coeff(c, n - 1, npix, p, identity), v);
    for (int j = n - 2; j >= 1; --j) {
        r = __fmul_rn(__fadd_rn(r, lin_coeff(c, j, npix, p, identity)), v);
    }
    return __fadd_rn(r, lin_coeff(c, 0, npix, p, identity));
}

// The same in float64 (float32 coefficients promoted).
__device__ __forceinline__ double lin_horner_d(double v, const float* __restrict__ c, int n, long long npix,
                                               long long p, bool identity)
{
    double r = __dmul_rn((double)lin_coeff(c, n - 1, npix, p, identity), v);
    for (int j = n - 2; j >= 1; --j) {
        r = __dmul_rn(__dadd_rn(r, (double)lin_coeff(c, j, npix, p, identity)), v);
    }
    return __dadd_rn(r, (double)lin_coeff(c, 0, npix, p, identity));
}

// numpy.interp(x, grid, table): last j with grid[j] <= x by bisection, end values outside
// the grid, NaN for NaN, and numpy's fall-backs for a non-finite interpolation.
__device__ __forceinline__ double lin_interp(double x, const float* __restrict__ grid,
                                             const double* __restrict__ table, int m)
{
    if (isnan(x)) {
        return x;
    }
    if (x > (double)__ldg(grid + m - 1)) {
        return __ldg(table + m - 1);
    }
    if (x < (double)__ldg(grid)) {
        return __ldg(table);
    }
    int lo = 0, hi = m;
    while (lo < hi) {
        const int mid = lo + ((hi - lo) >> 1);
        if (x >= (double)__ldg(grid + mid)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    const int j = lo - 1;
    const double xj = (double)__ldg(grid + j);
    const double yj = __ldg(table + j);
    if (j == m - 1 || xj == x) {
        return yj;
    }
    const double xj1 = (double)__ldg(grid + j + 1);
    const double yj1 = __ldg(table + j + 1);
    const double slope = (yj1 - yj) / (xj1 - xj);
    double r = __dadd_rn(__dmul_rn(slope, x - xj), yj);
    if (isnan(r)) {
        r = __dadd_rn(__dmul_rn(slope, x - xj1), yj1);
        if (isnan(r) && yj == yj1) {
            r = yj;
        }
    }
    return r;
}

// romancal's clip of spurious values, applied to every resultant.
__device__ __forceinline__ void lin_clip(float* d, unsigned char* g)
{
    if (fabsf(*d) > LIN_CLIP_LIMIT) {
        *d = *d > 0.0f ? LIN_CLIP_LIMIT : -LIN_CLIP_LIMIT;
        *g |= GRP_DO_NOT_USE;
    }
}

// Classic correction (no INVERSELINEARITY): every unsaturated resultant becomes P_lin(D_k).
extern "C" __global__ void linearity_classic(float* __restrict__ data, unsigned char* __restrict__ groupdq,
                                             unsigned int* __restrict__ pixeldq,
                                             const float* __restrict__ lin_coeffs, int ncoeff,
                                             const unsigned int* __restrict__ lin_dq, int nres, int npix)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    const unsigned int ref_dq = lin_dq[p];
    bool newly_bad;
    const bool identity = lin_identity(lin_coeffs, ncoeff, npix, p, (ref_dq & PIX_NO_LIN_CORR) == PIX_NO_LIN_CORR,
                                       &newly_bad);
    pixeldq[p] |= ref_dq | (newly_bad ? PIX_NO_LIN_CORR : 0u);
    for (int k = 0; k < nres; ++k) {
        const long long at = gc_at(k, npix, p);
        float d = data[at];
        unsigned char g = groupdq[at];
        if ((g & GRP_SATURATED) == 0) {
            d = lin_horner_f(d, lin_coeffs, ncoeff, npix, p, identity);
        }
        lin_clip(&d, &g);
        data[at] = d;
        groupdq[at] = g;
    }
}

// Read-level correction (romancal 1.1.0 / stcal 1.20): the ramp is linearised from its
// first and last usable resultants, every read of a resultant is un-linearised with the
// inverse coefficients, offset so that their mean equals the measured resultant, shifted
// by the INL of its own value, linearised again and averaged.
extern "C" __global__ void linearity_read_level(
    float* __restrict__ data, unsigned char* __restrict__ groupdq, unsigned int* __restrict__ pixeldq,
    const float* __restrict__ lin_coeffs, int ncoeff, const float* __restrict__ ilin_coeffs, int ncoeff_i,
    const unsigned int* __restrict__ lin_dq, const int* __restrict__ reads, const int* __restrict__ read_start,
    const double* __restrict__ mean_read, const float* __restrict__ inl_grid, const double* __restrict__ inl_table,
    const int* __restrict__ inl_valid, int inl_m, int inl_width, int nres, int nx, int npix)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    const unsigned int ref_dq = lin_dq[p];
    const bool flagged = (ref_dq & PIX_NO_LIN_CORR) == PIX_NO_LIN_CORR;
    bool lin_bad, ilin_bad;
    const bool lin_id = lin_identity(lin_coeffs, ncoeff, npix, p, flagged, &lin_bad);
    const bool ilin_id = lin_identity(ilin_coeffs, ncoeff_i, npix, p, flagged, &ilin_bad);
    pixeldq[p] |= ref_dq | (lin_bad || ilin_bad ? PIX_NO_LIN_CORR : 0u);

    // the last resultant used for the rate: (unsaturated count - 1), at least 2, minus 1
    int n_sat = 0;
    for (int k = 0; k < nres; ++k) {
        n_sat += (groupdq[gc_at(k, npix, p)] & GRP_SATURATED) != 0;
    }
    const int last = max(nres - n_sat - 1, 2) - 1;
    const float d0 = data[gc_at(0, npix, p)];
    const float dl = data[gc_at(last, npix, p)];
    const float f0 = (groupdq[gc_at(0, npix, p)] & GRP_SATURATED) != 0
                         ? d0
                         : lin_horner_f(d0, lin_coeffs, ncoeff, npix, p, lin_id);
    const float fl = (groupdq[gc_at(last, npix, p)] & GRP_SATURATED) != 0
                         ? dl
                         : lin_horner_f(dl, lin_coeffs, ncoeff, npix, p, lin_id);
    const double m0 = __ldg(mean_read);
    const double rate = (double)__fsub_rn(fl, f0) / (__ldg(mean_read + last) - m0);
    const double first = (double)f0;

    const bool use_inl = inl_m > 0 && __ldg(inl_valid + (p % nx) / inl_width) != 0;
    const float* grid = inl_grid;
    const double* table = inl_table + (long long)((p % nx) / inl_width) * inl_m;

    for (int k = 0; k < nres; ++k) {
        const long long at = gc_at(k, npix, p);
        float d = data[at];
        unsigned char g = groupdq[at];
        if ((g & GRP_SATURATED) == 0) {
            const int r0 = __ldg(read_start + k), r1 = __ldg(read_start + k + 1);
            const double nr = (double)(r1 - r0);
            // the un-linearised reads are recomputed in the second loop rather than stored:
            // identical values, no per-thread array
            double predicted = 0.0;
            for (int r = r0; r < r1; ++r) {
                const double ideal = __dadd_rn(first, __dmul_rn(rate, (double)__ldg(reads + r) - m0));
                predicted = __dadd_rn(predicted, lin_horner_d(ideal, ilin_coeffs, ncoeff_i, npix, p, ilin_id));
            }
            const double offset = (double)d - predicted / nr;
            double total = 0.0;
            for (int r = r0; r < r1; ++r) {
                const double ideal = __dadd_rn(first, __dmul_rn(rate, (double)__ldg(reads + r) - m0));
                double u = __dadd_rn(lin_horner_d(ideal, ilin_coeffs, ncoeff_i, npix, p, ilin_id), offset);
                if (use_inl) {
                    u = __dadd_rn(u, lin_interp(u, grid, table, inl_m));
                }
                total = __dadd_rn(total, lin_horner_d(u, lin_coeffs, ncoeff, npix, p, lin_id));
            }
            d = __double2float_rn(total / nr);
        }
        lin_clip(&d, &g);
        data[at] = d;
        groupdq[at] = g;
    }
}

// Saturation level in linearized DN (cpu_fallback/linearity.py's linearity_threshold), run
// on the linearity step's input: level (npix) float32 = P_lin(data[k*] + headroom[p]) with
// k* the last resultant with no group flag but JUMP_DET, the sum in float32 and P_lin the
// classic correction's float32 Horner (identity pixels as there); ncoeff == 0 (lin_coeffs
// a 1-element dummy): no polynomial, level = data[k*] + headroom.  +inf where there is no
// such resultant or the headroom is not finite.
extern "C" __global__ void linearity_threshold(const float* __restrict__ data, const unsigned char* __restrict__ groupdq,
                                               const float* __restrict__ headroom,
                                               const float* __restrict__ lin_coeffs, int ncoeff,
                                               const unsigned int* __restrict__ lin_dq, float* __restrict__ level,
                                               int nres, int npix)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    const float h = headroom[p];
    const int k = gc_last_clean(groupdq, nres, npix, p);
    if (k < 0 || !isfinite(h)) {
        level[p] = __int_as_float(0x7f800000);
        return;
    }
    float v = __fadd_rn(data[gc_at(k, npix, p)], h);
    if (ncoeff > 0) {
        bool newly_bad;
        const bool identity = lin_identity(lin_coeffs, ncoeff, npix, p,
                                           (lin_dq[p] & PIX_NO_LIN_CORR) == PIX_NO_LIN_CORR, &newly_bad);
        v = lin_horner_f(v, lin_coeffs, ncoeff, npix, p, identity);
    }
    level[p] = v;
}
