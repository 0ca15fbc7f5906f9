"""gpucal's own ramp fit (``gls``): generalised least squares with a refitted covariance rate.

Model
-----
For one pixel, resultants ``x_k`` (electrons: DN times the gain), ``N_k`` reads each, mean
read times ``tbar_k`` and variance-weighted times ``tau_k`` (:mod:`gpucal.readpattern`),
read noise ``sigma`` (e-, one read) and count rate ``s`` (e-/s), the differences
``d_j = x_{j+1} - x_j`` (j = 0..n-1, n = K-1) satisfy ``d = s dt + noise`` with
``dt_j = tbar_{j+1} - tbar_j`` and a tridiagonal covariance (Brandt 2024, paper I, §3;
Casertano 2022)::

    C_jj      = sigma**2 (1/N_j + 1/N_{j+1}) + s (tau_j + tau_{j+1} - 2 tbar_j)
    C_j,j+1   = -sigma**2 / N_{j+1}          + s (tbar_{j+1} - tau_{j+1})

(read noise of the shared resultant, and the Poisson covariance of reads two resultants
share).  The intercept is gone with the differences.  Omitting a difference from ``d`` and
its row and column from ``C`` is the exact likelihood of the rest: this is how a ramp is
split into segments at jumps, saturation and flagged resultants, with one common slope.

The generalised least-squares slope is ``s_hat = (dt' C^-1 d) / (dt' C^-1 dt)`` with
variance ``1 / (dt' C^-1 dt)``.  Both products come from one forward sweep of the LDL'
factorisation of ``C`` (``l_j = C_j-1,j / m_j-1``, ``m_j = C_jj - l_j C_j-1,j``,
``u = L^-1 dt``, ``v = L^-1 d``: ``F = sum u_j**2/m_j``, ``G = sum u_j v_j/m_j``), O(n) per
pixel; a backward sweep gives the weights ``h = C^-1 dt / F``, which split the variance
exactly into read and Poisson parts (``h' C_rn h`` and ``s h' C_ph h``).  Chi-square is
``d' C^-1 d - G**2/F``.

Unbiased weights
----------------
``C`` depends on the rate.  Taking it from the pixel's own final estimate correlates the
weights with the noise they weigh (Casertano's SNR-switched power, or ``likely``'s rate
guess): Brandt 2024 (paper I, §4) derives that bias.  To first order, the bias of a fit
whose covariance rate is a linear estimate ``c'd`` is proportional to ``C (c - h)``: it
vanishes when the rate in the covariance is itself the optimal estimate.  So the fit runs
three passes: read noise only (``s = 0``: unbiased, nearly optimal when read noise
dominates), then the covariance at that rate, then at the second pass's rate, whose
weights differ from the optimal ones only at second order.  Measured bias (the Monte Carlo
in ``tests/cpu_fallback/test_ramp_fit_gls_montecarlo.py``): below 0.002 sigma from 0.1 to
1000 e-/s.  The rate in the covariance is clipped at 0.

Jumps, saturation and flags
---------------------------
* A resultant with any group flag but JUMP_DET (SATURATED, DO_NOT_USE, ...) removes both
  differences it belongs to.  JUMP_DET on resultant ``k`` (the jump step's mark: the step
  happened between resultants ``k-1`` and ``k``) removes difference ``k-1``, and also ``k``
  when resultant ``k`` has more than one read (the hit may lie between its reads, so part
  of it is in the next difference).
* Search, on pixels with at least three usable differences: for each usable difference
  ``j`` the likelihood-ratio statistic of a step in it,
  ``t_j = (C^-1 e)_j / sqrt((C^-1)_jj - w_j**2 / F)`` with ``e = d - s_hat dt`` and
  ``w = C^-1 dt``: the standardised residual of ``d_j`` against the fit of the *other*
  differences (a hit cannot hide by pulling the slope towards itself, which a late hit in
  a ramp of few long resultants does).  A jump is the largest ``t_j`` above
  ``gls_jump_threshold`` (4.5 sigma, one-sided: a cosmic ray adds charge); JUMP_DET goes
  on resultant ``j+1``.  Around a resultant ``k`` with several reads, a step in the pair
  ``d_k-1 + d_k`` (``u = e_k-1 + e_k``: ``t = u' C^-1 e / sqrt(u' C^-1 u - (u' w)**2 / F)``)
  is tested too: a hit between ``k``'s reads is split over both differences, neither of
  which may stand out alone; a pair strictly above every single difference removes both,
  with JUMP_DET on ``k``.  The diagonal and first off-diagonal of ``C^-1`` come from the
  LDL' factors in one backward sweep.
* Saturation inside the last usable resultant ``L`` (full well reached during its reads,
  its average still below the saturation threshold).  Where the level at which a read
  saturates is known (``saturation_level``: the SATURATION threshold, anchored on the
  pixel's last clean resultant and carried through linearity by the pipeline), ``L`` is
  saturated when the ramp's prediction of its last read, ``x_L + s rise_L``, comes within
  ``SATURATION_MARGIN`` (3) standard deviations of the level (read noise and quantisation
  of ``x_L``, the Poisson charge between its mean time and its last read, the slope's
  error over ``rise_L``).  Elsewhere: ``t_{L-1}`` below ``-SHORTFALL_SIGMA``, the resultant
  falling short of the ramp the others predict.  ``L`` gets SATURATED.  The larger of the
  two (jump, or a saturated ``L`` whose shortfall ``-t_{L-1}`` exceeds the jump's
  statistic) is removed, the pixel refitted (three passes again) and searched again, one
  difference at a time.  Without the jump search, a pixel whose largest positive
  statistic is above the threshold and larger than the shortfall is not tested for it (a
  jump left in the ramp makes the last resultant look short).
* Quantisation: resultants are stored as integers, so each carries 1/12 DN**2
  (``QUANTIZATION_VAR``) beside its read noise: ``2 q`` on the diagonal of ``C``, ``-q``
  beside it, and in ``var_rnoise``.  The first pass's fixed weights (every difference
  usable) leave it out; they only seed the rate.
* ``dq``: pixeldq | JUMP_DET (any resultant) | SATURATED (any resultant, including those
  found short) | DO_NOT_USE (no usable difference, slope not finite, every resultant
  SATURATED/DO_NOT_USE, read noise or gain not positive and finite) | NO_GAIN_VALUE.

Numerics
--------
Float64 from the float32 inputs to the float32 outputs, every operation rounded on its own
(no fused multiply-add) and in the order of ``gpucal/kernels/ramp_fit_gls.cu``, which this
module mirrors bit for bit: only + - * / and sqrt, no libm transcendental, no dependence on
denormals (the GPU contract of the device backend).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from cpu_fallback.ramp_fit._common import check_inputs, compress_dq, pixel_bit, row_blocks
from gpucal.backends.protocol import RampFitParams, RampFitResult
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import ReadTiming

__all__ = ["fit_gls", "pattern_constants", "SHORTFALL_SIGMA", "SATURATION_MARGIN", "QUANTIZATION_VAR",
           "GLS_MAX_RESULTANTS", "BLOCK_PIXELS"]

log = logging.getLogger(__name__)

#: Significance (sigma) below the ramp at which the last usable resultant is taken to have
#: saturated inside its reads, where the saturation level is not known.
SHORTFALL_SIGMA = 5.0
#: Where the saturation level is known: standard deviations of the prediction of the last
#: read within which reaching the level counts as saturated.
SATURATION_MARGIN = 3.0
#: Variance (DN**2) a resultant gains from being stored as an integer (rounded: 1/12).
QUANTIZATION_VAR = 1.0 / 12.0
#: As ``RAMP_MAX_RESULTANTS`` of the kernels: the usable-difference masks are 32-bit words.
GLS_MAX_RESULTANTS = 32
#: Pixels per block: the passes are short loops over differences, so larger blocks than
#: the other fits' keep NumPy's per-call overhead small.
BLOCK_PIXELS = 32768

_F64 = np.float64
_JUMP = np.uint8(GroupFlag.JUMP_DET)
_SAT = np.uint8(GroupFlag.SATURATED)


class GlsPattern(NamedTuple):
    """Read-pattern constants of the fit, float64 (n = K - 1 differences)."""

    dt: np.ndarray  # (n,) s, tbar_{j+1} - tbar_j
    rd: np.ndarray  # (n,) 1/N_j + 1/N_{j+1}
    ph: np.ndarray  # (n,) s, tau_j + tau_{j+1} - 2 tbar_j
    crd: np.ndarray  # (n,) -1/N_{j+1} (coupling of j-1 and j at index j; entry 0 unused, 0)
    cph: np.ndarray  # (n,) s, tbar_j - tau_j (coupling of j-1 and j at index j; entry 0: 0)
    multi: int  # bit k set: resultant k has more than one read
    w0: np.ndarray  # (n,) 1/s, read-noise-only GLS weights when every difference is usable
    rise: np.ndarray  # (n,) s, last read time of resultant j+1 minus its tbar
    pvar: np.ndarray  # (n,) s, Poisson variance / rate of (Q(last read) - mean of its reads), resultant j+1
    invn: np.ndarray  # (n,) 1/N_{j+1}

    def table(self) -> np.ndarray:
        """The (9, n) float64 table the kernel reads (rows dt, rd, ph, crd, cph, w0, rise, pvar, invn)."""
        return np.stack([self.dt, self.rd, self.ph, self.crd, self.cph, self.w0, self.rise, self.pvar, self.invn])


def pattern_constants(timing: ReadTiming) -> GlsPattern:
    """Difference constants of ``timing`` (K resultants, K >= 1), float64.

    The coupling arrays are indexed by the later difference: ``crd[j]``/``cph[j]`` couple
    differences ``j-1`` and ``j`` (they share resultant ``j``), so the kernel and this
    module read one index per step of the sweep.
    """
    n = timing.n_reads.astype(_F64)
    tbar = np.asarray(timing.tbar, _F64)
    tau = np.asarray(timing.tau, _F64)
    nd = max(timing.nresultants - 1, 0)
    crd = np.zeros(nd)
    cph = np.zeros(nd)
    crd[1:] = -1.0 / n[1:-1]
    cph[1:] = tbar[1:-1] - tau[1:-1]
    multi = sum(1 << k for k, r in enumerate(timing.n_reads) if r > 1 and k < GLS_MAX_RESULTANTS)
    dt = tbar[1:] - tbar[:-1]
    rd = 1.0 / n[:-1] + 1.0 / n[1:]
    # read-noise-only covariance (sigma = 1) of all the differences: weights C^-1 dt / F
    cov = np.diag(rd)
    if nd > 1:
        cov[np.arange(1, nd), np.arange(nd - 1)] = crd[1:]
        cov[np.arange(nd - 1), np.arange(1, nd)] = crd[1:]
    w0 = np.linalg.solve(cov, dt) if nd else np.zeros(0)
    w0 = w0 / float(w0 @ dt) if nd else w0
    # the last read of resultant k lies rise_k after its mean time; the charge between the
    # reads makes Q(last) - mean_i Q(t_i) = sum_m dQ_m (m / N) (m = 1..N-1, dQ_m collected
    # between reads m-1 and m), of variance rate * sum_m (t_m - t_m-1) (m / N)**2
    rise = np.zeros(nd)
    pvar = np.zeros(nd)
    for j in range(nd):
        t = np.asarray(timing.read_pattern[j + 1], _F64) * float(timing.frame_time)
        count = t.size
        rise[j] = t[-1] - float(tbar[j + 1])
        pvar[j] = sum((t[m] - t[m - 1]) * (m / count) ** 2 for m in range(1, count))
    return GlsPattern(
        dt=dt,
        rd=rd,
        ph=tau[:-1] + tau[1:] - 2.0 * tbar[:-1],
        crd=crd,
        cph=cph,
        multi=multi,
        w0=w0,
        rise=rise,
        pvar=pvar,
        invn=1.0 / n[1:],
    )


def initial_usable(gdq: np.ndarray, multi: int) -> tuple[np.ndarray, np.ndarray]:
    """Usable differences and the last usable resultant, from group flags.

    Parameters
    ----------
    gdq : ndarray, shape (K, P), uint8
        Group flags.
    multi : int
        :attr:`GlsPattern.multi`.

    Returns
    -------
    usable : ndarray, shape (K-1, P), bool
    last : ndarray, shape (P,), intp
        Index of the last resultant with no flag but JUMP_DET (-1 if none).
    """
    nres = gdq.shape[0]
    bad = (gdq & ~_JUMP) != 0
    jump = (gdq & _JUMP) != 0
    usable = ~(bad[1:] | bad[:-1]) & ~jump[1:]
    for k in range(nres - 1):
        if (multi >> k) & 1:
            usable[k] &= ~jump[k]  # the hit may lie between resultant k's reads
    good = ~bad
    last = np.where(good.any(axis=0), nres - 1 - np.argmax(good[::-1], axis=0), -1)
    return usable, last


class _Fit(NamedTuple):
    slope: np.ndarray  # (P,) e-/s
    var_r: np.ndarray  # (P,) (e-/s)**2
    var_p: np.ndarray
    chisq: np.ndarray
    resid: np.ndarray  # (n, P) standardised residuals (0 where unusable)
    pair: np.ndarray  # (n-1, P) standardised residuals of d_j + d_j+1 (-inf where not tested)


def _sweep(
    deff: np.ndarray, dteff: np.ndarray, usable: np.ndarray, link: np.ndarray, rate: np.ndarray, rn2: np.ndarray,
    q2: np.ndarray, pat: GlsPattern, final: bool,
) -> tuple[np.ndarray, ...]:
    """One forward LDL' sweep at covariance rate ``rate`` (P,).

    ``deff``/``dteff`` (n, P) are the differences and their time steps, 0 where unusable;
    ``link`` (n, P) marks differences coupled to the previous one (both usable).  An
    unusable difference gets covariance 1 and no coupling, so it adds exactly 0 to every
    sum and the sweep needs no branch (the kernel branches; the values are the same).

    Returns s_hat, F, G, and when ``final``: H (sum v**2/m) and the (n, P) l, m, q and v/m.
    """
    nd, npix = deff.shape
    diag = np.multiply(rn2, pat.rd[:, None])
    diag += q2 + q2
    tmp = np.multiply(rate, pat.ph[:, None])
    diag += tmp
    np.copyto(diag, 1.0, where=~usable)
    off = np.multiply(rn2, pat.crd[:, None])
    off -= q2
    np.multiply(rate, pat.cph[:, None], out=tmp)
    off += tmp
    np.copyto(off, 0.0, where=~link)
    fsum = np.zeros(npix)
    gsum = np.zeros(npix)
    hsum = np.zeros(npix)
    if final:
        ls, ms, us, vs, qs, vms = (np.empty((nd, npix)) for _ in range(6))
    else:  # two rolling rows suffice
        ls, ms, us, vs, qs = (np.empty((2, npix)) for _ in range(5))
    t = np.empty(npix)
    for j in range(nd):
        i, ip = (j, j - 1) if final else (j & 1, (j - 1) & 1)
        lj, mj, uj, vj, q = ls[i], ms[i], us[i], vs[i], qs[i]
        if j == 0:
            lj[:] = 0.0
            mj[:] = diag[0]
            uj[:] = dteff[0]
            vj[:] = deff[0]
        else:
            np.divide(off[j], ms[ip], out=lj)
            np.multiply(lj, off[j], out=t)
            np.subtract(diag[j], t, out=mj)
            np.multiply(lj, us[ip], out=t)
            np.subtract(dteff[j], t, out=uj)
            np.multiply(lj, vs[ip], out=t)
            np.subtract(deff[j], t, out=vj)
        np.divide(uj, mj, out=q)
        np.multiply(uj, q, out=t)
        fsum += t
        np.multiply(vj, q, out=t)
        gsum += t
        if final:
            np.divide(vj, mj, out=vms[j])
            np.multiply(vms[j], vj, out=t)
            hsum += t
    slope = gsum / fsum
    if final:
        return slope, fsum, gsum, hsum, ls, ms, qs, vms
    return (slope,)


def _dot(w: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``sum_j w_j d_j`` over axis 0, accumulated in order (as the kernel)."""
    acc = np.zeros(d.shape[1])
    t = np.empty(d.shape[1])
    for j in range(d.shape[0]):
        np.multiply(d[j], w[j], out=t)
        acc += t
    return acc


