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
searched.  If ``n_g - 1 >= 10`` one pass flags every usable ``i`` whose significance
``r_i`` exceeds ``rejection_threshold``.  Otherwise (every Roman read pattern so far) the
per-pixel iteration runs over the ``n`` usable differences:

1. compute every ``r_i`` (below);
2. the pixel has a jump if ``max_i r_i`` exceeds ``rejection_threshold`` (``n >= 4``),
   ``four_group_rejection_threshold`` (``n == 3``: four resultants) or
   ``three_group_rejection_threshold`` (``n == 2``: three resultants);
3. the difference(s) attaining the maximum are flagged (JUMP_DET on the later resultant
   ``i + 1``) and removed; steps 1-3 repeat for the pixels that flagged, at most ``K - 1``
   times.

Significance, ``reference_rate="weighted"`` (the default): a leave-one-out test
^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
With ``m`` the plain median of the usable ``fd`` (robust to a jump), the noise rate
``c = max(m, 0)``, weights ``w_j = 1 / s_j(c)**2`` and ``C_j = Cov(fd_j, fd_{j+1})``
(differences ``j`` and ``j + 1`` share resultant ``j + 1``; algorithms.md §7.1 step 3)::

    C_j = [(c/g) (tbar_{j+1} - tau_{j+1}) - sigma**2 / N_{j+1}] / (dt_j dt_{j+1}),

the reference of difference ``i`` is the inverse-variance-weighted mean of the *other*
usable differences, outliers left out: ``r_ref,i = sum_{j in R, j != i} w_j fd_j / W_i``,
``W_i = sum_{j in R, j != i} w_j``, where ``R`` holds the usable ``j`` with
``|fd_j - m| / s_j(c) <= rejection_threshold`` (all usable ``j`` if fewer than two would
remain).  Then ::

    r_i = (fd_i - r_ref,i) / sqrt(V_i),
    V_i = Var(fd_i - r_ref,i)
        = s_i**2 + 1/W_i + (2/W_i**2) sum_{j, j+1 in R; j, j+1 != i} w_j w_{j+1} C_j
          - (2/W_i) (w_{i-1} C_{i-1} [i-1 in R] + w_{i+1} C_i [i+1 in R]),

the exact variance for Gaussian noise at rate ``c`` (``R`` taken as given).  Leaving the
tested difference out of its own reference keeps a jump from hiding itself; leaving the
outliers out keeps the other half of a hit split over two differences, a second hit or a
negative step from biasing every other reference (with ``R`` = all, a large split hit makes
the clean differences look low by more than it looks high).  The test is one-sided: a
cosmic ray only adds charge; a two-sided test would double the false positives (and a
negative step, being outside ``R``, does no harm unflagged).  ``r_i`` is NaN where ``s_i`` is
not positive or ``W_i = 0``, so a pixel with neither read noise nor signal never flags.
Measured on simulated clean ramps (pattern 1,2,4,4,6,6,6,1 reads, sigma 6 DN, g 2):
``std(r_i) = 1.00`` for every ``i`` at 1 and 100 DN/s; per-difference false-positive rate
at 4.5 sigma 6e-6 at 1-100 DN/s (one-sided Gaussian tail 3.4e-6; the excess is Poisson
skew and the scatter of the median noise rate), 1.4e-6 at 0 DN/s; at 4 sigma 4.5e-5
(tail 3.2e-5).  Hits found at 1 DN/s, 4.5 sigma: 100 e- on a resultant's first read 99.7%,
100 e- at a random read 82%, 150 e- at a random read 99.5%.

Significance, ``reference_rate="median"``: stcal's clipped median (bit-for-bit stcal)
^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
``a_i = |fd_i|``; the clipped median ``m`` of ``a`` is, for ``n >= 4``, the median after
removing the largest value (all copies of it); ``n == 3``: the median; ``n == 2``: the
smaller value; and ``r_i = |a_i - m| / s_i(m)``.  The single pass uses the plain median
``m0`` of the usable ``fd`` and ``|fd_i - m0| / s_i(m0)``.  This is kept for parity with
stcal and the GPU twin.  On uneven resultants it is a poor test: an unweighted median
over differences whose noise differs up to eightfold scatters by several times the noise
of the long differences, so at 4 sigma it flags ~1e-3 of the differences at 1 DN/s
(Gaussian: 6e-5; simulation as above).

