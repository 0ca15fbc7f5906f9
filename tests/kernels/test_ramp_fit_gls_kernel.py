"""``ramp_fit_gls.cu`` against its NumPy twin (``cpu_fallback.ramp_fit.gls``) and stated outcomes.

* Random frames: the read-level simulations of ``test_ramp_fit_kernels`` (cosmic rays,
  stars saturating, stray DO_NOT_USE, NaN resultants, bad gains), 8, 10 and 18 uneven
  resultants, with the jump search on, off and at another threshold, plus jump-step flags
  on the input.  The kernel uses only + - * / and sqrt, each rounded separately, in the
  twin's order: on the CPU shim every value and flag is identical.  On a GPU the same
  holds by construction (no libm transcendental, no float32 intermediate); the test
  allows flags of at most 1e-5 of the pixels to differ and values within 1e-3 sigma / 1e-5,
  the bound issue 10's contract states, in case a compiler reorders anyway.
* Hand-built ramps with their expected outcomes: a noise-free line, saturation from
  resultants 0, 1 and 2, a cosmic ray in a difference, a jump-step flag on a multi-read
  resultant with the hit split between its reads, a last resultant short of full well,
  bad gain and read noise, NaN mid-ramp, one resultant and the resultant limit.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.ramp_fit import fit_gls
from cpu_fallback.ramp_fit.gls import GLS_MAX_RESULTANTS
from gpucal.backends.protocol import RampFitParams, RampFitResult
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import read_timing
from tests.kernels._drivers import gls
from tests.kernels._runtime import exact
from tests.kernels.test_ramp_fit_kernels import FRAMES, _assert_agree, _assert_identical, realistic

SAT, DNU, JUMP = int(GroupFlag.SATURATED), int(GroupFlag.DO_NOT_USE), int(GroupFlag.JUMP_DET)
HOT, NO_GAIN = int(PixelFlag.HOT), int(PixelFlag.NO_GAIN_VALUE)
FRAME_TIME = 3.04
PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]
TIMING = read_timing(PATTERN, FRAME_TIME)
K = len(PATTERN)
PARAMS = {
    "default": RampFitParams(),
    "nojump": RampFitParams(use_ramp_jump_detection=False),
    "threshold4": RampFitParams(gls_jump_threshold=4.0),
}


def _columns(rt, columns, gdq=None, gain=2.0, rn=7.0, timing=TIMING, params=None, level=None) -> RampFitResult:
    """Pixels as columns of a (K, 1, n) cube through the kernel and the twin (checked identical)."""
    data = np.asarray(columns, dtype=np.float32).T[:, None, :].copy()
    n = data.shape[2]
    gdq = np.zeros(data.shape, np.uint8) if gdq is None else np.asarray(gdq, np.uint8).T[:, None, :].copy()
    rest = [np.broadcast_to(np.asarray(v, t), (1, n)).copy() for v, t in ((0, np.uint32), (rn, np.float32),
                                                                          (gain, np.float32))]
    params = params or RampFitParams()
    level = None if level is None else np.broadcast_to(np.asarray(level, np.float32), (1, n)).copy()
    got = gls(rt, data, gdq.copy(), *rest, timing, params, level)
    ref = fit_gls(data.copy(), gdq.copy(), *rest, timing, params, level)
    if exact(rt):
        _assert_identical(got, ref, "gls columns")
    else:
        _assert_agree(got, ref, "gls columns", max_fraction=0.0)
    return got


def _line(rate, timing=TIMING, offset=1000.0):
    return offset + rate * timing.tbar


def _with_jump_step_flags(frame):
    """The frame with JUMP_DET where a two-point test on the noise-free truth would put it:
    here, on resultants after any big rise (a crude stand-in: differences > 3x the median)."""
    data, gdq, pdq, rn, gain, timing = frame
    d = np.diff(data.astype(np.float64), axis=0)
    big = d > 3 * np.abs(np.nanmedian(d, axis=0)) + 200
    gdq = gdq.copy()
    gdq[1:][big] |= np.uint8(JUMP)
    return data, gdq, pdq, rn, gain, timing


def _levels(seed: int, shape) -> np.ndarray:
    """Saturation levels near the frames' 55,000 DN threshold, some unknown (inf, NaN)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(54000.0, 56000.0, shape).astype(np.float32)
    level[rng.random(shape) < 0.05] = np.inf
    level[rng.random(shape) < 0.02] = np.nan
    return level


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("jump_step", [False, True])
@pytest.mark.parametrize("with_level", [False, True])
def test_gls_matches_numpy_on_random_frames(runtime, frame, params, jump_step, with_level):
    seed, pattern, shape = FRAMES[frame]
    inputs = realistic(seed + 1000, pattern, shape)  # fresh realisations, not the other tests'
    if jump_step:
        inputs = _with_jump_step_flags(inputs)
    data, gdq, pdq, rn, gain, timing = inputs
    level = _levels(seed + 2000, shape) if with_level else None
    ref = fit_gls(data.copy(), gdq.copy(), pdq, rn, gain, timing, PARAMS[params], level)
    got = gls(runtime, data.copy(), gdq.copy(), pdq, rn, gain, timing, PARAMS[params], level)
    if exact(runtime):
        _assert_identical(got, ref, f"gls {frame} {params}")
    else:
        _assert_agree(got, ref, f"gls {frame} {params}")
    npix = ref.dq.size
    assert np.count_nonzero(ref.dq & SAT) > 0.05 * npix
    assert np.count_nonzero(ref.dq & NO_GAIN) == 4
    assert np.isnan(ref.slope).sum() > 10
    if PARAMS[params].use_ramp_jump_detection or jump_step:
        assert np.count_nonzero(ref.dq & JUMP) > 0.05 * npix
    if PARAMS[params].use_ramp_jump_detection:
        found = (ref.groupdq & ~gdq) != 0
        assert found.any(axis=0).sum() > 0.002 * npix  # the fit's own search changed flags


