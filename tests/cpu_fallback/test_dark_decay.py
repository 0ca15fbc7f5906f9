"""frame_read_times, dark_decay and wfi18_transient (NumPy backend); parity with romancal."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.dark_decay import dark_decay as dark_decay_fn
from cpu_fallback.dark_decay import frame_read_times
from cpu_fallback.wfi18 import wfi18_transient
from gpucal.dq import GroupFlag
from gpucal.readpattern import read_timing

PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]
FRAME_TIME = 3.04
TIMING = read_timing(PATTERN, FRAME_TIME)
MASK = int(GroupFlag.DO_NOT_USE | GroupFlag.WFI18_TRANSIENT)


def test_frame_read_times_structure():
    t = frame_read_times(FRAME_TIME, 1, 512, 256)  # 32 channels of 8 columns
    assert t.shape == (512, 256) and t.dtype == np.float64
    # sca 1 flips rows: the last row is read first; channels alternate direction
    assert t[-1, 0] == 0.0 and t.min() == 0.0
    np.testing.assert_array_equal(t[:, 0:8], t[:, 15:7:-1])
    np.testing.assert_array_equal(t[:, 0:16], t[:, 16:32])
    assert np.all(np.diff(t[::-1, 0]) > 0)
    assert t.max() < FRAME_TIME  # the last guide-window excursion comes after
    # sca 3 flips columns instead
    t3 = frame_read_times(FRAME_TIME, 3, 512, 256)
    np.testing.assert_array_equal(t3, t[::-1, ::-1])
    np.testing.assert_array_equal(frame_read_times(FRAME_TIME, 3, 512, 256, 2.5), t3 + 2.5 * FRAME_TIME)


def test_frame_read_times_guide_window_gaps():
    t = frame_read_times(FRAME_TIME, 18, 1024, 64)[::-1]  # un-flip rows
    steps = np.diff(t[:, 0])
    regular = steps[0]
    gaps = np.flatnonzero(~np.isclose(steps, regular))
    np.testing.assert_array_equal(gaps + 1, [256, 512, 768])


def test_frame_read_times_needs_32_channels():
    with pytest.raises(ValueError, match="multiple of 32"):
        frame_read_times(FRAME_TIME, 1, 64, 100)


def test_frame_read_times_small_frame_has_one_excursion():
    t = frame_read_times(FRAME_TIME, 1, 8, 64)
    assert np.all(np.isfinite(t)) and t.max() < FRAME_TIME


def test_dark_decay_formula():
    ny, nx, amp, tau = 16, 64, 20.0, 7.0
    data = np.full((TIMING.nresultants, ny, nx), 1000.0, np.float32)
    out = dark_decay_fn(data, TIMING, amp, tau, 5)
    assert out is data and out.dtype == np.float32
    t0 = frame_read_times(FRAME_TIME, 5, ny, nx)
    for k, reads in enumerate(PATTERN):
        expected = 1000.0 - np.mean([amp * np.exp(-(t0 + (r - 1.5) * FRAME_TIME) / tau) for r in reads], axis=0)
        np.testing.assert_allclose(out[k], expected, rtol=1e-7)
    assert out[0].min() < out[-1].min()  # decays


def test_dark_decay_zero_amplitude_is_identity():
    data = np.random.default_rng(0).normal(5000, 10, (7, 8, 32)).astype(np.float32)
    np.testing.assert_array_equal(dark_decay_fn(data.copy(), TIMING, 0.0, 5.0, 2), data)


# ----------------------------------------------------------------------------- wfi18


def _transient_frame(seed, ny=1024, nx=1024, k=6):
    rng = np.random.default_rng(seed)
    timing = read_timing(PATTERN[:k], FRAME_TIME)
    rate = rng.gamma(1.0, 2.0, (ny, nx))
    data = 5000 + rate * timing.tbar[:, None, None] + rng.normal(0, 5, (k, ny, nx))
    t = frame_read_times(FRAME_TIME, 18, ny, nx)
    data[0] += 300 * np.exp(-t / 0.5) - 30 * np.exp(-t / 2.0)
    return data.astype(np.float32), np.zeros((k, ny, nx), np.uint8), timing


@pytest.mark.parametrize("mask_rows, k", [(True, 6), (False, 4)])
def test_wfi18_mask_fallback(mask_rows, k):
    data, gdq, timing = _transient_frame(1, 1024, 64, k)
    before = data.copy()
    d, g, fitted = wfi18_transient(data, gdq, timing, mask_rows)
    assert not fitted
    np.testing.assert_array_equal(d, before)
    assert np.all(g[0, :1000] == MASK) and not g[0, 1000:].any() and not g[1:].any()


def test_wfi18_small_frame_falls_back_to_mask():
    data, gdq, timing = _transient_frame(1, 512, 64)
    _, g, fitted = wfi18_transient(data, gdq, timing, False)
    assert not fitted and np.all(g[0, :512] == MASK)


def test_wfi18_fit_removes_transient():
    data, gdq, timing = _transient_frame(2)
    clean = data.copy()
    t = frame_read_times(FRAME_TIME, 18, 1024, 1024)
    clean[0] -= (300 * np.exp(-t / 0.5) - 30 * np.exp(-t / 2.0)).astype(np.float32)
    d, g, fitted = wfi18_transient(data, gdq, timing, False)
    assert fitted and not g.any()
    resid = (d[0] - clean[0])[4:-4, 4:-4]
    assert np.abs(resid.mean(axis=1)).max() < 1.0  # transient up to 270 DN removed to < 1 DN
    np.testing.assert_array_equal(d[1:], clean[1:])
    np.testing.assert_array_equal(d[0, :4], data[0, :4])  # reference pixels untouched


# ----------------------------------------------------------------------------- oracle


@pytest.mark.oracle
@pytest.mark.parametrize("sca, frame_number", [(3, 0), (7, 2.5), (18, 0)])
def test_frame_read_times_match_romancal(sca, frame_number):
    pytest.importorskip("romancal")
    from romancal.lib.basic_utils import frame_read_times as upstream

    np.testing.assert_array_equal(
        frame_read_times(FRAME_TIME, sca, frame_number=frame_number), upstream(FRAME_TIME, sca, frame_number)
    )


@pytest.mark.oracle
def test_dark_decay_matches_romancal_full_frame():
    pytest.importorskip("romancal")
    from romancal.dark_decay.dark_decay import subtract_dark_decay

    pattern = [[1], [2, 3]]
    rng = np.random.default_rng(5)
    data = rng.random((2, 4096, 4096), dtype=np.float32) * 100 + 5000
    expected = data.copy()
    subtract_dark_decay(expected, 12.5, 23.0, FRAME_TIME, pattern, 9)
    dark_decay_fn(data, read_timing(pattern, FRAME_TIME), 12.5, 23.0, 9)
    np.testing.assert_array_equal(data, expected)


@pytest.mark.oracle
@pytest.mark.parametrize("sca", [6, 11])
def test_dark_decay_matches_romancal_small_frame(monkeypatch, sca):
    pytest.importorskip("romancal")
    import romancal.dark_decay.dark_decay as upstream_mod

    ny, nx = 64, 256
    monkeypatch.setattr(upstream_mod, "frame_read_times", lambda ft, s, fn: frame_read_times(ft, s, ny, nx, fn))
    data = np.random.default_rng(sca).normal(5000, 30, (7, ny, nx)).astype(np.float32)
    expected = data.copy()
    upstream_mod.subtract_dark_decay(expected, 40.0, 4.0, FRAME_TIME, PATTERN, sca)
    dark_decay_fn(data, TIMING, 40.0, 4.0, sca)
    np.testing.assert_array_equal(data, expected)


@pytest.mark.oracle
@pytest.mark.parametrize("mask_rows", [False, True])
def test_wfi18_matches_romancal(monkeypatch, mask_rows):
    pytest.importorskip("romancal")
    from types import SimpleNamespace as NS

    import romancal.wfi18_transient.wfi18_transient as upstream_mod

    ny = nx = 1024  # romancal's map is 4096 x 4096; give it the same smaller map
    monkeypatch.setattr(upstream_mod, "frame_read_times", lambda ft, s: frame_read_times(ft, s, ny, nx))
    data, gdq, timing = _transient_frame(3, ny, nx)
    model = NS(
        data=data.copy(),
        groupdq=gdq.copy(),
        meta=NS(exposure=NS(frame_time=FRAME_TIME, read_pattern=[list(r) for r in timing.read_pattern])),
    )
    upstream_mod.correct_anomaly(model, mask_rows=mask_rows)
    d, g, fitted = wfi18_transient(data, gdq, timing, mask_rows)
    assert fitted is not mask_rows
    np.testing.assert_array_equal(d, model.data)
    np.testing.assert_array_equal(g, model.groupdq)
