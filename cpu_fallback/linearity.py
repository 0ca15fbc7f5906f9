"""linearity: read-level non-linearity correction with inverse linearity and INL (§6).

romancal 1.1.0 calls stcal 1.20 ``linearity_correction`` with the LINEARITY coefficients
``c`` and the INVERSELINEARITY coefficients ``i`` (polynomials ``P(v) = sum_j c_j v^j``,
evaluated by Horner from the highest order), the read pattern and, when an
INTEGRALNONLINEARITY file exists, a per-channel lookup.

Coefficient preparation (both sets, each against the LINEARITY dq): pixeldq |= lin_dq;
pixels with NO_LIN_CORR in lin_dq, then pixels with a NaN coefficient, then pixels whose
linear term is 0 get the identity polynomial (c_1 = 1, others 0); the last two also get
NO_LIN_CORR in pixeldq.

Per pixel, with m_k the mean read number of resultant k:

* n = (resultants without SATURATED) - 1, at least 2; L = n - 1;
* F_0 = P_c(D_0), F_L = P_c(D_L), each left as D where that resultant is SATURATED
  (float32 Horner), rate = (F_L - F_0) / (m_L - m_0) (float32 difference, float64 rate);
* for resultant k and each read r of it: u_r = P_i(F_0 + rate (r - m_0)) (float64);
  u_r += D_k - mean_r u_r; u_r += INL_channel(u_r) if an INL table is given;
  D_k = float32(mean_r P_c(u_r)) unless resultant k is SATURATED.

Without inverse coefficients every unsaturated resultant is simply P_c(D_k) (float32).
Afterwards (romancal) values with |D| > 1e6 are clipped to +-1e6 and get DO_NOT_USE.

The INL channel of a value is that of its *frame* column: romancal builds the lookup for
the full data width (reference columns included), channel ``c`` covering columns
``c w .. c w + w - 1`` with w = 128.  A table row that is all NaN means "no correction"
(a gpucal convention; real tables have none).

Work proceeds in row blocks, each with its own copy of the coefficients, so the reference
arrays are never modified and temporaries stay at (reads x block) size.
"""

from __future__ import annotations

import numpy as np

from cpu_fallback.saturation import last_clean_value
from gpucal.backends.protocol import InlTable, LinearityResult
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import ReadTiming

__all__ = ["linearity", "linearity_threshold", "check_inl", "CLIP_LIMIT"]

#: romancal clips linearised values beyond this magnitude (DN) and flags them DO_NOT_USE.
CLIP_LIMIT = 1e6

_SAT = np.uint8(GroupFlag.SATURATED)
_DNU = np.uint8(GroupFlag.DO_NOT_USE)
_NO_LIN_CORR = np.uint32(PixelFlag.NO_LIN_CORR)
_BLOCK_PIXELS = 1 << 18  # pixels per row block


