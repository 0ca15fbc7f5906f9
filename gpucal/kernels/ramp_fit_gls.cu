// ramp_fit_gls.cu -- gpucal's own ramp fit ("gls"): generalised least squares of the
// resultant differences with their tridiagonal covariance, the covariance rate refitted in
// three passes, jumps and a last resultant short of full well removed one at a time.
// The maths is in cpu_fallback/ramp_fit/gls.py, this kernel's NumPy twin, bit for bit.
//
// Thread mapping: one thread per pixel, p = blockIdx.x * blockDim.x + threadIdx.x; threads
//   with p >= npix return at once.  Launch a 1-D grid of ceil(npix / block) blocks (any
//   block size).  Pure per-thread: no shared memory, barriers or warp intrinsics.
// Layouts (pixel index fastest, K = nres resultants, n = K - 1 differences):
//   data     (K, npix) float32 DN                in
//   groupdq  (K, npix) uint8 GroupFlag           in/out: JUMP_DET on the later resultant of
//                                                every jump found, SATURATED on the last
//                                                usable resultant where it was found short
//   pixeldq, readnoise (DN, one read), gain (e-/DN): (npix,) uint32 / float32 / float32
//   consts   (6, n) float64: rows dt, rd, ph, crd, cph, w0 as
//            cpu_fallback.ramp_fit.gls.pattern_constants(...).table() builds them
//   multi    bit k set: resultant k has more than one read
//   use_jump (0/1), threshold: the jump search and its threshold (sigma)
//   shortfall: significance (sigma) below the ramp that marks a resultant short
//   slope, err, var_poisson, var_rnoise, chisq: (npix,) float32 out; dq: (npix,) uint32 out
// Launch contract: 1 <= nres <= RAMP_MAX_RESULTANTS (the host checks; a thread given another
//   nres writes NaN results and DO_NOT_USE and leaves groupdq alone).
//
// Numerics (the GPU contract): float64 from the float32 inputs to the float32 outputs, every
// + - * / a separately rounded *_rn intrinsic (never contracted into FMA, ramp_common.cuh),
// square roots correctly rounded (__dsqrt_rn); no libm transcendental and no float32
// intermediate, so CPU and GPU round alike and flushing float32 denormals cannot matter
// (an output below 1.2e-38 in magnitude is the only place it could).
// Resources (ptxas through NVRTC, sm_80 and sm_90): 128 registers, no spills, 0 barriers, a
// 1776-byte stack frame (the per-thread arrays of n doubles: differences, l, m, q, v/m,
// statistics and pair statistics, in local memory; likely's is larger).
#include "ramp_common.cuh"

#define GLS_MAXD (RAMP_MAX_RESULTANTS - 1)

struct GlsFit {
    double slope, var_r, var_p, chisq;
};

__device__ __forceinline__ bool gls_bit(unsigned int mask, int j) { return ((mask >> j) & 1u) != 0u; }

// One forward LDL' sweep of the usable differences' covariance at rate ``rate``; returns
// s_hat.  With ``final``, also F, G, H and the per-difference l, m, q and v/m.
__device__ double gls_sweep(const double* d, unsigned int mask, int nd, double rate, double rn2, double q2,
                            const double* c, bool final, double* fsum_out, double* gsum_out, double* hsum_out,
                            double* ls, double* ms, double* qs, double* vms) {
    const double *dt = c, *rd = c + nd, *ph = c + 2 * nd, *crd = c + 3 * nd, *cph = c + 4 * nd;
    double fsum = 0.0, gsum = 0.0, hsum = 0.0;
    double m_prev = 1.0, u_prev = 0.0, v_prev = 0.0;
    for (int j = 0; j < nd; ++j) {
        const bool use = gls_bit(mask, j);
        const double diag = use ? r_add(r_add(r_mul(rn2, rd[j]), r_add(q2, q2)), r_mul(rate, ph[j])) : 1.0;
        const bool link = j > 0 && use && gls_bit(mask, j - 1);
        const double off = link ? r_add(r_sub(r_mul(rn2, crd[j]), q2), r_mul(rate, cph[j])) : 0.0;
        const double dte = use ? dt[j] : 0.0;
        const double de = use ? d[j] : 0.0;
        double l, m, u, v;
        if (j == 0) {
            l = 0.0;
            m = diag;
            u = dte;
            v = de;
        } else {
            l = r_div(off, m_prev);
            m = r_sub(diag, r_mul(l, off));
            u = r_sub(dte, r_mul(l, u_prev));
            v = r_sub(de, r_mul(l, v_prev));
        }
        const double q = r_div(u, m);
        fsum = r_add(fsum, r_mul(u, q));
        gsum = r_add(gsum, r_mul(v, q));
        if (final) {
            const double vm = r_div(v, m);
            hsum = r_add(hsum, r_mul(vm, v));
            ls[j] = l;
            ms[j] = m;
            qs[j] = q;
            vms[j] = vm;
        }
        m_prev = m;
        u_prev = u;
        v_prev = v;
    }
    if (final) {
        *fsum_out = fsum;
        *gsum_out = gsum;
        *hsum_out = hsum;
    }
    return r_div(gsum, fsum);
}

