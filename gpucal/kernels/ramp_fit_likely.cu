// ramp_fit_likely.cu -- Brandt (2024) maximum-likelihood ramp fit with the integrated
// jump search ("likely"), romancal 1.1.0 / stcal 1.20.0 (spec algorithms.md 7.1).
//
// Thread mapping: one thread per pixel, p = blockIdx.x * blockDim.x + threadIdx.x; threads
//   with p >= npix return at once.  Launch a 1-D grid of ceil(npix / block) blocks (any
//   block size; 128 is a good start).  Pure per-thread: no shared memory, barriers or warp
//   intrinsics.
// Layouts (pixel index fastest, K = nres resultants, n = K - 1 differences):
//   data     (K, npix) float32 DN                 in
//   groupdq  (K, npix) uint8 GroupFlag            in/out: JUMP_DET is OR-ed onto the later
//                                                 resultant of every dropped difference
//   pixeldq, readnoise (DN, one read), gain (e-/DN): (npix,) uint32 / float32 / float32
//   delta_t, alpha_ph, alpha_rn: (n,) float64; beta_ph, beta_rn, two_omit_ok: (n-1,) float64
//     -- the read-pattern constants of cpu_fallback.ramp_fit.likely.pattern_constants,
//     computed on the host by that same function so that they agree to the bit.
//   thresh_one, thresh_two: chi-square improvements needed to drop one difference / an
//     adjacent pair (likely.drop_thresholds: 20.25 and the chi2(2) quantile of 4.5 sigma).
//   slope, err, var_poisson, var_rnoise, chisq: (npix,) float32 out (DN/s, (DN/s)^2)
//   dq: (npix,) uint32 out (may alias pixeldq).
// Launch contract: 4 <= nres <= RAMP_MAX_RESULTANTS (the host checks; a thread given
//   another nres writes NaN results and DO_NOT_USE and leaves groupdq alone).
//
// Numerics: every step is the scalar image of the vectorised NumPy twin
// (cpu_fallback/ramp_fit/likely.py), in float64 and in the same operation order, with no
// FMA contraction (ramp_common.cuh explains why): the omit-fits of ramps with two or three
// usable differences are singular and stcal's drop decisions there are set by rounding.
// The only differences left are libm's: pow() in the determinant rescaling.
// Resources (ptxas, sm_80 and sm_90): 96 registers, no spills, 0 barriers, a 3088-byte
// stack frame -- the per-thread float64 arrays sized by RAMP_MAX_RESULTANTS, indexed at run
// time, so they live in local memory (L1/L2-cached) whatever the register budget.
#include "ramp_common.cuh"

#define LK_MAXN (RAMP_MAX_RESULTANTS - 1)

// Read-pattern constants (pointers into global memory).
struct LkPattern {
    const double* alpha_ph;
    const double* alpha_rn;
    const double* beta_ph;
    const double* beta_rn;
};

// One GLS fit of the usable differences, with what the omit-fits reuse (likely._Solved).
struct LkFit {
    double alpha[LK_MAXN];     // diagonal / scale
    double beta[LK_MAXN];      // off-diagonal / scale, couplings to unusable cut (n-1)
    double theta[LK_MAXN + 1]; // leading principal minors
    double phi[LK_MAXN + 1];   // trailing principal minors
    double work[LK_MAXN];      // big_phi, later big_phi_d and then S^-1 d
    double btd[LK_MAXN + 1];   // big_theta_d
    double s1[LK_MAXN];        // S^-1 1, zero where unusable
    double big_a, big_b, big_c, scale, rate, chisq;
};

__device__ __forceinline__ double lk_u(unsigned int u, int i) { return ((u >> i) & 1u) ? 1.0 : 0.0; }

__device__ __forceinline__ int lk_count(unsigned int u, int n) {
    int c = 0;
    for (int i = 0; i < n; ++i) c += (u >> i) & 1u;
    return c;
}

// s_i / det S: -1/theta_n for even i, +1/theta_n for odd i (likely._solve ``sgn_det``).
__device__ __forceinline__ double lk_sgn(double inv_det, int i) { return (i % 2 == 0) ? -inv_det : inv_det; }

// likely._determinant_scale on the unscaled, uncut alpha (n) and beta (n-1).
__device__ double lk_determinant_scale(const double* alpha, const double* beta, int n) {
    double scale = 1.0, prev2 = 1.0, prev1 = alpha[0];
    for (int i = 2; i <= n; ++i) {
        const double b = beta[i - 2];
        double cur = r_sub(r_mul(r_div(alpha[i - 1], scale), prev1),
                           r_mul(r_div(r_mul(b, b), r_mul(scale, scale)), prev2));
        if (i % 10 == 0 || i == n) {
            const double f = pow(cur, r_div(1.0, (double)i));
            scale = r_mul(scale, f);
            const double tmp = r_div(cur, f);
            prev1 = r_div(prev1, tmp);
            prev2 = r_div(prev2, r_div(tmp, f));
            cur = 1.0;
        }
        prev2 = prev1;
        prev1 = cur;
    }
    return scale;
}

