// ramp_fit_ols_cas22.cu -- Casertano (2022) optimally weighted ramp fit with jump
// splitting ("ols_cas22"), romancal 1.1.0 / stcal 1.20.0 (spec algorithms.md 7.2).
//
// Thread mapping: one thread per pixel, p = blockIdx.x * blockDim.x + threadIdx.x; threads
//   with p >= npix return at once.  Launch a 1-D grid of ceil(npix / block) blocks (any
//   block size).  Pure per-thread: no shared memory, barriers or warp intrinsics.
// Layouts (pixel index fastest, K = nres resultants):
//   data     (K, npix) float32 DN                in
//   groupdq  (K, npix) uint8 GroupFlag           in/out: JUMP_DET on both resultants around
//                                                every detected jump
//   pixeldq, readnoise (DN, one read), gain (e-/DN): (npix,) uint32 / float32 / float32
//   tbar, tau: (K,) float32 s, n_reads: (K,) float32 -- as cpu_fallback.ramp_fit.ols_cas22
//     .pattern_constants builds them (tbar/tau rounded to float32 from the float64 read
//     times).
//   use_jump (0/1), intercept, constant: the jump threshold I - C log10(clamp(slope, 1, 1e4))
//     (slope in e-/s; romancal defaults 5.5 and 1/3).
//   slope, err, var_poisson, var_rnoise: (npix,) float32 out; dq: (npix,) uint32 out (may
//     alias pixeldq).  ols_cas22 has no chi-square: the host fills zeros.
// Launch contract: 1 <= nres <= RAMP_MAX_RESULTANTS (the host checks; a thread given another
//   nres writes NaN results and DO_NOT_USE and leaves groupdq alone).
//
// Numerics: the scalar image of cpu_fallback/ramp_fit/ols_cas22.py (itself stcal's Cython):
// float32 resultants, slopes, variances and jump statistics, float64 weight sums, in the
// same order and without FMA contraction (ramp_common.cuh).  Segments are fitted depth-first
// from a per-thread stack instead of in breadth-first rounds; each segment's fit depends
// only on its own resultants, and the segments are combined latest-first as stcal does, so
// the order of fitting changes nothing.  Differences left: libm's pow() and log10().
// Resources (ptxas, sm_80 and sm_90): 86-88 registers, no spills, 0 barriers, a 1056-byte
// stack frame (the per-thread resultant, weight and segment arrays, in local memory).
#include "ramp_common.cuh"

#define OC_MAXK RAMP_MAX_RESULTANTS

struct OcSegFit {
    float slope, read_var, poisson_var;
};

// Casertano (2022) Table 2: weighting power for a segment's signal-to-noise (float32
// edges 5, 10, 20, 50, 100, searchsorted side="right"; NaN sorts last).
__device__ __forceinline__ double oc_power(float snr) {
    if (snr != snr || snr >= 100.0f) return 10.0;
    if (snr >= 50.0f) return 6.0;
    if (snr >= 20.0f) return 3.0;
    if (snr >= 10.0f) return 1.0;
    if (snr >= 5.0f) return (double)0.4f;
    return 0.0;
}

