"""Timing of uneven resultants, computed once from ``meta.exposure.read_pattern``.

A read pattern is a list of K lists of 1-based read numbers; read ``r`` happens at
``t = r * frame_time`` (seconds).  For resultant k with ``N_k`` reads:

* mean time ``tbar_k = frame_time * mean(P_k)``;
* variance-weighted time
  ``tau_k = frame_time / N_k**2 * sum_j (2 N_k - 2 j + 1) P_k[j]`` (j = 1..N_k, reads in
  ascending order), the quantity the photon-noise covariance of a resultant needs
  (Casertano 2022; Brandt 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucal.errors import ReadPatternError

__all__ = ["ReadTiming", "read_timing", "exposure_timing"]


@dataclass(frozen=True)
class ReadTiming:
    """Per-resultant timing of one exposure.

    Attributes
    ----------
    read_pattern : tuple of tuple of int
        The 1-based read numbers of each resultant.
    frame_time : float
        Seconds between reads.
    n_reads : ndarray, shape (K,), int64
        Reads averaged into each resultant (``N_k``).
    tbar : ndarray, shape (K,), float64
        Mean read time of each resultant (s).
    tau : ndarray, shape (K,), float64
        Variance-weighted read time of each resultant (s).
    mean_read : ndarray, shape (K,), float64
        Mean read number of each resultant.
    last_read : ndarray, shape (K,), int64
        Last read number of each resultant.
    """

    read_pattern: tuple[tuple[int, ...], ...]
    frame_time: float
    n_reads: np.ndarray
    tbar: np.ndarray
    tau: np.ndarray
    mean_read: np.ndarray
    last_read: np.ndarray

    @property
    def nresultants(self) -> int:
        return len(self.read_pattern)


def read_timing(read_pattern: Sequence[Sequence[int]], frame_time: float) -> ReadTiming:
    """Build the :class:`ReadTiming` of a read pattern.

    Parameters
    ----------
    read_pattern : sequence of sequence of int
        ``meta.exposure.read_pattern``.
    frame_time : float
        ``meta.exposure.frame_time`` (s).

    Raises
    ------
    ValueError
        If the pattern is empty, a resultant has no reads, or reads are not positive and
        strictly increasing through the exposure.
    """
    pattern = tuple(tuple(int(r) for r in res) for res in read_pattern)
    if not pattern:
        raise ValueError("read pattern is empty")
    flat = [r for res in pattern for r in res]
    if any(len(res) == 0 for res in pattern):
        raise ValueError("read pattern has a resultant with no reads")
    if flat[0] < 1 or any(b <= a for a, b in zip(flat, flat[1:], strict=False)):
        raise ValueError("read pattern reads must be positive and strictly increasing")
    if not (np.isfinite(frame_time) and frame_time > 0):
        raise ValueError(f"frame_time must be a positive number, got {frame_time!r}")
    n = np.array([len(res) for res in pattern], dtype=np.int64)
    mean_read = np.array([np.mean(res) for res in pattern], dtype=np.float64)
    tau = np.empty(len(pattern), dtype=np.float64)
    for k, res in enumerate(pattern):
        nk = len(res)
        j = np.arange(1, nk + 1)
        tau[k] = frame_time / nk**2 * np.sum((2 * nk - 2 * j + 1) * np.asarray(res, dtype=np.float64))
    return ReadTiming(
        read_pattern=pattern,
        frame_time=float(frame_time),
        n_reads=n,
        tbar=frame_time * mean_read,
        tau=tau,
        mean_read=mean_read,
        last_read=np.array([res[-1] for res in pattern], dtype=np.int64),
    )


def exposure_timing(model: Any, where: str) -> ReadTiming:
    """The :class:`ReadTiming` of an exposure model, checked against its data.

    Parameters
    ----------
    model : RampModel or ScienceRawModel
        Needs ``meta.exposure.read_pattern`` (one entry per resultant) and ``frame_time``.
    where : str
        The step or file named in the error.

    Raises
    ------
    ReadPatternError
        Missing or empty read pattern, one that does not match the number of resultants,
        or an invalid frame time (an ``InputFileError`` and, as romancal raises for a
        mismatch, a ``RuntimeError``).
    """
    nres = int(np.shape(model.data)[0])
    try:
        exposure = model.meta.exposure
        pattern = exposure.read_pattern
    except (AttributeError, KeyError):
        pattern = None
    if pattern is None or len(pattern) == 0:
        raise ReadPatternError(f"{where}: needs meta.exposure.read_pattern (missing or empty)")
    if len(pattern) != nres:
        raise ReadPatternError(f"{where}: read_pattern has {len(pattern)} resultants but the data has {nres}")
    try:
        frame_time = float(exposure.frame_time)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ReadPatternError(f"{where}: missing or invalid meta.exposure.frame_time") from None
    try:
        return read_timing(pattern, frame_time)
    except ValueError as exc:
        raise ReadPatternError(f"{where}: invalid read pattern: {exc}") from None