// The three-pass fit of one mask of usable differences (gls.py ``_fit``); standardised
// residuals into ``resid`` (0 where unusable or the residual variance is not positive) and
// of the pairs d_j + d_j+1 around a multi-read resultant j+1 into ``pres`` (-inf where not
// tested).
__device__ GlsFit gls_fit(const double* d, unsigned int mask, int nd, double rn2, double q2, const double* c,
                          unsigned int multi, double* resid, double* pres) {
    const double *rd = c + nd, *ph = c + 2 * nd, *crd = c + 3 * nd, *cph = c + 4 * nd, *w0 = c + 5 * nd;
    double ls[GLS_MAXD], ms[GLS_MAXD], qs[GLS_MAXD], vms[GLS_MAXD];
    double fsum, gsum, hsum;
    const unsigned int full = nd >= 32 ? 0xffffffffu : ((1u << nd) - 1u);
    double s0;
    if (mask == full) {  // rate 0, every difference usable: the fixed weights
        s0 = 0.0;
        for (int j = 0; j < nd; ++j) s0 = r_add(s0, r_mul(d[j], w0[j]));
    } else {
        s0 = gls_sweep(d, mask, nd, 0.0, rn2, q2, c, false, &fsum, &gsum, &hsum, ls, ms, qs, vms);
    }
    double rate = s0 > 0.0 ? s0 : 0.0;
    const double s1 = gls_sweep(d, mask, nd, rate, rn2, q2, c, false, &fsum, &gsum, &hsum, ls, ms, qs, vms);
    rate = s1 > 0.0 ? s1 : 0.0;
    fsum = gsum = hsum = 0.0;
    GlsFit out;
    out.slope = gls_sweep(d, mask, nd, rate, rn2, q2, c, true, &fsum, &gsum, &hsum, ls, ms, qs, vms);

    // backward sweep: w = L^-T q (kept in qs), h = w / F; h' C h in read and Poisson parts
    for (int j = nd - 2; j >= 0; --j) qs[j] = r_sub(qs[j], r_mul(ls[j + 1], qs[j + 1]));
    double var_r = 0.0, var_p = 0.0, var_q = 0.0, h_prev = 0.0;
    for (int j = 0; j < nd; ++j) {
        const double h = r_div(qs[j], fsum);
        const double hsq = r_mul(h, h);
        if (j == 0) {
            var_r = r_mul(hsq, rd[0]);
            var_p = r_mul(hsq, ph[0]);
            var_q = r_add(hsq, hsq);
        } else {
            const double hh = r_mul(2.0, r_mul(h_prev, h));
            var_r = r_add(r_add(var_r, r_mul(hsq, rd[j])), r_mul(hh, crd[j]));
            var_p = r_add(r_add(var_p, r_mul(hsq, ph[j])), r_mul(hh, cph[j]));
            var_q = r_sub(r_add(var_q, r_add(hsq, hsq)), hh);
        }
        h_prev = h;
    }
    out.var_r = r_add(r_mul(var_r, rn2), r_mul(var_q, q2));
    out.var_p = r_mul(var_p, out.slope > 0.0 ? out.slope : 0.0);
    // likelihood-ratio statistics of a step in one difference or a pair (gls.py ``_fit``):
    // C^-1 d by the backward sweep of v/m (into vms), the diagonal of C^-1 (into ms) and its
    // first off-diagonal (Z_j-1,j into ls[j], once l_j is no longer needed)
    ms[nd - 1] = r_div(1.0, ms[nd - 1]);
    for (int j = nd - 2; j >= 0; --j) {
        const double l = ls[j + 1], zn = ms[j + 1];
        vms[j] = r_sub(vms[j], r_mul(l, vms[j + 1]));
        ls[j + 1] = -r_mul(l, zn);
        ms[j] = r_add(r_div(1.0, ms[j]), r_mul(r_mul(l, l), zn));
    }
    for (int j = 0; j < nd; ++j) {
        const double rvar = r_sub(ms[j], r_div(r_mul(qs[j], qs[j]), fsum));
        const double ce = r_sub(vms[j], r_mul(out.slope, qs[j]));
        resid[j] = (gls_bit(mask, j) && rvar > 0.0) ? r_div(ce, __dsqrt_rn(rvar)) : 0.0;
    }
    for (int j = 0; j + 1 < nd; ++j) {
        const double w2 = r_add(qs[j], qs[j + 1]);
        const double pvar = r_sub(r_add(r_add(ms[j], ms[j + 1]), r_mul(2.0, ls[j + 1])), r_div(r_mul(w2, w2), fsum));
        const bool ok = gls_bit(mask, j) && gls_bit(mask, j + 1) && gls_bit(multi, j + 1) && pvar > 0.0;
        const double ce0 = r_sub(vms[j], r_mul(out.slope, qs[j]));
        const double ce1 = r_sub(vms[j + 1], r_mul(out.slope, qs[j + 1]));
        pres[j] = ok ? r_div(r_add(ce0, ce1), __dsqrt_rn(pvar)) : -1.7976931348623157e308;
    }
    out.chisq = r_sub(hsum, r_mul(out.slope, gsum));
    return out;
}

