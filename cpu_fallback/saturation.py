"""saturation: saturation, A/D-floor and dilution flags (algorithms.md §2).

Same flags as stcal 1.20 ``flag_saturated_pixels`` called by romancal 1.1.0 with the pixel
flag table, the exposure's read pattern and no bias, followed by romancal's ``backup``.
With D_k the resultants, S the threshold and Q its DQ:

1. No-check pixels NC = (Q has NO_SAT_CHECK) or S is NaN; Q |= NO_SAT_CHECK where S is
   NaN; S = 65536 (A/D limit + 1) on NC.
2. Forward, k = 0..K-1: sat_k = sat_{k-1} or D_k >= S; G_k |= SATURATED on sat_k;
   G_k |= AD_FLOOR | DO_NOT_USE where D_k <= 0.  With n = n_pix_grow_sat > 0 every
   SATURATED bit of G_k is then grown by a (2n+1)^2 box (truncated at the edges).
3. Backward dilution, k = K-2..0, skipped where f_k = mean(P_k)/last(P_k) is 1:
   G_k |= DO_NOT_USE where D_k >= S*f_k (f = 1 on NC; product in float64) and G_k has
   neither SATURATED nor DO_NOT_USE and G_{k+1} has SATURATED (grown by n as well).
4. Second resultant (K > 2): G_1 |= DO_NOT_USE where (D_0/mean(P_0))*last(P_2) < S (float64)
   and D_1 - D_0 > (S - D_0)/N_1 (float32) and G_2 has SATURATED and G_1 has not.
5. pixeldq |= Q.
6. ``backup`` times, k ascending over resultants with N_k > 1: G_k |= G_{k+1} & SATURATED.

Everything works one resultant plane at a time (temporaries scale with npix, not K*npix).
"""

from __future__ import annotations

import numpy as np

from gpucal.backends.protocol import SaturationResult
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import ReadTiming

__all__ = ["saturation", "saturation_headroom", "last_clean_value", "ATOD_LIMIT"]

#: Hard DN limit of the 16-bit A/D converter; no-check pixels get ATOD_LIMIT + 1.
ATOD_LIMIT = 65535.0

_SAT = np.uint8(GroupFlag.SATURATED)
_DNU = np.uint8(GroupFlag.DO_NOT_USE)
_FLOOR = np.uint8(GroupFlag.AD_FLOOR | GroupFlag.DO_NOT_USE)
_NO_SAT_CHECK = np.uint32(PixelFlag.NO_SAT_CHECK)
_NOT_JUMP = np.uint8(0xFF & ~int(GroupFlag.JUMP_DET))


def saturation(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    threshold: np.ndarray,
    threshold_dq: np.ndarray,
    timing: ReadTiming,
    n_pix_grow_sat: int,
    backup: int,
) -> SaturationResult:
    """Flag saturated, A/D-floor and diluted-saturation resultants.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN).
    groupdq : ndarray, shape (K, ny, nx), uint8
        Group DQ, updated in place.
    pixeldq : ndarray, shape (ny, nx), uint32
        Pixel DQ; the returned one has the threshold DQ OR-ed in.
    threshold : ndarray, shape (ny, nx), float32
        Saturation threshold (DN); NaN means "no check".  Not modified.
    threshold_dq : ndarray, shape (ny, nx), uint32
        SATURATION reference DQ.  Not modified.
    timing : ReadTiming
        The exposure's read pattern.
    n_pix_grow_sat : int
        Box half-width by which new SATURATED (and dilution DO_NOT_USE) flags are grown.
    backup : int
        Times the SATURATED flag is copied back onto multi-read resultants (romancal).

    Returns
    -------
    SaturationResult
        ``groupdq`` (K, ny, nx) uint8 and ``pixeldq`` (ny, nx) uint32.
    """
    nres = data.shape[0]
    pattern = timing.read_pattern
    if len(pattern) != nres:
        raise ValueError(f"read pattern has {len(pattern)} resultants, data has {nres}")
    grow = int(n_pix_grow_sat)

    sat_dq = np.array(threshold_dq, dtype=np.uint32)
    thresh = np.array(threshold)  # a copy, in the reference's own precision
    nan = np.isnan(thresh)
    no_check = ((sat_dq & _NO_SAT_CHECK) == _NO_SAT_CHECK) | nan
    sat_dq[nan] |= _NO_SAT_CHECK
    thresh[no_check] = ATOD_LIMIT + 1
    del nan

    # 2. forward pass
    ever = np.zeros(thresh.shape, dtype=bool)
    for k in range(nres):
        plane = data[k]
        ever |= plane >= thresh
        g = groupdq[k]
        np.bitwise_or(g, _SAT, out=g, where=ever)
        np.bitwise_or(g, _FLOOR, out=g, where=plane <= 0)
        if grow > 0:
            np.bitwise_or(g, _SAT, out=g, where=_dilate((g & _SAT) != 0, grow))
    del ever

    # 3. backward dilution pass; each plane only reads the flags of the next, which this
    # pass never changes, so the order does not matter
    for k in range(nres - 2, -1, -1):
        factor = np.mean(pattern[k]) / pattern[k][-1]
        if factor == 1:
            continue
        scaled = thresh * np.where(no_check, 1.0, factor)
        partial = (data[k] >= scaled) & ((groupdq[k] & (_SAT | _DNU)) == 0) & ((groupdq[k + 1] & _SAT) != 0)
        del scaled
        if grow > 0:
            partial = _dilate(partial, grow)
        np.bitwise_or(groupdq[k], _DNU, out=groupdq[k], where=partial)

    # 4. saturation hidden in the second resultant
    if nres > 2:
        d0 = data[0]
        mask = (d0 / np.mean(pattern[0])) * pattern[2][-1] < thresh
        mask &= (data[1] - d0) > (thresh - d0) / len(pattern[1])
        mask &= ((groupdq[2] & _SAT) != 0) & ((groupdq[1] & _SAT) == 0)
        np.bitwise_or(groupdq[1], _DNU, out=groupdq[1], where=mask)

    pixeldq = np.bitwise_or(pixeldq, sat_dq, dtype=np.uint32)

    # 6. romancal's conservative back-flagging, ascending on purpose
    for _ in range(int(backup)):
        for k in range(nres - 1):
            if len(pattern[k]) > 1:
                groupdq[k] |= groupdq[k + 1] & _SAT

    return SaturationResult(groupdq, pixeldq)


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    """Binary dilation of a 2-D mask by a (2n+1) x (2n+1) box, truncated at the edges."""
    rows = mask.copy()
    for s in range(1, n + 1):
        rows[s:] |= mask[:-s]
        rows[:-s] |= mask[s:]
    out = rows.copy()
    for s in range(1, n + 1):
        out[:, s:] |= rows[:, :-s]
        out[:, :-s] |= rows[:, s:]
    return out


