"""Ramp fitting (NumPy backend): likely and ols_cas22.

Appendix A.1 vectors, hand-built edge cases with their expected flags, a seeded
statistical test against known truth (pulls and jump detection), and (``-m oracle``)
parity with romancal 1.1.0 / stcal 1.20.0 on fresh random realistic ramps.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from cpu_fallback.ramp_fit import fit_likely, fit_ols_cas22
from gpucal.backends.protocol import RampFitParams
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import read_timing

SAT = int(GroupFlag.SATURATED)
DNU = int(GroupFlag.DO_NOT_USE)
JUMP = int(GroupFlag.JUMP_DET)
NO_GAIN = int(PixelFlag.NO_GAIN_VALUE)

# Appendix A pattern
PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]
TIMING = read_timing(PATTERN, 3.04)
K = len(PATTERN)
FITS = {"likely": fit_likely, "ols_cas22": fit_ols_cas22}


def _run(fit, columns, gdq=None, gain=2.0, rn=7.0, pdq=0, timing=TIMING, params=None):
    """Pixels as columns of a (K, 1, n) cube; returns the RampFitResult."""
    data = np.asarray(columns, dtype=np.float32).T[:, None, :].copy()
    n = data.shape[2]
    gdq = np.zeros(data.shape, np.uint8) if gdq is None else np.asarray(gdq, np.uint8).T[:, None, :].copy()
    res = fit(
        data,
        gdq,
        np.broadcast_to(np.asarray(pdq, np.uint32), (1, n)).copy(),
        np.broadcast_to(np.asarray(rn, np.float32), (1, n)).copy(),
        np.broadcast_to(np.asarray(gain, np.float32), (1, n)).copy(),
        timing,
        params or RampFitParams(),
    )
    for name in ("slope", "err", "var_poisson", "var_rnoise", "chisq"):
        assert getattr(res, name).dtype == np.float32 and getattr(res, name).shape == (1, n)
    assert res.dq.dtype == np.uint32 and res.groupdq.dtype == np.uint8
    return res


def _line(rate, timing=TIMING, offset=1000.0):
    """Noise-free resultants of a constant rate (DN/s)."""
    return offset + rate * timing.tbar


# ----------------------------------------------------------------------------- Appendix A.1
A1_DATA = [
    [1030.4, 1078.4, 1165.0, 1236.1, 1300.4, 1417.7, 1517.3],
    [1618.7, 2516.1, 4339.0, 5867.9, 7082.9, 9512.8, 11328.6],
    [1030.2, 1081.6, 1156.4, 1239.5, 1788.8, 1915.3, 2002.1],
    [1150.1, 1369.9, 1838.2, 2217.3, 2518.5, 3107.9, 3579.7],
    [1001.1, 1004.7, 996.2, 1008.4, 1007.4, 1014.8, 1034.3],
]
A1_GDQ = [[0] * 7, [0] * 7, [0] * 7, [0, 0, 0, 0, 0, 2, 2], [0] * 7]


def test_appendix_a1_likely():
    r = _run(fit_likely, A1_DATA, A1_GDQ)
    close = dict(rtol=2e-6, atol=0)
    np.testing.assert_allclose(r.slope[0], [9.884088, 199.6655, 9.806683, 50.08666, 0.540501], **close)
    np.testing.assert_allclose(r.err[0], [0.3526019, 1.445964, 0.4223771, 0.9677023, 0.1411855], **close)
    np.testing.assert_allclose(r.var_poisson[0], [0.1073006, 2.055137, 0.1145203, 0.871178, 0.006326163], **close)
    np.testing.assert_allclose(r.var_rnoise[0], [0.0170275, 0.03567386, 0.06388219, 0.06526963, 0.01360718], **close)
    np.testing.assert_allclose(r.chisq[0], [1.569835, 0.642049, 4.77336, 1.241215, 9.599865], **close)
    np.testing.assert_array_equal(r.dq[0], [0, 0, JUMP, SAT, 0])
    expected = np.array(A1_GDQ, np.uint8)
    expected[2, 4] = JUMP  # later resultant of the dropped difference only
    np.testing.assert_array_equal(r.groupdq[:, 0, :].T, expected)


def test_appendix_a1_ols_cas22():
    r = _run(fit_ols_cas22, A1_DATA, A1_GDQ)
    close = dict(rtol=2e-6, atol=0)
    np.testing.assert_allclose(r.slope[0], [9.96414, 199.6541, 9.228118, 50.03452, 0.5403835], **close)
    np.testing.assert_allclose(r.var_rnoise[0], [0.02815653, 0.03826341, 0.2024212, 0.08129812, 0.01357775], **close)
    np.testing.assert_allclose(r.var_poisson[0], [0.1034585, 2.053654, 0.176422, 0.8696676, 0.006383805], **close)
    np.testing.assert_allclose(r.err[0], np.sqrt(r.var_poisson[0] + r.var_rnoise[0]), rtol=1e-7)
    np.testing.assert_array_equal(r.chisq, 0)
    np.testing.assert_array_equal(r.dq[0], [0, 0, JUMP, 0, 0])  # SATURATED only when all are
    expected = np.array(A1_GDQ, np.uint8)
    expected[2, 3:5] = JUMP  # both resultants around the jump
    np.testing.assert_array_equal(r.groupdq[:, 0, :].T, expected)


# ----------------------------------------------------------------------------- edge cases
def _sat_from(k):
    return [0] * k + [SAT] * (K - k)


def test_all_saturated():
    col, g = _line(50.0), _sat_from(0)
    r = _run(fit_likely, [col], [g])
    for name in ("slope", "err", "var_poisson", "var_rnoise", "chisq"):
        assert np.isnan(getattr(r, name)[0, 0]), name  # no usable difference
    assert r.dq[0, 0] == SAT | DNU
    np.testing.assert_array_equal(r.groupdq[:, 0, 0], g)
    r = _run(fit_ols_cas22, [col], [g])
    assert (r.slope[0, 0], r.err[0, 0], r.var_poisson[0, 0], r.var_rnoise[0, 0]) == (0, 0, 0, 0)
    assert r.dq[0, 0] == SAT | DNU  # all SAT; DNU from all SAT-or-DNU and from err <= 0


def test_one_good_resultant():
    col, g = _line(50.0), _sat_from(1)
    r = _run(fit_likely, [col], [g])
    assert np.isnan(r.slope[0, 0]) and np.isnan(r.err[0, 0])
    assert r.dq[0, 0] == SAT | DNU  # DNU from romancal's "at most one good resultant" rule
    r = _run(fit_ols_cas22, [col], [g])
    assert r.slope[0, 0] == 0 and r.err[0, 0] == 0
    assert r.dq[0, 0] == DNU  # err <= 0; not all saturated, so no SATURATED


def test_two_good_resultants():
    col, g = _line(50.0), _sat_from(2)
    two_point = (np.float32(col[1]) - np.float32(col[0])) / (TIMING.tbar[1] - TIMING.tbar[0])
    r = _run(fit_likely, [col], [g])
    np.testing.assert_allclose(r.slope[0, 0], two_point, rtol=1e-6)
    assert abs(r.chisq[0, 0]) < 1e-6
    np.testing.assert_allclose(r.err[0, 0] ** 2, r.var_poisson[0, 0] + r.var_rnoise[0, 0], rtol=1e-5)
    assert r.dq[0, 0] == SAT
    r = _run(fit_ols_cas22, [col], [g])
    np.testing.assert_allclose(r.slope[0, 0], two_point, rtol=1e-6)
    assert r.err[0, 0] > 0 and r.dq[0, 0] == 0


def test_jump_in_first_and_last_difference():
    first = _line(20.0)
    first[1:] += 800.0
    last = _line(20.0)
    last[-1] += 800.0
    r = _run(fit_likely, [first, last])
    np.testing.assert_array_equal(np.flatnonzero(r.groupdq[:, 0, 0]), [1])
    np.testing.assert_array_equal(np.flatnonzero(r.groupdq[:, 0, 1]), [K - 1])
    np.testing.assert_allclose(r.slope[0], 20.0, rtol=1e-5)
    np.testing.assert_array_equal(r.dq[0], [JUMP, JUMP])
    r = _run(fit_ols_cas22, [first, last])
    np.testing.assert_array_equal(np.flatnonzero(r.groupdq[:, 0, 0]), [0, 1])
    np.testing.assert_array_equal(np.flatnonzero(r.groupdq[:, 0, 1]), [K - 2, K - 1])
    np.testing.assert_allclose(r.slope[0], 20.0, rtol=1e-5)
    np.testing.assert_array_equal(r.dq[0], [JUMP, JUMP])


@pytest.mark.parametrize("algorithm", FITS)
def test_do_not_use_mid_ramp_is_skipped(algorithm):
    col = _line(30.0)
    col[3] += 5000.0  # garbage in the flagged resultant must not matter
    g = [0, 0, 0, DNU, 0, 0, 0]
    r = _run(FITS[algorithm], [col], [g], pdq=int(PixelFlag.HOT))
    np.testing.assert_allclose(r.slope[0, 0], 30.0, rtol=1e-5)
    np.testing.assert_array_equal(r.groupdq[:, 0, 0], g)  # no jump flagged
    assert r.dq[0, 0] == PixelFlag.HOT  # pixel DQ passes through; one DNU resultant is not all


@pytest.mark.parametrize("algorithm", FITS)
def test_zero_signal_is_finite(algorithm):
    r = _run(FITS[algorithm], [np.full(K, 1000.0)] * 3)
    # ols_cas22 sums its weighted resultants in float32, so 0 only to rounding
    assert np.all(np.abs(r.slope) < 1e-5) and np.all(np.abs(r.var_poisson) < 1e-6)
    assert np.all(np.isfinite(r.err)) and np.all(r.err > 0)
    assert np.all(r.chisq == 0) and np.all(r.dq == 0)


def test_bad_gain():
    cols = [_line(40.0)] * 4
    gain = np.array([2.0, -1.0, np.nan, 0.0], np.float32)
    r = _run(fit_ols_cas22, cols, gain=gain)
    np.testing.assert_array_equal(r.dq[0], [0, NO_GAIN, NO_GAIN | DNU, DNU])  # gain 0 -> slope 0/0
    assert np.isfinite(r.slope[0, :2]).all() and np.isnan(r.slope[0, 2:]).all()
    # likely has no gain check upstream: a NaN gain gives NaN results without a flag
    r = _run(fit_likely, cols, gain=gain)
    assert np.isfinite(r.slope[0, 0]) and np.isnan(r.slope[0, 2])
    assert r.dq[0, 2] == 0


def test_likely_needs_four_resultants():
    three = read_timing([[1], [2, 3], [4]], 3.04)
    with pytest.raises(ValueError, match="at least 4"):
        _run(fit_likely, [_line(10.0, three)], timing=three)
    four = read_timing([[1], [2, 3], [4], [5, 6]], 3.04)
    r = _run(fit_likely, [_line(10.0, four)], timing=four)
    np.testing.assert_allclose(r.slope[0, 0], 10.0, rtol=1e-5)


def test_ols_cas22_without_jump_detection():
    col = _line(20.0)
    col[4:] += 800.0
    r = _run(fit_ols_cas22, [col], params=RampFitParams(use_ramp_jump_detection=False))
    assert not r.groupdq.any() and r.dq[0, 0] == 0 and r.slope[0, 0] > 25


# ----------------------------------------------------------------------------- statistics
STAT_PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17, 18], [19]]


def _simulate(seed, npix, rate, jumps=None, gain=2.0, rn=6.0, frame_time=3.04):
    """Ramps of a known rate (DN/s): Poisson electrons per frame, read noise per read."""
    rng = np.random.default_rng(seed)
    nread = STAT_PATTERN[-1][-1]
    electrons = np.cumsum(rng.poisson(rate * gain * frame_time, (nread, npix)), axis=0).astype(np.float64)
    if jumps is not None:
        first_read, amp = jumps  # amp e- added from read index first_read (0-based) on
        electrons += (np.arange(nread)[:, None] >= first_read[None]) * amp[None]
    reads = 1000 + electrons / gain + rng.normal(0, rn, (nread, npix))
    data = np.stack([reads[np.array(p) - 1].mean(axis=0) for p in STAT_PATTERN]).astype(np.float32)
    args = (
        data[:, None, :],
        np.zeros((len(STAT_PATTERN), 1, npix), np.uint8),
        np.zeros((1, npix), np.uint32),
        np.full((1, npix), rn, np.float32),
        np.full((1, npix), gain, np.float32),
        read_timing(STAT_PATTERN, frame_time),
        RampFitParams(),
    )
    return args


@pytest.mark.parametrize("algorithm", FITS)
@pytest.mark.parametrize("rate", [5.0, 50.0, 500.0])
def test_pulls_against_truth(algorithm, rate):
    npix = 4000  # sigma of the mean pull ~0.016, of its std ~0.011
    r = FITS[algorithm](*_simulate(11, npix, rate))
    pull = (r.slope[0].astype(np.float64) - rate) / r.err[0]
    assert abs(pull.mean()) < 0.07
    assert abs(pull.std() - 1) < 0.05
    assert np.count_nonzero(r.dq & JUMP) <= 0.002 * npix  # few false jumps


@pytest.mark.parametrize("algorithm, min_rate", [("likely", 0.97), ("ols_cas22", 0.9)])
def test_jumps_of_100e_are_detected(algorithm, min_rate):
    rng = np.random.default_rng(5)
    npix = 3000
    first_read = rng.integers(1, STAT_PATTERN[-1][-1], npix)
    amp = rng.uniform(100.0, 1000.0, npix)
    r = FITS[algorithm](*_simulate(12, npix, 1.0, jumps=(first_read, amp)))
    found = (r.dq[0] & JUMP) != 0
    assert found.mean() >= min_rate
    assert found[amp >= 200].all()
    # the flag sits on the resultant holding the jump's read or a neighbour of it
    last = np.array([p[-1] for p in STAT_PATTERN])
    k_jump = np.searchsorted(last, first_read + 1)
    flagged = (r.groupdq[:, 0, :] & JUMP) != 0
    near = [flagged[max(0, k - 1) : k + 2, i].any() for i, k in enumerate(k_jump)]
    assert np.mean(np.array(near)[found]) >= 0.99


# ----------------------------------------------------------------------------- oracle
ORACLE_PATTERNS = {
    "8": [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17, 18], [19]],
    "10": [[1], [2], [3, 4], [5, 6, 7], [8, 9, 10, 11], [12], [13, 14], [15, 16, 17, 18], [19], [20, 21]],
}


def _realistic(seed, pattern, ny=48, nx=58, frame_time=3.04):
    """Sky, stars that saturate, cosmic rays, stray DO_NOT_USE resultants and pixel flags."""
    rng = np.random.default_rng(seed)
    nres, nread = len(pattern), pattern[-1][-1]
    gain = rng.uniform(1.7, 2.3, (ny, nx)).astype(np.float32)
    rn = rng.uniform(4.0, 9.0, (ny, nx)).astype(np.float32)
    rate = 10 ** rng.uniform(-1, 2, (ny, nx))
    stars = rng.random((ny, nx)) < 0.15
    rate[stars] = 10 ** rng.uniform(2, 4, stars.sum())
    electrons = np.cumsum(rng.poisson(rate * gain * frame_time, (nread, ny, nx)), axis=0).astype(np.float64)
    hit = rng.random((ny, nx)) < 0.12
    at = rng.integers(0, nread, (ny, nx))
    amp = 10 ** rng.uniform(1.3, 4.3, (ny, nx))
    electrons += (np.arange(nread)[:, None, None] >= at) * np.where(hit, amp, 0.0)
    reads = 1000 + electrons / gain + rng.normal(0, 1, (nread, ny, nx)) * rn
    data = np.stack([reads[np.array(p) - 1].mean(axis=0) for p in pattern]).astype(np.float32)
    gdq = np.zeros((nres, ny, nx), np.uint8)
    gdq[np.maximum.accumulate(data > 25000, axis=0)] = SAT
    gdq[rng.random((nres, ny, nx)) < 0.01] |= DNU
    pdq = np.where(rng.random((ny, nx)) < 0.02, np.uint32(PixelFlag.HOT), np.uint32(0))
    return data, gdq, pdq, rn, gain, read_timing(pattern, frame_time)


def _ramp_model(data, gdq, pdq, timing):
    rdm = pytest.importorskip("roman_datamodels.datamodels")
    model = rdm.RampModel.create_fake_data(shape=data.shape)
    model.meta.exposure.read_pattern = [list(p) for p in timing.read_pattern]
    model.meta.exposure.frame_time = timing.frame_time
    model.meta.exposure.nresultants = len(timing.read_pattern)
    model.data, model.groupdq, model.pixeldq = data.copy(), gdq.copy(), pdq.copy()
    return model


def _assert_same(ours, theirs, rtol=1e-5):
    """Equal NaN positions; finite values within rtol (float32 rounding at worst)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=0, equal_nan=True)