__device__ __forceinline__ bool gls_finite(double x) { return fabs(x) <= 1.7976931348623157e308; }

// Whether the last usable resultant (difference jl ends at it) reached full well (gls.py
// ``_saturated_last``): with a known level (finite headroom, e-), the ramp's prediction of
// its last read comes within `margin` standard deviations of the level; else the last
// difference's step statistic rl is below -shortfall (testable pixels only).
__device__ __forceinline__ bool gls_saturated_last(const GlsFit& fit, double rl, bool testable, bool known,
                                                   double headroom,
                                                   double rn2, double q2, const double* c, int nd, int jl,
                                                   double margin, double shortfall) {
    if (!known) return testable && rl < r_sub(0.0, shortfall);
    const double *rise = c + 6 * nd, *pvar = c + 7 * nd, *invn = c + 8 * nd;
    const double s = fit.slope > 0.0 ? fit.slope : 0.0;
    const double var = r_add(r_add(r_add(r_mul(rn2, invn[jl]), q2), r_mul(s, pvar[jl])),
                             r_mul(r_add(fit.var_r, fit.var_p), r_mul(rise[jl], rise[jl])));
    const double reach = r_add(r_mul(s, rise[jl]), r_mul(margin, __dsqrt_rn(var)));
    return headroom <= reach;
}

