"""saturation (NumPy backend): hand-built flag cases, Appendix A.3, parity with stcal/romancal."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.saturation import saturation
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import read_timing

SAT = int(GroupFlag.SATURATED)
DNU = int(GroupFlag.DO_NOT_USE)
FLOOR = int(GroupFlag.AD_FLOOR | GroupFlag.DO_NOT_USE)
NSC = int(PixelFlag.NO_SAT_CHECK)

# Appendix A pattern
PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]
TIMING = read_timing(PATTERN, 3.04)
SINGLE = read_timing([[1], [2], [3], [4]], 3.04)


def _run(columns, thresholds, timing=TIMING, grow=0, backup=0, gdq=None, tdq=None):
    """Pixels as columns of a (K, 1, n) cube."""
    data = np.asarray(columns, dtype=np.float32).T[:, None, :]
    n = data.shape[2]
    thr = np.asarray(thresholds, dtype=np.float32).reshape(1, n)
    tdq = np.zeros((1, n), np.uint32) if tdq is None else np.asarray(tdq, np.uint32).reshape(1, n)
    gdq = np.zeros(data.shape, np.uint8) if gdq is None else gdq
    res = saturation(data, gdq, np.zeros((1, n), np.uint32), thr, tdq, timing, grow, backup)
    assert res.groupdq.dtype == np.uint8 and res.pixeldq.dtype == np.uint32
    return res.groupdq[:, 0, :].T, res.pixeldq[0]


def test_appendix_a3():
    columns = [
        [10000, 20000, 35000, 45000, 52000, 60000, 64000],
        [5000, 15000, 42000, 51000, 55000, 60000, 65000],
        [2000, 30000, 52000, 60000, 62000, 64000, 65000],
        [10000, 20000, 35000, 45000, 60000, 65535, 65535],
        [100, 0, 50, -3, 200, 300, 400],
    ]
    g, p = _run(columns, [50000, 50000, 50000, np.nan, 50000])
    expected = [
        [0, 0, 0, 0, 2, 2, 2],
        [0, 0, 1, 2, 2, 2, 2],  # dilution rule
        [0, 1, 2, 2, 2, 2, 2],  # second-resultant rule
        [0, 0, 0, 0, 0, 0, 0],  # NaN threshold
        [0, 65, 0, 65, 0, 0, 0],  # A/D floor
    ]
    np.testing.assert_array_equal(g, expected)
    np.testing.assert_array_equal(p, [0, 0, 0, NSC, 0])


def test_threshold_is_inclusive():
    s = np.float32(1000.0)
    below, above = np.nextafter(s, np.float32(0)), np.nextafter(s, np.float32(2000))
    g, _ = _run([[10, 20, below, 20], [10, 20, s, 20], [10, 20, above, 20]], [s] * 3, timing=SINGLE)
    np.testing.assert_array_equal(g, [[0, 0, 0, 0], [0, 0, SAT, SAT], [0, 0, SAT, SAT]])


def test_saturation_is_sticky():
    g, _ = _run([[100, 2000, 5, 7]], [1000], timing=SINGLE)
    np.testing.assert_array_equal(g, [[0, SAT, SAT, SAT]])


def test_ad_floor_current_resultant_only_and_with_saturation():
    g, _ = _run([[0, 5, -1e-3, 1e-3], [2000, 0, 3, 4]], [1000, 1000], timing=SINGLE)
    np.testing.assert_array_equal(g, [[FLOOR, 0, FLOOR, 0], [SAT, SAT | FLOOR, SAT, SAT]])


def test_nan_and_flagged_thresholds_only_saturate_at_65536():
    cols = [[10, 65535, 65536, 70000], [10, 65535, 65536, 70000], [10, 20, 30, 40]]
    tdq = [NSC, 0, int(PixelFlag.HOT)]
    g, p = _run(cols, [100, np.nan, 100], timing=SINGLE, tdq=tdq)
    np.testing.assert_array_equal(g[0], [0, 0, SAT, SAT])
    np.testing.assert_array_equal(g[1], [0, 0, SAT, SAT])
    np.testing.assert_array_equal(p, [NSC, NSC, int(PixelFlag.HOT)])


def test_dilution_rule_thresholds():
    # resultant 2 (reads 4..7) has dilution factor 5.5/7; resultant 3 saturates
    s = np.float32(50000)
    lim = np.float64(s) * (5.5 / 7)
    just_below = np.nextafter(np.float32(lim), np.float32(0))
    at = np.float32(lim) if np.float32(lim) >= lim else np.nextafter(np.float32(lim), np.float32(1e9))
    g, _ = _run(
        [[1000, 2000, at, 60000, 60000, 60000, 60000], [1000, 2000, just_below, 60000, 60000, 60000, 60000]], [s, s]
    )
    assert g[0, 2] == DNU and g[1, 2] == 0
    # single-read resultants are never back-flagged; already DNU resultants are skipped
    g, _ = _run([[1000, 2000, 3000, 49999, 60000, 60000, 60000]], [s])
    assert g[0, 3] == 0


def test_dilution_not_applied_to_no_check_pixels():
    g, _ = _run([[1000, 2000, 60000, 65536, 65536, 65536, 65536]], [np.nan])
    assert g[0, 2] == 0 and g[0, 3] == SAT


def test_second_resultant_rule_needs_three_resultants():
    timing = read_timing([[1], [2, 3]], 3.04)
    g, _ = _run([[2000, 60000]], [50000], timing=timing)
    np.testing.assert_array_equal(g, [[0, SAT]])


def test_grow_by_one_pixel():
    data = np.full((4, 5, 6), 100.0, np.float32)
    data[2:, 2, 3] = 70000  # centre, saturating from resultant 2
    data[1:, 0, 0] = 70000  # corner, saturating from resultant 1
    gdq = np.zeros(data.shape, np.uint8)
    thr = np.full((5, 6), 60000, np.float32)
    res = saturation(data, gdq, np.zeros((5, 6), np.uint32), thr, np.zeros((5, 6), np.uint32), SINGLE, 1, 0)
    sat = (res.groupdq & SAT) != 0
    assert not sat[0].any()
    expected1 = np.zeros((5, 6), bool)
    expected1[0:2, 0:2] = True
    np.testing.assert_array_equal(sat[1], expected1)
    expected2 = expected1.copy()
    expected2[1:4, 2:5] = True
    np.testing.assert_array_equal(sat[2], expected2)
    np.testing.assert_array_equal(sat[3], expected2)


def test_grow_spreads_dilution_dnu():
    # centre back-flagged DNU in resultant 2 by the dilution rule; n=1 grows it to 3x3
    pattern = read_timing([[1], [2], [3, 4, 5, 6], [7]], 3.04)
    data = np.full((4, 5, 5), 100.0, np.float32)
    data[:, 2, 2] = [100, 200, 45000, 60000]
    thr = np.full((5, 5), 50000, np.float32)
    res = saturation(
        data,
        np.zeros(data.shape, np.uint8),
        np.zeros((5, 5), np.uint32),
        thr,
        np.zeros((5, 5), np.uint32),
        pattern,
        1,
        0,
    )
    np.testing.assert_array_equal(res.groupdq[2, 1:4, 1:4], np.full((3, 3), DNU))
    assert res.groupdq[2, 0].sum() == 0 and (res.groupdq[3, 1:4, 1:4] == SAT).all()


def test_backup_copies_saturation_onto_multiread_resultants():
    g, _ = _run([[10000, 20000, 35000, 45000, 52000, 60000, 64000]], [50000], backup=1)
    np.testing.assert_array_equal(g, [[0, 0, 0, 0, SAT, SAT, SAT]])  # resultant 3 is single-read
    g, _ = _run([[10000, 20000, 30000, 35000, 40000, 60000, 64000]], [50000], backup=2)
    # saturated from 5; backup flags 4 (3 reads) but not 3 (single read), so stops there
    np.testing.assert_array_equal(g[0], [0, 0, 0, 0, SAT, SAT, SAT])
    g, _ = _run([[10000, 20000, 30000, 35000, 40000, 60000, 64000]], [50000], backup=0)
    np.testing.assert_array_equal(g[0], [0, 0, 0, 0, 0, SAT, SAT])
    g, _ = _run(
        [[10000, 20000, 30000, 60000, 60000, 60000, 64000]],
        [50000],
        timing=read_timing([[1], [2, 3], [4, 5], [6, 7], [8], [9], [10]], 3.04),
        backup=2,
    )
    np.testing.assert_array_equal(g[0], [0, SAT, SAT, SAT, SAT, SAT, SAT])  # two steps back


def test_threshold_inputs_not_modified_and_pixeldq_ored():
    thr = np.array([[np.nan, 5.0]], np.float32)
    tdq = np.array([[0, int(PixelFlag.DEAD)]], np.uint32)
    pdq = np.array([[int(PixelFlag.HOT), 0]], np.uint32)
    data = np.ones((4, 1, 2), np.float32)
    res = saturation(data, np.zeros(data.shape, np.uint8), pdq, thr, tdq, SINGLE, 0, 0)
    assert np.isnan(thr[0, 0]) and tdq[0, 0] == 0
    np.testing.assert_array_equal(res.pixeldq, [[int(PixelFlag.HOT) | NSC, int(PixelFlag.DEAD)]])


# ----------------------------------------------------------------------------- oracle

ORACLE_PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19], [20, 21], [22]]


def _realistic(seed, ny=64, nx=4096):
    rng = np.random.default_rng(seed)
    timing = read_timing(ORACLE_PATTERN, 3.04)
    k = timing.nresultants
    bias = rng.normal(5000, 300, (ny, nx))
    rate = rng.lognormal(np.log(30), 2.5, (ny, nx))  # DN/s; a tail saturates at all times
    data = bias + rate * timing.tbar[:, None, None] + rng.normal(0, 8, (k, ny, nx))
    jump = rng.random((ny, nx)) < 0.01  # steps that can saturate inside a resultant
    data += np.where(jump[None] & (np.arange(k)[:, None, None] >= rng.integers(1, k, (ny, nx))), 40000, 0)
    data = np.clip(data, -50, 65535).astype(np.float32)
    data[rng.random(data.shape) < 1e-3] = 0  # A/D floor
    thr = rng.normal(55000, 3000, (ny, nx)).astype(np.float32)
    thr[rng.random((ny, nx)) < 0.002] = np.nan
    tdq = np.where(rng.random((ny, nx)) < 0.002, NSC, 0).astype(np.uint32)
    tdq |= np.where(rng.random((ny, nx)) < 0.01, int(PixelFlag.HOT), 0).astype(np.uint32)
    gdq = np.where(rng.random(data.shape) < 1e-3, rng.choice([SAT, int(GroupFlag.DROPOUT)], data.shape), 0)
    pdq = np.where(rng.random((ny, nx)) < 0.01, int(PixelFlag.DEAD), 0).astype(np.uint32)
    return data, gdq.astype(np.uint8), pdq, thr, tdq, timing


@pytest.mark.oracle
@pytest.mark.parametrize("grow", [0, 1, 2])
def test_matches_stcal(grow):
    pytest.importorskip("stcal")
    from roman_datamodels.dqflags import pixel
    from stcal.saturation.saturation import flag_saturated_pixels

    data, gdq, pdq, thr, tdq, timing = _realistic(100 + grow)
    up_g, up_p, _ = flag_saturated_pixels(
        data[None].copy(),
        gdq[None].copy(),
        pdq[None].copy(),
        thr.copy(),
        tdq.copy(),
        65535.0,
        pixel,
        n_pix_grow_sat=grow,
        read_pattern=ORACLE_PATTERN,
    )
    res = saturation(data.copy(), gdq.copy(), pdq.copy(), thr, tdq, timing, grow, 0)
    dnu_only = (res.groupdq & (DNU | SAT | int(GroupFlag.AD_FLOOR))) == DNU
    assert dnu_only.sum() > 0 and (res.groupdq & SAT).any()  # the data exercise the rules
    np.testing.assert_array_equal(res.groupdq, up_g[0])
    np.testing.assert_array_equal(res.pixeldq, up_p[0])


@pytest.mark.oracle
def test_matches_romancal_with_backup():
    pytest.importorskip("romancal")
    from types import SimpleNamespace as NS

    from romancal.saturation.saturation import flag_saturation

    data, gdq, pdq, thr, tdq, timing = _realistic(7, ny=32, nx=1024)
    model = NS(
        data=data.copy(),
        groupdq=gdq.copy(),
        pixeldq=pdq.copy(),
        meta=NS(exposure=NS(read_pattern=ORACLE_PATTERN), cal_step=NS()),
    )
    flag_saturation(model, NS(data=thr, dq=tdq), n_pix_grow_sat=1, backup=2)
    res = saturation(data.copy(), gdq.copy(), pdq.copy(), thr, tdq, timing, 1, 2)
    np.testing.assert_array_equal(res.groupdq, model.groupdq)
    np.testing.assert_array_equal(res.pixeldq, model.pixeldq)
