"""Two-point-difference jump detection for uneven resultants (NumPy backend).

This is stcal's two-point-difference method (``stcal.jump.twopoint_difference``, the
algorithm romancal's JumpStep ran before December 2024; spec ``algorithms.md`` §9) with its
noise model rewritten for Roman's uneven resultants.

Differences and their noise
---------------------------
For a pixel with resultants ``D_k`` (DN), ``N_k`` reads each, mean read times ``tbar_k``
and variance-weighted times ``tau_k`` (s, :class:`gpucal.readpattern.ReadTiming`), read
noise ``sigma`` (DN per single read) and gain ``g`` (e-/DN), difference ``i`` joins
resultants ``i`` and ``i + 1``:

* ``dt_i = tbar_{i+1} - tbar_i`` (s) and ``fd_i = (D_{i+1} - D_i) / dt_i`` (DN/s);
* for a count rate ``c`` (DN/s) the variance of ``D_{i+1} - D_i`` is
  ``V_i(c) = sigma**2 (1/N_i + 1/N_{i+1}) + (c/g) (tau_i + tau_{i+1} - 2 tbar_i)`` (DN^2):
  independent read noise of two averages of ``N_i`` and ``N_{i+1}`` reads, plus the Poisson
  variance of the charge collected, whose covariance between the two resultants is
  ``(c/g) tbar_i`` (the diagonal of Sigma in spec §7.1 step 3, times ``dt_i**2``);
* ``s_i(c) = sqrt(V_i(max(c, 0))) / dt_i`` is the noise of ``fd_i`` (DN/s); ``s_i = 0`` is
  treated as unknown (NaN), so a pixel with neither read noise nor signal never flags.

A difference is usable when neither of its resultants has SATURATED or DO_NOT_USE (the only
flags stcal masks; JUMP_DET, DROPOUT etc. do not exclude a resultant) and its value is
finite; pixels whose gain is not a positive finite number have no usable difference.

The search (stcal's logic, in rate units)
-----------------------------------------
Exposure switches, counted over the whole frame as stcal does: let ``n_g`` be K minus the
number of resultants in which *every* pixel has DO_NOT_USE.  If ``n_g < 3`` nothing is
searched.  If ``n_g - 1 >= 10`` one pass flags every usable ``i`` with
``|fd_i - m| / s_i(m) > rejection_threshold``, where ``m`` is the median of the pixel's
usable ``fd``.  Otherwise (every Roman read pattern so far) the per-pixel iteration runs:

1. ``a_i = |fd_i|`` over the ``n`` usable differences; the clipped median ``m`` of ``a`` is:
   ``n >= 4``: the median after removing the largest value (all copies of it);
   ``n == 3``: the median; ``n == 2``: the smaller value; ``n < 2``: undefined.
2. ``r_i = |a_i - m| / s_i(m)``; the pixel has a jump if ``max_i r_i`` exceeds
   ``rejection_threshold`` (``n >= 4``), ``four_group_rejection_threshold`` (``n == 3``:
   four resultants) or ``three_group_rejection_threshold`` (``n == 2``: three resultants).
3. The difference(s) attaining the maximum are flagged (JUMP_DET on the later resultant
   ``i + 1``) and removed from ``a``; steps 1-3 repeat for the pixels that flagged, at most
   ``K - 1`` times.

Sigma clipping across integrations (stcal's branch for >= 100 even groups or
integrations) never applies to Roman's single-integration exposures and is not built.

Neighbours: with ``flag_4_neighbors``, each difference ``i`` whose later resultant carries
JUMP_DET (found here or on input) and whose ``|fd_i - m0| / s_i(m0)`` lies strictly between
``min_jump_to_flag_neighbors`` and ``max_jump_to_flag_neighbors`` (``m0`` = plain median of
the usable ``fd``, NaN differences never qualify) flags resultant ``i + 1`` of the four
edge-adjacent pixels unless that resultant has SATURATED or DO_NOT_USE there.  Finally
JUMP_DET is cleared wherever the same resultant has SATURATED or DO_NOT_USE.

Relation to stcal
-----------------
stcal works in electrons per read-number interval and takes a CDS-like read noise
``sigma_cds``: ``sigma_stcal**2 = |m| dt' + sigma_cds**2 / (0.5 (N_i + N_{i+1}))`` with
``dt'`` the difference of mean read numbers.  Here the unit is DN/s (``fd`` times
``frame_time * g`` converts), the read part is ``sigma**2 (1/N_i + 1/N_{i+1})`` from the
per-read noise, and the photon part uses ``tau`` instead of ``dt`` (the two agree when both
resultants are single reads, ``tau = tbar``).  With single reads everywhere the ratios are
identical to stcal's when ``sigma_cds = sqrt(2) sigma`` (for equal ``N_i = N_{i+1}`` the read
parts agree too; for unequal ones stcal's ``4 sigma**2 / (N_i + N_{i+1})`` understates the
variance).  One deliberate change: the rate in the noise of the neighbour and single-pass
ratios is ``max(m0, 0)`` where stcal uses ``|m0|``, since a negative rate brings no photon
noise (the iterative search's median of ``|fd|`` is never negative, so it is unaffected).

Memory and speed: pixels are processed in blocks of rows (about 2**18 pixels each), in a
thread pool (NumPy releases the GIL); the per-pixel sorts are done by a Batcher merge-exchange
network over the difference planes.  Only pixels that flagged are carried into the later
iterations.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from gpucal.backends.protocol import JumpParams
from gpucal.dq import GroupFlag
from gpucal.readpattern import ReadTiming

__all__ = ["jump", "difference_noise", "DifferenceNoise", "MIN_USABLE_GROUPS", "MIN_DIFFS_SINGLE_PASS"]

log = logging.getLogger(__name__)

MIN_USABLE_GROUPS = 3
"""Fewer usable resultants (frame-wide) than this: no search (stcal ``minimum_groups``)."""

MIN_DIFFS_SINGLE_PASS = 10
"""At least this many usable differences (frame-wide): single pass (stcal default)."""

_BLOCK_PIXELS = 1 << 18
_SAT = np.uint8(GroupFlag.SATURATED)
_DNU = np.uint8(GroupFlag.DO_NOT_USE)
_JUMP = np.uint8(GroupFlag.JUMP_DET)
_EXCLUDE = np.uint8(GroupFlag.SATURATED | GroupFlag.DO_NOT_USE)
_CLEAR_JUMP = np.uint8(0xFF ^ int(GroupFlag.JUMP_DET))


class DifferenceNoise(NamedTuple):
    """Per-difference constants of a read pattern, each of shape ``(K - 1,)`` float64.

    ``dt``: ``tbar_{i+1} - tbar_i`` (s); ``read``: ``1/N_i + 1/N_{i+1}`` (multiplies the
    per-read variance, DN^2); ``photon``: ``tau_i + tau_{i+1} - 2 tbar_i`` (s; multiplies
    rate/gain).
    """

    dt: np.ndarray
    read: np.ndarray
    photon: np.ndarray


def difference_noise(timing: ReadTiming) -> DifferenceNoise:
    """Return the :class:`DifferenceNoise` of ``timing`` (see the module docstring)."""
    n = timing.n_reads.astype(np.float64)
    tbar = np.asarray(timing.tbar, dtype=np.float64)
    tau = np.asarray(timing.tau, dtype=np.float64)
    return DifferenceNoise(
        dt=np.diff(tbar),
        read=1.0 / n[:-1] + 1.0 / n[1:],
        photon=tau[:-1] + tau[1:] - 2.0 * tbar[:-1],
    )


class _Consts(NamedTuple):
    """Column vectors ``(K - 1, 1)`` float32 used to broadcast over a block of pixels."""

    inv_dt: np.ndarray
    dt: np.ndarray
    read: np.ndarray
    photon: np.ndarray


def _merge_exchange_pairs(n: int) -> list[tuple[int, int]]:
    """Comparator pairs of Batcher's merge-exchange sorting network for ``n`` keys."""
    pairs: list[tuple[int, int]] = []
    if n < 2:
        return pairs
    t = (n - 1).bit_length()
    p = 1 << (t - 1)
    while p > 0:
        q, r, d = 1 << (t - 1), 0, p
        while True:
            pairs.extend((i, i + d) for i in range(n - d) if i & p == r)
            if q == p:
                break
            d, q, r = q - p, q >> 1, p
        p >>= 1
    return pairs