def _fit(d: np.ndarray, usable: np.ndarray, rn2: np.ndarray, q2: np.ndarray, pat: GlsPattern,
         multi: np.ndarray) -> _Fit:
    """Three-pass fit of the pixels of a block (the module docstring)."""
    nd, npix = d.shape
    zero = np.zeros(npix)
    deff = np.where(usable, d, 0.0)
    dteff = np.where(usable, pat.dt[:, None], 0.0)
    link = np.zeros_like(usable)
    link[1:] = usable[1:] & usable[:-1]
    # pass 1 (rate 0): fixed weights where every difference is usable, else the sweep
    full = usable.all(axis=0)
    if full.all():
        s0 = _dot(pat.w0, d)
    else:
        s0 = _sweep(deff, dteff, usable, link, zero, rn2, q2, pat, False)[0]
        if full.any():
            s0[full] = _dot(pat.w0, d[:, full])
    rate = np.where(s0 > 0, s0, zero)
    s1 = _sweep(deff, dteff, usable, link, rate, rn2, q2, pat, False)[0]
    rate = np.where(s1 > 0, s1, zero)
    slope, fsum, gsum, hsum, ls, ms, qs, vms = _sweep(deff, dteff, usable, link, rate, rn2, q2, pat, True)
    # backward sweep: w = C^-1 dt = L^-T q, h = w / F; read and Poisson parts of h' C h
    w = np.empty((nd, npix))
    w_next = zero
    for j in range(nd - 1, -1, -1):
        w[j] = qs[j] - ls[j + 1] * w_next if j + 1 < nd else qs[j]
        w_next = w[j]
    h = w / fsum
    hsq = h * h
    prod_r = hsq * pat.rd[:, None]
    prod_p = hsq * pat.ph[:, None]
    hh = 2.0 * (h[:-1] * h[1:])
    cross_r = hh * pat.crd[1:, None]
    cross_p = hh * pat.cph[1:, None]
    # quantisation: h' Q h with Q_jj = 2, Q_j,j+1 = -1
    prod_q = hsq + hsq
    var_r = prod_r[0].copy() if nd else np.zeros(npix)
    var_p = prod_p[0].copy() if nd else np.zeros(npix)
    var_q = prod_q[0].copy() if nd else np.zeros(npix)
    for j in range(1, nd):  # in order, as the kernel accumulates
        var_r += prod_r[j]
        var_r += cross_r[j - 1]
        var_p += prod_p[j]
        var_p += cross_p[j - 1]
        var_q += prod_q[j]
        var_q -= hh[j - 1]
    var_r = var_r * rn2
    var_r += var_q * q2
    var_p = var_p * np.where(slope > 0, slope, zero)
    # jump statistics: the likelihood-ratio test of a step u (a difference, or a pair) is
    # t = u' C^-1 e / sqrt(u' C^-1 u - (u' w)**2 / F), e = d - s_hat dt: the residual of u
    # against the fit *without* it, so a hit cannot hide by pulling the slope.  C^-1 e is
    # C^-1 d - s_hat w (C^-1 d by the backward sweep of v/m); the diagonal zd and first
    # off-diagonal zo of C^-1 come from the LDL' factors backwards:
    # Z_j,j+1 = -l_j+1 Z_j+1,j+1 and Z_jj = 1/m_j + l_j+1**2 Z_j+1,j+1
    b = np.empty((nd, npix))
    zd = np.empty((nd, npix))
    zo = np.zeros((nd, npix))  # zo[j] couples j-1 and j
    b[nd - 1] = vms[nd - 1]
    zd[nd - 1] = 1.0 / ms[nd - 1]
    for j in range(nd - 2, -1, -1):
        b[j] = vms[j] - ls[j + 1] * b[j + 1]
        zo[j + 1] = -(ls[j + 1] * zd[j + 1])
        zd[j] = 1.0 / ms[j] + (ls[j + 1] * ls[j + 1]) * zd[j + 1]
    ce = b - slope * w
    rvar = zd - (w * w) / fsum
    pos = usable & (rvar > 0)
    resid = np.where(pos, ce / np.sqrt(np.where(pos, rvar, 1.0)), 0.0)
    # pairs d_j + d_j+1 around a multi-read resultant j+1 (a hit between its reads is split
    # over both): u = e_j + e_j+1
    if nd > 1:
        w2 = w[:-1] + w[1:]
        pvar = ((zd[:-1] + zd[1:]) + 2.0 * zo[1:]) - (w2 * w2) / fsum
        ok = usable[:-1] & usable[1:] & multi[1:, None] & (pvar > 0)
        pair = np.where(ok, (ce[:-1] + ce[1:]) / np.sqrt(np.where(ok, pvar, 1.0)), -np.inf)
    else:
        pair = np.zeros((0, npix))
    chisq = hsum - slope * gsum
    return _Fit(slope, var_r, var_p, chisq, resid, pair)


