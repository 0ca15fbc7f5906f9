"""saturation.cu against stated flags and against cpu_fallback.saturation (algorithms.md §2).

Each body runs on the CPU shim and, when a GPU is present, on the GPU (``runtime`` fixture).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.saturation import saturation as numpy_saturation
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import read_timing
from tests.kernels import _drivers as drv
from tests.kernels._data import (
    appendix_timing,
    assert_flags_match,
    near,
    random_groupdq,
    random_pixeldq,
    random_ramps,
)
from tests.kernels._runtime import exact

S = 50000.0
SAT = int(GroupFlag.SATURATED)
DNU = int(GroupFlag.DO_NOT_USE)
FLOOR = int(GroupFlag.AD_FLOOR | GroupFlag.DO_NOT_USE)
NSC = int(PixelFlag.NO_SAT_CHECK)
JUMP = int(GroupFlag.JUMP_DET)
BELOW_S = float(np.nextafter(np.float32(S), np.float32(0)))
# the dilution threshold of resultant 2 ([4, 5, 6, 7]): S * 5.5 / 7 = 39285.714... (float64)
ABOVE_DIL2 = 39285.72  # float32 39285.71875
BELOW_DIL2 = 39285.70  # float32 39285.69921875

# (name, D_0..D_6, threshold, threshold dq, input groupdq, expected groupdq, expected pixeldq)
# with the Appendix read pattern [[1],[2,3],[4..7],[8],[9..11],[12..16],[17]], n_pix_grow_sat 0
CASES = [
    # Appendix A.3, verified against stcal 1.20
    ("A3 plain", [10000, 20000, 35000, 45000, 52000, 60000, 64000], S, 0, 0, [0, 0, 0, 0, 2, 2, 2], 0),
    ("A3 dilution", [5000, 15000, 42000, 51000, 55000, 60000, 65000], S, 0, 0, [0, 0, 1, 2, 2, 2, 2], 0),
    ("A3 second resultant", [2000, 30000, 52000, 60000, 62000, 64000, 65000], S, 0, 0, [0, 1, 2, 2, 2, 2, 2], 0),
    ("A3 NaN threshold", [10000, 20000, 35000, 45000, 60000, 65535, 65535], np.nan, 0, 0, [0] * 7, NSC),
    ("A3 A/D floor", [100, 0, 50, -3, 200, 300, 400], S, 0, 0, [0, 65, 0, 65, 0, 0, 0], 0),
    # the comparison is >=, and saturation is sticky once reached
    ("exactly at S, then drops", [10000, 20000, 30000, S, 1000, 2000, 3000], S, 0, 0, [0, 0, 0, 2, 2, 2, 2], 0),
    ("just below S", [10000, 20000, 30000, BELOW_S, 45000, 48000, 49000], S, 0, 0, [0] * 7, 0),
    # -0.0 is <= 0, a tiny positive value is not
    ("floor: -0.0 and 1e-3", [100, -0.0, 1e-3, 5, 6, 7, 8], S, 0, 0, [0, 65, 0, 0, 0, 0, 0], 0),
    # NaN: never >= S nor <= 0, but the sticky state carries over it
    ("NaN after saturation", [10000, 60000, np.nan, 1000, 2000, 3000, 4000], S, 0, 0, [0, 2, 2, 2, 2, 2, 2], 0),
    ("NaN before saturation", [10000, np.nan, 30000, 60000, 61000, 62000, 63000], S, 0, 0, [0, 0, 0, 2, 2, 2, 2], 0),
    # NaN threshold: only 65536 DN (A/D limit + 1) saturates; no dilution scaling
    ("NaN threshold at 65536", [10000, 20000, 35000, 45000, 60000, 65535, 65536], np.nan, 0, 0,
     [0, 0, 0, 0, 0, 0, 2], NSC),
    # NO_SAT_CHECK in the reference: finite threshold ignored; all ref bits reach pixeldq
    ("NO_SAT_CHECK ref", [60000] * 7, 100.0, NSC | int(PixelFlag.DEAD), 0, [0] * 7, NSC | int(PixelFlag.DEAD)),
    # dilution of resultant 2 just above / just below S * mean/last
    ("dilution just above", [10000, 20000, ABOVE_DIL2, S, 60000, 61000, 62000], S, 0, 0, [0, 0, 1, 2, 2, 2, 2], 0),
    ("dilution just below", [10000, 20000, BELOW_DIL2, S, 60000, 61000, 62000], S, 0, 0, [0, 0, 0, 2, 2, 2, 2], 0),
    # single-read resultants are never diluted (f = 1): resultant 3 = [8] before SAT at 4
    ("no dilution of 1-read", [10000, 20000, 30000, 49000, 52000, 60000, 62000], S, 0, 0, [0, 0, 0, 0, 2, 2, 2], 0),
    # dilution needs the resultant unflagged: an A/D-floor (DNU) one is left alone
    ("dilution skips DNU", [10000, 20000, 45000, 51000, 60000, 61000, 62000], S, 0, [0, 0, DNU, 0, 0, 0, 0],
     [0, 0, DNU, 2, 2, 2, 2], 0),
    # second resultant: (D0/1)*7 < S and D1 - D0 > (S - D0)/2 with SAT from resultant 2
    ("second rule on", [7142, 28572, 50001, 60000, 61000, 62000, 63000], S, 0, 0, [0, 1, 2, 2, 2, 2, 2], 0),
    ("second rule off", [7142, 28570, 50001, 60000, 61000, 62000, 63000], S, 0, 0, [0, 0, 2, 2, 2, 2, 2], 0),
    ("second rule, D0 too high", [7143, 40000, 50001, 60000, 61000, 62000, 63000], S, 0, 0,
     [0, 0, 2, 2, 2, 2, 2], 0),
    # input flags are kept, the threshold DQ is OR-ed into an existing pixeldq
    ("input flags kept", [10000, 20000, 30000, 40000, 45000, 52000, 60000], S, int(PixelFlag.HOT), JUMP,
     [JUMP, JUMP, JUMP, JUMP, JUMP, JUMP | SAT, JUMP | SAT], int(PixelFlag.HOT)),
]


def _one_pixel_inputs(case):
    _, d, s, qdq, g_in, _, _ = case
    data = np.array(d, dtype=np.float32).reshape(7, 1, 1)
    groupdq = np.array(g_in if isinstance(g_in, list) else [g_in] * 7, dtype=np.uint8).reshape(7, 1, 1)
    return data, groupdq, np.full((1, 1), s, np.float32), np.full((1, 1), qdq, np.uint32)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_edge_cases(runtime, case):
    name, *_, expected_g, expected_p = case
    data, groupdq, thr, thr_dq = _one_pixel_inputs(case)
    timing = appendix_timing()
    got = drv.saturation(runtime, data, groupdq, np.zeros((1, 1), np.uint32), thr, thr_dq, timing, 0, 0)
    assert got.groupdq[:, 0, 0].tolist() == expected_g, name
    assert int(got.pixeldq[0, 0]) == expected_p, name
    # the NumPy twin states the same
    ref = numpy_saturation(data.copy(), groupdq.copy(), np.zeros((1, 1), np.uint32), thr, thr_dq, timing, 0, 0)
    assert ref.groupdq[:, 0, 0].tolist() == expected_g, name


def test_edge_cases_through_grow_path(runtime):
    """The four-launch path (n_pix_grow_sat > 0) flags isolated pixels as the one-launch path.

    Every case sits alone in a 3x3 cell (quiet neighbours), so its own flags must be the
    stated ones; growth then only spreads SATURATED to the quiet neighbours.
    """
    ncase = len(CASES)
    ny, nx = 3, 3 * ncase
    data = np.full((7, ny, nx), 1000.0, np.float32)
    groupdq = np.zeros((7, ny, nx), np.uint8)
    thr = np.full((ny, nx), S, np.float32)
    thr_dq = np.zeros((ny, nx), np.uint32)
    for i, case in enumerate(CASES):
        d, g, s, q = _one_pixel_inputs(case)
        data[:, 1, 3 * i + 1], groupdq[:, 1, 3 * i + 1] = d[:, 0, 0], g[:, 0, 0]
        thr[1, 3 * i + 1], thr_dq[1, 3 * i + 1] = s[0, 0], q[0, 0]
    got = drv.saturation(runtime, data, groupdq, np.zeros((ny, nx), np.uint32), thr, thr_dq, appendix_timing(), 1, 0)
    for i, case in enumerate(CASES):
        centre = got.groupdq[:, 1, 3 * i + 1]
        assert centre.tolist() == case[5], case[0]
        cell = got.groupdq[:, :, 3 * i : 3 * i + 3].reshape(7, 9)
        for j in (0, 1, 2, 3, 5, 6, 7, 8):  # the quiet neighbours get the centre's SATURATED
            assert ((cell[:, j] & SAT) == (centre & SAT)).all(), (case[0], j)


def test_backup_sweeps(runtime):
    """``backup`` copies SATURATED back one multi-read resultant per sweep."""
    data = np.array([10000, 20000, 25000, 30000, 35000, 40000, 50000], np.float32).reshape(7, 1, 1)
    timing = appendix_timing()
    for backup, expected in [(0, [0, 0, 0, 0, 0, 0, 2]), (1, [0, 0, 0, 0, 0, 2, 2]), (2, [0, 0, 0, 0, 2, 2, 2]),
                             (5, [0, 0, 0, 0, 2, 2, 2])]:  # resultant 3 ([8]) stops the copy
        for grow in (0, 1):
            got = drv.saturation(
                runtime, data, np.zeros((7, 1, 1), np.uint8), np.zeros((1, 1), np.uint32),
                np.full((1, 1), S, np.float32), np.zeros((1, 1), np.uint32), timing, grow, backup,
            )
            assert got.groupdq[:, 0, 0].tolist() == expected, (backup, grow)


def test_two_resultants(runtime):
    """K = 2: dilution of resultant 0, no second-resultant rule."""
    timing = read_timing([[1, 2], [3, 4]], 3.04)
    data = np.array([[40000, 60000], [30000, 60000]], np.float32).T.reshape(2, 1, 2)  # f0 = 0.75: 37500
    got = drv.saturation(
        runtime, data, np.zeros((2, 1, 2), np.uint8), np.zeros((1, 2), np.uint32),
        np.full((1, 2), S, np.float32), np.zeros((1, 2), np.uint32), timing, 0, 0,
    )
    assert got.groupdq[:, 0, :].T.tolist() == [[DNU, SAT], [0, SAT]]


def test_grow_box_and_edges(runtime):
    """SATURATED grows by a (2n+1)^2 box, truncated at the frame edges; DNU dilution grows too."""
    ny, nx = 7, 8
    timing = appendix_timing()
    data = np.full((7, ny, nx), 1000.0, np.float32)
    data[:, 3, 3] = [10000, 20000, 30000, 40000, 60000, 61000, 62000]  # SAT from resultant 4
    data[:, 0, 7] = [10000, 60000, 61000, 62000, 63000, 64000, 65000]  # corner, SAT from 1
    thr = np.full((ny, nx), S, np.float32)
    zeros_p = np.zeros((ny, nx), np.uint32)
    got = drv.saturation(runtime, data, np.zeros((7, ny, nx), np.uint8), zeros_p, thr, zeros_p, timing, 1, 0)
    sat = (got.groupdq & SAT) != 0
    expected = np.zeros((7, ny, nx), bool)
    expected[4:, 2:5, 2:5] = True
    expected[1:, 0:2, 6:8] = True
    np.testing.assert_array_equal(sat, expected)

    assert not (got.groupdq & DNU).any()

    # a diluted resultant 2 at (3, 3) -> DO_NOT_USE on resultant 2 of its 5x5 box with n = 2
    data[:, 3, 3] = [10000, 20000, 45000, 51000, 60000, 61000, 62000]
    got = drv.saturation(runtime, data, np.zeros((7, ny, nx), np.uint8), zeros_p, thr, zeros_p, timing, 2, 0)
    expected_dnu = np.zeros((7, ny, nx), bool)
    expected_dnu[2, 1:6, 1:6] = True
    np.testing.assert_array_equal((got.groupdq & DNU) != 0, expected_dnu)
    expected_sat = np.zeros((7, ny, nx), bool)
    expected_sat[3:, 1:6, 1:6] = True
    expected_sat[1:, 0:3, 5:8] = True
    np.testing.assert_array_equal((got.groupdq & SAT) != 0, expected_sat)


@pytest.mark.parametrize(("grow", "backup"), [(0, 0), (0, 2), (1, 0), (2, 1)])
def test_agrees_with_numpy_on_random_frames(runtime, grow, backup):
    rng = np.random.default_rng()  # fresh data every run; the seed is in the failure message
    seed = int(rng.integers(2**31))
    rng = np.random.default_rng(seed)
    ny, nx = 96, 160
    timing = appendix_timing()
    data = random_ramps(rng, (ny, nx), timing)
    groupdq = random_groupdq(rng, data.shape)
    pixeldq = random_pixeldq(rng, (ny, nx))
    thr = rng.normal(55000.0, 2500.0, (ny, nx)).astype(np.float32)
    thr[rng.random((ny, nx)) < 0.005] = np.nan
    thr_dq = np.zeros((ny, nx), np.uint32)
    thr_dq[rng.random((ny, nx)) < 0.003] |= np.uint32(PixelFlag.NO_SAT_CHECK)
    thr_dq[rng.random((ny, nx)) < 0.01] |= np.uint32(PixelFlag.DEAD)
    # exactly at threshold on a few pixels (>=): must agree exactly, not only nearly
    at = rng.random((ny, nx)) < 0.002
    data[5, at] = thr[at]

    got = drv.saturation(runtime, data, groupdq, pixeldq, thr, thr_dq, timing, grow, backup)
    ref = numpy_saturation(data.copy(), groupdq.copy(), pixeldq.copy(), thr, thr_dq, timing, grow, backup)

    assert (ref.groupdq & SAT).any(axis=0).mean() > 0.02, "the random frame should saturate some pixels"
    assert (ref.groupdq & DNU).any(), "and flag some as DO_NOT_USE"
    factors = np.array([np.mean(r) / r[-1] for r in timing.read_pattern])
    close = near(data, thr[None]) | near(data, thr[None] * factors[:, None, None])
    if grow:  # a near-threshold pixel can change its neighbours' flags
        from cpu_fallback.saturation import _dilate

        close = _dilate(close, grow)
    n = assert_flags_match(got.groupdq, ref.groupdq, close, f"groupdq (seed {seed})")
    np.testing.assert_array_equal(got.pixeldq, ref.pixeldq, err_msg=f"seed {seed}")
    assert n == 0 or not exact(runtime), f"the CPU shim should be bit-exact (seed {seed})"