def test_noise_free_line(runtime):
    r = _columns(runtime, [_line(50.0), _line(0.0)])
    np.testing.assert_allclose(r.slope[0], [50.0, 0.0], atol=1e-5)
    np.testing.assert_array_equal(r.dq[0], [0, 0])
    assert (r.err[0] > 0).all() and (r.chisq[0] < 1e-6).all()
    np.testing.assert_allclose(r.err[0] ** 2, r.var_poisson[0] + r.var_rnoise[0], rtol=1e-6)
    assert r.var_poisson[0, 1] == 0  # no signal, no Poisson variance


def _sat_from(k):
    return [0] * k + [SAT] * (K - k)


def test_saturation(runtime):
    col = _line(50.0)
    r = _columns(runtime, [col] * 4, [_sat_from(0), _sat_from(1), _sat_from(2), _sat_from(5)])
    assert np.isnan(r.slope[0, :2]).all()  # no usable difference
    np.testing.assert_array_equal(r.dq[0], [SAT | DNU, SAT | DNU, SAT, SAT])  # SATURATED if any resultant is
    two_point = (np.float64(np.float32(col[1])) - np.float32(col[0])) / (TIMING.tbar[1] - TIMING.tbar[0])
    np.testing.assert_allclose(r.slope[0, 2], two_point, rtol=1e-6)
    np.testing.assert_allclose(r.slope[0, 3], 50.0, rtol=1e-5)


def test_cosmic_ray_in_a_difference(runtime):
    col = _line(20.0)
    col[4:] += 800.0
    r = _columns(runtime, [col, col], params=None)
    assert list(np.flatnonzero(r.groupdq[:, 0, 0])) == [4]  # the later resultant
    np.testing.assert_allclose(r.slope[0, 0], 20.0, rtol=1e-5)
    assert r.dq[0, 0] == JUMP
    r = _columns(runtime, [col], params=RampFitParams(use_ramp_jump_detection=False))
    assert r.dq[0, 0] == 0 and r.slope[0, 0] > 25.0  # no search, no flag (not even a shortfall)