def _search(
    d: np.ndarray,
    usable: np.ndarray,
    last: np.ndarray,
    rn2: np.ndarray,
    q2: np.ndarray,
    headroom: np.ndarray,
    pat: GlsPattern,
    use_jump: bool,
    t_jump: float,
) -> tuple[_Fit, np.ndarray, np.ndarray]:
    """Fit, and remove jumps and a saturated last resultant one difference at a time.

    ``headroom`` (P,): the saturation level minus the last usable resultant (e-), +inf
    where unknown.  Returns the final fit, the (n, P) jumps found and the (P,) pixels whose
    last usable resultant was found saturated.
    """
    nd, npix = d.shape
    jumps = np.zeros((nd, npix), bool)
    short = np.zeros(npix, bool)
    jl_all = last - 1
    multi = np.array([(pat.multi >> k) & 1 for k in range(nd)], bool)
    u = usable.copy()
    out = fit = _fit(d, u, rn2, q2, pat, multi)
    active = np.arange(npix)
    while True:
        testable = np.count_nonzero(u, axis=0) >= 3
        r = fit.resid
        cols = np.arange(active.size)
        # the largest residual of a usable difference, then of a pair, NaN skipped (as the
        # kernel); a pair wins only when strictly larger
        r_use = np.where(u, r, -np.inf)
        rs = np.fmax.reduce(r_use, axis=0)
        rp = np.fmax.reduce(fit.pair, axis=0) if nd > 1 else np.full(active.size, -np.inf)
        is_pair = rp > rs
        rb = np.where(is_pair, rp, rs)
        outlier = testable & (rb > t_jump)
        jb = np.zeros(active.size, np.intp)
        for sel, cand in ((outlier & ~is_pair, r_use), (outlier & is_pair, fit.pair)):
            if sel.any():  # first index of the maximum, as the kernel's strict >
                jb[sel] = np.argmax(np.where(np.isnan(cand[:, sel]), -np.inf, cand[:, sel]), axis=0)
        jl = jl_all[active]
        jl_ok = jl >= 0
        jlc = np.where(jl_ok, jl, 0)
        rl = r[jlc, cols]
        is_short = jl_ok & ~short[active] & u[jlc, cols] & _saturated_last(
            fit, rl, testable, headroom[active], rn2[active], q2[active], pat, jlc)
        # a positive outlier larger than the shortfall is a jump (removed when searching,
        # else the pixel is left as it is: the shortfall may be the jump's doing)
        take_short = is_short & ~(outlier & (rb > -rl))
        take_jump = outlier & ~take_short if use_jump else np.zeros(active.size, bool)
        pj, ps = active[take_jump], active[take_short]
        usable[jb[take_jump], pj] = False
        jumps[jb[take_jump], pj] = True
        both = take_jump & is_pair
        usable[jb[both] + 1, active[both]] = False
        usable[jlc[take_short], ps] = False
        short[ps] = True
        active = active[take_jump | take_short]
        if not active.size:
            break
        u = usable[:, active]
        fit = _fit(d[:, active], u, rn2[active], q2[active], pat, multi)
        for name in ("slope", "var_r", "var_p", "chisq"):
            getattr(out, name)[active] = getattr(fit, name)
    return out, jumps, short


