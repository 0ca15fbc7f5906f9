"""saturation.cu's saturation_headroom and linearity.cu's linearity_threshold against their
NumPy twins (cpu_fallback.saturation / cpu_fallback.linearity) and against stated values.

Each body runs on the CPU shim and, when a GPU is present, on the GPU (``runtime`` fixture).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.linearity import linearity_threshold as numpy_linearity_threshold
from cpu_fallback.saturation import saturation as numpy_saturation
from cpu_fallback.saturation import saturation_headroom as numpy_saturation_headroom
from gpucal.dq import GroupFlag, PixelFlag
from tests.kernels import _drivers as drv
from tests.kernels._data import appendix_timing, random_pixeldq, random_ramps
from tests.kernels._runtime import exact

SAT, DNU, JUMP = int(GroupFlag.SATURATED), int(GroupFlag.DO_NOT_USE), int(GroupFlag.JUMP_DET)
NSC, NLC = int(PixelFlag.NO_SAT_CHECK), int(PixelFlag.NO_LIN_CORR)
INF = np.float32(np.inf)


def random_level_inputs(rng: np.random.Generator, shape: tuple[int, int], ncoeff: int = 4) -> dict:
    """Realistic inputs of both operations: raw ramps flagged by the NumPy saturation step.

    Ramps of 5,000-65,000 DN (random_ramps, with NaN holes), thresholds ~55,000-62,000 DN with
    NaN and NO_SAT_CHECK pixels (reference and pixel DQ), SATURATED tails, extra DO_NOT_USE
    and JUMP_DET flags, pixels without any clean resultant, and LINEARITY coefficients with
    NO_LIN_CORR, NaN and zero-linear-term pixels.
    """
    ny, nx = shape
    timing = appendix_timing()
    data = random_ramps(rng, shape, timing)
    data = np.minimum(data + np.float32(rng.uniform(0.0, 5000.0)), np.float32(65535.0))  # bias up to ~10,000 DN
    threshold = rng.uniform(55000.0, 62000.0, shape).astype(np.float32)
    threshold[rng.random(shape) < 0.01] = np.nan
    threshold_dq = np.zeros(shape, np.uint32)
    threshold_dq[rng.random(shape) < 0.01] |= np.uint32(NSC)
    threshold_dq[rng.random(shape) < 0.01] |= np.uint32(PixelFlag.DEAD)
    # ramps whose last resultant ends just below full well (the case the operations are for)
    close = rng.random(shape) < 0.02
    close &= np.isfinite(threshold)
    data[-1, close] = threshold[close] - rng.uniform(1.0, 1500.0, close.sum()).astype(np.float32)
    data[:-1, close] = np.minimum(data[:-1, close], data[-1, close])  # the ramp still rises to it
    pixeldq = random_pixeldq(rng, shape)
    pixeldq[rng.random(shape) < 0.01] |= np.uint32(NSC)
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[rng.random(data.shape) < 0.03] |= np.uint8(JUMP)
    groupdq[rng.random(data.shape) < 0.03] |= np.uint8(DNU)
    groupdq[:, rng.random(shape) < 0.01] |= np.uint8(DNU)  # no clean resultant at all
    sat = numpy_saturation(data, groupdq, pixeldq.copy(), threshold, threshold_dq, timing, 0, 1)

    lin = np.zeros((ncoeff, ny, nx), np.float32)
    lin[0] = rng.normal(0.0, 0.5, shape)
    lin[1] = rng.normal(1.0, 0.01, shape)
    if ncoeff > 2:
        lin[2] = rng.normal(2e-6, 5e-7, shape)
    for j in range(3, ncoeff):
        lin[j] = rng.normal(0.0, 10.0 ** (-5 * j + 4), shape)
    lin_dq = np.zeros(shape, np.uint32)
    lin_dq[rng.random(shape) < 0.01] |= np.uint32(NLC)
    lin_dq[rng.random(shape) < 0.01] |= np.uint32(PixelFlag.UNRELIABLE_BIAS)
    bad = rng.random(shape) < 0.01
    lin[rng.integers(0, ncoeff, bad.sum()), *np.nonzero(bad)] = np.nan
    lin[1, rng.random(shape) < 0.01] = 0.0
    # the linearity step sees the ramp after refpix: a few DN of offset per pixel
    shifted = (data - rng.normal(0.0, 3.0, shape).astype(np.float32)).astype(np.float32)
    return {
        "data": data,
        "groupdq": sat.groupdq,
        "pixeldq": sat.pixeldq,
        "threshold": threshold,
        "threshold_dq": threshold_dq,
        "lin_data": shifted,
        "lin": lin,
        "lin_dq": lin_dq,
    }


@pytest.mark.parametrize("ncoeff", [2, 4, 6])
def test_agree_with_numpy_on_random_frames(runtime, ncoeff):
    seed = int(np.random.default_rng().integers(2**31))  # fresh data every run
    rng = np.random.default_rng(seed)
    x = random_level_inputs(rng, (48, 96), ncoeff)
    msg = f"seed {seed}"
    args = (x["data"], x["groupdq"], x["pixeldq"], x["threshold"], x["threshold_dq"])
    copies = [a.copy() for a in args]
    ref_h = numpy_saturation_headroom(*args)
    got_h = drv.saturation_headroom(runtime, *args)
    for a, c in zip(args, copies, strict=True):  # the twin reads only
        np.testing.assert_array_equal(a, c)

    assert got_h.dtype == np.float32 and got_h.shape == x["threshold"].shape
    inf = np.isinf(ref_h)
    assert 0.02 < inf.mean() < 0.3, "the frame should have pixels without a level, and most with one"
    assert (np.isfinite(ref_h) & (ref_h < 1500)).sum() > 5, "and some within 1500 DN of full well"
    np.testing.assert_array_equal(got_h, ref_h, err_msg=msg)  # one float32 subtraction: exact anywhere

    lin_args = (x["lin_data"], x["groupdq"], ref_h, x["lin"], x["lin_dq"])
    ref_l = numpy_linearity_threshold(*lin_args)
    got_l = drv.linearity_threshold(runtime, *lin_args)
    assert got_l.dtype == np.float32
    np.testing.assert_array_equal(np.isinf(got_l), np.isinf(ref_l), err_msg=msg)
    np.testing.assert_array_equal(np.isnan(got_l), np.isnan(ref_l), err_msg=msg)
    np.testing.assert_array_equal(np.isinf(ref_l), ~np.isfinite(ref_h), err_msg=msg)  # no level: +inf
    assert not np.isnan(ref_l).any()
    np.testing.assert_allclose(got_l, ref_l, rtol=4 * np.finfo(np.float32).eps, err_msg=msg)
    if exact(runtime):  # same operations in the same order: bit for bit
        np.testing.assert_array_equal(got_l, ref_l, err_msg=msg)

    ref_id = numpy_linearity_threshold(x["lin_data"], x["groupdq"], ref_h, None, None)
    got_id = drv.linearity_threshold(runtime, x["lin_data"], x["groupdq"], ref_h, None, None)
    np.testing.assert_array_equal(got_id, ref_id, err_msg=msg)


# (name, D_0..D_3, groupdq, threshold, threshold dq, pixeldq, expected headroom)
HEADROOM_CASES = [
    ("all clean", [10000, 20000, 30000, 40000], [0, 0, 0, 0], 50000.0, 0, 0, 10000.0),
    ("saturated tail", [10000, 20000, 30000, 52000], [0, 0, 0, SAT], 50000.0, 0, 0, 20000.0),
    ("JUMP_DET does not disqualify", [10000, 20000, 30000, 52000], [0, JUMP, JUMP, SAT], 50000.0, 0, 0, 20000.0),
    ("JUMP_DET and DO_NOT_USE", [10000, 20000, 30000, 52000], [0, JUMP, JUMP | DNU, SAT], 50000.0, 0, 0, 30000.0),
    ("only the first", [10000, 20000, 30000, 52000], [JUMP, DNU, SAT, SAT], 50000.0, 0, 0, 40000.0),
    ("clean after a flagged one", [10000, 20000, 30000, 40000], [0, 0, DNU, 0], 50000.0, 0, 0, 10000.0),
    ("none clean", [10000, 20000, 30000, 40000], [DNU, SAT, SAT, SAT], 50000.0, 0, 0, np.inf),
    ("NaN threshold", [10000, 20000, 30000, 40000], [0, 0, 0, 0], np.nan, 0, 0, np.inf),
    ("NO_SAT_CHECK reference", [10000, 20000, 30000, 40000], [0, 0, 0, 0], 50000.0, NSC, 0, np.inf),
    ("NO_SAT_CHECK pixel", [10000, 20000, 30000, 40000], [0, 0, 0, 0], 50000.0, 0, NSC, np.inf),
    (
        "other DQ bits",
        [10000, 20000, 30000, 40000],
        [0, 0, 0, 0],
        50000.0,
        int(PixelFlag.DEAD),
        int(PixelFlag.HOT),
        10000.0,
    ),
    ("above the threshold (unflagged input)", [10000, 20000, 30000, 51000], [0, 0, 0, 0], 50000.0, 0, 0, -1000.0),
]


@pytest.mark.parametrize("case", HEADROOM_CASES, ids=[c[0] for c in HEADROOM_CASES])
def test_headroom_stated_values(runtime, case):
    name, d, g, s, sdq, pdq, expected = case
    args = (
        np.array(d, np.float32).reshape(4, 1, 1),
        np.array(g, np.uint8).reshape(4, 1, 1),
        np.full((1, 1), pdq, np.uint32),
        np.full((1, 1), s, np.float32),
        np.full((1, 1), sdq, np.uint32),
    )
    for got in (drv.saturation_headroom(runtime, *args), numpy_saturation_headroom(*args)):
        assert got.dtype == np.float32
        assert got[0, 0] == np.float32(expected), name


def test_headroom_is_one_float32_subtraction(runtime):
    s = np.float32(61234.567)
    d = np.float32(0.12345678)
    args = (np.full((1, 1, 1), d), np.zeros((1, 1, 1), np.uint8), np.zeros((1, 1), np.uint32),
            np.full((1, 1), s), np.zeros((1, 1), np.uint32))  # fmt: skip
    want = s - d  # float32 - float32
    assert drv.saturation_headroom(runtime, *args)[0, 0] == want
    assert numpy_saturation_headroom(*args)[0, 0] == want


def _lin(values, n=1):
    return np.repeat(np.array(values, np.float32)[:, None], n, axis=1).reshape(len(values), 1, n)


def test_linearity_threshold_stated_values(runtime):
    """P(D[k*] + headroom) with c = [0, 1, 2e-6]: 40000 DN + 10000 DN -> 55000 DN; the identity
    where the polynomial is unusable or absent; +inf without a level."""
    data = np.array([10000, 20000, 30000, 40000], np.float32)
    npix = 9
    ramp = np.repeat(data[:, None], npix, axis=1).reshape(4, 1, npix)
    groupdq = np.zeros((4, 1, npix), np.uint8)
    groupdq[3, 0, 1] = SAT  # 1: k* = 2 -> P(30000 + 10000)
    groupdq[:, 0, 2] = DNU  # 2: no clean resultant
    headroom = np.full((1, npix), 10000.0, np.float32)
    headroom[0, 3] = np.inf  # 3: no level from saturation
    headroom[0, 4] = np.nan  # 4: NaN data at saturation's k*
    lin = _lin([0, 1, 2e-6], npix)
    lin_dq = np.zeros((1, npix), np.uint32)
    lin_dq[0, 5] = NLC  # 5: identity
    lin[2, 0, 6] = np.nan  # 6: identity
    lin[1, 0, 7] = 0.0  # 7: identity
    # 8: ordinary

    c = np.float32(2e-6)

    def p(v):
        v = np.float32(v)
        return (c * v + np.float32(1)) * v + np.float32(0)

    expected = [p(50000), p(40000), np.inf, np.inf, np.inf, 50000, 50000, 50000, p(50000)]
    for got in (drv.linearity_threshold(runtime, ramp, groupdq, headroom, lin, lin_dq),
                numpy_linearity_threshold(ramp, groupdq, headroom, lin, lin_dq)):  # fmt: skip
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got[0], np.array(expected, np.float32))
        assert abs(float(got[0, 0]) - 55000.0) < 0.01  # 50000 + 2e-6 * 50000**2
    none = [50000, 40000, np.inf, np.inf, np.inf, 50000, 50000, 50000, 50000]
    for got in (drv.linearity_threshold(runtime, ramp, groupdq, headroom, None, None),
                numpy_linearity_threshold(ramp, groupdq, headroom, None, None)):  # fmt: skip
        np.testing.assert_array_equal(got[0], np.array(none, np.float32))