def last_clean_value(data: np.ndarray, groupdq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value of each pixel's last resultant with no group flag but JUMP_DET.

    That resultant is the ``last`` of ``cpu_fallback.ramp_fit.gls.initial_usable``: the
    last one the ramp fit can use.  Works one resultant plane at a time.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN).
    groupdq : ndarray, shape (K, ny, nx), uint8
        Group DQ.

    Returns
    -------
    value : ndarray, shape (ny, nx), float32
        ``data[k*]`` (DN); 0 where there is no such resultant.
    found : ndarray, shape (ny, nx), bool
        Whether the pixel has such a resultant.
    """
    shape = data.shape[1:]
    value = np.zeros(shape, np.float32)
    found = np.zeros(shape, bool)
    for k in range(data.shape[0]):  # ascending: a later clean resultant overwrites
        clean = (groupdq[k] & _NOT_JUMP) == 0
        np.copyto(value, data[k], where=clean, casting="same_kind")
        found |= clean
    return value, found


def saturation_headroom(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    threshold: np.ndarray,
    threshold_dq: np.ndarray,
) -> np.ndarray:
    """DN left below the saturation threshold at each pixel's last usable resultant.

    Run on the outputs of :func:`saturation`.  With k* the last resultant whose group DQ
    has no bit but JUMP_DET (the last one the ramp fit uses), the headroom is the float32
    difference ``threshold - data[k*]``: a read that climbs that much above the resultant
    reaches full well, although the resultant's average stayed below the threshold.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (raw DN, as the saturation step sees them).  Not modified.
    groupdq : ndarray, shape (K, ny, nx), uint8
        Group DQ after saturation flagging.  Not modified.
    pixeldq : ndarray, shape (ny, nx), uint32
        Pixel DQ.  Not modified.
    threshold : ndarray, shape (ny, nx), float32
        SATURATION reference threshold (DN); NaN means "no check".  Not modified.
    threshold_dq : ndarray, shape (ny, nx), uint32
        SATURATION reference DQ.  Not modified.

    Returns
    -------
    ndarray, shape (ny, nx), float32
        Headroom (DN); +inf where the pixel has no such resultant, the threshold is NaN,
        or ``threshold_dq`` or ``pixeldq`` has NO_SAT_CHECK (no saturation level known);
        NaN where ``data[k*]`` is NaN.
    """
    value, found = last_clean_value(data, groupdq)
    thresh = np.asarray(threshold, dtype=np.float32)
    headroom = np.subtract(thresh, value, dtype=np.float32)
    no_level = ~found | np.isnan(thresh)
    no_level |= (np.asarray(threshold_dq) & _NO_SAT_CHECK) == _NO_SAT_CHECK
    no_level |= (np.asarray(pixeldq) & _NO_SAT_CHECK) == _NO_SAT_CHECK
    headroom[no_level] = np.inf
    return headroom