def test_hit_split_between_the_reads_of_a_resultant(runtime):
    """No jump-step flag: 160 DN between the 2nd and 3rd of resultant 2's four reads puts
    80 DN into each difference around it; with 10 DN read noise the largest single residual
    is 4.1 sigma, the pair's 6.2 (threshold 5): the pair test removes both differences and
    puts JUMP_DET on resultant 2."""
    col = _line(20.0)
    col[2] += 0.5 * 160.0
    col[3:] += 160.0
    r = _columns(runtime, [col], rn=10.0)
    np.testing.assert_array_equal(r.groupdq[:, 0, 0], [0, 0, JUMP, 0, 0, 0, 0])
    np.testing.assert_allclose(r.slope[0, 0], 20.0, rtol=1e-5)


def test_jump_step_flag_on_a_multi_read_resultant(runtime):
    """A hit between the reads of resultant 2 (4 reads: 1 before, 3 after) moves it by 3/4
    of the hit and resultant 3 by all of it; JUMP_DET on resultant 2 removes both
    differences around it, so the slope is the line's."""
    col = _line(20.0)
    col[2] += 0.75 * 600.0
    col[3:] += 600.0
    gdq = [0] * K
    gdq[2] = JUMP
    r = _columns(runtime, [col], [gdq], params=RampFitParams(use_ramp_jump_detection=False))
    np.testing.assert_allclose(r.slope[0, 0], 20.0, rtol=1e-5)
    assert r.dq[0, 0] == JUMP
    one = [0] * K
    one[3] = JUMP  # resultant 3 has one read: only the difference into it goes
    col = _line(20.0)
    col[3:] += 600.0
    r = _columns(runtime, [col], [one], params=RampFitParams(use_ramp_jump_detection=False))
    np.testing.assert_allclose(r.slope[0, 0], 20.0, rtol=1e-5)


def test_last_resultant_short_of_full_well(runtime):
    """Full well reached inside resultant 5 (5 reads), its average below the threshold,
    resultant 6 saturated: resultant 5 falls ~40 sigma short and gets SATURATED; the slope
    comes from the others.  A last resultant that is only 2 sigma low is left alone."""
    col = _line(400.0)
    col[5] -= 300.0
    gdq = [0] * K
    gdq[6] = SAT
    low = _line(400.0)
    low[-1] -= 2 * 7.0 * 1.5  # about 2 sigma of the last difference
    r = _columns(runtime, [col, low], [gdq, [0] * K])
    np.testing.assert_array_equal(r.groupdq[:, 0, 0], [0, 0, 0, 0, 0, SAT, SAT])
    assert r.dq[0, 0] == SAT
    np.testing.assert_allclose(r.slope[0, 0], 400.0, rtol=1e-5)
    assert r.dq[0, 1] == 0 and not r.groupdq[:, 0, 1].any()


def test_full_well_inside_the_last_resultant_with_a_known_level(runtime):
    """With the saturation level known, a last resultant whose last read the ramp puts at
    the level is SATURATED and left out even when it is only ~1 sigma low (the shortfall
    test alone would keep it); one whose last read stays 3,000 DN below is left alone, and
    so is the same ramp where the level is unknown (+inf, NaN)."""
    rate, n_last = 400.0, len(PATTERN[-2])
    col = _line(rate)
    t_reads = np.asarray(PATTERN[-2], float) * FRAME_TIME
    sigma = 7.0 / np.sqrt(n_last)  # read noise of the resultant
    level = float(col[5] + rate * (t_reads[-1] - TIMING.tbar[5])) - 1.5 * sigma * n_last  # only the last read
    clipped = np.minimum(1000.0 + rate * t_reads, level).mean()
    low = col.copy()
    low[5] = clipped  # the last read or two at the level: about 1 sigma of the resultant
    assert sigma < col[5] - clipped < 2 * sigma
    gdq = [0] * K
    gdq[6] = SAT
    r = _columns(runtime, [low, low, low, low], [gdq] * 4,
                 level=[level, level + 3000.0 + rate * 6 * FRAME_TIME, np.inf, np.nan])
    np.testing.assert_array_equal(r.groupdq[:, 0, 0], [0, 0, 0, 0, 0, SAT, SAT])
    np.testing.assert_allclose(r.slope[0, 0], rate, rtol=1e-5)  # from the unsaturated resultants
    for i in (1, 2, 3):
        np.testing.assert_array_equal(r.groupdq[:, 0, i], [0, 0, 0, 0, 0, 0, SAT])
        assert r.slope[0, i] < rate  # the low resultant stays in the fit