def _sort_planes(x: np.ndarray) -> np.ndarray:
    """Sort ``x`` (n, M) along axis 0 in place with a sorting network; returns ``x``.

    NaN must already be replaced (by +inf): ``np.minimum`` would spread it.
    """
    n = x.shape[0]
    if n > 24:  # the network grows as n log^2 n; NumPy's sort wins well before this
        x.sort(axis=0)
        return x
    tmp = np.empty_like(x[0])
    for i, j in _merge_exchange_pairs(n):
        np.minimum(x[i], x[j], out=tmp)
        np.maximum(x[i], x[j], out=x[j])
        x[i] = tmp
    return x


def _pick(s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``s[idx[p], p]`` for every column p (idx clipped into range)."""
    idx = np.clip(idx, 0, s.shape[0] - 1)
    return np.take_along_axis(s, idx[None, :], axis=0)[0]


def _median(a: np.ndarray, n: np.ndarray, clip_largest: bool) -> np.ndarray:
    """Median over axis 0 of the non-NaN entries of ``a`` (n_d, M); ``n`` their count.

    ``clip_largest`` gives stcal's clipped median of |fd| (module docstring, step 1);
    otherwise the plain median (NaN where ``n == 0``).
    """
    s = _sort_planes(np.where(np.isnan(a), np.float32(np.inf), a))
    m = n
    if clip_largest:
        top = _pick(s, n - 1)
        ties = np.count_nonzero(s == top, axis=0)
        m = np.where(n >= 4, n - ties, n)
    med = np.float32(0.5) * (_pick(s, (m - 1) // 2) + _pick(s, m // 2))
    if clip_largest:
        med = np.where(n == 2, s[0], med)
        med[n < 2] = np.nan
    med[m < 1] = np.nan
    return med


def _ratio(a: np.ndarray, med: np.ndarray, rn2: np.ndarray, inv_g: np.ndarray, c: _Consts) -> np.ndarray:
    """``|a_i - med| / s_i(med)`` (n_d, M); NaN where ``a`` or the noise is NaN or zero noise."""
    rate = np.maximum(med, np.float32(0.0))  # NaN stays NaN
    var = rn2 * c.read + (rate * inv_g) * c.photon
    var[var == 0] = np.nan
    return np.abs(a - med) * c.dt / np.sqrt(var)


def _iterative_search(fd: np.ndarray, rn2: np.ndarray, inv_g: np.ndarray, c: _Consts, params: JumpParams) -> np.ndarray:
    """Flags (n_d, B) bool of the per-pixel iterative search on rates ``fd`` (NaN unusable)."""
    a = np.abs(fd)
    flagged = np.zeros(a.shape, dtype=bool)
    thresholds = np.array(
        [np.inf, np.inf, params.three_group_rejection_threshold, params.four_group_rejection_threshold],
        dtype=np.float32,
    )
    active: np.ndarray | None = None  # None: every pixel (first pass)
    for _ in range(a.shape[0]):
        sub = a if active is None else a[:, active]
        n = np.count_nonzero(~np.isnan(sub), axis=0)
        med = _median(sub, n, clip_largest=True)
        sel = slice(None) if active is None else active
        ratio = _ratio(sub, med, rn2[sel], inv_g[sel], c)
        peak = np.fmax.reduce(ratio, axis=0)
        thr = np.where(n >= 4, np.float32(params.rejection_threshold), thresholds[np.minimum(n, 3)])
        has_cr = peak > thr
        if not has_cr.any():
            break
        cols = np.flatnonzero(has_cr)
        new = ratio[:, cols] == peak[cols]
        idx = cols if active is None else active[cols]
        flagged[:, idx] |= new
        sub_cols = a[:, idx]
        sub_cols[new] = np.nan
        a[:, idx] = sub_cols
        active = idx
    return flagged


def _process_block(
    data: np.ndarray,
    groupdq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    rows: slice,
    c: _Consts,
    params: JumpParams,
    search: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect jumps in ``rows``; set JUMP_DET in place; return neighbour seeds (j, y, x)."""
    k, _, nx = data.shape
    block = data[:, rows].reshape(k, -1)
    gdq = groupdq[:, rows].reshape(k, -1).copy()  # written back at the end
    y0 = rows.start
    g = gain[rows].reshape(-1).astype(np.float32)
    good_gain = np.isfinite(g) & (g > 0)
    inv_g = np.where(good_gain, np.float32(1.0) / np.where(good_gain, g, np.float32(1.0)), np.float32(np.nan))
    rn2 = np.square(readnoise[rows].reshape(-1).astype(np.float32))

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        excluded = (gdq & _EXCLUDE) != 0
        fd = np.subtract(block[1:], block[:-1], dtype=np.float32)
        fd *= c.inv_dt
        fd[excluded[1:] | excluded[:-1] | ~np.isfinite(fd) | ~good_gain] = np.nan

        med0: np.ndarray | None = None
        if search == "iterative":
            flagged = _iterative_search(fd, rn2, inv_g, c, params)
        elif search == "single":
            n = np.count_nonzero(~np.isnan(fd), axis=0)
            med0 = _median(fd, n, clip_largest=False)
            flagged = _ratio(fd, med0, rn2, inv_g, c) > np.float32(params.rejection_threshold)
        else:
            flagged = np.zeros(fd.shape, dtype=bool)
        gdq[1:][flagged] |= _JUMP

        seeds = (np.empty(0, np.intp),) * 3
        if params.flag_4_neighbors:
            jumped = (gdq[1:] & _JUMP) != 0
            cand = np.flatnonzero(jumped.any(axis=0))
            if cand.size:
                sub = fd[:, cand]
                if med0 is None:
                    m0 = _median(sub, np.count_nonzero(~np.isnan(sub), axis=0), clip_largest=False)
                else:
                    m0 = med0[cand]
                r0 = _ratio(sub, m0, rn2[cand], inv_g[cand], c)
                seed = (
                    jumped[:, cand]
                    & (r0 > params.min_jump_to_flag_neighbors)
                    & (r0 < params.max_jump_to_flag_neighbors)
                )
                j, p = np.nonzero(seed)
                pix = cand[p]
                seeds = (j + 1, y0 + pix // nx, pix % nx)

    # stcal clears JUMP_DET on resultants that already carry DO_NOT_USE or SATURATED
    clear = ((gdq & _EXCLUDE) != 0) & ((gdq & _JUMP) != 0)
    gdq[clear] &= _CLEAR_JUMP
    groupdq[:, rows] = gdq.reshape(k, -1, nx)
    return seeds


def _flag_neighbours(groupdq: np.ndarray, seeds: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> int:
    """Set JUMP_DET on the four neighbours of every seed (same resultant) unless SAT/DNU."""
    _, ny, nx = groupdq.shape
    k = np.concatenate([s[0] for s in seeds])
    y = np.concatenate([s[1] for s in seeds])
    x = np.concatenate([s[2] for s in seeds])
    if k.size == 0:
        return 0
    kk = np.concatenate([k, k, k, k])
    yy = np.concatenate([y - 1, y + 1, y, y])
    xx = np.concatenate([x, x, x - 1, x + 1])
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    kk, yy, xx = kk[inside], yy[inside], xx[inside]
    ok = (groupdq[kk, yy, xx] & _EXCLUDE) == 0
    groupdq[kk[ok], yy[ok], xx[ok]] |= _JUMP
    return int(k.size)


def jump(
    data: np.ndarray,
    groupdq: np.ndarray,
    readnoise: np.ndarray,
    gain: np.ndarray,
    timing: ReadTiming,
    params: JumpParams,
    *,
    block_pixels: int = _BLOCK_PIXELS,
    threads: int | None = None,
) -> np.ndarray:
    """Flag jumps by two-point differences of uneven resultants (module docstring).

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN).  Not modified.
    groupdq : ndarray, shape (K, ny, nx), uint8
        Group DQ; JUMP_DET is set (and cleared on SAT/DNU resultants) in place.
    readnoise : ndarray, shape (ny, nx), float32
        Read noise of a single read (DN).
    gain : ndarray, shape (ny, nx), float32
        Gain (e-/DN); pixels where it is not positive and finite are not searched.
    timing : ReadTiming
        Timing of the read pattern (K resultants).
    params : JumpParams
        Thresholds (sigma) and neighbour flagging.
    block_pixels : int, optional
        Pixels per block (whole rows, at least one); bounds the temporary memory.
    threads : int, optional
        Worker threads (default: ``min(4, os.cpu_count())``).

    Returns
    -------
    ndarray, shape (K, ny, nx), uint8
        ``groupdq``, updated.
    """
    if data.ndim != 3 or data.shape != groupdq.shape:
        raise ValueError(f"data {data.shape} and groupdq {groupdq.shape} must be equal (K, ny, nx) shapes")
    k, ny, nx = data.shape
    if k != timing.nresultants:
        raise ValueError(f"data has {k} resultants, the read pattern {timing.nresultants}")
    if readnoise.shape != (ny, nx) or gain.shape != (ny, nx):
        raise ValueError(f"readnoise {readnoise.shape} and gain {gain.shape} must be ({ny}, {nx})")

    all_dnu = sum(bool(np.all((groupdq[i] & _DNU) != 0)) for i in range(k))
    usable_groups = k - all_dnu
    if usable_groups < MIN_USABLE_GROUPS:
        search = "none"
        log.info("jump: %d usable resultants (< %d), no search", usable_groups, MIN_USABLE_GROUPS)
    elif usable_groups - 1 >= MIN_DIFFS_SINGLE_PASS:
        search = "single"
    else:
        search = "iterative"

    noise = difference_noise(timing)
    consts = _Consts(
        *(np.asarray(v, dtype=np.float32)[:, None] for v in (1.0 / noise.dt, noise.dt, noise.read, noise.photon))
    )
    rows_per_block = max(1, block_pixels // max(nx, 1))
    blocks = [slice(y, min(y + rows_per_block, ny)) for y in range(0, ny, rows_per_block)]
    nthreads = threads if threads is not None else min(4, os.cpu_count() or 1)

    def work(rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _process_block(data, groupdq, readnoise, gain, rows, consts, params, search)

    if nthreads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=nthreads) as pool:
            seeds = list(pool.map(work, blocks))
    else:
        seeds = [work(rows) for rows in blocks]
    nseeds = _flag_neighbours(groupdq, seeds) if params.flag_4_neighbors else 0
    log.info("jump: %s search over %d resultants, %d neighbour seeds", search, k, nseeds)
    return groupdq