def _saturated_last(
    fit: _Fit, rl: np.ndarray, testable: np.ndarray, headroom: np.ndarray, rn2: np.ndarray, q2: np.ndarray,
    pat: GlsPattern, jl: np.ndarray,
) -> np.ndarray:
    """(P,) bool: the last usable resultant (difference ``jl`` ends at it) reached full well.

    Where the level is known (finite ``headroom``): the ramp's prediction of its last read,
    ``s rise`` above its mean, comes within ``SATURATION_MARGIN`` standard deviations of the
    level (read noise and quantisation of the resultant, Poisson charge between its mean
    time and its last read, the slope's own error over ``rise``).  Elsewhere: the last
    difference's step statistic is below ``-SHORTFALL_SIGMA`` (testable pixels).
    """
    s = np.where(fit.slope > 0, fit.slope, 0.0)
    rise = pat.rise[jl]
    var = rn2 * pat.invn[jl]
    var += q2
    var += s * pat.pvar[jl]
    var += (fit.var_r + fit.var_p) * (rise * rise)
    reach = s * rise + SATURATION_MARGIN * np.sqrt(var)
    known = np.isfinite(headroom)
    return np.where(known, headroom <= reach, testable & (rl < -SHORTFALL_SIGMA))


def fit_gls(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    timing: ReadTiming,
    params: RampFitParams,
    saturation_level: np.ndarray | None = None,
    threads: int | None = None,
) -> RampFitResult:
    """Fit every pixel's ramp with gpucal's ``gls`` algorithm (module docstring).

    Parameters
    ----------
    data : ndarray, (K, ny, nx) float32
        Resultants, DN.
    groupdq : ndarray, (K, ny, nx) uint8
        Group flags (not modified).
    pixeldq : ndarray, (ny, nx) uint32
        Pixel flags, passed through into ``dq``.
    readnoise : ndarray, (ny, nx) float32
        Read noise of a single read, DN.
    gain : ndarray, (ny, nx) float32
        Gain, e-/DN.
    timing : ReadTiming
        Read pattern and frame time (1 <= K <= 32).
    params : RampFitParams
        ``use_ramp_jump_detection`` (search for jumps in the fit) and
        ``gls_jump_threshold`` (its threshold, sigma).
    saturation_level : ndarray, (ny, nx) float32, optional
        The level (DN, in the units of ``data``) at which a read saturates: the SATURATION
        threshold carried through refpix and linearity (the backends' ``saturation_headroom``
        and ``linearity_threshold``); +inf or NaN where unknown.  None: unknown everywhere
        (the last resultant is then tested for a shortfall against the ramp instead).
    threads : int, optional
        Worker threads over the row blocks (default ``min(4, os.cpu_count())``); the result
        does not depend on it.

    Returns
    -------
    RampFitResult
        slope (DN/s), err, var_poisson, var_rnoise ((DN/s)**2), chisq, float32: NaN where
        no difference is usable or the gain or read noise is not positive and finite;
        ``dq`` as the module docstring; ``groupdq`` a new array with JUMP_DET on the later
        resultant of every jump found and SATURATED on every resultant found short.
    """
    nres = data.shape[0]
    check_inputs(data, groupdq, pixeldq, readnoise, gain, timing.nresultants)
    if not 1 <= nres <= GLS_MAX_RESULTANTS:
        raise ValueError(f"the gls ramp fit handles 1 to {GLS_MAX_RESULTANTS} resultants, got {nres}")
    _, ny, nx = data.shape
    pat = pattern_constants(timing)
    use_jump = bool(params.use_ramp_jump_detection)
    t_jump = float(params.gls_jump_threshold)
    if saturation_level is not None and np.shape(saturation_level) != (ny, nx):
        raise ValueError(f"saturation_level has shape {np.shape(saturation_level)}, expected {(ny, nx)}")
    outs = [np.empty((ny, nx), np.float32) for _ in range(5)]
    gdq_out = np.empty_like(groupdq, dtype=np.uint8)
    dq = np.empty((ny, nx), np.uint32)
    def block(rows: slice) -> None:
        """Fit the pixels of ``rows`` into the outputs (blocks are independent)."""
        with np.errstate(all="ignore"):  # per thread: NumPy's error state is thread-local
            npix = (rows.stop - rows.start) * nx
            g = np.asarray(gain[rows], dtype=np.float32).reshape(npix).astype(_F64)
            rn = np.asarray(readnoise[rows], dtype=np.float32).reshape(npix).astype(_F64)
            gblk = np.array(groupdq[:, rows], dtype=np.uint8).reshape(nres, npix)
            x = np.asarray(data[:, rows], dtype=np.float32).reshape(nres, npix).astype(_F64) * g
            rn_e = rn * g
            rn2 = rn_e * rn_e
            q2 = QUANTIZATION_VAR * (g * g)
            ok = (g > 0) & (g <= np.finfo(_F64).max) & (rn > 0) & (rn <= np.finfo(_F64).max)
            usable, last = initial_usable(gblk, pat.multi)
            usable &= ok
            lastc = np.where(last >= 0, last, 0)
            cols = np.arange(npix)
            if nres > 1:
                if saturation_level is None:
                    headroom = np.full(npix, np.inf)
                else:
                    level = np.asarray(saturation_level[rows], dtype=np.float32).reshape(npix).astype(_F64)
                    headroom = level * g - x[lastc, cols]
                fit, jumps, short = _search(x[1:] - x[:-1], usable, last, rn2, q2, headroom, pat, use_jump, t_jump)
            else:  # no difference, no slope
                none = np.full(npix, np.nan)
                fit = _Fit(none, none, none, none, np.zeros((0, npix)), np.zeros((0, npix)))
                jumps, short = np.zeros((0, npix), bool), np.zeros(npix, bool)
            g2 = g * g
            nan = np.where(ok, 0.0, np.nan)
            slope = fit.slope / g + nan
            var_r = fit.var_r / g2 + nan
            var_p = fit.var_p / g2 + nan
            err = np.sqrt(var_p + var_r)
            chisq = fit.chisq + nan
            for out, arr in zip(outs, (slope, err, var_p, var_r, chisq), strict=True):
                out[rows] = arr.astype(np.float32).reshape(-1, nx)
            gblk[1:] |= np.where(jumps, _JUMP, np.uint8(0))
            gblk[lastc, cols] |= np.where(short, _SAT, np.uint8(0))
            gdq_out[:, rows] = gblk.reshape(nres, -1, nx)
            bdq = compress_dq(gblk, pixeldq[rows].reshape(npix), saturated_if_all=False)
            bad = ~np.isfinite(slope) | ~(err > 0) | ~usable.any(axis=0)
            bdq |= pixel_bit(bad, PixelFlag.DO_NOT_USE)
            bdq |= pixel_bit((g < 0) | ~np.isfinite(g), PixelFlag.NO_GAIN_VALUE)
            dq[rows] = bdq.reshape(-1, nx)

    blocks = list(row_blocks(ny, nx, BLOCK_PIXELS))
    workers = max(1, min(threads if threads is not None else min(4, os.cpu_count() or 1), len(blocks)))
    # NumPy releases the GIL in its loops: the blocks run in parallel.  One worker runs on a
    # pool thread too: there its temporaries come from the thread's own malloc arena, whose
    # memory the main thread's allocator would hand back to the system after every block
    # (each block frees some 50 MB at once) and fault in again (measured 3x slower)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(block, blocks))
    log.debug("gls: %d pixels with jumps", int(np.count_nonzero(dq & PixelFlag.JUMP_DET)))
    return RampFitResult(outs[0], outs[1], outs[2], outs[3], outs[4], dq, gdq_out)