// ols_cas22._fit_segments for one segment [a, b]: slope (e-/s), read variance and
// Poisson variance per unit rate.
__device__ OcSegFit oc_fit_segment(int a, int b, const float* res, float rn2, const float* tbar, const float* tau,
                                   const float* n_reads) {
    const float ta = tbar[a], tb = tbar[b];
    const double t_mid = r_div((double)r_addf(ta, tb), 2.0);
    const double signal = (double)fmaxf(r_subf(res[b], res[a]), 0.0f);
    const double rn2_64 = (double)rn2;
    const float snr = (float)r_div(signal, __dsqrt_rn(r_add(rn2_64, signal)));
    const double power = oc_power(snr);
    double t_scale = r_div((double)r_subf(tb, ta), 2.0);
    if (t_scale == 0.0) t_scale = 1.0;

    double w[OC_MAXK];
    double f0 = 0.0, f1 = 0.0, f2 = 0.0;
    for (int k = a; k <= b; ++k) {
        const double nk = (double)n_reads[k];
        const double tk = (double)tbar[k];
        const double wk = r_mul(r_div(r_mul(r_add(1.0, power), nk), r_add(1.0, r_mul(power, nk))),
                                pow(fabs(r_div(r_sub(tk, t_mid), t_scale)), power));
        w[k] = wk;
        f0 = r_add(f0, wk);
        f1 = r_add(f1, r_mul(wk, tk));
        f2 = r_add(f2, r_mul(wk, (double)r_mulf(tbar[k], tbar[k])));
    }
    const double det = r_sub(r_mul(f2, f0), r_mul(f1, f1));
    OcSegFit out = {0.0f, 0.0f, 0.0f};
    if (det == 0.0) return out;
    double sum_ct = 0.0;
    for (int k = a; k <= b; ++k) {
        const double tk = (double)tbar[k];
        const double coeff = r_div(r_mul(r_sub(r_mul(f0, tk), f1), w[k]), det);
        const double c2 = r_mul(coeff, coeff);
        out.slope = (float)r_add((double)out.slope, r_mul(coeff, (double)res[k]));
        out.read_var = (float)r_add((double)out.read_var, r_div(r_mul(c2, rn2_64), (double)n_reads[k]));
        out.poisson_var = (float)r_add((double)out.poisson_var,
                                       r_add(r_mul(c2, (double)tau[k]), r_mul(r_mul(2.0, coeff), sum_ct)));
        sum_ct = r_add(sum_ct, r_mul(coeff, tk));
    }
    return out;
}

// (local slope - slope) / sigma over resultants i < j (ols_cas22._find_jumps ``stat``).
__device__ __forceinline__ float oc_stat(int i, int j, const float* res, float rn2, float slope, float correct,
                                         const float* tbar, const float* tau, const float* n_reads) {
    const float dt = r_subf(tbar[j], tbar[i]);
    const float local = r_divf(r_subf(res[j], res[i]), dt);
    const float rec = r_addf(r_divf(1.0f, n_reads[j]), r_divf(1.0f, n_reads[i]));
    const float vs = r_subf(r_addf(tau[j], tau[i]), r_mulf(2.0f, fminf(tbar[j], tbar[i])));
    const float var = r_divf(r_addf(r_mulf(rn2, rec), r_mulf(slope, vs)), r_mulf(dt, dt));
    return r_divf(r_subf(local, slope), __fsqrt_rn(r_addf(var, correct)));
}