extern "C" __global__ void ramp_fit_gls(const float* data, unsigned char* groupdq, const unsigned int* pixeldq,
                                       const float* readnoise, const float* gain, const float* sat_level,
                                       int has_level, const double* consts, unsigned int multi, int use_jump,
                                       double threshold, double shortfall, double margin, double qvar,
                                       int nres, int npix, float* slope, float* err, float* var_poisson,
                                       float* var_rnoise, float* chisq, unsigned int* dq) {
    const long long p = gc_thread_index();
    if (p >= npix) return;
    const double g = (double)gain[p];
    const double nan = (double)ramp_nanf(0.0f * gain[p]);
    if (nres < 1 || nres > RAMP_MAX_RESULTANTS) {  // outside the launch contract
        slope[p] = err[p] = var_poisson[p] = var_rnoise[p] = chisq[p] = (float)nan;
        dq[p] = pixeldq[p] | PIX_DO_NOT_USE;
        return;
    }
    const int nd = nres - 1;
    const double rn = (double)readnoise[p];
    const bool ok = g > 0.0 && gls_finite(g) && rn > 0.0 && gls_finite(rn);

    // flags: a resultant with any flag but JUMP_DET is unusable; JUMP_DET on k cuts the
    // difference into k, and the one out of k too when k has several reads
    unsigned char flags[RAMP_MAX_RESULTANTS];
    unsigned int bad = 0u, jump = 0u;
    for (int k = 0; k < nres; ++k) {
        flags[k] = groupdq[gc_at(k, npix, p)];
        if ((flags[k] & (unsigned char)~GRP_JUMP_DET) != 0u) bad |= 1u << k;
        if ((flags[k] & GRP_JUMP_DET) != 0u) jump |= 1u << k;
    }
    unsigned int mask = 0u;
    for (int j = 0; j < nd; ++j) {
        bool use = !gls_bit(bad, j) && !gls_bit(bad, j + 1) && !gls_bit(jump, j + 1);
        if (gls_bit(multi, j) && gls_bit(jump, j)) use = false;
        if (use && ok) mask |= 1u << j;
    }
    int last = -1;
    for (int k = nres - 1; k >= 0; --k) {
        if (!gls_bit(bad, k)) {
            last = k;
            break;
        }
    }

    GlsFit fit = {nan, nan, nan, nan};
    unsigned int jumps = 0u;
    bool short_found = false;
    if (nd > 0) {
        double d[GLS_MAXD], resid[GLS_MAXD], pres[GLS_MAXD];
        double prev = r_mul((double)data[gc_at(0, npix, p)], g);
        for (int j = 0; j < nd; ++j) {
            const double x = r_mul((double)data[gc_at(j + 1, npix, p)], g);
            d[j] = r_sub(x, prev);
            prev = x;
        }
        const double rn_e = r_mul(rn, g);
        const double rn2 = r_mul(rn_e, rn_e);
        const double q2 = r_mul(qvar, r_mul(g, g));
        const double x_last = r_mul((double)data[gc_at(last >= 0 ? last : 0, npix, p)], g);
        const double headroom = has_level ? r_sub(r_mul((double)sat_level[p], g), x_last) : 0.0;
        const bool known = has_level && gls_finite(headroom);
        fit = gls_fit(d, mask, nd, rn2, q2, consts, multi, resid, pres);
        const int jl = last - 1;
        for (int it = 0; it < nd; ++it) {
            const bool testable = __popc(mask) >= 3;
            double rb = -1.7976931348623157e308;  // below every residual that can win
            int jb = 0;
            bool is_pair = false;
            for (int j = 0; j < nd; ++j) {
                if (gls_bit(mask, j) && resid[j] > rb) {
                    rb = resid[j];
                    jb = j;
                }
            }
            for (int j = 0; j + 1 < nd; ++j) {  // a pair wins only when strictly larger
                if (pres[j] > rb) {
                    rb = pres[j];
                    jb = j;
                    is_pair = true;
                }
            }
            const bool outlier = testable && rb > threshold;
            const int jlc = jl >= 0 ? jl : 0;
            const double rl = resid[jlc];
            const bool is_short = jl >= 0 && !short_found && gls_bit(mask, jlc) &&
                                  gls_saturated_last(fit, rl, testable, known, headroom, rn2, q2, consts, nd, jlc, margin,
                                                     shortfall);
            const bool take_short = is_short && !(outlier && rb > r_sub(0.0, rl));
            const bool take_jump = use_jump && outlier && !take_short;
            if (take_jump) {
                mask &= ~(1u << jb);
                if (is_pair) mask &= ~(1u << (jb + 1));
                jumps |= 1u << jb;
            } else if (take_short) {
                mask &= ~(1u << jlc);
                short_found = true;
            } else {
                break;
            }
            fit = gls_fit(d, mask, nd, rn2, q2, consts, multi, resid, pres);
        }
    }

    const double add = ok ? 0.0 : nan;
    const double g2 = r_mul(g, g);
    const double s = r_add(r_div(fit.slope, g), add);
    const double vr = r_add(r_div(fit.var_r, g2), add);
    const double vp = r_add(r_div(fit.var_p, g2), add);
    const double e = __dsqrt_rn(r_add(vp, vr));
    slope[p] = (float)s;
    err[p] = (float)e;
    var_poisson[p] = (float)vp;
    var_rnoise[p] = (float)vr;
    chisq[p] = (float)r_add(fit.chisq, add);

    for (int j = 0; j < nd; ++j) {
        if (gls_bit(jumps, j)) {
            flags[j + 1] |= GRP_JUMP_DET;
            groupdq[gc_at(j + 1, npix, p)] = flags[j + 1];
        }
    }
    if (short_found) {
        flags[last] |= GRP_SATURATED;
        groupdq[gc_at(last, npix, p)] = flags[last];
    }
    unsigned int out = ramp_compress_dq(flags, nres, pixeldq[p], false);
    if (!gls_finite(s) || !(e > 0.0) || mask == 0u) out |= PIX_DO_NOT_USE;
    if (g < 0.0 || !gls_finite(g)) out |= PIX_NO_GAIN_VALUE;
    dq[p] = out;
}
