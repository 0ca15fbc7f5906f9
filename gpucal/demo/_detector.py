"""The demo detector model shared by the reference-file writer and the exposure simulator.

Geometry: a frame of ``ny x nx`` pixels including the 4-pixel reference border, read by 32
channels of ``w = nx // 32`` columns plus the amp33 reference output ``(ny, w)``.  In read
order (algorithms.md §3 R2) channel pixel ``(y, j)`` is sample ``n = (w + 12) y + j`` of a
series of length ``L = ny (w + 12)``; odd channels are read right to left, so science column
``x = c w + j`` (even ``c``) or ``x = c w + w - 1 - j`` (odd ``c``).

Classical non-linearity (one parameter ``b`` per pixel, 1/DN): the LINEARITY polynomial is
exact, ``lambda = P_lin(u) = u + b u**2``, where ``u`` is the measured (raw) and ``lambda``
the linear DN, bias included.  Its inverse ``u = 2 lambda / (1 + sqrt(1 + 4 b lambda))``
(cancellation-free form) has no finite polynomial, so INVERSELINEARITY holds a fit: with
``z = b lambda`` and ``v = b u`` the relation ``v = (sqrt(1 + 4 z) - 1) / 2`` is the same for
every pixel, so it is fitted once, ``v ~ sum_j d_j z**j``, and ``c_j = d_j b**(j - 1)``.

Integral non-linearity (INL): ``INL_ch(u)`` is numpy-interp of a per-channel table on a
uniform grid.  The pipeline computes ``P_lin(u + INL(u))`` (algorithms.md §6.2-6.3), so a
detector whose ADC sees ``w`` reports ``u`` with ``u + INL(u) = w``, found by two fixed-point
steps ``u = w - INL(w - INL(w))`` (the INL slope is ~1e-4, so the residual is ~1e-8 DN).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BORDER",
    "NCHANNEL",
    "PAD",
    "check_geometry",
    "channel_of_column",
    "read_order_index",
    "amp33_read_order_index",
    "linearize",
    "delinearize",
    "fit_inverse_poly",
    "inl_lookup",
    "default_read_pattern",
]

BORDER = 4  # reference pixels on each edge
NCHANNEL = 32  # detector channels (amp33 excluded)
PAD = 12  # pad samples per row in the refpix read-order series


def check_geometry(ny: int, nx: int) -> int:
    """Validate a frame shape and return the channel width ``w = nx // 32``.

    Raises
    ------
    ValueError
        If ``nx`` is not a multiple of 32, ``w < 8`` or ``ny < 16``.
    """
    if int(ny) != ny or int(nx) != nx:
        raise ValueError(f"frame shape must be integers, got {ny} x {nx}")
    if nx % NCHANNEL or nx // NCHANNEL < 8:
        raise ValueError(f"nx must be a multiple of 32 with nx // 32 >= 8, got nx={nx}")
    if ny < 16:
        raise ValueError(f"ny must be >= 16, got ny={ny}")
    return nx // NCHANNEL


def channel_of_column(nx: int) -> np.ndarray:
    """Zero-based detector channel of each column, shape (nx,), int64."""
    w = check_geometry(16, nx)
    return np.arange(nx) // w


def read_order_index(ny: int, nx: int) -> np.ndarray:
    """Read-order sample index ``n`` of every frame pixel.

    Returns
    -------
    ndarray, shape (ny, nx), int64
        ``n = (w + 12) y + j`` with ``j`` the read-order column inside the pixel's channel.
    """
    w = check_geometry(ny, nx)
    x = np.arange(nx)
    j = x % w
    odd = (x // w) % 2 == 1
    j = np.where(odd, w - 1 - j, j)
    return (w + PAD) * np.arange(ny)[:, None] + j[None, :]


def amp33_read_order_index(ny: int, w: int) -> np.ndarray:
    """Read-order index of the amp33 pixels (not reversed), shape (ny, w), int64."""
    return (w + PAD) * np.arange(ny)[:, None] + np.arange(w)[None, :]


def linearize(u: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact LINEARITY polynomial ``u + b u**2`` (raw DN -> linear DN)."""
    return u + b * u * u


def delinearize(lam: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inverse of :func:`linearize`: linear DN -> raw DN (``b = 0`` gives the identity)."""
    return 2 * lam / (1 + np.sqrt(1 + 4 * b * lam))


def fit_inverse_poly(z_max: float, degree: int = 6) -> np.ndarray:
    """Fit ``v(z) = (sqrt(1 + 4 z) - 1) / 2`` on ``[0, z_max]`` by least squares.

    Parameters
    ----------
    z_max : float
        Upper end of the fitted range (``b * lambda`` at the largest value of interest).
    degree : int
        Polynomial degree.

    Returns
    -------
    ndarray, shape (degree + 1,), float64
        ``d_j``, constant term first, with ``d_0 = 0`` and ``d_1`` free.
    """
    z = np.linspace(0.0, z_max, 4001)
    v = 2 * z / (1 + np.sqrt(1 + 4 * z))
    # no constant term: the polynomial must map 0 to 0 exactly
    powers = np.stack([z**j for j in range(1, degree + 1)], axis=1)
    d, *_ = np.linalg.lstsq(powers, v, rcond=None)
    return np.concatenate([[0.0], d])


def inl_lookup(u: np.ndarray, grid0: float, step: float, table: np.ndarray, chan_base: np.ndarray) -> np.ndarray:
    """Per-channel piecewise-linear INL, equal to ``numpy.interp`` on a uniform grid.

    Parameters
    ----------
    u : ndarray, shape (..., nx), float32
        Raw values (DN).
    grid0, step : float
        First grid value and grid step (DN).
    table : ndarray, shape (nchannel, M), float32
        Corrections (DN) of each channel on the grid; C-contiguous.
    chan_base : ndarray, shape (nx,), int64
        ``channel * M`` for every column.

    Returns
    -------
    ndarray, shape of ``u``, float32
        ``INL(u)``, clamped to the end values outside the grid.
    """
    m = table.shape[1]
    flat = table.reshape(-1)
    t = (u - np.float32(grid0)) * np.float32(1.0 / step)
    i = np.clip(t.astype(np.int32), 0, m - 2)
    f = np.clip(t - i, 0.0, 1.0).astype(np.float32)
    idx = i + chan_base
    lo = flat[idx]
    return lo + (flat[idx + 1] - lo) * f


def default_read_pattern(nresultants: int = 8) -> list[list[int]]:
    """An uneven read pattern: one read, then groups of 2, 4, 4, 6, 6, ... and a final read.

    For ``nresultants=8`` this is ``[[1], [2, 3], [4..7], [8..11], [12..17], [18..23],
    [24..29], [30]]`` (30 reads, 91.2 s at 3.04 s per frame).

    Raises
    ------
    ValueError
        If ``nresultants < 1``.
    """
    if nresultants < 1:
        raise ValueError(f"nresultants must be >= 1, got {nresultants}")
    middle = [2, 4, 4]
    sizes = [1] + [middle[i] if i < len(middle) else 6 for i in range(max(nresultants - 2, 0))]
    if nresultants >= 2:
        sizes.append(1)
    pattern, first = [], 1
    for n in sizes:
        pattern.append(list(range(first, first + n)))
        first += n
    return pattern
