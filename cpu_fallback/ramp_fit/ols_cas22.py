"""Casertano (2022) optimally weighted ramp fit with jump splitting (``ols_cas22``), NumPy.

What romancal 1.1.0's deprecated ``RampFitStep(algorithm="ols_cas22")`` computes with
stcal 1.20.0 (spec algorithms.md §7.2; Casertano 2022, "Determining the best-fitting slope
and its uncertainty for Roman WFI", eqs. 35-45 and Table 2).

Everything is in electrons (resultants and read noise multiplied by the gain in float32, as
romancal does) and divided back at the end.  A pixel's ramp is cut into segments: maximal
runs of resultants with no group flag.  Each segment of m >= 2 resultants is fitted with
weights ``w_k = (1+P) N_k / (1+P N_k) |(tbar_k - tmid)/h|**P`` whose power P follows the
segment's signal-to-noise (Table 2).  With jump detection, the largest of the single- and
double-difference statistics ``(local slope - slope)/sigma`` of the segment is compared
with ``I - C log10(slope)``; above it, the two resultants around that difference get
JUMP_DET and the two remaining sub-segments are fitted the same way.  Segment slopes are
combined with inverse read-variance weights.

The loops run over resultants and over splitting rounds; every step acts on arrays of
segments (all pixels of a row block at once).  stcal's internals are float32 with some
double intermediates; each operation here keeps the same precision and order, so results
agree bit for bit up to libm differences in ``pow``/``log10``.  Segments are combined in
stcal's order (latest first), which matters for float32 sums.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from cpu_fallback.ramp_fit._common import check_inputs, compress_dq, pixel_bit, row_blocks
from gpucal.backends.protocol import RampFitParams, RampFitResult
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import ReadTiming

__all__ = ["fit_ols_cas22", "pattern_constants", "DEFAULT_THRESHOLD_INTERCEPT", "DEFAULT_THRESHOLD_CONSTANT"]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD_INTERCEPT = 5.5
DEFAULT_THRESHOLD_CONSTANT = 1 / 3

F32 = np.float32
#: Casertano (2022) Table 2: SNR upper edges and the weighting power below each.
_SNR_EDGES = np.array([5, 10, 20, 50, 100], dtype=F32)
_POWERS = np.array([0, 0.4, 1, 3, 6, 10], dtype=F32).astype(np.float64)


class _Pattern(NamedTuple):
    """Read-pattern constants in stcal's precisions."""

    tbar: np.ndarray  # (K,) float32 s
    tbar64: np.ndarray  # (K,) float64 copy
    tbar_sq: np.ndarray  # (K,) float64 of float32 tbar**2
    tau64: np.ndarray  # (K,) float64 of float32 tau
    nreads: np.ndarray  # (K,) float64 read counts
    dt1: np.ndarray  # (K-1,) float32 tbar[i+1] - tbar[i]
    dt1_sq: np.ndarray
    rec1: np.ndarray  # (K-1,) float32 1/N[i+1] + 1/N[i]
    vs1: np.ndarray  # (K-1,) float32 tau[i+1] + tau[i] - 2 min(tbar)
    dt2: np.ndarray  # (K-2,) the same over i, i+2
    dt2_sq: np.ndarray
    rec2: np.ndarray
    vs2: np.ndarray


class _Segments(NamedTuple):
    """A set of ramp segments [start, end] (inclusive), one row per segment."""

    pix: np.ndarray  # (M,) pixel index in the block
    start: np.ndarray  # (M,) first resultant
    end: np.ndarray  # (M,) last resultant