// likely._solve: GLS fit of d over the usable mask u with covariance rate/gain ``rog``.
__device__ void lk_solve(const double* d, unsigned int u, double rog, double rn2, const LkPattern& pat, int n,
                         LkFit& f) {
    for (int i = 0; i < n; ++i) f.alpha[i] = r_add(r_mul(rog, pat.alpha_ph[i]), r_mul(rn2, pat.alpha_rn[i]));
    for (int i = 0; i < n - 1; ++i) f.beta[i] = r_add(r_mul(rog, pat.beta_ph[i]), r_mul(rn2, pat.beta_rn[i]));
    const double scale = lk_determinant_scale(f.alpha, f.beta, n);
    for (int i = 0; i < n; ++i) f.alpha[i] = r_div(f.alpha[i], scale);
    for (int i = 0; i < n - 1; ++i) f.beta[i] = r_mul(r_mul(r_div(f.beta[i], scale), lk_u(u, i + 1)), lk_u(u, i));

    // leading (theta) and trailing (phi) principal minors
    double* theta = f.theta;
    double* phi = f.phi;
    const double* beta = f.beta;
    theta[0] = 1.0;
    theta[1] = f.alpha[0];
    for (int i = 2; i <= n; ++i)
        theta[i] = r_sub(r_mul(f.alpha[i - 1], theta[i - 1]), r_mul(r_mul(beta[i - 2], beta[i - 2]), theta[i - 2]));
    phi[n] = 1.0;
    phi[n - 1] = f.alpha[n - 1];
    for (int i = n - 2; i >= 0; --i)
        phi[i] = r_sub(r_mul(f.alpha[i], phi[i + 1]), r_mul(r_mul(beta[i], beta[i]), phi[i + 2]));

    // big_phi (signed partial sums, backward)
    double* big_phi = f.work;
    big_phi[n - 1] = 0.0;
    for (int i = n - 2; i >= 0; --i) {
        const double x = r_mul(big_phi[i + 1], beta[i]);
        const double t = r_mul(beta[i], phi[i + 2]);
        big_phi[i] = (i % 2 == 0) ? r_add(x, t) : r_sub(x, t);
    }

    // big_theta (running), big_theta_d and S^-1 1
    const double inv_det = r_div(1.0, theta[n]);
    double big_theta = -1.0;
    f.btd[0] = 0.0;
    f.btd[1] = -r_mul(d[0], lk_u(u, 0));
    for (int i = 0; i < n; ++i) {
        if (i > 0) {
            const double dm = r_mul(d[i], lk_u(u, i));
            big_theta = r_mul(big_theta, beta[i - 1]);
            double btd = r_mul(beta[i - 1], f.btd[i]);
            const double tmp = r_mul(dm, theta[i]);
            if (i % 2 == 0) {
                big_theta = r_sub(big_theta, theta[i]);
                btd = r_sub(btd, tmp);
            } else {
                big_theta = r_add(big_theta, theta[i]);
                btd = r_add(btd, tmp);
            }
            f.btd[i + 1] = btd;
        }
        const double s = r_add(r_mul(phi[i + 1], big_theta), r_mul(theta[i], big_phi[i]));
        f.s1[i] = r_mul(r_mul(s, lk_sgn(inv_det, i)), lk_u(u, i));
    }

    // A, B, C as sequential sums in difference order (likely._seq_sum)
    double sum1 = 0.0, sum2 = 0.0, big_b = 0.0, big_c = 0.0;
    for (int i = 0; i < n; ++i) {
        const double dm = r_mul(d[i], lk_u(u, i));
        double w = r_div(dm, theta[n]);
        if (i % 2 == 0) w = -w;
        if (i > 0) w = r_mul(w, beta[i - 1]);
        w = r_mul(r_mul(w, phi[i + 1]), f.btd[i]);
        const double w2 = r_div(r_mul(r_mul(r_mul(dm, dm), theta[i]), phi[i + 1]), theta[n]);
        const double wb = r_mul(dm, f.s1[i]);
        if (i == 0) {
            sum1 = w;
            sum2 = w2;
            big_b = wb;
            big_c = f.s1[0];
        } else {
            sum1 = r_add(sum1, w);
            sum2 = r_add(sum2, w2);
            big_b = r_add(big_b, wb);
            big_c = r_add(big_c, f.s1[i]);
        }
    }
    f.big_a = r_add(r_mul(2.0, sum1), sum2);
    f.big_b = big_b;
    f.big_c = big_c;
    f.scale = scale;
    f.rate = r_mul(big_b, r_div(1.0, big_c));
    f.chisq = r_div(r_sub(f.big_a, r_div(r_mul(big_b, big_b), big_c)), scale);
}