Why the weighted test and 4.5 sigma (measured on the full-frame demo, seed 2026, 8
resultants; "clean" = no cosmic ray at or beside the pixel): the demo's differences
scatter 9% more than READNOISE predicts (read noise added by the reference-pixel
correction), so fractions of clean pixels flagged are: median 4.0 sigma 1.2e-2, weighted
4.0 sigma 1.1e-3, 4.25 sigma 4.6e-4, 4.5 sigma 2.0e-4, against 3.9e-4 for romancal 1.1.0's
``likely`` (which also tests at 4.5 sigma).  Cosmic rays of 100-150 e- (after read 1,
unsaturated pixels) found by this step at 4.5 sigma: 94% (100% of hits on a resultant's
first read, 92% of hits inside a multi-read resultant, whose charge is split over two
differences); ols_cas22's own search, which runs after this step, brings that to 96%, and
>= 150 e- are all found (romancal ``likely``: 99% and 100%).  Full frame: 2.7 CPU-seconds
(median mode 1.6).

Neighbours: with ``flag_4_neighbors``, each difference ``i`` whose later resultant carries
JUMP_DET (found here or on input) and whose stcal ratio ``|fd_i - m0| / s_i(m0)`` lies
strictly between ``min_jump_to_flag_neighbors`` and ``max_jump_to_flag_neighbors`` (``m0``
= plain median of the usable ``fd``, NaN differences never qualify; the same in both
modes) flags resultant ``i + 1`` of the four edge-adjacent pixels unless that resultant has
SATURATED or DO_NOT_USE there.  Finally JUMP_DET is cleared wherever the same resultant has
SATURATED or DO_NOT_USE.

Sigma clipping across integrations (stcal's branch for >= 100 even groups or
integrations) never applies to Roman's single-integration exposures and is not built.

