"""Uniform-weight ramp slope, used for the ``dumo`` image (algorithms.md §7.3).

romancal's ``slopes_uniform_weights`` ignores every flag.  With ``n_k`` reads of mean time
``t_k = mean(frame_time * P_k)`` in resultant k, N = sum n_k, T = sum n_k t_k and
Q = sum n_k t_k^2, the weights are ``w_k = (N n_k t_k - T n_k) / (N Q - T^2)`` and the slope
``sum_k w_k D_k`` (DN/s), accumulated in float64 over k in order, as romancal's
``np.sum(weights * data, axis=0)`` does.
"""

from __future__ import annotations

import numpy as np

from gpucal.readpattern import ReadTiming

__all__ = ["uniform_slope", "uniform_weights"]

_BLOCK_PIXELS = 1 << 20


def uniform_weights(timing: ReadTiming) -> np.ndarray:
    """Per-resultant weights (1/s), shape (K,), float64."""
    times = [np.array(reads) * timing.frame_time for reads in timing.read_pattern]
    n = np.array([len(t) for t in times])
    t = np.array([np.mean(t) for t in times])
    total = np.sum(n)
    nt = np.sum(n * t)
    ntt = np.sum(n * t**2)
    return (total * n * t - nt * n) / (total * ntt - nt**2)


def uniform_slope(data: np.ndarray, timing: ReadTiming) -> np.ndarray:
    """Flag-blind uniform-weight slope of every pixel.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN).
    timing : ReadTiming
        Read pattern and frame time.

    Returns
    -------
    ndarray, shape (ny, nx), float64
        Slope (DN/s), in romancal's float64 precision.
    """
    nres, ny, nx = data.shape
    if len(timing.read_pattern) != nres:
        raise ValueError(f"read pattern has {len(timing.read_pattern)} resultants, data has {nres}")
    weights = uniform_weights(timing)
    slope = np.empty((ny, nx), dtype=np.float64)
    rows = max(1, _BLOCK_PIXELS // max(nx, 1))
    for r0 in range(0, ny, rows):
        block = slice(r0, min(r0 + rows, ny))
        out = slope[block]
        np.multiply(weights[0], data[0, block], out=out, dtype=np.float64)
        for k in range(1, nres):
            out += weights[k] * data[k, block].astype(np.float64)
    return slope