// (C^-1)_ii of the omit-fits, zero where unusable (likely._omit_fits ``cinv_diag``).
__device__ __forceinline__ double lk_cinv_diag(const LkFit& f, unsigned int u, int i, int n) {
    return r_mul(r_div(r_mul(f.theta[i], f.phi[i + 1]), f.theta[n]), lk_u(u, i));
}

// likely._omit_fits for one pixel: rate and chi-square with difference i omitted (a1, c1;
// n) and with differences i, i+1 omitted (a2, c2; n-1).  Overwrites f.work with S^-1 d.
__device__ void lk_omit_fits(const double* d, unsigned int u, int n, LkFit& f, double* a1, double* c1, double* a2,
                             double* c2) {
    const double* theta = f.theta;
    const double* phi = f.phi;
    const double* beta = f.beta;
    const double* s1 = f.s1;
    double* sd = f.work;
    const double big_a = f.big_a, big_b = f.big_b, big_c = f.big_c, scale = f.scale;

    // big_phi_d backward, then S^-1 d in place
    sd[n - 1] = 0.0;
    for (int i = n - 2; i >= 0; --i) {
        const double dp = r_mul(r_mul(d[i + 1], lk_u(u, i + 1)), phi[i + 2]);
        sd[i] = r_mul((i % 2 == 0) ? r_add(sd[i + 1], dp) : r_sub(sd[i + 1], dp), beta[i]);
    }
    const double inv_det = r_div(1.0, theta[n]);
    for (int i = 0; i < n; ++i)
        sd[i] = r_mul(lk_sgn(inv_det, i), r_add(r_mul(phi[i + 1], f.btd[i + 1]), r_mul(theta[i], sd[i])));

    // one extra free offset on difference i (paper II 3.1)
    for (int i = 0; i < n; ++i) {
        if (!((u >> i) & 1u)) {  // omitting an unusable difference changes nothing
            a1[i] = f.rate;
            c1[i] = f.chisq;
            continue;
        }
        const double cd = lk_cinv_diag(f, u, i, n);
        const double a =
            r_div(r_sub(r_mul(cd, big_b), r_mul(sd[i], s1[i])), r_sub(r_mul(big_c, cd), r_mul(s1[i], s1[i])));
        const double b = r_div(r_sub(sd[i], r_mul(a, s1[i])), cd);
        double chi = r_add(big_a, r_mul(r_mul(a, a), big_c));
        chi = r_sub(chi, r_mul(r_mul(2.0, a), big_b));
        chi = r_add(chi, r_mul(r_mul(b, b), cd));
        chi = r_sub(chi, r_mul(r_mul(2.0, b), sd[i]));
        chi = r_add(chi, r_mul(r_mul(r_mul(2.0, a), b), s1[i]));
        a1[i] = a;
        c1[i] = r_div(chi, scale);
    }

    // free offsets on differences i and i+1 (paper II 3.2)
    for (int i = 0; i < n - 1; ++i) {
        if (!((u >> i) & 1u)) {  // the pair is the one-omit of the other member
            a2[i] = a1[i + 1];
            c2[i] = c1[i + 1];
            continue;
        }
        if (!((u >> (i + 1)) & 1u)) {
            a2[i] = a1[i];
            c2[i] = c1[i];
            continue;
        }
        const double lo = s1[i], hi = s1[i + 1];
        const double cdi = lk_cinv_diag(f, u, i, n), cdj = lk_cinv_diag(f, u, i + 1, n);
        const double coff = r_div(r_mul(r_mul(-beta[i], theta[i]), phi[i + 2]), theta[n]);
        const double cpj = r_sub(r_mul(lo, lo), r_mul(big_c, cdi));
        const double cjck = r_sub(r_mul(lo, hi), r_mul(big_c, coff));
        const double bcpj = r_sub(r_mul(big_b, lo), r_mul(sd[i], big_c));
        double c = r_sub(r_div(bcpj, cpj), r_div(r_sub(r_mul(big_b, hi), r_mul(sd[i + 1], big_c)), cjck));
        c = r_div(c, r_sub(r_div(cjck, cpj), r_div(r_sub(r_mul(hi, hi), r_mul(big_c, cdj)), cjck)));
        const double b = r_div(r_sub(bcpj, r_mul(c, cjck)), cpj);
        const double a = r_div(r_sub(r_sub(big_b, r_mul(b, lo)), r_mul(c, hi)), big_c);
        double chi = r_add(r_add(r_add(big_a, r_mul(r_mul(a, a), big_c)), r_mul(r_mul(b, b), cdi)),
                           r_mul(r_mul(c, c), cdj));
        chi = r_sub(chi, r_add(r_add(r_mul(r_mul(2.0, a), big_b), r_mul(r_mul(2.0, b), sd[i])),
                               r_mul(r_mul(2.0, c), sd[i + 1])));
        chi = r_add(chi, r_add(r_add(r_mul(r_mul(r_mul(2.0, a), b), lo), r_mul(r_mul(r_mul(2.0, a), c), hi)),
                               r_mul(r_mul(r_mul(2.0, b), c), coff)));
        a2[i] = a;
        c2[i] = r_div(chi, scale);
    }
}