def test_quantization_in_the_read_noise_variance(runtime):
    """var_rnoise includes the 1/12 DN**2 a resultant gains from being stored as an integer:
    with read noise 1e-3 DN it is all the read noise there is, and it matches the GLS
    variance of the differences with covariance (2 q on the diagonal, -q beside it)."""
    r = _columns(runtime, [_line(0.0)], rn=1e-3)
    n = TIMING.n_reads.astype(float)
    dt = np.diff(TIMING.tbar)
    nd = dt.size
    q = 1.0 / 12.0
    cov = np.diag(np.full(nd, 2 * q) + 1e-6 * (1 / n[:-1] + 1 / n[1:]))
    for j in range(nd - 1):
        cov[j, j + 1] = cov[j + 1, j] = -q - 1e-6 / n[j + 1]
    expected = 1.0 / (dt @ np.linalg.solve(cov, dt))
    np.testing.assert_allclose(r.var_rnoise[0, 0], expected, rtol=1e-5)


def test_bad_gain_read_noise_and_nan(runtime):
    col = _line(30.0)
    hole = col.copy()
    hole[3] = np.nan
    r = _columns(runtime, [col, col, col, col, hole], gain=[0.0, -1.0, np.nan, 2.0, 2.0],
                 rn=[7.0, 7.0, 7.0, 0.0, 7.0])
    assert np.isnan(r.slope[0]).all() and np.isnan(r.err[0, :4]).all()
    assert r.err[0, 4] > 0  # NaN data: the read-noise error stays, the slope is NaN
    np.testing.assert_array_equal(r.dq[0], [DNU, DNU | NO_GAIN, DNU | NO_GAIN, DNU, DNU])


def test_resultant_limits(runtime):
    one = read_timing([[1, 2]], FRAME_TIME)
    r = _columns(runtime, [[1000.0]], timing=one)
    assert np.isnan(r.slope[0, 0]) and r.dq[0, 0] == DNU
    top = read_timing([[i] for i in range(1, GLS_MAX_RESULTANTS + 1)], FRAME_TIME)
    r = _columns(runtime, [_line(10.0, top)], timing=top)
    np.testing.assert_allclose(r.slope[0, 0], 10.0, rtol=1e-5)
    over = read_timing([[i] for i in range(1, GLS_MAX_RESULTANTS + 2)], FRAME_TIME)
    with pytest.raises(ValueError, match="resultants"):
        _columns(runtime, [_line(10.0, over)], timing=over)


def test_threads_do_not_change_the_result(monkeypatch):
    """The NumPy twin fits row blocks on worker threads; the result is the same bit for bit."""
    import cpu_fallback.ramp_fit.gls as gls_np

    monkeypatch.setattr(gls_np, "BLOCK_PIXELS", 1000)  # many blocks on a small frame
    seed, pattern, shape = FRAMES["K8"]
    data, gdq, pdq, rn, gain, timing = realistic(seed + 3000, pattern, shape)
    level = _levels(seed + 4000, shape)
    one = fit_gls(data.copy(), gdq.copy(), pdq, rn, gain, timing, RampFitParams(), level, threads=1)
    many = fit_gls(data.copy(), gdq.copy(), pdq, rn, gain, timing, RampFitParams(), level, threads=4)
    _assert_identical(many, one, "gls threads")
