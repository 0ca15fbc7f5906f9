"""Maximum-likelihood ramp fit with integrated jump detection (``likely``), NumPy version.

What romancal 1.1.0's ``RampFitStep(algorithm="likely")`` computes with stcal 1.20.0
(Brandt 2024, PASP 136, 045004 "paper I" and 045005 "paper II"; spec algorithms.md §7.1).

Model
-----
Resultant differences ``d_i = (D_{i+1} - D_i) / dt_i`` (DN/s, i = 0..n-1, n = K-1) have a
tridiagonal covariance ``S = c/g * S_ph + sigma**2 * S_rn`` for a rate guess ``c``: diagonal
``alpha_i`` and first off-diagonal ``beta_i`` (paper I eqs. 28-29).  A difference is usable
(``u_i = 1``) when neither of its resultants carries any group flag; couplings to unusable
differences are cut, so the generalised least-squares fit of ``d = a 1`` uses only the usable
set.  With ``C = 1'S^-1 1``, ``B = 1'S^-1 d`` and ``A = d'S^-1 d``: slope ``B/C``,
``chi2 = A - B**2/C``, ``err = 1/sqrt(C)``, weights ``S^-1 1 / C`` split the variance into a
photon and a read part.

The products with ``S^-1`` are evaluated in O(n) per pixel with the leading and trailing
principal minors ``theta``/``phi`` of ``S`` and their signed partial sums (paper I eqs.
38-48, 61-63, 71, 75); the chi-square changes for omitting one difference or an adjacent
pair come from the same quantities (paper II §3).  Every step below is vectorised over
pixels and evaluated in the same floating-point order as stcal, because in degenerate ramps
(two or three usable differences) the omit-fits are singular and stcal's jump decisions are
set by rounding: with two usable differences and a jump, it drops the later difference, the
clean earlier one, both (an exact tie: NaN slope) or neither, depending on the amplitude's
last bits.  A differently ordered solver (Thomas algorithm) reproduces every regular ramp to
~1e-12 but not those flags.  The omit-fits are only evaluated where a drop is possible:
chi-square cannot rise by omitting data, so a regular ramp (more than three usable
differences) whose chi-square is below the smaller threshold cannot drop anything.

Jump search (stcal ``mask_jumps``, threshold 4.5 sigma hard-coded by romancal): the
covariance rate is the median of all differences (clipped at 0), kept for the whole search;
each pass drops the single difference or adjacent pair (pairs only where the shared
resultant has more than one read) whose omission lowers chi-square most, if that beats
``4.5**2`` (single) or the chi-square(2 dof) quantile of the same p-value (pair); pixels that
dropped something and keep more than three usable differences are searched again.  The
later resultant of every dropped difference gets JUMP_DET.  The final fit uses the last
accepted rate (clipped at 0) for the covariance.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import scipy.special
import scipy.stats

from cpu_fallback.ramp_fit._common import check_inputs, compress_dq, count_good_resultants, pixel_bit, row_blocks
from gpucal.backends.protocol import RampFitParams, RampFitResult, SnowballParams
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import ReadTiming

__all__ = ["fit_likely", "pattern_constants", "drop_thresholds", "LIKELY_MIN_RESULTANTS", "REJECTION_THRESHOLD"]

log = logging.getLogger(__name__)

LIKELY_MIN_RESULTANTS = 4
#: romancal 1.1.0 calls stcal with this threshold whatever ``rejection_threshold`` says.
REJECTION_THRESHOLD = 4.5
#: stcal rescales the covariance determinant every this many minors (and at the last).
_RESCALE_EVERY = 10


class _Pattern(NamedTuple):
    """Read-pattern constants of the difference covariance (stcal ``Covar``), float64."""

    delta_t: np.ndarray  # (n,) s, between resultant mean times
    alpha_ph: np.ndarray  # (n,) diagonal photon term per unit rate/gain
    beta_ph: np.ndarray  # (n-1,) off-diagonal photon term
    alpha_rn: np.ndarray  # (n,) diagonal read term per unit sigma**2
    beta_rn: np.ndarray  # (n-1,) off-diagonal read term
    two_omit_ok: np.ndarray  # (n-1,) float 0/1: pair (i, i+1) may be omitted


class _Solved(NamedTuple):
    """One GLS fit of P pixels with everything the omit-fits reuse (scaled covariance)."""

    u: np.ndarray  # (n, P) usable mask, float 0/1
    beta: np.ndarray  # (n-1, P) off-diagonal, couplings to unusable differences cut
    theta: np.ndarray  # (n+1, P) leading principal minors
    phi: np.ndarray  # (n+1, P) trailing principal minors
    dm: np.ndarray  # (n, P) differences times the usable mask
    s1: np.ndarray  # (n, P) S^-1 1 (zero where unusable)
    big_theta_d: np.ndarray  # (n+1, P) signed partial sums of d with theta (for S^-1 d)
    sgn_det: np.ndarray  # (n, P) s_i / det S
    big_a: np.ndarray  # (P,) d' S^-1 d
    big_b: np.ndarray  # (P,) 1' S^-1 d
    big_c: np.ndarray  # (P,) 1' S^-1 1
    scale: np.ndarray  # (P,) covariance scale factor
    rate: np.ndarray  # (P,) DN/s
    chisq: np.ndarray  # (P,)


class _Omits(NamedTuple):
    """Omit-one and omit-pair fits of a set of pixels."""

    rate_one: np.ndarray  # (n, P) rate with difference i omitted
    chisq_one: np.ndarray
    rate_two: np.ndarray  # (n-1, P) rate with differences i, i+1 omitted
    chisq_two: np.ndarray


def pattern_constants(timing: ReadTiming) -> _Pattern:
    """Covariance constants of a read pattern, computed from the read times exactly as stcal does.

    Also the host-side constants of ``ramp_fit_likely.cu``, so that the kernel and this
    module agree to the bit.

    Parameters
    ----------
    timing : ReadTiming
        Read pattern (K resultants) and frame time.

    Returns
    -------
    NamedTuple of float64 arrays
        ``delta_t`` (s), ``alpha_ph``, ``alpha_rn`` of shape (K - 1,); ``beta_ph``,
        ``beta_rn``, ``two_omit_ok`` (0/1) of shape (K - 2,).
    """
    mean_t, tau, nreads = [], [], []
    for reads in timing.read_pattern:
        times = np.array(reads) * timing.frame_time
        length = len(times)
        mean_t.append(np.mean(times))
        weight = (2 * length + 1) - 2 * np.arange(1, length + 1)
        tau.append(np.sum(weight * times) / length**2)
        nreads.append(length)
    mean_t_a, tau_a, n = np.array(mean_t), np.array(tau), np.array(nreads)
    dt = mean_t_a[1:] - mean_t_a[:-1]
    return _Pattern(
        delta_t=dt,
        alpha_ph=(tau_a[:-1] + tau_a[1:] - 2 * mean_t_a[:-1]) / dt**2,
        beta_ph=(mean_t_a[1:-1] - tau_a[1:-1]) / (dt[1:] * dt[:-1]),
        alpha_rn=(1 / n[:-1] + 1 / n[1:]) / dt**2,
        beta_rn=-1 / (n[1:-1] * dt[1:] * dt[:-1]),
        two_omit_ok=(n[1:-1] > 1).astype(np.float64),
    )


def drop_thresholds() -> tuple[float, float]:
    """Chi-square improvements needed to omit one difference, and an adjacent pair.

    Returns
    -------
    (float, float)
        ``REJECTION_THRESHOLD ** 2`` and the chi-square(2) quantile of the same tail
        probability (the kernel's ``thresh_one``, ``thresh_two``).
    """
    one = REJECTION_THRESHOLD**2
    pval = scipy.special.erfc(REJECTION_THRESHOLD / np.sqrt(2))
    two = float(scipy.stats.chi2.isf(pval, 2))
    if np.isinf(two):
        two = one + 10
    return one, two


def _seq_sum(x: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in index order (NumPy's order for a wide C-ordered array)."""
    acc = x[0].copy()
    for row in x[1:]:
        acc += row
    return acc


def _determinant_scale(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Per-pixel factor that brings the covariance determinant to ~1 (overflow guard).

    The leading minors are rebuilt with the running scale and renormalised every
    ``_RESCALE_EVERY`` steps and at the last one; the scale is the product of the
    ``i``-th roots taken there.
    """
    n, npix = alpha.shape
    scale = np.ones(npix)
    prev2 = np.ones(npix)  # minor i-2
    prev1 = alpha[0].copy()  # minor i-1
    for i in range(2, n + 1):
        cur = alpha[i - 1] / scale * prev1 - beta[i - 2] ** 2 / scale**2 * prev2
        if i % _RESCALE_EVERY == 0 or i == n:
            f = cur ** (1 / i)
            scale *= f
            tmp = cur / f
            prev1 = prev1 / tmp
            prev2 = prev2 / (tmp / f)
            cur = np.ones(npix)
        prev2, prev1 = prev1, cur
    return scale


def _covariance(
    rate_over_gain: np.ndarray, rn2: np.ndarray, pat: _Pattern
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photon and read parts of the diagonal and off-diagonal, (n, P) and (n-1, P)."""
    a_ph = rate_over_gain * pat.alpha_ph[:, None]
    a_rn = rn2 * pat.alpha_rn[:, None]
    b_ph = rate_over_gain * pat.beta_ph[:, None]
    b_rn = rn2 * pat.beta_rn[:, None]
    return a_ph, a_rn, b_ph, b_rn


def _solve(
    d: np.ndarray,
    u: np.ndarray,
    a_ph: np.ndarray,
    a_rn: np.ndarray,
    b_ph: np.ndarray,
    b_rn: np.ndarray,
) -> _Solved:
    """GLS fit of ``d`` (n, P) DN/s over the usable mask ``u`` (n, P) float 0/1."""
    n, npix = d.shape
    alpha = a_ph + a_rn
    beta = b_ph + b_rn
    scale = _determinant_scale(alpha, beta)
    alpha /= scale
    beta /= scale

    dm = d * u  # unusable differences contribute nothing (NaN stays NaN, as upstream)
    beta *= u[1:]
    beta *= u[:-1]
    beta2 = beta**2
    tmp = np.empty(npix)

    # leading (theta) and trailing (phi) principal minors, paper I eqs. 38-43
    theta = np.empty((n + 1, npix))
    theta[0] = 1.0
    theta[1] = alpha[0]
    for i in range(2, n + 1):
        np.multiply(alpha[i - 1], theta[i - 1], out=theta[i])
        theta[i] -= np.multiply(beta2[i - 2], theta[i - 2], out=tmp)
    phi = np.empty((n + 1, npix))
    phi[n] = 1.0
    phi[n - 1] = alpha[n - 1]
    for i in range(n - 2, -1, -1):
        np.multiply(alpha[i], phi[i + 1], out=phi[i])
        phi[i] -= np.multiply(beta2[i], phi[i + 2], out=tmp)

    # signed partial sums, paper I eqs. 46-48; sign s_i = -1 for even i
    big_phi = np.empty((n, npix))
    big_phi[n - 1] = 0.0
    for i in range(n - 2, -1, -1):
        np.multiply(big_phi[i + 1], beta[i], out=big_phi[i])
        np.multiply(beta[i], phi[i + 2], out=tmp)
        if i % 2 == 0:  # s_{i+1} = +1
            big_phi[i] += tmp
        else:
            big_phi[i] -= tmp
    big_theta = np.empty((n, npix))
    big_theta_d = np.empty((n + 1, npix))
    big_theta[0] = -1.0
    big_theta_d[0] = 0.0
    np.negative(dm[0], out=big_theta_d[1])
    for i in range(1, n):
        np.multiply(big_theta[i - 1], beta[i - 1], out=big_theta[i])
        np.multiply(beta[i - 1], big_theta_d[i], out=big_theta_d[i + 1])
        np.multiply(dm[i], theta[i], out=tmp)
        if i % 2 == 0:
            big_theta[i] -= theta[i]
            big_theta_d[i + 1] -= tmp
        else:
            big_theta[i] += theta[i]
            big_theta_d[i + 1] += tmp

    # S^-1 1 per difference, paper I eq. 71
    sgn_det = np.empty((n, npix))
    np.divide(1.0, theta[n], out=sgn_det[0])
    sgn_det[1::2] = sgn_det[0]
    np.negative(sgn_det[0], out=sgn_det[0])
    sgn_det[2::2] = sgn_det[0]
    s1 = phi[1:] * big_theta
    s1 += theta[:-1] * big_phi
    s1 *= sgn_det
    s1 *= u

    # A, B, C, paper I eqs. 61-63
    work = dm / theta[n]
    work[0::2] *= -1.0
    work[1:] *= beta
    work *= phi[1:]
    work *= big_theta_d[:-1]
    big_a = 2 * _seq_sum(work)
    np.square(dm, out=work)
    work *= theta[:-1]
    work *= phi[1:]
    work /= theta[n]
    big_a += _seq_sum(work)
    np.multiply(dm, s1, out=work)
    big_b = _seq_sum(work)
    big_c = _seq_sum(s1)

    rate = big_b * (1 / big_c)
    chisq = (big_a - big_b**2 / big_c) / scale
    return _Solved(u, beta, theta, phi, dm, s1, big_theta_d, sgn_det, big_a, big_b, big_c, scale, rate, chisq)


def _variances(
    s: _Solved, a_ph: np.ndarray, a_rn: np.ndarray, b_ph: np.ndarray, b_rn: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uncertainty and photon/read variances of the slope, (P,) each."""
    err = np.sqrt(s.scale / s.big_c)
    w = s.s1 / s.big_c
    w2 = w**2
    ww = w[1:] * w[:-1]
    var_p = _seq_sum(w2 * a_ph) + 2 * _seq_sum(ww * b_ph)
    var_r = _seq_sum(w2 * a_rn) + 2 * _seq_sum(ww * b_rn)
    return err, var_p, var_r


def _omit_fits(s: _Solved, idx: np.ndarray) -> _Omits:
    """Fits with one, and with two adjacent, differences omitted, for pixels ``idx``."""
    n = s.u.shape[0]
    u, beta, theta, phi = s.u[:, idx], s.beta[:, idx], s.theta[:, idx], s.phi[:, idx]
    s1, dm = s.s1[:, idx], s.dm[:, idx]

    # S^-1 d per difference, paper I eq. 75 and paper II eq. 4
    big_phi_d = np.empty_like(s1)
    big_phi_d[n - 1] = 0.0
    for i in range(n - 2, -1, -1):
        dp = dm[i + 1] * phi[i + 2]
        if i % 2 == 0:  # s_{i+1} = +1
            big_phi_d[i] = (big_phi_d[i + 1] + dp) * beta[i]
        else:
            big_phi_d[i] = (big_phi_d[i + 1] - dp) * beta[i]
    sd = phi[1:] * s.big_theta_d[1:, idx]
    sd += theta[:-1] * big_phi_d
    sd = s.sgn_det[:, idx] * sd
    big_a, big_b, big_c, scale = s.big_a[idx], s.big_b[idx], s.big_c[idx], s.scale[idx]
    rate, chisq = s.rate[idx], s.chisq[idx]

    # paper II §3.1: one extra free offset on difference i
    cinv_diag = theta[:-1] * phi[1:] / theta[n]
    cinv_diag *= u
    cinv_off = -beta * theta[:-2] * phi[2:] / theta[n]
    a1 = (cinv_diag * big_b - sd * s1) / (big_c * cinv_diag - s1**2)
    b1 = (sd - a1 * s1) / cinv_diag
    chisq_one = big_a + a1**2 * big_c - 2 * a1 * big_b + b1**2 * cinv_diag - 2 * b1 * sd + 2 * a1 * b1 * s1
    chisq_one /= scale

    # paper II §3.2: free offsets on differences i and i+1
    s1_lo, s1_hi = s1[:-1], s1[1:]
    cpj = s1_lo**2 - big_c * cinv_diag[:-1]
    cjck = s1_lo * s1_hi - big_c * cinv_off
    bcpj = big_b * s1_lo - sd[:-1] * big_c
    c2 = bcpj / cpj - (big_b * s1_hi - sd[1:] * big_c) / cjck
    c2 /= cjck / cpj - (s1_hi**2 - big_c * cinv_diag[1:]) / cjck
    b2 = (bcpj - c2 * cjck) / cpj
    a2 = (big_b - b2 * s1_lo - c2 * s1_hi) / big_c
    chisq_two = big_a + a2**2 * big_c + b2**2 * cinv_diag[:-1] + c2**2 * cinv_diag[1:]
    chisq_two -= 2 * a2 * big_b + 2 * b2 * sd[:-1] + 2 * c2 * sd[1:]
    chisq_two += 2 * a2 * b2 * s1_lo + 2 * a2 * c2 * s1_hi + 2 * b2 * c2 * cinv_off
    chisq_two /= scale

    # omitting an unusable difference changes nothing; a pair with one unusable member is
    # the one-omit of the other
    unusable = u == 0
    a1 = np.where(unusable, rate, a1)
    chisq_one = np.where(unusable, chisq, chisq_one)
    hi_bad = unusable[1:]
    a2 = np.where(hi_bad, a1[:-1], a2)
    chisq_two = np.where(hi_bad, chisq_one[:-1], chisq_two)
    lo_bad = unusable[:-1]
    a2 = np.where(lo_bad, a1[1:], a2)
    chisq_two = np.where(lo_bad, chisq_one[1:], chisq_two)
    return _Omits(a1, chisq_one, a2, chisq_two)


def _median_rate(d: np.ndarray) -> np.ndarray:
    """``np.median(d, axis=0)`` clipped below at 0, via a sorting network (faster).

    Odd-even transposition sort of the n rows; the mean of the two middle values for even
    n, as NumPy computes it.  NaN wherever a column holds a NaN, as ``np.median``.
    """
    rows = [r.copy() for r in d]
    n = len(rows)
    for rnd in range(n):
        for i in range(rnd % 2, n - 1, 2):
            lo = np.minimum(rows[i], rows[i + 1])
            np.maximum(rows[i], rows[i + 1], out=rows[i + 1])
            rows[i] = lo
    mid = n // 2
    guess = rows[mid] if n % 2 else (rows[mid - 1] + rows[mid]) / 2
    guess[np.isnan(d).any(axis=0)] = np.nan
    return guess * (guess > 0)


def _candidates(s: _Solved, nusable: np.ndarray, t_one: float) -> np.ndarray:
    """Indices of pixels whose omit-fits could drop something.

    Omitting differences never raises chi-square, so chi2 - chi2_omit <= chi2 and a pixel
    whose chi-square is below the single-omit threshold (the smaller one) cannot drop
    anything -- provided its omit-fits are regular, i.e. it keeps at least two usable
    differences after omitting a pair (more than three usable).  The margin covers the
    rounding of the omit chi-squares, which are differences of terms of size ~A.  Pixels
    with no usable difference have NaN chi-squares and never drop.
    """
    margin = 1e-6 * np.abs(s.big_a / s.scale) + 1e-6
    regular_quiet = (nusable > 3) & (s.chisq + margin < t_one)
    return np.flatnonzero(~regular_quiet & (nusable > 0))


def _search_jumps(
    d: np.ndarray,
    u: np.ndarray,
    gain: np.ndarray,
    rn2: np.ndarray,
    pat: _Pattern,
    thresholds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Iterative omit-one / omit-pair search; returns the final usable mask and rate.

    ``d``/``u`` (n, P): differences (DN/s) and usable mask (float 0/1, modified in place);
    ``gain``/``rn2`` (P,) float64.  The rate is the first fit's, replaced by the omit-fit's
    rate wherever something was dropped.
    """
    t_one, t_two = thresholds
    n, npix = d.shape
    a_ph, a_rn, b_ph, b_rn = _covariance(_median_rate(d) / gain, rn2, pat)  # fixed for the search
    active = np.arange(npix)
    rate = np.empty(npix)
    for npass in range(n):
        if npass == 0:
            s = _solve(d, u, a_ph, a_rn, b_ph, b_rn)
            rate[:] = s.rate
        else:
            s = _solve(d[:, active], u[:, active], a_ph[:, active], a_rn[:, active], b_ph[:, active], b_rn[:, active])
        cand = _candidates(s, s.u.sum(axis=0), t_one)
        om = _omit_fits(s, cand)
        chisq = s.chisq[cand]
        dchi_one = chisq - om.chisq_one
        dchi_two = chisq - om.chisq_two
        best_one = np.amax(dchi_one, axis=0)
        best_two = np.amax(dchi_two * pat.two_omit_ok[:, None], axis=0)
        one_better = best_one - t_one > best_two - t_two
        best = best_one * (best_one > t_one) * one_better
        best += best_two * (best_two > t_two) * (~one_better)
        best[best == 0] = np.nan
        drop_one = (dchi_one == best) & one_better
        drop_two = (dchi_two == best) & ~one_better
        any_one = drop_one.any(axis=0)
        any_two = drop_two.any(axis=0)
        drop = any_one | any_two
        if not drop.any():
            break
        new_rate = np.zeros(cand.size)
        new_rate[any_one] = _seq_sum(om.rate_one * drop_one)[any_one]
        new_rate[any_two] = _seq_sum(om.rate_two * drop_two)[any_two]
        hit = active[cand[drop]]
        rate[hit] = rate[hit] * 0.0 + new_rate[drop]
        keep = np.ones((n, cand.size))
        keep[drop_one] = 0.0
        keep[:-1][drop_two] = 0.0
        keep[1:][drop_two] = 0.0
        sub = u[:, hit] * keep[:, drop]
        u[:, hit] = sub
        active = hit[sub.sum(axis=0) > 3]
        if active.size == 0:
            break
    return u, rate


def _search_block(
    data: np.ndarray,
    gdq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    pat: _Pattern,
    thresholds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """The jump search of a block: data/gdq (K, P), readnoise/gain (P,).

    Returns the (n, P) bool mask of differences dropped as jumps and the (P,) float64
    rate the search ends with (the final fit's covariance rate).
    """
    d = (data[1:] - data[:-1]) / pat.delta_t[:, None]
    flagged = gdq != 0
    u0 = ~(flagged[1:] | flagged[:-1])
    u = u0.astype(np.float64)
    g, rn2 = _noise(readnoise, gain)
    with np.errstate(all="ignore"):
        u, rate = _search_jumps(d, u, g, rn2, pat, thresholds)
    return u0 & (u == 0), rate


def _final_fit(
    data: np.ndarray,
    usable: np.ndarray,
    rate: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    pat: _Pattern,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fit of a block with the (n, P) bool ``usable`` differences, the covariance at the
    search's ``rate`` (clipped at 0).  Returns slope, err, var_poisson, var_rnoise, chisq."""
    d = (data[1:] - data[:-1]) / pat.delta_t[:, None]
    g, rn2 = _noise(readnoise, gain)
    with np.errstate(all="ignore"):
        cov = _covariance((rate * (rate > 0) + 0.0) / g, rn2, pat)
        fit = _solve(d, usable.astype(np.float64), *cov)
        err, var_p, var_r = _variances(fit, *cov)
    return fit.rate, err, var_p, var_r, fit.chisq


def _noise(readnoise: np.ndarray, gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # romancal hands stcal sqrt(2) x the per-read noise and stcal divides it back out
    rn = readnoise.astype(np.float64) * np.sqrt(2) / np.sqrt(2)
    return gain.astype(np.float64), rn**2


def _fit_block(
    data: np.ndarray,
    gdq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    pat: _Pattern,
    thresholds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Search and fit a block: data/gdq (K, P), readnoise/gain (P,).

    Returns slope, err, var_poisson, var_rnoise, chisq (P,) float64 and the (n, P) bool
    mask of differences dropped as jumps.
    """
    jumps, rate = _search_block(data, gdq, readnoise, gain, pat, thresholds)
    flagged = gdq != 0
    usable = ~(flagged[1:] | flagged[:-1]) & ~jumps
    return (*_final_fit(data, usable, rate, readnoise, gain, pat), jumps)


def fit_likely(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    timing: ReadTiming,
    params: RampFitParams,
) -> RampFitResult:
    """Fit every pixel's ramp with the maximum-likelihood ``likely`` algorithm.

    Parameters
    ----------
    data : ndarray, (K, ny, nx) float32
        Resultants, DN.
    groupdq : ndarray, (K, ny, nx) uint8
        Group flags; any bit makes a resultant unusable.
    pixeldq : ndarray, (ny, nx) uint32
        Pixel flags, passed through into ``dq``.
    readnoise : ndarray, (ny, nx) float32
        Read noise of a single read, DN.
    gain : ndarray, (ny, nx) float32
        Gain, e-/DN.
    timing : ReadTiming
        Read pattern and frame time.
    params : RampFitParams
        Only ``snowball`` is used (romancal 1.1.0 always searches jumps at 4.5 sigma for
        ``likely``): when set, snowballs are flagged between the search and the fit.

    Returns
    -------
    RampFitResult
        slope (DN/s), err, var_poisson, var_rnoise ((DN/s)**2), chisq as float32 (NaN
        where no difference is usable or an input is not finite); ``dq`` = pixeldq |
        DO_NOT_USE (every resultant SATURATED/DO_NOT_USE, or at most one resultant free of
        both) | SATURATED (any) | JUMP_DET (any); ``groupdq`` = a new array with JUMP_DET
        on the later resultant of every dropped difference.

    Raises
    ------
    ValueError
        Fewer than 4 resultants, or inconsistent shapes.
    """
    nres = data.shape[0]
    check_inputs(data, groupdq, pixeldq, readnoise, gain, timing.nresultants)
    if nres < LIKELY_MIN_RESULTANTS:
        raise ValueError(f"the likely ramp fit needs at least {LIKELY_MIN_RESULTANTS} resultants, got {nres}")
    _, ny, nx = data.shape
    pat = pattern_constants(timing)
    thresholds = drop_thresholds()
    if params.snowball is not None:
        return _fit_with_snowballs(data, groupdq, pixeldq, readnoise, gain, pat, thresholds, params.snowball)
    outs = [np.empty((ny, nx), np.float32) for _ in range(5)]
    gdq_out = np.empty_like(groupdq, dtype=np.uint8)
    dq = np.empty((ny, nx), np.uint32)
    jump = np.uint8(GroupFlag.JUMP_DET)
    for rows in row_blocks(ny, nx):
        npix = (rows.stop - rows.start) * nx
        blk = np.ascontiguousarray(data[:, rows], dtype=np.float32).reshape(nres, npix)
        gblk = np.array(groupdq[:, rows], dtype=np.uint8).reshape(nres, npix)
        res = _fit_block(
            blk,
            gblk,
            np.asarray(readnoise[rows], dtype=np.float32).reshape(npix),
            np.asarray(gain[rows], dtype=np.float32).reshape(npix),
            pat,
            thresholds,
        )
        for out, arr in zip(outs, res[:5], strict=True):
            out[rows] = arr.reshape(-1, nx)
        gblk[1:] |= np.where(res[5], jump, np.uint8(0))
        gdq_out[:, rows] = gblk.reshape(nres, -1, nx)
        bdq = compress_dq(gblk, pixeldq[rows].reshape(npix), saturated_if_all=False)
        # romancal: a ramp with at most one usable resultant is not to be used
        bdq |= pixel_bit(count_good_resultants(gblk) <= 1, PixelFlag.DO_NOT_USE)
        dq[rows] = bdq.reshape(-1, nx)
    slope, err, var_p, var_r, chisq = outs
    log.debug("likely: %d pixels with jumps", int(np.count_nonzero(dq & PixelFlag.JUMP_DET)))
    return RampFitResult(slope, err, var_p, var_r, chisq, dq, gdq_out)


def _fit_with_snowballs(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    pat: _Pattern,
    thresholds: tuple[float, float],
    snowball: SnowballParams,
) -> RampFitResult:
    """The likely fit with snowball flagging, in two passes over the frame.

    Pass 1 searches every block for jumps (JUMP_DET on the later resultant of each dropped
    difference) and keeps each pixel's rate; snowballs are then flagged on the whole
    frame's group DQ (:func:`cpu_fallback.snowball.flag_snowballs`); pass 2 fits with every
    difference whose later resultant carries JUMP_DET dropped, at the pass-1 rates.  The
    DQ is folded from the flagged group DQ; the returned group DQ is the input's OR the
    flagged one (a saturated snowball core may have cleared other bits in the latter).
    """
    from cpu_fallback.snowball import flag_snowballs

    nres, ny, nx = data.shape
    jump = np.uint8(GroupFlag.JUMP_DET)
    flagged = np.array(groupdq, dtype=np.uint8)
    rate = np.empty((ny, nx), np.float64)
    for rows in row_blocks(ny, nx):
        npix = (rows.stop - rows.start) * nx
        gblk = np.array(groupdq[:, rows], dtype=np.uint8).reshape(nres, npix)
        jumps, rate_blk = _search_block(
            np.ascontiguousarray(data[:, rows], dtype=np.float32).reshape(nres, npix), gblk,
            np.asarray(readnoise[rows], dtype=np.float32).reshape(npix),
            np.asarray(gain[rows], dtype=np.float32).reshape(npix), pat, thresholds,
        )
        gblk[1:] |= np.where(jumps, jump, np.uint8(0))
        flagged[:, rows] = gblk.reshape(nres, -1, nx)
        rate[rows] = rate_blk.reshape(-1, nx)
    searched = flagged.copy()
    flag_snowballs(flagged, snowball)
    outs = [np.empty((ny, nx), np.float32) for _ in range(5)]
    dq = np.empty((ny, nx), np.uint32)
    gdq_out = np.asarray(groupdq, dtype=np.uint8) | flagged
    for rows in row_blocks(ny, nx):
        npix = (rows.stop - rows.start) * nx
        given = np.asarray(groupdq[:, rows], dtype=np.uint8).reshape(nres, npix) != 0
        jumped = ((searched[1:, rows] | flagged[1:, rows]) & jump).reshape(nres - 1, npix) != 0
        usable = ~(given[1:] | given[:-1]) & ~jumped
        res = _final_fit(
            np.ascontiguousarray(data[:, rows], dtype=np.float32).reshape(nres, npix), usable,
            rate[rows].reshape(npix), np.asarray(readnoise[rows], dtype=np.float32).reshape(npix),
            np.asarray(gain[rows], dtype=np.float32).reshape(npix), pat,
        )
        for out, arr in zip(outs, res, strict=True):
            out[rows] = arr.reshape(-1, nx)
        bdq = compress_dq(flagged[:, rows].reshape(nres, npix), pixeldq[rows].reshape(npix), saturated_if_all=False)
        bdq |= pixel_bit(count_good_resultants(gdq_out[:, rows].reshape(nres, npix)) <= 1, PixelFlag.DO_NOT_USE)
        dq[rows] = bdq.reshape(-1, nx)
    slope, err, var_p, var_r, chisq = outs
    return RampFitResult(slope, err, var_p, var_r, chisq, dq, gdq_out)