def pattern_constants(timing: ReadTiming) -> _Pattern:
    """Per-resultant constants as stcal's ``from_read_pattern``/``fill_fixed_values``.

    Also the host-side constants of ``ramp_fit_ols_cas22.cu`` (``tbar``, ``tau64`` and
    ``nreads``, as float32), so that the kernel and this module agree to the bit.

    Parameters
    ----------
    timing : ReadTiming
        Read pattern (K resultants) and frame time.

    Returns
    -------
    NamedTuple
        ``tbar`` (K,) float32 s, ``tau64`` (K,) float64 of float32 tau, ``nreads`` (K,)
        float64, and the difference constants of the fit (see its fields).
    """
    read_time = float(F32(timing.frame_time))  # the Cython signature takes a C float
    tbar, tau, nreads = [], [], []
    for reads in timing.read_pattern:
        n = len(reads)
        tbar.append(read_time * np.mean(reads))
        tau.append(np.sum((2 * (n - np.arange(n)) - 1) * np.array(reads)) * read_time / n**2)
        nreads.append(n)
    tb = np.array(tbar).astype(F32)
    ta = np.array(tau).astype(F32)
    nr = np.array(nreads)
    recip = F32(1) / nr.astype(F32)

    def over(j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        dt = tb[j:] - tb[:-j]
        vs = (ta[j:] + ta[:-j]) - F32(2) * np.minimum(tb[j:], tb[:-j])
        return dt, dt * dt, recip[j:] + recip[:-j], vs

    dt1, dt1_sq, rec1, vs1 = over(1)
    dt2, dt2_sq, rec2, vs2 = over(2)
    return _Pattern(
        tbar=tb,
        tbar64=tb.astype(np.float64),
        tbar_sq=(tb * tb).astype(np.float64),
        tau64=ta.astype(np.float64),
        nreads=nr.astype(np.float64),
        dt1=dt1,
        dt1_sq=dt1_sq,
        rec1=rec1,
        vs1=vs1,
        dt2=dt2,
        dt2_sq=dt2_sq,
        rec2=rec2,
        vs2=vs2,
    )


def _initial_segments(good: np.ndarray) -> _Segments:
    """Maximal runs of good resultants with at least two members, from (K, P) bool."""
    nres = good.shape[0]
    # first bad resultant at or after k (nres if none): a run starting at k ends before it
    next_bad = np.empty(good.shape, np.intp)
    next_bad[-1] = np.where(good[-1], nres, nres - 1)
    for k in range(nres - 2, -1, -1):
        next_bad[k] = np.where(good[k], next_bad[k + 1], k)
    starts = good.copy()
    starts[1:] &= ~good[:-1]
    k_s, pix = np.nonzero(starts)
    k_e = next_bad[k_s, pix] - 1
    keep = k_e > k_s  # a single resultant has no slope and is ignored
    return _Segments(pix[keep], k_s[keep], k_e[keep])


def _fit_segments(
    seg: _Segments, res: np.ndarray, rn2: np.ndarray, pat: _Pattern
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Casertano fit of each segment: slope (e-/s), read and unit-rate Poisson variance.

    ``res`` is the (K, P) float32 block in electrons, ``rn2`` (P,) float32 squared read
    noise.  Returns three (M,) float32 arrays.
    """
    a, b, pix = seg.start, seg.end, seg.pix
    nseg = pix.size
    ta, tb = pat.tbar[a], pat.tbar[b]
    t_mid = (ta + tb).astype(np.float64) / 2.0
    res_seg = res[:, pix]
    items = np.arange(nseg)
    signal = np.fmax(res_seg[b, items] - res_seg[a, items], F32(0)).astype(np.float64)
    rn2_64 = rn2[pix].astype(np.float64)
    snr = (signal / np.sqrt(rn2_64 + signal)).astype(F32)
    power = _POWERS[np.searchsorted(_SNR_EDGES, snr, side="right")]
    t_scale = (tb - ta).astype(np.float64) / 2.0
    t_scale[t_scale == 0] = 1.0

    nres = res.shape[0]
    weights = np.zeros((nres, nseg))
    f0 = np.zeros(nseg)
    f1 = np.zeros(nseg)
    f2 = np.zeros(nseg)
    inseg = [(a <= k) & (k <= b) for k in range(nres)]
    for k in range(nres):
        nk = pat.nreads[k]
        w = (1.0 + power) * nk / (1.0 + power * nk) * np.abs((pat.tbar64[k] - t_mid) / t_scale) ** power
        w[~inseg[k]] = 0.0
        weights[k] = w
        f0 += w
        f1 += w * pat.tbar64[k]
        f2 += w * pat.tbar_sq[k]
    det = f2 * f0 - f1 * f1

    slope = np.zeros(nseg, F32)
    read_var = np.zeros(nseg, F32)
    poisson_var = np.zeros(nseg, F32)
    sum_ct = np.zeros(nseg)
    for k in range(nres):
        use = inseg[k]
        coeff = (f0 * pat.tbar64[k] - f1) * weights[k] / det
        c2 = coeff * coeff
        slope = np.where(use, (slope + coeff * res_seg[k]).astype(F32), slope)
        read_var = np.where(use, (read_var + c2 * rn2_64 / pat.nreads[k]).astype(F32), read_var)
        poisson_var = np.where(use, (poisson_var + (c2 * pat.tau64[k] + 2.0 * coeff * sum_ct)).astype(F32), poisson_var)
        sum_ct = np.where(use, sum_ct + coeff * pat.tbar64[k], sum_ct)
    singular = det == 0
    slope[singular] = 0
    read_var[singular] = 0
    poisson_var[singular] = 0
    return slope, read_var, poisson_var


def _find_jumps(
    seg: _Segments,
    slope: np.ndarray,
    local1: np.ndarray,
    local2: np.ndarray,
    rn2: np.ndarray,
    pat: _Pattern,
    intercept: np.float32,
    constant: np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Jump test of each fitted segment: (M,) bool jump, (M,) int first resultant of it.

    ``local1``/``local2`` (K-1, P)/(K-2, P) float32 hold the single/double-difference
    local slopes of the block (e-/s).
    """
    a, b, pix = seg.start, seg.end, seg.pix
    items = np.arange(pix.size)
    correct = -slope / (pat.tbar[b] - pat.tbar[a])
    rn2p = rn2[pix]
    loc1, loc2 = local1[:, pix], local2[:, pix]

    def stat(local: np.ndarray, rec: np.ndarray, vs: np.ndarray, dt_sq: np.ndarray) -> np.ndarray:
        var = (rn2p * rec + slope * vs) / dt_sq
        return (local - slope) / np.sqrt(var + correct)

    last = b - 1  # the single difference ending the segment is the initial candidate
    best = stat(loc1[last, items], pat.rec1[last], pat.vs1[last], pat.dt1_sq[last])
    where = last.copy()
    for i in range(pat.dt2.size):
        live = (a <= i) & (i <= b - 2)
        cand = np.fmax(
            stat(loc1[i], pat.rec1[i], pat.vs1[i], pat.dt1_sq[i]),
            stat(loc2[i], pat.rec2[i], pat.vs2[i], pat.dt2_sq[i]),
        )
        better = live & (cand > best)
        best = np.where(better, cand, best)
        where = np.where(better, i, where)
    clipped = np.where(slope > 1, slope, F32(1))
    clipped = np.where(clipped < 1e4, clipped, F32(1e4))
    threshold = (np.float64(intercept) - np.float64(constant) * np.log10(clipped.astype(np.float64))).astype(F32)
    return best > threshold, where


def _fit_block(
    res: np.ndarray,
    gdq: np.ndarray,
    rn_e: np.ndarray,
    pat: _Pattern,
    use_jump: bool,
    intercept: np.float32,
    constant: np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit a block: res (K, P) float32 e-, gdq (K, P) uint8, rn_e (P,) float32 e-.

    Returns slope (e-/s), read and Poisson variance ((e-/s)**2), float32 (P,), and the
    (K, P) bool mask of resultants flagged as jumps.
    """
    nres, npix = res.shape
    rn2 = rn_e * rn_e
    jumps = np.zeros((nres, npix), bool)
    if use_jump:
        local1 = (res[1:] - res[:-1]) / pat.dt1[:, None]
        local2 = (res[2:] - res[:-2]) / pat.dt2[:, None]
    seg = _initial_segments(gdq == 0)
    done_pix, done_start = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
    done_fit = [np.zeros((3, 0), F32)]
    while seg.pix.size:
        slope, read_var, poisson_var = _fit_segments(seg, res, rn2, pat)
        if use_jump:
            jump, j0 = _find_jumps(seg, slope, local1, local2, rn2, pat, intercept, constant)
        else:
            jump = np.zeros(seg.pix.size, bool)
        ok = ~jump
        done_pix.append(seg.pix[ok])
        done_start.append(seg.start[ok])
        done_fit.append(np.stack([slope[ok], read_var[ok], poisson_var[ok]]))
        if not jump.any():
            break
        pj, aj, bj, j0 = seg.pix[jump], seg.start[jump], seg.end[jump], j0[jump]
        jumps[j0, pj] = True
        jumps[j0 + 1, pj] = True
        before = j0 - aj >= 2  # [start, j0 - 1] keeps at least two resultants
        after = bj - (j0 + 1) >= 2  # [j0 + 2, end]
        seg = _Segments(
            np.concatenate([pj[before], pj[after]]),
            np.concatenate([aj[before], j0[after] + 2]),
            np.concatenate([j0[before] - 1, bj[after]]),
        )
    return (
        *_combine(np.concatenate(done_pix), np.concatenate(done_start), np.concatenate(done_fit, axis=1), npix),
        jumps,
    )


def _combine(
    pix: np.ndarray, start: np.ndarray, fits: np.ndarray, npix: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-read-variance average of each pixel's segments, latest segment first."""
    slope, read_var, poisson_var = fits
    use = ~np.isnan(slope)
    order = np.lexsort((-start[use], pix[use]))
    p = pix[use][order]
    s, rv, pv = slope[use][order], read_var[use][order], poisson_var[use][order]
    first = np.ones(p.size, bool)
    first[1:] = p[1:] != p[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(p.size), 0))
    rank = np.arange(p.size) - group_start

    total = np.zeros(npix, F32)
    avg_s = np.zeros(npix, F32)
    avg_r = np.zeros(npix, F32)
    avg_p = np.zeros(npix, F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_all = np.where(rv == 0, F32(0), F32(1) / rv)
        for r in range(int(rank.max(initial=-1)) + 1):
            sel = rank == r
            q, w = p[sel], w_all[sel]
            w2 = w * w
            total[q] += w
            avg_s[q] += w * s[sel]
            avg_r[q] += w2 * rv[sel]
            avg_p[q] += w2 * pv[sel]
        nonzero = total != 0
        avg_s /= np.where(nonzero, total, F32(1))
        total_sq = np.where(nonzero, total * total, F32(1))
        avg_r /= total_sq
        avg_p /= total_sq
        avg_p *= np.where(F32(0) > avg_s, F32(0), avg_s)
    return avg_s, avg_r, avg_p


def fit_ols_cas22(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    timing: ReadTiming,
    params: RampFitParams,
) -> RampFitResult:
    """Fit every pixel's ramp with the Casertano (2022) ``ols_cas22`` algorithm.

    Parameters
    ----------
    data : ndarray, (K, ny, nx) float32
        Resultants, DN.
    groupdq : ndarray, (K, ny, nx) uint8
        Group flags; any bit ends a segment.
    pixeldq : ndarray, (ny, nx) uint32
        Pixel flags, passed through into ``dq``.
    readnoise : ndarray, (ny, nx) float32
        Read noise of a single read, DN.
    gain : ndarray, (ny, nx) float32
        Gain, e-/DN.
    timing : ReadTiming
        Read pattern and frame time.
    params : RampFitParams
        ``use_ramp_jump_detection``, ``threshold_intercept`` (default 5.5) and
        ``threshold_constant`` (default 1/3).

    Returns
    -------
    RampFitResult
        slope (DN/s), err, var_poisson, var_rnoise ((DN/s)**2) float32, chisq zeros;
        slope 0 and variances 0 where no segment could be fitted (NaN where the gain is
        0 or NaN); ``dq`` = pixeldq | JUMP_DET (any) | SATURATED (all) | DO_NOT_USE (all
        SATURATED/DO_NOT_USE, slope not finite, or err <= 0) | NO_GAIN_VALUE (gain < 0 or
        not finite); ``groupdq`` = a new array with JUMP_DET on both resultants around
        each detected jump.
    """
    nres = data.shape[0]
    check_inputs(data, groupdq, pixeldq, readnoise, gain, timing.nresultants)
    _, ny, nx = data.shape
    pat = pattern_constants(timing)
    intercept = F32(DEFAULT_THRESHOLD_INTERCEPT if params.threshold_intercept is None else params.threshold_intercept)
    constant = F32(DEFAULT_THRESHOLD_CONSTANT if params.threshold_constant is None else params.threshold_constant)
    gain32 = np.asarray(gain, dtype=F32)
    slope = np.empty((ny, nx), F32)
    var_r = np.empty((ny, nx), F32)
    var_p = np.empty((ny, nx), F32)
    err = np.empty((ny, nx), F32)
    gdq_out = np.empty_like(groupdq, dtype=np.uint8)
    dq = np.empty((ny, nx), np.uint32)
    with np.errstate(all="ignore"):
        for rows in row_blocks(ny, nx):
            npix = (rows.stop - rows.start) * nx
            g = gain32[rows].reshape(npix)
            res = np.asarray(data[:, rows], dtype=F32).reshape(nres, npix) * g  # electrons, as romancal
            rn_e = np.asarray(readnoise[rows], dtype=F32).reshape(npix) * g
            gblk = np.array(groupdq[:, rows], dtype=np.uint8).reshape(nres, npix)
            s, r, p, jumps = _fit_block(res, gblk, rn_e, pat, params.use_ramp_jump_detection, intercept, constant)
            g2 = g * g
            s /= g
            r /= g2
            p /= g2
            e = np.sqrt(p + r)
            gblk[jumps] = np.uint8(GroupFlag.JUMP_DET)  # assigned, as stcal does
            bdq = compress_dq(gblk, pixeldq[rows].reshape(npix), saturated_if_all=True)
            bdq |= pixel_bit(~np.isfinite(s) | (e <= 0), PixelFlag.DO_NOT_USE)
            bdq |= pixel_bit((g < 0) | ~np.isfinite(g), PixelFlag.NO_GAIN_VALUE)
            for out, arr in ((slope, s), (var_r, r), (var_p, p), (err, e), (dq, bdq)):
                out[rows] = arr.reshape(-1, nx)
            gdq_out[:, rows] = gblk.reshape(nres, -1, nx)
    log.debug("ols_cas22: %d pixels with jumps", int(np.count_nonzero(dq & PixelFlag.JUMP_DET)))
    chisq = np.zeros((ny, nx), F32)
    return RampFitResult(slope, err, var_p, var_r, chisq, dq, gdq_out)