// np.amax: the largest value, NaN if any value is NaN.
__device__ __forceinline__ double lk_amax_step(double m, double x) {
    if (m != m) return m;
    return (x != x || x > m) ? x : m;
}

extern "C" __global__ void ramp_fit_likely(const float* data, unsigned char* groupdq, const unsigned int* pixeldq,
                                          const float* readnoise, const float* gain, const double* delta_t,
                                          const double* alpha_ph, const double* alpha_rn, const double* beta_ph,
                                          const double* beta_rn, const double* two_omit_ok, double thresh_one,
                                          double thresh_two, int nres, int npix, float* slope, float* err,
                                          float* var_poisson, float* var_rnoise, float* chisq, unsigned int* dq) {
    const long long p = gc_thread_index();
    if (p >= npix) return;
    if (nres < 4 || nres > RAMP_MAX_RESULTANTS) {  // outside the launch contract
        const float nan = ramp_nanf(0.0f * readnoise[p]);
        slope[p] = err[p] = var_poisson[p] = var_rnoise[p] = chisq[p] = nan;
        dq[p] = pixeldq[p] | PIX_DO_NOT_USE;
        return;
    }
    const int n = nres - 1;
    const LkPattern pat = {alpha_ph, alpha_rn, beta_ph, beta_rn};

    unsigned char flags[RAMP_MAX_RESULTANTS];
    double d[LK_MAXN];
    float prev = data[p];
    flags[0] = groupdq[p];
    unsigned int u0 = 0u;
    for (int i = 0; i < n; ++i) {
        const float cur = data[gc_at(i + 1, npix, p)];
        flags[i + 1] = groupdq[gc_at(i + 1, npix, p)];
        d[i] = r_div((double)r_subf(cur, prev), delta_t[i]);
        prev = cur;
        if (flags[i] == 0 && flags[i + 1] == 0) u0 |= 1u << i;
    }
    // romancal hands stcal sqrt(2) x the read noise and stcal divides it back out
    const double sqrt2 = 1.4142135623730951;
    const double rn = r_div(r_mul((double)readnoise[p], sqrt2), sqrt2);
    const double rn2 = r_mul(rn, rn);
    const double g = (double)gain[p];

    // covariance rate of the whole search: median of all differences, clipped at 0
    double median;
    {
        double srt[LK_MAXN];
        bool has_nan = false;
        for (int i = 0; i < n; ++i) {
            const double x = d[i];
            has_nan = has_nan || x != x;
            int j = i;
            while (j > 0 && srt[j - 1] > x) {
                srt[j] = srt[j - 1];
                --j;
            }
            srt[j] = x;
        }
        const int mid = n / 2;
        median = (n % 2) ? srt[mid] : r_div(r_add(srt[mid - 1], srt[mid]), 2.0);
        if (has_nan) {  // np.median: NaN if any difference is NaN
            for (int i = 0; i < n; ++i)
                if (d[i] != d[i]) median = d[i];
        }
        median = r_mul(median, median > 0.0 ? 1.0 : 0.0);
    }
    const double rog0 = r_div(median, g);

    LkFit f;
    double a1[LK_MAXN], c1[LK_MAXN], a2[LK_MAXN], c2[LK_MAXN];
    unsigned int u = u0;
    double rate = 0.0;
    for (int npass = 0; npass < n; ++npass) {
        lk_solve(d, u, rog0, rn2, pat, n, f);
        if (npass == 0) rate = f.rate;
        // only ramps whose omit-fits could drop something (likely._candidates)
        const int nus = lk_count(u, n);
        const double margin = r_add(r_mul(1e-6, fabs(r_div(f.big_a, f.scale))), 1e-6);
        if (nus == 0 || (nus > 3 && r_add(f.chisq, margin) < thresh_one)) break;
        lk_omit_fits(d, u, n, f, a1, c1, a2, c2);

        double best_one = r_sub(f.chisq, c1[0]);
        for (int i = 1; i < n; ++i) best_one = lk_amax_step(best_one, r_sub(f.chisq, c1[i]));
        double best_two = r_mul(r_sub(f.chisq, c2[0]), two_omit_ok[0]);
        for (int i = 1; i < n - 1; ++i) best_two = lk_amax_step(best_two, r_mul(r_sub(f.chisq, c2[i]), two_omit_ok[i]));
        const bool one_better = r_sub(best_one, thresh_one) > r_sub(best_two, thresh_two);
        double best = r_mul(r_mul(best_one, best_one > thresh_one ? 1.0 : 0.0), one_better ? 1.0 : 0.0);
        best = r_add(best, r_mul(r_mul(best_two, best_two > thresh_two ? 1.0 : 0.0), one_better ? 0.0 : 1.0));
        const bool valid = !(best == 0.0);  // NumPy sets 0 to NaN: nothing equals it

        unsigned int dropped = 0u;
        double new_rate = 0.0;
        if (one_better) {
            for (int i = 0; i < n; ++i) {
                const bool hit = valid && r_sub(f.chisq, c1[i]) == best;
                if (hit) dropped |= 1u << i;
                const double x = r_mul(a1[i], hit ? 1.0 : 0.0);
                new_rate = (i == 0) ? x : r_add(new_rate, x);
            }
        } else {
            for (int i = 0; i < n - 1; ++i) {
                const bool hit = valid && r_sub(f.chisq, c2[i]) == best;
                if (hit) dropped |= 3u << i;
                const double x = r_mul(a2[i], hit ? 1.0 : 0.0);
                new_rate = (i == 0) ? x : r_add(new_rate, x);
            }
        }
        if (dropped == 0u) break;
        rate = r_add(r_mul(rate, 0.0), new_rate);
        u &= ~dropped;
        if (lk_count(u, n) <= 3) break;
    }

    // final fit with the last accepted rate, clipped at 0
    const double rate_c = r_add(r_mul(rate, rate > 0.0 ? 1.0 : 0.0), 0.0);
    const double rog = r_div(rate_c, g);
    lk_solve(d, u, rog, rn2, pat, n, f);
    double vp1 = 0.0, vp2 = 0.0, vr1 = 0.0, vr2 = 0.0, w_prev = 0.0;
    for (int i = 0; i < n; ++i) {
        const double w = r_div(f.s1[i], f.big_c);
        const double w2 = r_mul(w, w);
        const double tp = r_mul(w2, r_mul(rog, alpha_ph[i]));
        const double tr = r_mul(w2, r_mul(rn2, alpha_rn[i]));
        vp1 = (i == 0) ? tp : r_add(vp1, tp);
        vr1 = (i == 0) ? tr : r_add(vr1, tr);
        if (i > 0) {
            const double ww = r_mul(w, w_prev);
            const double bp = r_mul(ww, r_mul(rog, beta_ph[i - 1]));
            const double br = r_mul(ww, r_mul(rn2, beta_rn[i - 1]));
            vp2 = (i == 1) ? bp : r_add(vp2, bp);
            vr2 = (i == 1) ? br : r_add(vr2, br);
        }
        w_prev = w;
    }
    slope[p] = (float)f.rate;
    err[p] = (float)__dsqrt_rn(r_div(f.scale, f.big_c));
    var_poisson[p] = (float)r_add(vp1, r_mul(2.0, vp2));
    var_rnoise[p] = (float)r_add(vr1, r_mul(2.0, vr2));
    chisq[p] = (float)f.chisq;

    // JUMP_DET on the later resultant of every dropped difference, then the pixel DQ
    const unsigned int jumps = u0 & ~u;
    for (int i = 0; i < n; ++i) {
        if ((jumps >> i) & 1u) {
            flags[i + 1] |= GRP_JUMP_DET;
            groupdq[gc_at(i + 1, npix, p)] = flags[i + 1];
        }
    }
    unsigned int out = ramp_compress_dq(flags, nres, pixeldq[p], false);
    int good = 0;
    for (int k = 0; k < nres; ++k) good += (flags[k] & (GRP_SATURATED | GRP_DO_NOT_USE)) == 0u;
    if (good <= 1) out |= PIX_DO_NOT_USE;  // romancal: at most one usable resultant
    dq[p] = out;
}