Relation to stcal
-----------------
stcal works in electrons per read-number interval and takes a CDS-like read noise
``sigma_cds``: ``sigma_stcal**2 = |m| dt' + sigma_cds**2 / (0.5 (N_i + N_{i+1}))`` with
``dt'`` the difference of mean read numbers.  Here the unit is DN/s (``fd`` times
``frame_time * g`` converts), the read part is ``sigma**2 (1/N_i + 1/N_{i+1})`` from the
per-read noise, and the photon part uses ``tau`` instead of ``dt`` (the two agree when both
resultants are single reads, ``tau = tbar``).  With ``reference_rate="median"`` and single
reads everywhere the ratios (hence the flags; ``tests/cpu_fallback/test_jump.py``, oracle)
are identical to stcal's when ``sigma_cds = sqrt(2) sigma`` (for equal ``N_i = N_{i+1}`` the read
parts agree too; for unequal ones stcal's ``4 sigma**2 / (N_i + N_{i+1})`` understates the
variance).  One deliberate change: the rate in the noise of the neighbour and single-pass
ratios is ``max(m0, 0)`` where stcal uses ``|m0|``, since a negative rate brings no photon
noise (the iterative search's median of ``|fd|`` is never negative, so it is unaffected).

The weighted mode departs from stcal in the reference (leave-one-out weighted mean without
outliers, not a median of ``|fd|``), in the variance of the test (``V_i``, not
``s_i(m)**2``) and in being one-sided; the iteration, thresholds, neighbour rule and
exposure switches are stcal's.

Memory and speed: pixels are processed in blocks of whole rows (about 2**15 pixels each,
small enough for the difference planes to stay in cache), in a thread pool (NumPy releases
the GIL); the per-pixel sorts are done by a Batcher merge-exchange network over the
difference planes.  Only pixels that flagged are carried into the later iterations.
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

__all__ = [
    "jump",
    "difference_noise",
    "DifferenceNoise",
    "MIN_USABLE_GROUPS",
    "MIN_DIFFS_SINGLE_PASS",
    "REFERENCE_RATES",
]

log = logging.getLogger(__name__)

REFERENCE_RATES = ("weighted", "median")
"""``reference_rate`` modes: gpucal's leave-one-out weighted test, or stcal's clipped median."""

MIN_USABLE_GROUPS = 3
"""Fewer usable resultants (frame-wide) than this: no search (stcal ``minimum_groups``)."""

MIN_DIFFS_SINGLE_PASS = 10
"""At least this many usable differences (frame-wide): single pass (stcal default)."""

_BLOCK_PIXELS = 1 << 15
_SAT = np.uint8(GroupFlag.SATURATED)
_DNU = np.uint8(GroupFlag.DO_NOT_USE)
_JUMP = np.uint8(GroupFlag.JUMP_DET)
_EXCLUDE = np.uint8(GroupFlag.SATURATED | GroupFlag.DO_NOT_USE)
_CLEAR_JUMP = np.uint8(0xFF ^ int(GroupFlag.JUMP_DET))


class DifferenceNoise(NamedTuple):
    """Per-difference constants of a read pattern.

    Shape ``(K - 1,)`` float64: ``dt``: ``tbar_{i+1} - tbar_i`` (s); ``read``:
    ``1/N_i + 1/N_{i+1}`` (multiplies the per-read variance, DN^2); ``photon``:
    ``tau_i + tau_{i+1} - 2 tbar_i`` (s; multiplies rate/gain).
    Shape ``(K - 2,)`` float64, for the covariance of differences ``j`` and ``j + 1``
    (they share resultant ``j + 1``): ``cov_read``: ``1/N_{j+1}`` (its read-noise part is
    ``-sigma**2 cov_read``); ``cov_photon``: ``tbar_{j+1} - tau_{j+1}`` (s; times rate/gain).
    """

    dt: np.ndarray
    read: np.ndarray
    photon: np.ndarray
    cov_read: np.ndarray
    cov_photon: np.ndarray


def difference_noise(timing: ReadTiming) -> DifferenceNoise:
    """Return the :class:`DifferenceNoise` of ``timing`` (see the module docstring)."""
    n = timing.n_reads.astype(np.float64)
    tbar = np.asarray(timing.tbar, dtype=np.float64)
    tau = np.asarray(timing.tau, dtype=np.float64)
    return DifferenceNoise(
        dt=np.diff(tbar),
        read=1.0 / n[:-1] + 1.0 / n[1:],
        photon=tau[:-1] + tau[1:] - 2.0 * tbar[:-1],
        cov_read=1.0 / n[1:-1],
        cov_photon=tbar[1:-1] - tau[1:-1],
    )


class _Consts(NamedTuple):
    """Column vectors (float32) used to broadcast over a block of pixels.

    ``inv_dt``, ``dt``, ``read``, ``photon``, ``inv_dt2``: ``(K - 1, 1)``; ``cov_read``,
    ``cov_photon``: ``(K - 2, 1)``, ``cov_photon`` and ``cov_read`` divided by
    ``dt_j dt_{j+1}`` (rate units).
    """

    inv_dt: np.ndarray
    dt: np.ndarray
    read: np.ndarray
    photon: np.ndarray
    inv_dt2: np.ndarray
    cov_read: np.ndarray
    cov_photon: np.ndarray


def _consts(timing: ReadTiming) -> _Consts:
    noise = difference_noise(timing)
    inv_dtdt = 1.0 / (noise.dt[:-1] * noise.dt[1:])
    cols = (
        1.0 / noise.dt,
        noise.dt,
        noise.read,
        noise.photon,
        1.0 / noise.dt**2,
        noise.cov_read * inv_dtdt,
        noise.cov_photon * inv_dtdt,
    )
    return _Consts(*(np.asarray(v, dtype=np.float32)[:, None] for v in cols))


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


def _loo_significance(fd: np.ndarray, rn2: np.ndarray, inv_g: np.ndarray, c: _Consts, kappa: float) -> np.ndarray:
    """One-sided significance ``z_i`` of each rate ``fd`` (n_d, M) against the others.

    ``z_i = (fd_i - r_i) / sqrt(V_i)``: ``r_i`` is the inverse-variance-weighted mean of the
    other usable differences that are not outliers (``|fd_j - m| / s_j > kappa`` about the
    median ``m``), ``V_i`` the variance of ``fd_i - r_i`` with the covariance of neighbouring
    differences, both at the noise rate ``max(m, 0)`` (module docstring).  NaN where ``fd``
    is NaN, its noise is not positive, or no other difference is usable.
    """
    n = np.count_nonzero(~np.isnan(fd), axis=0)
    med = _median(fd, n, clip_largest=False)
    rate_g = np.maximum(med, np.float32(0.0)) * inv_g  # (M,) rate / gain
    s2 = rn2 * c.read  # variance of fd (rate units squared)
    s2 += rate_g * c.photon
    s2 *= c.inv_dt2
    usable = ~np.isnan(fd) & (s2 > 0)
    w = np.zeros_like(fd)
    np.divide(np.float32(1.0), s2, out=w, where=usable)
    # Weights of the reference: outliers about the median left out, unless fewer than two
    # differences would remain (then every i still has a reference).
    dev = np.abs(fd - med)
    outlier = usable & (np.square(dev) * w > np.float32(kappa) ** 2)
    keep_all = np.count_nonzero(usable & ~outlier, axis=0) < 2
    outlier[:, keep_all] = False
    w_ref = np.where(outlier, np.float32(0.0), w)
    wf = np.where(usable, fd, np.float32(0.0))
    wf *= w_ref
    u = w_ref.sum(axis=0) - w_ref  # reference weight of the others, then its inverse
    np.divide(np.float32(1.0), u, out=u)
    d = wf.sum(axis=0) - wf
    d *= u
    np.subtract(fd, d, out=d)  # fd_i - r_i
    # V_i = s_i^2 + u_i (1 - 2 cov_i + 2 u_i pairs_i): Var(r_i) = u_i + 2 u_i^2 pairs_i with
    # pairs_i the sum of w_j w_{j+1} C_j over pairs not touching i, Cov(fd_i, r_i) = u_i cov_i.
    t = np.full_like(fd, np.float32(1.0))
    if fd.shape[0] > 1:
        cov_next = rate_g * c.cov_photon  # C_j = Cov(fd_j, fd_{j+1}), (n_d - 1, M)
        cov_next -= rn2 * c.cov_read
        pair = w_ref[:-1] * w_ref[1:]
        pair *= cov_next
        pairs = np.broadcast_to(pair.sum(axis=0), fd.shape).copy()
        pairs[1:] -= pair
        pairs[:-1] -= pair
        pairs *= u
        t[:-1] -= np.float32(2.0) * (w_ref[1:] * cov_next)
        t[1:] -= np.float32(2.0) * (w_ref[:-1] * cov_next)
        t += np.float32(2.0) * pairs
    t *= u
    t += s2
    usable &= t > 0
    np.sqrt(t, out=t)
    np.divide(d, t, out=d)
    d[~usable] = np.nan
    return d


def _iterative_search(
    fd: np.ndarray, rn2: np.ndarray, inv_g: np.ndarray, c: _Consts, params: JumpParams, reference_rate: str
) -> np.ndarray:
    """Flags (n_d, B) bool of the per-pixel iterative search on rates ``fd`` (NaN unusable)."""
    weighted = reference_rate == "weighted"
    a = fd.copy() if weighted else np.abs(fd)
    flagged = np.zeros(a.shape, dtype=bool)
    thresholds = np.array(
        [np.inf, np.inf, params.three_group_rejection_threshold, params.four_group_rejection_threshold],
        dtype=np.float32,
    )
    active: np.ndarray | None = None  # None: every pixel (first pass)
    for _ in range(a.shape[0]):
        sub = a if active is None else a[:, active]
        sel = slice(None) if active is None else active
        n = np.count_nonzero(~np.isnan(sub), axis=0)
        if weighted:
            ratio = _loo_significance(sub, rn2[sel], inv_g[sel], c, params.rejection_threshold)
        else:
            ratio = _ratio(sub, _median(sub, n, clip_largest=True), rn2[sel], inv_g[sel], c)
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
    reference_rate: str,
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
            flagged = _iterative_search(fd, rn2, inv_g, c, params, reference_rate)
        elif search == "single" and reference_rate == "weighted":
            kappa = params.rejection_threshold
            flagged = _loo_significance(fd, rn2, inv_g, c, kappa) > np.float32(params.rejection_threshold)
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
    reference_rate: str = "weighted",
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
    reference_rate : {"weighted", "median"}, optional
        The significance of a difference: gpucal's one-sided leave-one-out weighted test
        (default) or stcal's clipped median of ``|fd|`` (flag-for-flag stcal on single-read
        patterns; the mode the GPU kernel reproduces).
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

    if reference_rate not in REFERENCE_RATES:
        raise ValueError(f"reference_rate must be one of {REFERENCE_RATES}, got {reference_rate!r}")
    consts = _consts(timing)
    rows_per_block = max(1, block_pixels // max(nx, 1))
    blocks = [slice(y, min(y + rows_per_block, ny)) for y in range(0, ny, rows_per_block)]
    nthreads = threads if threads is not None else min(4, os.cpu_count() or 1)

    def work(rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _process_block(data, groupdq, readnoise, gain, rows, consts, params, search, reference_rate)

    if nthreads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=nthreads) as pool:
            seeds = list(pool.map(work, blocks))
    else:
        seeds = [work(rows) for rows in blocks]
    nseeds = _flag_neighbours(groupdq, seeds) if params.flag_4_neighbors else 0
    log.info("jump: %s search over %d resultants, %d neighbour seeds", search, k, nseeds)
    return groupdq