SCI = (slice(4, -4), slice(4, -4))


@pytest.mark.oracle
@pytest.mark.parametrize("pattern", ORACLE_PATTERNS)
@pytest.mark.parametrize("seed", [1, 2])
def test_oracle_likely_matches_romancal(pattern, seed):
    pytest.importorskip("stcal")
    step = pytest.importorskip("romancal.ramp_fitting.ramp_fit_step")
    from stcal.ramp_fitting.likely_fit import likely_ramp_fit

    data, gdq, pdq, rn, gain, timing = _realistic(seed, ORACLE_PATTERNS[pattern])
    ours = fit_likely(data.copy(), gdq.copy(), pdq, rn, gain, timing, RampFitParams())

    # romancal's own function: trimmed float32 slope, dq, float16 err/chisq, jump flags
    model = _ramp_model(data, gdq, pdq, timing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = step.likely(model, SimpleNamespace(data=rn), SimpleNamespace(data=gain), include_var_rnoise=True)
    _assert_same(ours.slope[SCI], image.data)
    np.testing.assert_array_equal(ours.dq[SCI], image.dq)
    np.testing.assert_array_equal(ours.groupdq, model.groupdq[0])
    for name in ("err", "var_poisson", "var_rnoise", "chisq"):
        _assert_same(getattr(ours, name)[SCI].astype(np.float16), getattr(image, name), rtol=1e-3)

    # stcal at full precision, called as romancal calls it
    ramp = SimpleNamespace(
        data=data[None].copy(),
        groupdq=gdq[None].copy(),
        pixeldq=pdq.copy(),
        read_pattern=[list(np.array(p) * timing.frame_time) for p in timing.read_pattern],
        zeroframe=None,
        rejection_threshold=4.5,
        flags_jump_det=JUMP,
        flags_saturated=SAT,
        flags_do_not_use=DNU,
        average_dark_current=np.zeros(data.shape[1:]),
        nframes=1,
        groupgap=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, _, _ = likely_ramp_fit(ramp, rn * np.sqrt(2), gain, jump_data=None)
    for name in ("slope", "err", "var_poisson", "var_rnoise"):
        _assert_same(getattr(ours, name), info[name])
    np.testing.assert_allclose(ours.chisq, info["chisq"], rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(ours.groupdq & JUMP) > 20  # the data did exercise the search


@pytest.mark.oracle
@pytest.mark.parametrize("pattern", ORACLE_PATTERNS)
@pytest.mark.parametrize(
    "params",
    [
        RampFitParams(),
        RampFitParams(use_ramp_jump_detection=False),
        RampFitParams(threshold_intercept=4.0, threshold_constant=0.25),
    ],
    ids=["default", "nojump", "thresholds"],
)
def test_oracle_ols_cas22_matches_romancal(pattern, params):
    pytest.importorskip("stcal")
    step = pytest.importorskip("romancal.ramp_fitting.ramp_fit_step")
    from stcal.ramp_fitting import ols_cas22_fit
    from stcal.ramp_fitting.ols_cas22 import Parameter, Variance

    data, gdq, pdq, rn, gain, timing = _realistic(3, ORACLE_PATTERNS[pattern])
    gain[0, :3] = [0.0, -1.0, np.nan]
    ours = fit_ols_cas22(data.copy(), gdq.copy(), pdq, rn, gain, timing, params)
    model = _ramp_model(data, gdq, pdq, timing)
    kwargs = dict(
        use_jump=params.use_ramp_jump_detection,
        threshold_intercept=params.threshold_intercept,
        threshold_constant=params.threshold_constant,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = step.ols_cas22(
            model, SimpleNamespace(data=rn), SimpleNamespace(data=gain), include_var_rnoise=True, **kwargs
        )
    _assert_same(ours.slope[SCI], image.data)
    np.testing.assert_array_equal(ours.dq[SCI], image.dq)
    for name in ("err", "var_poisson", "var_rnoise"):
        _assert_same(getattr(ours, name)[SCI].astype(np.float16), getattr(image, name), rtol=1e-3)

    # stcal at full precision, with the jump flags romancal does not keep
    extra = {
        k: v
        for k, v in (
            ("threshold_intercept", params.threshold_intercept),
            ("threshold_constant", params.threshold_constant),
        )
        if v is not None
    }
    out = ols_cas22_fit.fit_ramps_casertano(
        data * gain,
        gdq,
        rn * gain,
        timing.frame_time,
        read_pattern=[list(p) for p in timing.read_pattern],
        use_jump=params.use_ramp_jump_detection,
        **extra,
    )
    with np.errstate(all="ignore"):
        _assert_same(ours.slope, out.parameters[..., Parameter.slope] / gain)
        _assert_same(ours.var_rnoise, out.variances[..., Variance.read_var] / gain**2)
        _assert_same(ours.var_poisson, out.variances[..., Variance.poisson_var] / gain**2)
    np.testing.assert_array_equal(ours.groupdq, out.dq.astype(np.uint8))
    if params.use_ramp_jump_detection:
        assert np.count_nonzero(ours.groupdq & JUMP) > 20


@pytest.mark.oracle
def test_oracle_likely_degenerate_ramps_follow_stcal_rounding():
    """Two usable differences and a jump: stcal's choice is set by rounding; we follow it.

    Both omit-one fits leave a single difference (chi-square ~0 up to rounding), so the two
    improvements are equal but for rounding noise: depending on the amplitude stcal drops
    the later difference, the clean earlier one, both (exact tie, NaN slope) or neither.
    """
    pytest.importorskip("stcal")
    from stcal.ramp_fitting.likely_fit import likely_ramp_fit

    amps = np.round(10 ** np.linspace(2, 5, 400))
    cols = [_line(20.0) + np.where(np.arange(K) >= 2, a, 0.0) for a in amps]
    data = np.array(cols, np.float32).T[:, None, :]
    gdq = np.zeros(data.shape, np.uint8)
    gdq[3:] = SAT
    n = len(amps)
    pdq, rn, gain = np.zeros((1, n), np.uint32), np.full((1, n), 7.0, np.float32), np.full((1, n), 2.0, np.float32)
    ours = fit_likely(data.copy(), gdq.copy(), pdq, rn, gain, TIMING, RampFitParams())
    ramp = SimpleNamespace(
        data=data[None].copy(), groupdq=gdq[None].copy(), pixeldq=pdq.copy(),
        read_pattern=[list(np.array(p) * TIMING.frame_time) for p in PATTERN], zeroframe=None,
        rejection_threshold=4.5, flags_jump_det=JUMP, flags_saturated=SAT, flags_do_not_use=DNU,
        average_dark_current=np.zeros((1, n)), nframes=1, groupgap=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, _, _ = likely_ramp_fit(ramp, rn * np.sqrt(2), gain, jump_data=None)
    np.testing.assert_array_equal(ours.groupdq, ramp.groupdq[0])
    _assert_same(ours.slope, info["slope"])
    flagged = (ours.groupdq[1:3, 0, :] & JUMP) != 0
    outcomes = {tuple(col) for col in flagged.T}
    assert outcomes == {(False, False), (True, False), (False, True), (True, True)}