def linearity(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    lin_coeffs: np.ndarray,
    ilin_coeffs: np.ndarray | None,
    lin_dq: np.ndarray,
    inl: InlTable | None,
    timing: ReadTiming,
) -> LinearityResult:
    """Correct every unsaturated resultant for classic and integral non-linearity.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN), corrected in place.
    groupdq : ndarray, shape (K, ny, nx), uint8
        Group DQ; SATURATED resultants are left unchanged, clipped values get DO_NOT_USE.
    pixeldq : ndarray, shape (ny, nx), uint32
        Pixel DQ; the returned one has lin_dq and NO_LIN_CORR OR-ed in.
    lin_coeffs : ndarray, shape (ncoeff, ny, nx), float32
        LINEARITY coefficients, constant term first.  Not modified.
    ilin_coeffs : ndarray, shape (ncoeff_i, ny, nx), float32, or None
        INVERSELINEARITY coefficients; None selects the per-resultant correction.
    lin_dq : ndarray, shape (ny, nx), uint32
        LINEARITY reference DQ (also used for the inverse coefficients).
    inl : InlTable or None
        Integral non-linearity lookup (read-level path only).
    timing : ReadTiming
        The exposure's read pattern.

    Returns
    -------
    LinearityResult
        ``data`` float32, ``groupdq`` uint8, ``pixeldq`` uint32.
    """
    nres, ny, nx = data.shape
    pattern = timing.read_pattern
    if len(pattern) != nres:
        raise ValueError(f"read pattern has {len(pattern)} resultants, data has {nres}")
    if ilin_coeffs is not None and nres < 2:
        raise ValueError("read-level linearity needs at least 2 resultants")
    if inl is not None and ilin_coeffs is not None:
        check_inl(inl, nx)

    lin_dq = np.asarray(lin_dq)
    flagged = (lin_dq & _NO_LIN_CORR) == _NO_LIN_CORR
    pixeldq = np.bitwise_or(pixeldq, lin_dq, dtype=np.uint32)
    mean_read = np.array([np.mean(reads) for reads in pattern])

    rows = max(1, _BLOCK_PIXELS // max(nx, 1))
    for r0 in range(0, ny, rows):
        r1 = min(r0 + rows, ny)
        block = slice(r0, r1)
        lin, bad = _prepare(lin_coeffs[:, block], flagged[block])
        pixeldq[block][bad] |= _NO_LIN_CORR
        if ilin_coeffs is None:
            _classic(data[:, block], groupdq[:, block], lin)
        else:
            ilin, bad = _prepare(ilin_coeffs[:, block], flagged[block])
            pixeldq[block][bad] |= _NO_LIN_CORR
            _read_level(data[:, block], groupdq[:, block], lin, ilin, inl, pattern, mean_read)
        _clip(data[:, block], groupdq[:, block])
    return LinearityResult(data, groupdq, pixeldq)


def linearity_threshold(
    data: np.ndarray,
    groupdq: np.ndarray,
    headroom: np.ndarray,
    lin_coeffs: np.ndarray | None,
    lin_dq: np.ndarray | None,
) -> np.ndarray:
    """The saturation threshold in the linearized DN of each pixel's resultants.

    Run on the linearity step's *input*.  With k* the last resultant whose group DQ has no
    bit but JUMP_DET, the level is ``P(data[k*] + headroom)`` (the sum in float32), P the
    classic LINEARITY polynomial of the pixel evaluated as :func:`linearity` does for one
    value (float32 Horner; the identity for NO_LIN_CORR, NaN-coefficient and zero-linear-term
    pixels).  Anchoring at the pixel's own resultant carries whatever the steps between
    saturation and linearity did to the ramp (reference-pixel offsets) into the level.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN) before the linearity correction.  Not modified.
    groupdq : ndarray, shape (K, ny, nx), uint8
        Group DQ.  Not modified.
    headroom : ndarray, shape (ny, nx), float32
        :func:`cpu_fallback.saturation.saturation_headroom` (DN).
    lin_coeffs : ndarray, shape (ncoeff, ny, nx), float32, or None
        LINEARITY coefficients, constant term first (ncoeff >= 2); None: no correction
        (the level is ``data[k*] + headroom``).  Not modified.
    lin_dq : ndarray, shape (ny, nx), uint32, or None
        LINEARITY reference DQ (may be None without ``lin_coeffs``).

    Returns
    -------
    ndarray, shape (ny, nx), float32
        Saturation level (linearized DN); +inf where the pixel has no such resultant or
        its headroom is not finite; NaN where ``data[k*]`` is NaN.
    """
    value, found = last_clean_value(data, groupdq)
    headroom = np.asarray(headroom, dtype=np.float32)
    ok = found & np.isfinite(headroom)
    level = np.add(value, headroom, dtype=np.float32)
    level[~ok] = 0  # no level there; keeps the polynomial finite
    if lin_coeffs is not None:
        if lin_coeffs.ndim != 3 or lin_coeffs.shape[0] < 2:
            raise ValueError(f"linearity needs at least 2 coefficients, lin_coeffs has shape {lin_coeffs.shape}")
        if lin_dq is None:
            raise ValueError("lin_dq is needed with lin_coeffs")
        flagged = (np.asarray(lin_dq) & _NO_LIN_CORR) == _NO_LIN_CORR
        nx = level.shape[-1]
        rows = max(1, _BLOCK_PIXELS // max(nx, 1))
        for r0 in range(0, level.shape[0], rows):
            block = slice(r0, r0 + rows)
            lin, _ = _prepare(lin_coeffs[:, block], flagged[block])
            level[block] = _horner(level[block], lin)
    level[~ok] = np.inf
    return level


def _prepare(coeffs: np.ndarray, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy of a block of coefficients with bad pixels made the identity; and those pixels.

    Returns the coefficients and the pixels that need NO_LIN_CORR added (NaN or zero
    linear term; pixels already flagged NO_LIN_CORR carry the flag from lin_dq).
    """
    coeffs = np.array(coeffs)
    has_nan = np.isnan(coeffs).any(axis=0)
    zero = (coeffs[1] == 0) & ~flagged & ~has_nan
    identity = flagged | has_nan | zero
    if identity.any():
        coeffs[:, identity] = 0
        coeffs[1, identity] = 1
    return coeffs, has_nan | zero


def _horner(values: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """``sum_j coeffs[j] values**j`` by Horner's rule, in the promoted dtype of the two."""
    n = coeffs.shape[0]
    result = coeffs[n - 1] * values
    for j in range(n - 2, 0, -1):
        result += coeffs[j]
        result *= values
    result += coeffs[0]
    return result


def _classic(data: np.ndarray, groupdq: np.ndarray, lin: np.ndarray) -> None:
    for k in range(data.shape[0]):
        corrected = _horner(data[k], lin)
        np.copyto(data[k], corrected, where=(groupdq[k] & _SAT) == 0)


def _read_level(
    data: np.ndarray,
    groupdq: np.ndarray,
    lin: np.ndarray,
    ilin: np.ndarray,
    inl: InlTable | None,
    pattern: tuple[tuple[int, ...], ...],
    mean_read: np.ndarray,
) -> None:
    nres = data.shape[0]
    saturated = (groupdq & _SAT) != 0
    n_unsat = nres - saturated.sum(axis=0, dtype=np.int32) - 1
    last = np.maximum(n_unsat, 2) - 1

    first_lin = _horner(data[0], lin)
    np.copyto(first_lin, data[0], where=saturated[0])
    last_data = np.take_along_axis(data, last[None], axis=0)[0]
    last_lin = _horner(last_data, lin)
    np.copyto(last_lin, last_data, where=np.take_along_axis(saturated, last[None], axis=0)[0])
    rate = (last_lin - first_lin) / (mean_read[last] - mean_read[0])
    first = first_lin.astype(np.float64)
    del last_data, last_lin, first_lin

    for k, reads in enumerate(pattern):
        # means are sums in read order divided by the count, as np.mean over a leading axis
        unlin = [_horner(first + rate * (read - mean_read[0]), ilin) for read in reads]
        predicted = np.zeros_like(first)
        for u in unlin:
            predicted += u
        offset = data[k] - predicted / len(reads)
        total = np.zeros_like(first)
        for u in unlin:
            u += offset
            if inl is not None:
                u += _inl_lookup(u, inl)
            total += _horner(u, lin)
        total /= len(reads)
        np.copyto(data[k], total, where=~saturated[k], casting="same_kind")


def check_inl(inl: InlTable, nx: int) -> None:
    """Raise ValueError unless ``inl`` has a correction row for every channel of ``nx`` columns.

    Parameters
    ----------
    inl : InlTable
        Integral non-linearity table (``channel_width`` columns per channel).
    nx : int
        Columns of the frame (or row block) to be corrected.
    """
    needed = -(-nx // inl.channel_width)
    if inl.corrections.shape[0] < needed:
        raise ValueError(
            f"INL table has {inl.corrections.shape[0]} channels; {nx} columns of width "
            f"{inl.channel_width} need {needed}"
        )


def _inl_lookup(values: np.ndarray, inl: InlTable) -> np.ndarray:
    """INL correction (DN) of each value from the table of its column's channel.

    Bit-identical to ``np.interp(values[..., cols], grid, table)`` per channel (all-NaN
    tables give 0); uses the arithmetic lookup of ``_UniformInl`` when it applies.
    """
    fast = _uniform_inl(inl, values.shape[-1])
    if fast is not None and values.dtype == np.float64:
        return fast(values)
    return _inl_lookup_interp(values, inl)


def _inl_lookup_interp(values: np.ndarray, inl: InlTable) -> np.ndarray:
    grid = np.asarray(inl.grid, dtype=np.float32)
    out = np.zeros_like(values)
    width = inl.channel_width
    for c, start in enumerate(range(0, values.shape[-1], width)):
        table = inl.corrections[c]
        if np.isnan(table).all():
            continue
        cols = slice(start, start + width)
        out[..., cols] = np.interp(values[..., cols], grid, table)
    return out


_UNIFORM_CACHE: dict = {}


def _uniform_inl(inl: InlTable, nx: int) -> _UniformInl | None:
    """The (cached) arithmetic lookup for ``inl`` over ``nx`` columns, or None if unsafe."""
    key = (id(inl.grid), id(inl.corrections), inl.channel_width, nx)
    hit = _UNIFORM_CACHE.get(key)
    if hit is not None and hit[0] is inl.grid and hit[1] is inl.corrections:
        return hit[2]
    fast = _UniformInl.build(inl, nx)
    _UNIFORM_CACHE.clear()
    _UNIFORM_CACHE[key] = (inl.grid, inl.corrections, fast)
    return fast


class _UniformInl:
    """``np.interp`` on a uniformly spaced grid, with the bracketing knot found by arithmetic.

    numpy (``arr_interp``) works in float64 with ``xp = float64(float32 grid)`` and
    ``fp = float64(table)``; for a value ``x`` it returns ``x`` if NaN, ``fp[0]`` if
    ``x < xp[0]``, ``fp[-1]`` if ``x >= xp[-1]``, ``fp[j]`` if ``x == xp[j]``, otherwise
    ``s_j (x - xp[j]) + fp[j]`` with ``s_j = (fp[j+1] - fp[j]) / (xp[j+1] - xp[j])`` and
    ``xp[j] <= x < xp[j+1]``.  Here the values are cut to ``[xp[0] - d/2, xp[-1] + d/2]``
    (NaN kept) and each lies in one of the M + 1 intervals ``(-inf, xp[0])``,
    ``[xp[j], xp[j+1])``, ``[xp[-1], inf)``; the two outer ones have slope 0 and base
    ``fp[0]`` / ``fp[-1]``.  The interval index is ``floor(x / d - xp[0] / d) + 1``, moved
    by one where it misses the exact knot comparisons; when ``xp[0] == 0`` and ``d`` is a
    power of two ``x / d`` is exact and so is the index (no correction needed).  With finite slopes and no ``-0.0``
    in the tables ``s (x - b) + f`` then equals numpy's result in every case (``x == xp[j]``
    gives ``f + (+-0) = f``); other tables, or a grid that is not exactly uniform, return
    None from ``build`` and the caller uses ``np.interp``.
    """

    def __init__(self, lower, upper, base_x, slope, base_f, col_offset, nan_cols, lo, hi, inv_d, shift, exact):
        self.lower, self.upper = lower, upper
        self.base_x, self.slope, self.base_f = base_x, slope, base_f
        self.col_offset, self.nan_cols = col_offset, nan_cols
        self.lo, self.hi, self.inv_d, self.shift, self.exact = lo, hi, inv_d, shift, exact
        self.col_offset1 = col_offset + 1

    @classmethod
    def build(cls, inl: InlTable, nx: int) -> _UniformInl | None:
        xp = np.asarray(inl.grid, dtype=np.float32).astype(np.float64)
        m = xp.size
        width = inl.channel_width
        nchan = -(-nx // width)
        if xp.ndim != 1 or m < 2 or width < 1 or inl.corrections.shape[0] < nchan:
            return None
        diffs = np.diff(xp)
        d = diffs[0]
        if not (np.isfinite(xp).all() and d > 0 and (diffs == d).all()):
            return None
        if max(abs(xp[0]), abs(xp[-1])) / d > 2.0**40:  # index estimate could be off by > 1
            return None
        fp = np.asarray(inl.corrections[:nchan], dtype=np.float64)
        nan_rows: np.ndarray = np.asarray(np.isnan(fp).all(axis=1))
        fp = np.where(nan_rows[:, None], 0.0, fp)
        if not np.isfinite(fp).all() or ((fp == 0) & np.signbit(fp)).any():
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            slopes = (fp[:, 1:] - fp[:, :-1]) / diffs
        if not np.isfinite(slopes).all():
            return None
        n = m + 1  # intervals per channel
        slope = np.zeros((nchan, n))
        slope[:, 1:m] = slopes
        base_f = np.concatenate([fp[:, :1], fp], axis=1)
        base_x = np.concatenate([xp[:1], xp])
        lower = np.concatenate([[-np.inf], xp])
        upper = np.concatenate([xp, [np.inf]])
        col_offset = (np.arange(nx) // width * n).astype(np.intp)
        nan_cols = np.repeat(nan_rows, width)[:nx]
        return cls(
            lower,
            upper,
            np.tile(base_x, nchan),
            slope.ravel(),
            base_f.ravel(),
            col_offset,
            nan_cols if nan_cols.any() else None,
            xp[0] - d / 2,
            xp[-1] + d / 2,
            1.0 / d,
            -xp[0] / d,
            bool(xp[0] == 0 and np.frexp(d)[0] == 0.5),
        )

    def __call__(self, values: np.ndarray) -> np.ndarray:
        x = np.maximum(values, self.lo)  # NaN propagates
        np.minimum(x, self.hi, out=x)
        t = x * self.inv_d  # exact when self.exact
        if self.shift:
            t += self.shift
        np.floor(t, out=t)  # in [-1, M] up to rounding, or NaN
        with np.errstate(invalid="ignore"):
            i = t.astype(np.intp)
        del t
        np.maximum(i, -1, out=i)  # NaN casts to a negative (or 0) index
        if self.exact:
            i += self.col_offset1
        else:
            i += 1
            np.minimum(i, self.lower.size - 1, out=i)
            i -= x < self.lower[i]
            i += x >= self.upper[i]
            i += self.col_offset
        x -= self.base_x[i]
        x *= self.slope[i]
        x += self.base_f[i]
        if self.nan_cols is not None:
            x[..., self.nan_cols] = 0.0
        return x


def _clip(data: np.ndarray, groupdq: np.ndarray) -> None:
    for k in range(data.shape[0]):
        wild = np.abs(data[k]) > CLIP_LIMIT
        if wild.any():
            np.clip(data[k], -CLIP_LIMIT, CLIP_LIMIT, out=data[k], where=wild)
            groupdq[k][wild] |= _DNU
