"""linearity.cu against stated values and against cpu_fallback.linearity (algorithms.md §6).

Each body runs on the CPU shim and, when a GPU is present, on the GPU (``runtime`` fixture).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.linearity import linearity as numpy_linearity
from cpu_fallback.saturation import saturation as numpy_saturation
from gpucal.backends.protocol import InlTable
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import read_timing
from tests.kernels import _drivers as drv
from tests.kernels._data import appendix_timing, assert_flags_match, near, random_pixeldq, random_ramps
from tests.kernels._runtime import exact

SAT = np.uint8(GroupFlag.SATURATED)
DNU = np.uint8(GroupFlag.DO_NOT_USE)
NLC = int(PixelFlag.NO_LIN_CORR)
F32 = np.finfo(np.float32).eps


def _coeffs(values, npix):
    return np.repeat(np.array(values, np.float32)[:, None], npix, axis=1).reshape(len(values), 1, npix)


# Appendix A.2: lin c = [0, 1, 2e-6], ilin c = [0, 1, -2e-6, 8e-12], verified against stcal 1.20
A2_DATA = [
    [1000, 2500, 5500, 8000, 10500, 14000, 17000],
    [500, 600, 800, 950, 1100, 1400, 1600],
    [3000, 9000, 21000, 30000, 38000, 52000, 60000],
]
A2_SATURATED = [[0] * 7, [0] * 7, [0, 0, 0, 0, 0, 2, 2]]
A2_READ_LEVEL = [
    [1002.0, 2513.0198, 5563.0381, 8128.0, 10721.808, 14395.81, 17578.0],
    [500.5, 600.72241, 801.29199, 951.80499, 1102.4264, 1403.9391, 1605.12],
    [3018.0, 9169.877, 21918.189, 31800.0, 40905.395, 52000.0, 60000.0],
]
A2_CLASSIC = [1002.0, 2512.5, 5560.5, 8128.0005, 10720.5, 14392.0, 17578.0]


def _a2_inputs():
    data = np.array(A2_DATA, np.float32).T.reshape(7, 1, 3)
    groupdq = np.array(A2_SATURATED, np.uint8).T.reshape(7, 1, 3)
    return data, groupdq, _coeffs([0, 1, 2e-6], 3), _coeffs([0, 1, -2e-6, 8e-12], 3)


def test_appendix_read_level(runtime):
    data, groupdq, lin, ilin = _a2_inputs()
    zeros = np.zeros((1, 3), np.uint32)
    got = drv.linearity(runtime, data, groupdq, zeros, lin, ilin, zeros, None, appendix_timing())
    np.testing.assert_allclose(got.data[:, 0, :].T, A2_READ_LEVEL, rtol=2e-7)
    np.testing.assert_array_equal(got.groupdq, groupdq)
    np.testing.assert_array_equal(got.pixeldq, zeros)


def test_appendix_classic(runtime):
    data, groupdq, lin, _ = _a2_inputs()
    zeros = np.zeros((1, 3), np.uint32)
    got = drv.linearity(runtime, data, groupdq, zeros, lin, None, zeros, None, appendix_timing())
    np.testing.assert_allclose(got.data[:, 0, 0], A2_CLASSIC, rtol=2e-7)
    # saturated resultants are left alone
    np.testing.assert_array_equal(got.data[5:, 0, 2], data[5:, 0, 2])


@pytest.mark.parametrize("read_level", [False, True], ids=["classic", "read_level"])
def test_identity_pixels_and_flags(runtime, read_level):
    """NO_LIN_CORR, NaN and zero-linear-term pixels use the identity; which add NO_LIN_CORR."""
    npix = 6
    data = np.tile(np.array(A2_DATA[0], np.float32)[:, None], (1, npix)).reshape(7, 1, npix)
    lin = _coeffs([0, 1, 2e-6], npix)
    ilin = _coeffs([0, 1, -2e-6, 8e-12], npix)
    lin_dq = np.zeros((1, npix), np.uint32)
    lin_dq[0, 0] = NLC | int(PixelFlag.HOT)  # 0: flagged in the reference
    lin[2, 0, 1] = np.nan  # 1: NaN coefficient
    lin[1, 0, 2] = 0.0  # 2: zero linear term
    lin[1, 0, 3] = 0.0  # 3: zero linear term on a flagged pixel: no new flag
    lin_dq[0, 3] = NLC
    ilin[3, 0, 4] = np.nan  # 4: NaN in the inverse only (read-level path)
    # 5: an ordinary pixel
    pixeldq = np.full((1, npix), int(PixelFlag.DEAD), np.uint32)
    got = drv.linearity(
        runtime, data, np.zeros((7, 1, npix), np.uint8), pixeldq, lin, ilin if read_level else None, lin_dq, None,
        appendix_timing(),
    )
    dead, hot = int(PixelFlag.DEAD), int(PixelFlag.HOT)
    expected_p = [dead | NLC | hot, dead | NLC, dead | NLC, dead | NLC, dead | (NLC if read_level else 0), dead]
    assert got.pixeldq[0].tolist() == expected_p
    for p in (0, 1, 2, 3):  # identity: the ramp is unchanged (read level: to double rounding)
        np.testing.assert_allclose(got.data[:, 0, p], data[:, 0, p], rtol=F32)
    expected_5 = A2_READ_LEVEL[0] if read_level else A2_CLASSIC
    np.testing.assert_allclose(got.data[:, 0, 5], expected_5, rtol=2e-7)


def test_clip(runtime):
    """|D| > 1e6 -> +-1e6 and DO_NOT_USE, on every resultant, saturated ones included."""
    data = np.array([[2000] * 7, [2000] * 7, [1000] * 5 + [2e6, 3e6], [999.0] * 7], np.float32).T.reshape(7, 1, 4)
    groupdq = np.zeros((7, 1, 4), np.uint8)
    groupdq[5:, 0, 2] = SAT
    lin = _coeffs([0, 1, 0], 4)
    lin[2, 0, 0] = 1.0  # 2000 -> 4_002_000
    lin[1, 0, 1] = -1000.0  # 2000 -> -2_000_000
    lin[1, 0, 3] = 1001.0  # 999 -> 999_999: below the limit
    zeros = np.zeros((1, 4), np.uint32)
    got = drv.linearity(runtime, data, groupdq, zeros, lin, None, zeros, None, appendix_timing())
    assert got.data[:, 0, 0].tolist() == [1e6] * 7
    assert got.data[:, 0, 1].tolist() == [-1e6] * 7
    assert got.data[5:, 0, 2].tolist() == [1e6, 1e6]
    assert (got.groupdq[:, 0, :3].T == [[DNU] * 7, [DNU] * 7, [0] * 5 + [SAT | DNU] * 2]).all()
    assert (got.data[:, 0, 3] < 1e6).all() and not got.groupdq[:, 0, 3].any()


def test_inl_lookup_matches_numpy_interp(runtime):
    """Identity polynomials and single-read resultants: D + interp(D) of the column's channel.

    Values below, on, between and above the grid points, the last grid point, NaN, and an
    all-NaN channel row (no correction).
    """
    timing = read_timing([[1], [2], [3], [4], [5], [6], [7], [8], [9], [10]], 3.04)
    values = np.array([-5.0, 0.0, 100.0, 256.0, 300.5, 511.9, 767.0, 768.0, 1000.0, np.nan], np.float32)
    grid = np.array([0, 256, 512, 768], np.float32)
    table = np.array([[0.5, -0.25, 0.75, 1.0], [np.nan] * 4, [2.0, 2.0, -3.0, 0.125]], np.float64)
    width = 2
    nx = 6
    data = np.tile(values[:, None], (1, nx)).reshape(10, 1, nx)
    identity = _coeffs([0, 1], nx)
    zeros = np.zeros((1, nx), np.uint32)
    inl = InlTable(grid=grid, corrections=table, channel_width=width)
    got = drv.linearity(runtime, data, np.zeros((10, 1, nx), np.uint8), zeros, identity, identity, zeros, inl, timing)
    for x in range(nx):
        row = table[x // width]
        shift = np.zeros_like(values, dtype=np.float64) if np.isnan(row).all() else np.interp(values, grid, row)
        np.testing.assert_allclose(got.data[:, 0, x], (values + shift).astype(np.float32), rtol=F32, err_msg=f"x={x}")


def _random_linearity_inputs(rng, shape, timing, ncoeff=4, ncoeff_i=5):
    ny, nx = shape
    data = random_ramps(rng, shape, timing)
    thr = rng.normal(55000.0, 2500.0, shape).astype(np.float32)
    zeros_p = np.zeros(shape, np.uint32)
    groupdq = numpy_saturation(data.copy(), np.zeros(data.shape, np.uint8), zeros_p, thr, zeros_p, timing, 0, 0).groupdq

    lin = np.zeros((ncoeff, ny, nx), np.float32)
    lin[0] = rng.normal(0.0, 0.5, shape)
    lin[1] = rng.normal(1.0, 0.01, shape)
    lin[2] = rng.normal(2e-6, 5e-7, shape)
    lin[3] = rng.normal(0.0, 1e-11, shape)
    ilin = np.zeros((ncoeff_i, ny, nx), np.float32)
    ilin[0] = -lin[0]
    ilin[1] = 1.0 / lin[1]
    ilin[2] = -lin[2] / lin[1] ** 3
    ilin[3] = 2 * lin[2] ** 2 / lin[1] ** 5
    ilin[4] = rng.normal(0.0, 1e-17, shape)
    lin_dq = np.zeros(shape, np.uint32)
    lin_dq[rng.random(shape) < 0.005] |= np.uint32(NLC)
    lin_dq[rng.random(shape) < 0.005] |= np.uint32(PixelFlag.UNRELIABLE_BIAS)
    for coeffs, frac in ((lin, 0.003), (ilin, 0.002)):
        bad = rng.random(shape) < frac
        coeffs[rng.integers(0, coeffs.shape[0], bad.sum()), *np.nonzero(bad)] = np.nan
        zero = rng.random(shape) < frac
        coeffs[1, zero] = 0.0
    wild = rng.random(shape) < 0.003  # spurious values for romancal's clip
    lin[2, wild] = rng.choice([-1.0, 1.0], wild.sum()) * rng.uniform(0.5, 5.0, wild.sum())

    grid = np.arange(0, 65536, 256, dtype=np.float32)  # stops at 65280: values above clamp
    phase = rng.uniform(0, 2 * np.pi, (nx // 32, 1))
    table = 0.8 * np.sin(grid[None].astype(np.float64) / 4000.0 + phase) + rng.normal(0, 0.05, (nx // 32, grid.size))
    table[1] = np.nan  # one channel without correction
    inl = InlTable(grid=grid, corrections=table, channel_width=32)
    return data, groupdq, random_pixeldq(rng, shape), lin, ilin, lin_dq, inl


@pytest.mark.parametrize("mode", ["read_level_inl", "read_level", "classic"])
def test_agrees_with_numpy_on_random_frames(runtime, mode):
    seed = int(np.random.default_rng().integers(2**31))  # fresh data every run
    rng = np.random.default_rng(seed)
    shape = (64, 128)
    timing = appendix_timing()
    data, groupdq, pixeldq, lin, ilin, lin_dq, inl = _random_linearity_inputs(rng, shape, timing)
    ilin_arg = None if mode == "classic" else ilin
    inl_arg = inl if mode == "read_level_inl" else None

    got = drv.linearity(runtime, data, groupdq, pixeldq, lin, ilin_arg, lin_dq, inl_arg, timing)
    with np.errstate(over="ignore"):  # the spurious values overflow float32 before the clip
        ref = numpy_linearity(data.copy(), groupdq.copy(), pixeldq.copy(), lin, ilin_arg, lin_dq, inl_arg, timing)

    assert (groupdq & SAT).any(), "some resultants should be saturated"
    assert (ref.groupdq & DNU & ~groupdq).any(), "some values should be clipped"
    np.testing.assert_array_equal(got.pixeldq, ref.pixeldq, err_msg=f"seed {seed}")
    # flags may differ only where a value is within rounding of the clip limit
    close = near(np.abs(ref.data), np.float64(1e6))
    assert_flags_match(got.groupdq, ref.groupdq, close, f"groupdq (seed {seed})")
    finite = np.isfinite(ref.data)
    np.testing.assert_array_equal(finite, np.isfinite(got.data), err_msg=f"NaN pattern (seed {seed})")
    np.testing.assert_allclose(got.data[finite], ref.data[finite], rtol=4 * F32, atol=1e-3, err_msg=f"seed {seed}")
    if exact(runtime):  # same operations in the same order: bit for bit
        np.testing.assert_array_equal(got.data, ref.data, err_msg=f"seed {seed}")
