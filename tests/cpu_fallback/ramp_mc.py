"""Vectorised Monte Carlo of clean ramps for the ramp-fit statistics tests and bench figure.

Ramps of a known rate are simulated read by read (Poisson electrons per frame time,
Gaussian read noise per read, resultants the means of their reads rounded to integers as a
Level 1 file stores them) for a set of pixels with read noise drawn uniformly in a range,
gain 1 (so DN = e-).  :func:`fit_stats` fits them
with a ramp-fit algorithm and returns the bias and pull statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gpucal.backends.protocol import RampFitParams
from gpucal.readpattern import ReadTiming, read_timing

FRAME_TIME = 3.04  # s
#: Read patterns: the demo's (single-read first and last resultants), one of long
#: resultants and a short even one with a single-read first resultant.
PATTERNS = {
    "demo8": [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15, 16, 17], [18, 19, 20, 21, 22, 23],
              [24, 25, 26, 27, 28, 29], [30]],
    "long6": [list(range(1 + 8 * k, 9 + 8 * k)) for k in range(6)],
    "single9": [[1]] + [[2 + 2 * k, 3 + 2 * k] for k in range(8)],
}
RATES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # e-/s
READ_NOISE = (5.0, 20.0)  # e- per read


class Ramps(NamedTuple):
    data: np.ndarray  # (K, 1, P) float32 e- (gain 1)
    readnoise: np.ndarray  # (1, P) float32
    timing: ReadTiming
    rate: float
    oracle: np.ndarray  # (P,) float64: GLS slope with the true covariance (unbiased, optimal)
    oracle_sigma: np.ndarray  # (P,) its standard deviation


def simulate(pattern: list[list[int]], rate: float, npix: int, seed: int) -> Ramps:
    """Simulate ``npix`` clean ramps of ``rate`` e-/s read with ``pattern``."""
    rng = np.random.default_rng(seed)
    timing = read_timing(pattern, FRAME_TIME)
    nreads = pattern[-1][-1]
    rn = rng.uniform(*READ_NOISE, npix)
    counts = np.cumsum(rng.poisson(rate * FRAME_TIME, (nreads, npix)), axis=0).astype(np.float64)
    reads = counts + rn * rng.standard_normal((nreads, npix))
    res = np.rint(np.stack([reads[np.array(r) - 1].mean(axis=0) for r in pattern]))  # uint16 resultants
    data = res.astype(np.float32)[:, None, :]
    oracle, sigma = _oracle(data[:, 0].astype(np.float64), rn.astype(np.float32).astype(np.float64), timing, rate)
    return Ramps(data, rn.astype(np.float32)[None, :], timing, rate, oracle, sigma)


def _oracle(x: np.ndarray, rn: np.ndarray, timing: ReadTiming, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """GLS of the differences with the true covariance: (slope, sigma), per pixel."""
    n = timing.n_reads.astype(float)
    tb, tau = timing.tbar, timing.tau
    nd = len(n) - 1
    d = np.diff(x, axis=0)
    dt = np.diff(tb)
    # covariance of the differences: read-noise (with the rounding's 1/12 per resultant) and
    # Poisson parts (gpucal.readpattern)
    cph = np.diag(tau[:-1] + tau[1:] - 2 * tb[:-1]) * rate
    crd = np.diag(1 / n[:-1] + 1 / n[1:])
    for j in range(nd - 1):
        cph[j, j + 1] = cph[j + 1, j] = rate * (tb[j + 1] - tau[j + 1])
        crd[j, j + 1] = crd[j + 1, j] = -1 / n[j + 1]
    # per-pixel covariance, solved as a batch
    quant = (2 * np.eye(nd) - np.eye(nd, k=1) - np.eye(nd, k=-1)) / 12.0
    cov = cph[None] + (rn * rn)[:, None, None] * crd[None] + quant[None]
    sol = np.linalg.solve(cov, np.broadcast_to(dt, (x.shape[1], nd))[..., None])[..., 0]
    f = sol @ dt
    out = np.einsum("pj,jp->p", sol, d) / f
    sig = 1 / np.sqrt(f)
    return out, sig


class Stats(NamedTuple):
    bias: float  # mean(slope - oracle) / sigma: the estimator's bias beyond an unbiased one
    bias_se: float  # its standard error
    raw_bias: float  # mean(slope - rate) / sigma
    pull_median: float  # median of (slope - rate) / err
    pull_std: float  # 1.4826 MAD of the pull


def fit_stats(fit, ramps: Ramps, params: RampFitParams | None = None) -> Stats:
    """Fit ``ramps`` with ``fit`` (a cpu_fallback fit function) and summarise."""
    k, _, npix = ramps.data.shape
    out = fit(ramps.data, np.zeros((k, 1, npix), np.uint8), np.zeros((1, npix), np.uint32), ramps.readnoise,
              np.ones((1, npix), np.float32), ramps.timing, params or RampFitParams(use_ramp_jump_detection=False))
    slope = out.slope[0].astype(np.float64)
    err = out.err[0].astype(np.float64)
    ok = np.isfinite(slope) & (err > 0)
    sig = ramps.oracle_sigma[ok]
    delta = (slope[ok] - ramps.oracle[ok]) / sig
    pull = (slope[ok] - ramps.rate) / err[ok]
    med = float(np.median(pull))
    return Stats(
        bias=float(delta.mean()),
        bias_se=float(delta.std() / np.sqrt(delta.size)),
        raw_bias=float(((slope[ok] - ramps.rate) / sig).mean()),
        pull_median=med,
        pull_std=float(1.4826 * np.median(np.abs(pull - med))),
    )