extern "C" __global__ void ramp_fit_ols_cas22(const float* data, unsigned char* groupdq, const unsigned int* pixeldq,
                                             const float* readnoise, const float* gain, const float* tbar,
                                             const float* tau, const float* n_reads, int use_jump, float intercept,
                                             float constant, int nres, int npix, float* slope, float* err,
                                             float* var_poisson, float* var_rnoise, unsigned int* dq) {
    const long long p = gc_thread_index();
    if (p >= npix) return;
    const float g = gain[p];
    if (nres < 1 || nres > RAMP_MAX_RESULTANTS) {  // outside the launch contract
        const float nan = ramp_nanf(0.0f * g);
        slope[p] = err[p] = var_poisson[p] = var_rnoise[p] = nan;
        dq[p] = pixeldq[p] | PIX_DO_NOT_USE;
        return;
    }

    // electrons, as romancal: float32 products
    float res[OC_MAXK];
    unsigned char flags[OC_MAXK];
    for (int k = 0; k < nres; ++k) {
        res[k] = r_mulf(data[gc_at(k, npix, p)], g);
        flags[k] = groupdq[gc_at(k, npix, p)];
    }
    const float rn_e = r_mulf(readnoise[p], g);
    const float rn2 = r_mulf(rn_e, rn_e);

    // initial segments: maximal runs of unflagged resultants, at least two long
    int stack_a[OC_MAXK], stack_b[OC_MAXK];
    int top = 0;
    for (int k = nres - 1; k >= 0;) {
        if (flags[k] != 0) {
            --k;
            continue;
        }
        const int b = k;
        while (k >= 0 && flags[k] == 0) --k;
        if (b - (k + 1) >= 1) {
            stack_a[top] = k + 1;
            stack_b[top] = b;
            ++top;
        }
    }

    // fit, test, split; finished segments are kept by their first resultant
    OcSegFit done[OC_MAXK];
    unsigned int done_mask = 0u;
    unsigned int jump_mask = 0u;
    while (top > 0) {
        --top;
        const int a = stack_a[top], b = stack_b[top];
        const OcSegFit fit = oc_fit_segment(a, b, res, rn2, tbar, tau, n_reads);
        bool jump = false;
        int j0 = b - 1;
        if (use_jump) {
            const float correct = r_divf(-fit.slope, r_subf(tbar[b], tbar[a]));
            float best = oc_stat(b - 1, b, res, rn2, fit.slope, correct, tbar, tau, n_reads);
            for (int i = a; i <= b - 2; ++i) {
                const float cand = fmaxf(oc_stat(i, i + 1, res, rn2, fit.slope, correct, tbar, tau, n_reads),
                                         oc_stat(i, i + 2, res, rn2, fit.slope, correct, tbar, tau, n_reads));
                if (cand > best) {
                    best = cand;
                    j0 = i;
                }
            }
            float clipped = fit.slope > 1.0f ? fit.slope : 1.0f;
            clipped = clipped < 1e4f ? clipped : 1e4f;
            const float threshold =
                (float)r_sub((double)intercept, r_mul((double)constant, log10((double)clipped)));
            jump = best > threshold;
        }
        if (!jump) {
            done[a] = fit;
            done_mask |= 1u << a;
            continue;
        }
        jump_mask |= 3u << j0;
        if (b - (j0 + 1) >= 2) {  // [j0 + 2, b]
            stack_a[top] = j0 + 2;
            stack_b[top] = b;
            ++top;
        }
        if (j0 - a >= 2) {  // [a, j0 - 1]
            stack_a[top] = a;
            stack_b[top] = j0 - 1;
            ++top;
        }
    }

    // inverse read-variance average, latest segment first, in float32
    float total = 0.0f, avg_s = 0.0f, avg_r = 0.0f, avg_p = 0.0f;
    for (int a = nres - 1; a >= 0; --a) {
        if (!((done_mask >> a) & 1u)) continue;
        const OcSegFit s = done[a];
        if (s.slope != s.slope) continue;
        const float w = (s.read_var == 0.0f) ? 0.0f : r_divf(1.0f, s.read_var);
        const float w2 = r_mulf(w, w);
        total = r_addf(total, w);
        avg_s = r_addf(avg_s, r_mulf(w, s.slope));
        avg_r = r_addf(avg_r, r_mulf(w2, s.read_var));
        avg_p = r_addf(avg_p, r_mulf(w2, s.poisson_var));
    }
    const bool nonzero = total != 0.0f;
    avg_s = r_divf(avg_s, nonzero ? total : 1.0f);
    const float total_sq = nonzero ? r_mulf(total, total) : 1.0f;
    avg_r = r_divf(avg_r, total_sq);
    avg_p = r_divf(avg_p, total_sq);
    avg_p = r_mulf(avg_p, (0.0f > avg_s) ? 0.0f : avg_s);

    // back to DN
    const float g2 = r_mulf(g, g);
    const float s = r_divf(avg_s, g);
    const float vr = r_divf(avg_r, g2);
    const float vp = r_divf(avg_p, g2);
    const float e = __fsqrt_rn(r_addf(vp, vr));
    slope[p] = s;
    var_rnoise[p] = vr;
    var_poisson[p] = vp;
    err[p] = e;

    for (int k = 0; k < nres; ++k) {
        if ((jump_mask >> k) & 1u) {
            flags[k] = GRP_JUMP_DET;  // assigned, as stcal does (the resultant was unflagged)
            groupdq[gc_at(k, npix, p)] = flags[k];
        }
    }
    unsigned int out = ramp_compress_dq(flags, nres, pixeldq[p], true);
    if (!ramp_isfinitef(s) || e <= 0.0f) out |= PIX_DO_NOT_USE;
    if (g < 0.0f || !ramp_isfinitef(g)) out |= PIX_NO_GAIN_VALUE;
    dq[p] = out;
}
