"""Random but realistic inputs for kernel tests, and flag comparison with a tolerance."""

from __future__ import annotations

import numpy as np

from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import ReadTiming, read_timing

#: algorithms.md Appendix A read pattern (uneven resultants of 1 to 5 reads).
APPENDIX_PATTERN = ((1,), (2, 3), (4, 5, 6, 7), (8,), (9, 10, 11), (12, 13, 14, 15, 16), (17,))
FRAME_TIME = 3.04


def appendix_timing() -> ReadTiming:
    return read_timing(APPENDIX_PATTERN, FRAME_TIME)


def random_ramps(rng: np.random.Generator, shape: tuple[int, int], timing: ReadTiming) -> np.ndarray:
    """(K, ny, nx) float32 DN: bias ~5000 DN, lognormal rates, bright stars, A/D limits.

    About 5% of the pixels saturate at some point of the exposure; a few dead pixels sit
    near 0 DN (A/D floor), and 0.2% of the pixels have a NaN somewhere mid-ramp.
    """
    ny, nx = shape
    bias = rng.normal(5000.0, 400.0, shape)
    rate = rng.lognormal(np.log(30.0), 1.6, shape)
    stars = rng.random(shape) < 0.04
    rate[stars] = rng.uniform(500.0, 20000.0, stars.sum())
    dead = rng.random(shape) < 0.005
    bias[dead] = rng.normal(2.0, 3.0, dead.sum())
    rate[dead] = 0.0
    frames = []
    for reads in timing.read_pattern:
        t = np.array(reads, dtype=np.float64) * timing.frame_time
        signal = rate[None] * t[:, None, None]
        counts = rng.poisson(np.minimum(signal, 1e7)).astype(np.float64)
        frames.append(bias + counts.mean(axis=0) + rng.normal(0.0, 7.0 / np.sqrt(len(reads)), shape))
    data = np.clip(np.array(frames), -50.0, 65535.0).astype(np.float32)
    holes = rng.random(shape) < 0.002
    k = rng.integers(1, len(timing.read_pattern), holes.sum())
    data[k, *np.nonzero(holes)] = np.nan
    return data


def random_groupdq(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Input group DQ with a few JUMP_DET and DROPOUT bits (uint8)."""
    g = np.zeros(shape, dtype=np.uint8)
    g[rng.random(shape) < 0.005] |= np.uint8(GroupFlag.JUMP_DET)
    g[rng.random(shape) < 0.002] |= np.uint8(GroupFlag.DROPOUT)
    return g


def random_pixeldq(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Input pixel DQ with a few HOT and DEAD bits (uint32)."""
    p = np.zeros(shape, dtype=np.uint32)
    p[rng.random(shape) < 0.01] |= np.uint32(PixelFlag.HOT)
    p[rng.random(shape) < 0.003] |= np.uint32(PixelFlag.DEAD)
    return p


def assert_flags_match(
    got: np.ndarray, expected: np.ndarray, near: np.ndarray, what: str, max_fraction: float = 1e-5
) -> int:
    """Flags must be identical except on pixels ``near`` a decision threshold, and those few.

    ``got``/``expected`` are (..., ny, nx) flag arrays, ``near`` a (ny, nx) mask of pixels
    with some value within float rounding of a threshold.  Returns the number of pixels that
    differ (all of them near a threshold, at most ``max_fraction`` of the frame).
    """
    differ = got != expected
    if differ.ndim > near.ndim:
        differ = differ.reshape(-1, *near.shape).any(axis=0)
    far = differ & ~near
    assert not far.any(), f"{what}: {far.sum()} pixels differ away from any threshold, first at {np.argwhere(far)[:5]}"
    n = int(differ.sum())
    assert n <= max_fraction * near.size, f"{what}: {n} of {near.size} pixels differ (all near a threshold)"
    return n


def near(values: np.ndarray, thresholds: np.ndarray, rel: float = 2e-6) -> np.ndarray:
    """(ny, nx) mask: some plane of ``values`` within ``rel`` of the (broadcast) threshold."""
    with np.errstate(invalid="ignore"):
        close = np.abs(values.astype(np.float64) - thresholds) <= rel * np.abs(thresholds)
    return close.reshape(-1, *values.shape[-2:]).any(axis=0)
