"""jump.cu against stated flags and against cpu_fallback.jump (two-point difference).

Each body runs on the CPU shim and, when a GPU is present, on the GPU (``runtime``
fixture), for each reference-rate estimate of cpu_fallback.jump (``REFERENCE_RATES``).
The golden cases are noise-free ramps whose jumps sit a stated factor above or below the
jump that reaches the threshold exactly; that jump is found by bisection on an independent
float64 statement of the significance (:func:`significance`: the covariance of the
differences built from that of the resultants, the leave-one-out weights written as a
linear combination).  Each case states its expected flags, which the NumPy twin must give
too.  The random frames are read-level simulations (Poisson electrons, per-read noise,
cosmic rays of 20-5000 e-, saturation, DO_NOT_USE, NaN, bad gains), compared flag for flag
with the NumPy backend.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cpu_fallback.jump import REFERENCE_RATES
from cpu_fallback.jump import jump as numpy_jump
from gpucal.backends.device import launch
from gpucal.backends.protocol import JumpParams
from gpucal.dq import GroupFlag
from gpucal.readpattern import ReadTiming, read_timing
from tests.kernels._data import assert_flags_match
from tests.kernels._drivers import jump
from tests.kernels._runtime import cpu_runtime, exact

FRAME_TIME = 3.04
GAIN = 2.0  # e-/DN
READ_NOISE = 6.0  # DN per read
UNEVEN = [
    [1],
    [2, 3],
    [4, 5, 6, 7],
    [8, 9, 10, 11],
    list(range(12, 18)),
    list(range(18, 24)),
    list(range(24, 30)),
    [30],
]
SINGLE13 = [[r] for r in range(1, 14)]
JUMP = int(GroupFlag.JUMP_DET)
SAT = int(GroupFlag.SATURATED)
DNU = int(GroupFlag.DO_NOT_USE)
# thresholds stated explicitly, so that the golden cases do not follow changes of defaults
PARAMS = JumpParams(
    rejection_threshold=4.0,
    three_group_rejection_threshold=6.0,
    four_group_rejection_threshold=5.0,
    flag_4_neighbors=True,
    max_jump_to_flag_neighbors=1000.0,
    min_jump_to_flag_neighbors=10.0,
)
ALONE = replace(PARAMS, flag_4_neighbors=False)

# jump.cu's launch constants
MODE_NONE, MODE_ITERATIVE, MODE_SINGLE = 0, 1, 2
MAX_RESULTANTS = 32


# ------------------------------------------------------------------------------ driver
def search_mode(groupdq: np.ndarray) -> int:
    """The exposure-level switch of cpu_fallback.jump, as the library's launcher finds it on
    the device (downloaded here), which the host helper must agree with."""
    rt = cpu_runtime()
    on_device = int(rt.download(launch.jump_search_mode(rt, rt.upload(groupdq, label="input")), label="mode")[0])
    assert launch.frame_search_mode(groupdq) == on_device
    return on_device


@pytest.fixture(params=REFERENCE_RATES)
def ref(request) -> str:
    """Each reference-rate estimate of cpu_fallback.jump."""
    return request.param


# ------------------------------------------------------------------------------ oracle
def fd_covariance(t: ReadTiming, rate: float, rn: float = READ_NOISE, gain: float = GAIN) -> np.ndarray:
    """(K-1, K-1) covariance of the rates fd (DN/s)^2 at a count rate, from that of the
    resultants: Var D_a = rn^2 / N_a + (c/g) tau_a, Cov(D_a, D_b) = (c/g) tbar_min(a,b)."""
    k = t.nresultants
    c = max(rate, 0.0) / gain
    idx = np.arange(k)
    cov_d = c * t.tbar[np.minimum.outer(idx, idx)]
    cov_d[idx, idx] = rn**2 / t.n_reads + c * t.tau
    m = (np.eye(k, k, 1) - np.eye(k))[:-1] / np.diff(t.tbar)[:, None]
    return m @ cov_d @ m.T


def significance(fd, use, i, t, ref, iterative=True, noise_rate=None, kappa=PARAMS.rejection_threshold) -> float:
    """Significance of difference ``i`` among the differences ``use`` of rates ``fd``.

    weighted: (fd_i - r_i) / sd(fd_i - r_i), r_i the inverse-variance-weighted mean of the
    others in the reference set R: the usable differences within ``kappa`` sd of the median
    of fd (all usable ones if fewer than two are; ``kappa=math.inf``: always all, the earlier
    draft's reference); median: stcal's |(|fd_i|) - m| / sd(fd_i), m the clipped median of
    |fd| (iterative) or |fd_i - m0| / sd(fd_i), m0 the median of fd (single pass).  The
    noise is at max(median of fd, 0) (weighted) or max(m, 0), unless ``noise_rate`` is given.
    """
    fd = np.asarray(fd, float)
    use = np.asarray(use, bool)
    if ref == "weighted":
        med = float(np.median(fd[use]))
        rate = max(med, 0.0) if noise_rate is None else noise_rate
        cov = fd_covariance(t, rate)
        others = use & (np.abs(fd - med) <= kappa * np.sqrt(np.diag(cov)))
        if others.sum() < 2:
            others = use.copy()
        others[i] = False
        w = np.where(others, 1.0 / np.diag(cov), 0.0)
        a = -w / w.sum()
        a[i] = 1.0
        return float(a @ np.where(use, fd, 0.0) / math.sqrt(a @ cov @ a))
    if iterative:
        a = np.sort(np.abs(fd[use]))
        kept = a[a != a[-1]] if a.size >= 4 else a
        m = a[0] if a.size == 2 else float(np.median(kept))
        x = abs(fd[i])
    else:
        m = x = float(np.median(fd[use]))
        x = fd[i]
    rate = max(m, 0.0) if noise_rate is None else noise_rate
    return abs(x - m) / math.sqrt(fd_covariance(t, rate)[i, i])


def threshold_jump(t, rate, i, threshold, ref, use=None, iterative=True, noise_rate=None) -> float:
    """The jump (DN) in difference i of a noise-free ramp at ``rate`` whose significance is
    exactly ``threshold`` (bisection)."""
    nd = t.nresultants - 1
    use = np.ones(nd, bool) if use is None else np.asarray(use, bool)
    dt = np.diff(t.tbar)

    def sig(jump_dn: float) -> float:
        fd = np.full(nd, rate)
        fd[i] += jump_dn / dt[i]
        return significance(fd, use, i, t, ref, iterative, noise_rate)

    lo, hi = 0.0, 1.0
    while sig(hi) < threshold:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sig(mid) < threshold else (lo, mid)
    return hi


# ------------------------------------------------------------------------------ helpers
def ramps(t: ReadTiming, rate: float, jumps: list[dict[int, float]]) -> np.ndarray:
    """Noise-free resultants (K, 1, npix) float32, one pixel per dict {difference: jump DN}."""
    d = np.repeat((rate * t.tbar)[:, None], len(jumps), axis=1)
    for p, js in enumerate(jumps):
        for i, amp in js.items():
            d[i + 1 :, p] += amp
    return d[:, None, :].astype(np.float32)


def both(rt, data, t, ref, params=ALONE, groupdq=None, rn=READ_NOISE, gain=GAIN):
    """(kernel, NumPy) groupdq for the same inputs (scalars broadcast to the frame)."""
    shape = data.shape[1:]
    rn_arr = np.broadcast_to(np.asarray(rn, np.float32), shape).copy()
    gain_arr = np.broadcast_to(np.asarray(gain, np.float32), shape).copy()
    gdq = np.zeros(data.shape, np.uint8) if groupdq is None else groupdq
    got = jump(rt, data, gdq, rn_arr, gain_arr, t, params, reference_rate=ref)
    want = numpy_jump(data.copy(), gdq.copy(), rn_arr, gain_arr, t, params, reference_rate=ref, threads=1)
    return got, want


def assert_jumps(rt, data, t, ref, expected, **kw):
    """JUMP_DET of the kernel and of the NumPy twin equal ``expected`` ((K, ...) bool)."""
    got, want = both(rt, data, t, ref, **kw)
    np.testing.assert_array_equal((got & JUMP) != 0, expected, err_msg="kernel")
    np.testing.assert_array_equal((want & JUMP) != 0, expected, err_msg="cpu_fallback (the golden case is stale)")
    return got


def flags(k: int, npix: int, *where: tuple[int, int]) -> np.ndarray:
    """(k, 1, npix) bool, True at each (resultant, pixel)."""
    out = np.zeros((k, 1, npix), bool)
    for r, p in where:
        out[r, 0, p] = True
    return out


# ------------------------------------------------------------------------------ golden cases
@pytest.mark.parametrize("rate", [0.0, 5.0])
def test_jump_just_above_and_below_threshold_in_every_difference(runtime, ref, rate):
    """1.0125x the threshold jump flags the later resultant, 0.9875x does not."""
    t = read_timing(UNEVEN, FRAME_TIME)
    k = t.nresultants
    cases, where = [], []
    for i in range(k - 1):
        j4 = threshold_jump(t, rate, i, 4.0, ref)
        cases += [{i: 1.0125 * j4}, {i: 0.9875 * j4}]
        where.append((i + 1, 2 * i))
    assert_jumps(runtime, ramps(t, rate, cases), t, ref, flags(k, len(cases), *where))


def test_first_and_last_difference_and_two_jumps(runtime, ref):
    """2x the threshold jump in difference 0 -> resultant 1; in difference 6 -> resultant 7;
    12.5x and 7.5x in differences 1 and 5 -> resultants 2 and 6 (the second found by the
    second pass)."""
    t = read_timing(UNEVEN, FRAME_TIME)
    rate = 2.0
    j4 = [threshold_jump(t, rate, i, 4.0, ref) for i in range(7)]
    cases = [{0: 2 * j4[0]}, {6: 2 * j4[6]}, {1: 12.5 * j4[1], 5: 7.5 * j4[5]}, {}]
    assert_jumps(runtime, ramps(t, rate, cases), t, ref, flags(8, 4, (1, 0), (7, 1), (2, 2), (6, 2)))


def test_saturated_tail_not_flagged_and_input_jump_on_it_cleared(runtime, ref):
    """5x the threshold jump in difference 2 -> resultant 3; the step into the saturated
    plateau at 5 is no jump; an input JUMP_DET on saturated resultant 6 is cleared."""
    t = read_timing(UNEVEN, FRAME_TIME)
    rate = 3.0
    use = np.arange(7) < 4  # differences 0-3 stay usable
    data = ramps(t, rate, [{2: 5 * threshold_jump(t, rate, 2, 4.0, ref, use)}])
    data[5:] = 65000.0
    gdq = np.zeros(data.shape, np.uint8)
    gdq[5:] |= SAT
    gdq[6, 0, 0] |= JUMP
    out = assert_jumps(runtime, data, t, ref, flags(8, 1, (3, 0)), groupdq=gdq)
    assert out[5:, 0, 0].tolist() == [SAT] * 3


def test_do_not_use_mid_ramp(runtime, ref):
    """Garbage in a DO_NOT_USE resultant 3 makes no jump at 3 or 4; 4x the threshold jump in
    difference 5 -> resultant 6; the other bits of resultant 3 are kept."""
    t = read_timing(UNEVEN, FRAME_TIME)
    rate = 3.0
    use = ~np.isin(np.arange(7), [2, 3])
    data = ramps(t, rate, [{5: 4 * threshold_jump(t, rate, 5, 4.0, ref, use)}])
    data[3] = 1.0e6
    gdq = np.zeros(data.shape, np.uint8)
    gdq[3] = DNU | int(GroupFlag.AD_FLOOR)
    out = assert_jumps(runtime, data, t, ref, flags(8, 1, (6, 0)), groupdq=gdq)
    assert out[3, 0, 0] == DNU | int(GroupFlag.AD_FLOOR)


def test_nan_mid_ramp(runtime, ref):
    """A NaN resultant 3 removes differences 2 and 3; 4x the threshold jump in difference 5
    is found."""
    t = read_timing(UNEVEN, FRAME_TIME)
    use = ~np.isin(np.arange(7), [2, 3])
    data = ramps(t, 3.0, [{5: 4 * threshold_jump(t, 3.0, 5, 4.0, ref, use)}])
    data[3] = np.nan
    assert_jumps(runtime, data, t, ref, flags(8, 1, (6, 0)))


@pytest.mark.parametrize(
    ("pattern", "threshold"),
    [([[1], [2, 3], [4], [5, 6], [7]], 4.0), ([[1], [2], [3, 4], [5]], 5.0), ([[1], [2, 3], [4]], 6.0)],
    ids=["4-diffs-rejection", "3-diffs-four_group", "2-diffs-three_group"],
)
def test_two_three_and_four_usable_differences_use_their_thresholds(runtime, ref, pattern, threshold):
    """1.02x the threshold jump in the last difference flags the last resultant, 0.98x not."""
    t = read_timing(pattern, FRAME_TIME)
    rate, last = 4.0, t.nresultants - 2
    j = threshold_jump(t, rate, last, threshold, ref)
    data = ramps(t, rate, [{last: 1.02 * j}, {last: 0.98 * j}])
    assert_jumps(runtime, data, t, ref, flags(t.nresultants, 2, (last + 1, 0)))


def test_per_pixel_usable_count_picks_the_threshold(runtime, ref):
    """K = 8, but DO_NOT_USE on resultants 0-3 of pixel 0 leaves it differences 4-6, so the
    four-group threshold (5): 0.98x its threshold jump does not flag pixel 0, but flags
    pixel 1, whose 7 differences have the 4 sigma threshold."""
    t = read_timing(UNEVEN, FRAME_TIME)
    rate = 4.0
    j = 0.98 * threshold_jump(t, rate, 5, 5.0, ref, use=np.arange(7) >= 4)
    assert j > 1.01 * threshold_jump(t, rate, 5, 4.0, ref)
    data = ramps(t, rate, [{5: j}] * 2)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[:4, 0, 0] = DNU
    assert_jumps(runtime, data, t, ref, flags(8, 2, (6, 1)), groupdq=gdq)


def test_single_pass_with_many_differences(runtime, ref):
    """13 single reads (12 differences): one pass; 1.0125x the threshold jump flags in the
    first, middle and last differences, 0.9875x does not."""
    t = read_timing(SINGLE13, FRAME_TIME)
    assert search_mode(np.zeros((13, 1, 1), np.uint8)) == MODE_SINGLE
    rate = 2.0
    j = {i: threshold_jump(t, rate, i, 4.0, ref, iterative=False) for i in (0, 6, 11)}
    cases = [{0: 1.0125 * j[0]}, {11: 1.0125 * j[11]}, {6: 0.9875 * j[6]}, {6: 1.0125 * j[6]}]
    assert_jumps(runtime, ramps(t, rate, cases), t, ref, flags(13, 4, (1, 0), (12, 1), (7, 3)))


def test_single_pass_negative_rate_has_read_noise_only(runtime, ref):
    """A falling ramp (-2 DN/s): the noise is at rate max(m0, 0) = 0, so 1.0125x that
    threshold jump flags, though it would not if the noise were at |m0| = 2 DN/s."""
    t = read_timing(SINGLE13, FRAME_TIME)
    j = threshold_jump(t, -2.0, 4, 4.0, ref, iterative=False)
    assert 1.0125 * j < threshold_jump(t, -2.0, 4, 4.0, ref, iterative=False, noise_rate=2.0)
    data = ramps(t, -2.0, [{4: 1.0125 * j}, {4: 0.9875 * j}])
    assert_jumps(runtime, data, t, ref, flags(13, 2, (5, 0)))


def test_ties_at_the_largest_value(runtime):
    """median: |fd| = [0, x, x, x] (single reads, equal dt): the clipped median drops every
    copy of the largest value (m = 0), so the three equal differences flag together."""
    t = read_timing([[1], [2], [3], [4], [5]], FRAME_TIME)
    data = np.array([0.0, 0.0, 100.0, 200.0, 300.0], np.float32).reshape(5, 1, 1)
    assert_jumps(runtime, data, t, "median", flags(5, 1, (2, 0), (3, 0), (4, 0)))


def test_drops_flag_only_with_the_median(runtime, ref):
    """A drop of 1.5x the (median) threshold jump at rate 0: stcal's |fd| flags it; the
    weighted significance is one-sided and flags nothing (nor the other differences: the drop,
    4.8 sd below the median, is left out of their references)."""
    t = read_timing(UNEVEN, FRAME_TIME)
    drop = -1.5 * threshold_jump(t, 0.0, 3, 4.0, "median")
    fd = np.zeros(7)
    fd[3] = drop / np.diff(t.tbar)[3]
    if ref == "weighted":
        assert max(significance(fd, np.ones(7, bool), i, t, ref) for i in range(7)) < 3.9
    expected = flags(8, 1, (4, 0)) if ref == "median" else flags(8, 1)
    assert_jumps(runtime, ramps(t, 0.0, [{3: drop}]), t, ref, expected)


def _rates(t: ReadTiming, rate: float, jumps: dict[int, float]) -> np.ndarray:
    """The rates fd (DN/s) of a noise-free ramp with ``jumps`` {difference: DN}."""
    dt = np.diff(t.tbar)
    fd = np.full(dt.size, rate)
    for i, amp in jumps.items():
        fd[i] += amp / dt[i]
    return fd


def _max_significance(t: ReadTiming, jumps: dict[int, float], iterative=True, kappa=PARAMS.rejection_threshold):
    """(max over differences, per-difference list) of the weighted oracle at 2 DN/s."""
    fd = _rates(t, 2.0, jumps)
    use = np.ones(fd.size, bool)
    z = [significance(fd, use, i, t, "weighted", iterative, kappa=kappa) for i in range(fd.size)]
    return max(z), z


def test_split_hit_left_out_of_the_references(runtime, ref):
    """Hits inside a multi-read resultant, half their charge in each of two differences (2
    DN/s).  Pixel 0: 800 DN in resultant 4 -> resultants 4 and 5, nothing else.  Pixel 1: a
    hit in resultant 3 at 1.15x the one whose larger half is at 4 sigma -> resultants 3
    and 4; with the other half in every reference (the earlier draft, kappa = inf) no
    difference of pixel 1 would reach 3.9 sigma, and pixel 0's clean differences would all
    sit below -5 sigma, the one after the hit lower than its halves are high (unbiased with
    the exclusion: |z| < 1e-6)."""
    t = read_timing(UNEVEN, FRAME_TIME)

    def split(hit: float, i: int) -> dict[int, float]:
        return {i: hit / 2, i + 1: hit / 2}

    lo, hi = 0.0, 400.0  # the pixel-1 hit whose larger half is at 4 sigma (bisection)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _max_significance(t, split(mid, 2))[0] < 4.0 else (lo, mid)
    hit1 = 1.15 * hi
    assert _max_significance(t, split(hit1, 2), kappa=math.inf)[0] < 3.9
    assert all(abs(x) < 1e-6 for i, x in enumerate(_max_significance(t, split(800.0, 3))[1]) if i not in (3, 4))
    z_all = _max_significance(t, split(800.0, 3), kappa=math.inf)[1]
    assert max(z_all[i] for i in (0, 1, 2, 5, 6)) < -5.0 and -z_all[5] > max(z_all[3], z_all[4])
    data = ramps(t, 2.0, [split(800.0, 3), split(hit1, 2)])
    assert_jumps(runtime, data, t, ref, flags(8, 2, (4, 0), (5, 0), (3, 1), (4, 1)))


def test_split_hit_does_not_hide_another_jump_in_the_single_pass(runtime, ref):
    """12 resultants of 1, 2 x 10 and 1 reads (11 differences: one pass), 2 DN/s: 800 DN
    after read 14 (half in differences 6 and 7) and 2x the threshold jump in difference 2
    -> resultants 3, 7 and 8.  With the split hit in the reference of difference 2 (kappa =
    inf) its significance would fall below 1 sigma: the single pass would miss it."""
    t = read_timing([[1]] + [[r, r + 1] for r in range(2, 22, 2)] + [[22]], FRAME_TIME)
    assert search_mode(np.zeros((12, 1, 1), np.uint8)) == MODE_SINGLE
    small = 2.0 * threshold_jump(t, 2.0, 2, 4.0, ref, iterative=False)
    jumps = {2: small, 6: 400.0, 7: 400.0}
    if ref == "weighted":
        fd, use = _rates(t, 2.0, jumps), np.ones(11, bool)
        assert significance(fd, use, 2, t, ref, iterative=False) > 6.0
        assert significance(fd, use, 2, t, ref, iterative=False, kappa=math.inf) < 1.0
    assert_jumps(runtime, ramps(t, 2.0, [jumps]), t, ref, flags(12, 1, (3, 0), (7, 0), (8, 0)))


def test_negative_step_left_out_of_the_references(runtime, ref):
    """A 400 DN drop in difference 3 (2 DN/s); pixel 1 also has 2x the threshold jump in
    difference 5.  weighted: the one-sided test never flags the drop, and the drop, outside
    the reference, biases nothing -> only resultant 6 of pixel 1 (with the drop in every
    reference, kappa = inf, the clean differences 4 and 5 of pixel 0 would be > 20 sigma);
    median: stcal's |fd| flags the drop too -> resultant 4 of both pixels."""
    t = read_timing(UNEVEN, FRAME_TIME)
    j5 = 2.0 * threshold_jump(t, 2.0, 5, 4.0, ref)
    if ref == "weighted":
        z_all = _max_significance(t, {3: -400.0}, kappa=math.inf)[1]
        assert min(z_all[4], z_all[5]) > 20.0
        assert _max_significance(t, {3: -400.0})[0] < 1e-6
    data = ramps(t, 2.0, [{3: -400.0}, {3: -400.0, 5: j5}])
    expected = flags(8, 2, (6, 1)) if ref == "weighted" else flags(8, 2, (4, 0), (4, 1), (6, 1))
    assert_jumps(runtime, data, t, ref, expected)


def test_exposure_switches():
    """Frame-wide usable resultants decide the mode: < 3 none, >= 11 single pass."""
    g = np.zeros((11, 2, 2), np.uint8)
    assert search_mode(g) == MODE_SINGLE
    g[0] = DNU  # every pixel: 10 usable resultants, 9 differences
    assert search_mode(g) == MODE_ITERATIVE
    g[0, 0, 0] = 0  # not every pixel: resultant 0 counts again
    assert search_mode(g) == MODE_SINGLE
    assert search_mode(np.zeros((3, 1, 1), np.uint8)) == MODE_ITERATIVE
    assert search_mode(np.zeros((2, 1, 1), np.uint8)) == MODE_NONE


def test_too_few_usable_resultants_no_search(runtime, ref):
    """Resultant 0 DO_NOT_USE everywhere in a 3-resultant exposure: no search, but an input
    JUMP_DET on resultant 0 is cleared and one on resultant 2 is kept."""
    t = read_timing([[1], [2], [3]], FRAME_TIME)
    data = ramps(t, 1.0, [{1: 1000.0}, {}])
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0] = DNU
    gdq[0, 0, 1] |= JUMP
    gdq[2, 0, 1] |= JUMP
    assert_jumps(runtime, data, t, ref, flags(3, 2, (2, 1)), groupdq=gdq)


def test_one_and_two_resultants(runtime, ref):
    """K = 1 and K = 2: nothing to search; JUMP_DET on DO_NOT_USE is still cleared."""
    for pattern in ([[1, 2]], [[1], [2, 3]]):
        t = read_timing(pattern, FRAME_TIME)
        k = t.nresultants
        data = np.full((k, 1, 2), 100.0, np.float32)
        gdq = np.full((k, 1, 2), JUMP, np.uint8)
        gdq[:, 0, 0] |= DNU
        expected = np.zeros((k, 1, 2), bool)
        expected[:, 0, 1] = True
        assert_jumps(runtime, data, t, ref, expected, groupdq=gdq, params=PARAMS)


def test_noise_zero_or_invalid_never_flags(runtime, ref):
    """500 DN jump in difference 3: pixel 0 (no read noise, no signal: zero noise) no flag;
    pixel 1 (photon noise only) flags resultant 4; NaN read noise, zero or NaN gain: none."""
    t = read_timing(UNEVEN, FRAME_TIME)
    big = {3: 500.0}
    data = np.concatenate([ramps(t, 0.0, [big]), ramps(t, 5.0, [big] * 4)], axis=2)
    rn = np.array([[0.0, 0.0, np.nan, READ_NOISE, READ_NOISE]], np.float32)
    gain = np.array([[GAIN, GAIN, GAIN, 0.0, np.nan]], np.float32)
    assert_jumps(runtime, data, t, ref, flags(8, 5, (4, 1)), rn=rn, gain=gain)


def test_other_bits_kept_and_data_untouched(runtime, ref):
    t = read_timing(UNEVEN, FRAME_TIME)
    data = ramps(t, 2.0, [{3: 10 * threshold_jump(t, 2.0, 3, 4.0, ref)}])
    keep = data.copy()
    gdq = np.full(data.shape, int(GroupFlag.DROPOUT), np.uint8)  # does not exclude a resultant
    got, _ = both(runtime, data, t, ref, groupdq=gdq)
    np.testing.assert_array_equal(data, keep)
    assert got[:, 0, 0].tolist() == [8, 8, 8, 8, 8 | JUMP, 8, 8, 8]


def _neighbour_frame(t: ReadTiming, rate: float, ny: int, nx: int) -> np.ndarray:
    d = (rate * t.tbar)[:, None, None] * np.ones((1, ny, nx))
    return d.astype(np.float32)


def _nsig_jump(t: ReadTiming, i: int, rate: float, nsig: float) -> float:
    """Jump (DN) in difference i whose neighbour significance |fd_i - m0| / s_i(m0) is nsig."""
    return nsig / 4.0 * threshold_jump(t, rate, i, 4.0, "median", iterative=False)


@pytest.mark.parametrize(("nsig", "neighbours"), [(50.0, True), (10.5, True), (9.5, False), (1100.0, False)])
def test_neighbours_flagged_only_between_min_and_max(runtime, ref, nsig, neighbours):
    """A jump in difference 2 of the centre of a 5x5 frame flags resultant 3 there and, for
    10 < |fd - m0| / s(m0) < 1000, in the 4 edge neighbours (never the diagonal ones)."""
    t = read_timing(UNEVEN, FRAME_TIME)
    data = _neighbour_frame(t, 3.0, 5, 5)
    data[3:, 2, 2] += _nsig_jump(t, 2, 3.0, nsig)
    expected = np.zeros((8, 5, 5), bool)
    expected[3, 2, 2] = True
    if neighbours:
        expected[3, 1, 2] = expected[3, 3, 2] = expected[3, 2, 1] = expected[3, 2, 3] = True
    assert_jumps(runtime, data, t, ref, expected, params=PARAMS)


def test_neighbours_skip_saturated_and_donotuse_and_frame_edges(runtime, ref):
    """Seeds at the centre (difference 2) and at the corner (0, 0) (difference 3): the
    neighbour above the centre is saturated at resultant 3 and the one right of it is
    DO_NOT_USE there, so neither is flagged; the corner flags its 2 in-frame neighbours."""
    t = read_timing(UNEVEN, FRAME_TIME)
    data = _neighbour_frame(t, 3.0, 5, 6)
    data[3:, 2, 2] += _nsig_jump(t, 2, 3.0, 50.0)
    data[4:, 0, 0] += _nsig_jump(t, 3, 3.0, 50.0)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[3:, 1, 2] = SAT
    gdq[3, 2, 3] = DNU
    expected = np.zeros((8, 5, 6), bool)
    expected[3, 2, 2] = expected[3, 3, 2] = expected[3, 2, 1] = True
    expected[4, 0, 0] = expected[4, 0, 1] = expected[4, 1, 0] = True
    out = assert_jumps(runtime, data, t, ref, expected, params=PARAMS, groupdq=gdq)
    assert out[3, 1, 2] == SAT and out[3, 2, 3] == DNU


def test_neighbours_of_adjacent_seeds_and_of_input_flags(runtime, ref):
    """Two adjacent seeds in different differences flag each other's resultant; an input
    JUMP_DET whose difference is not significant seeds nothing."""
    t = read_timing(UNEVEN, FRAME_TIME)
    data = _neighbour_frame(t, 3.0, 3, 4)
    data[2:, 1, 1] += _nsig_jump(t, 1, 3.0, 40.0)  # difference 1 -> resultant 2
    data[5:, 1, 2] += _nsig_jump(t, 4, 3.0, 40.0)  # difference 4 -> resultant 5
    gdq = np.zeros(data.shape, np.uint8)
    gdq[6, 0, 3] = JUMP
    expected = np.zeros((8, 3, 4), bool)
    expected[2, 1, 1] = expected[2, 0, 1] = expected[2, 2, 1] = expected[2, 1, 0] = expected[2, 1, 2] = True
    expected[5, 1, 2] = expected[5, 0, 2] = expected[5, 2, 2] = expected[5, 1, 1] = expected[5, 1, 3] = True
    expected[6, 0, 3] = True
    assert_jumps(runtime, data, t, ref, expected, params=PARAMS, groupdq=gdq)


def test_too_many_resultants_rejected():
    t = read_timing([[r] for r in range(1, MAX_RESULTANTS + 2)], FRAME_TIME)
    shape = (MAX_RESULTANTS + 1, 1, 1)
    with pytest.raises(ValueError, match="at most"):
        jump(
            cpu_runtime(),
            np.zeros(shape, np.float32),
            np.zeros(shape, np.uint8),
            np.ones((1, 1), np.float32),
            np.ones((1, 1), np.float32),
            t,
            PARAMS,
        )


# ------------------------------------------------------------------------------ random frames
def realistic_frame(rng: np.random.Generator, t: ReadTiming, ny: int, nx: int):
    """(data, groupdq, readnoise, gain) of a read-level simulation of one exposure."""
    shape = (ny, nx)
    nread = t.read_pattern[-1][-1]
    gain = rng.uniform(1.6, 2.4, shape).astype(np.float32)
    rn = rng.uniform(4.0, 9.0, shape).astype(np.float32)
    rate = rng.lognormal(np.log(3.0), 1.2, shape)  # DN/s
    bright = rng.random(shape) < 0.02
    rate[bright] = rng.uniform(200.0, 20000.0, bright.sum())
    electrons = np.cumsum(rng.poisson((rate * gain * t.frame_time)[None], (nread, *shape)), axis=0).astype(np.float64)
    for _ in range(2):  # cosmic rays: ~1.5% of pixels, some twice
        hit = rng.random(shape) < 0.0075
        first = rng.integers(1, nread, hit.sum())  # 0-based first read holding the charge
        amp = np.exp(rng.uniform(np.log(20.0), np.log(5000.0), hit.sum()))
        ys, xs = np.nonzero(hit)
        electrons[:, ys, xs] += np.where(np.arange(nread)[:, None] >= first, amp, 0.0)
    reads = 5000.0 + electrons / gain + rng.standard_normal((nread, *shape)) * rn
    data = np.stack([reads[np.asarray(r) - 1].mean(axis=0) for r in t.read_pattern])
    gdq = np.zeros(data.shape, np.uint8)
    gdq[np.maximum.accumulate(data >= 55000.0, axis=0)] |= SAT  # sticky saturation
    data = np.minimum(data, 65535.0).astype(np.float32)
    gdq[rng.random(data.shape) < 0.003] |= DNU
    gdq[:, rng.random(shape) < 0.002] |= DNU  # dead pixels
    gdq[rng.random(data.shape) < 0.002] |= JUMP  # input jumps
    gdq[((gdq & SAT) != 0) & (rng.random(data.shape) < 0.1)] |= JUMP  # to be cleared
    holes = rng.random(shape) < 0.001
    data[rng.integers(0, t.nresultants, holes.sum()), *np.nonzero(holes)] = np.nan
    gain[rng.random(shape) < 0.001] = np.nan
    gain[rng.random(shape) < 0.001] = 0.0
    return data, gdq, rn, gain


def _near_threshold(data, gdq, rn, gain, t, params, ref, want, eps=1e-5):
    """(ny, nx): pixels whose NumPy flags change when every threshold moves by eps (relative),
    grown by one pixel (a neighbour seed crossing min/max changes its 4 neighbours)."""
    changed = np.zeros(want.shape[1:], bool)
    for f in (1 - eps, 1 + eps):
        p = replace(
            params,
            rejection_threshold=params.rejection_threshold * f,
            three_group_rejection_threshold=params.three_group_rejection_threshold * f,
            four_group_rejection_threshold=params.four_group_rejection_threshold * f,
            max_jump_to_flag_neighbors=params.max_jump_to_flag_neighbors * f,
            min_jump_to_flag_neighbors=params.min_jump_to_flag_neighbors * f,
        )
        changed |= (numpy_jump(data.copy(), gdq.copy(), rn, gain, t, p, reference_rate=ref) != want).any(axis=0)
    grown = changed.copy()
    grown[1:] |= changed[:-1]
    grown[:-1] |= changed[1:]
    grown[:, 1:] |= changed[:, :-1]
    grown[:, :-1] |= changed[:, 1:]
    return grown


@pytest.mark.parametrize(
    ("pattern", "mode", "all_dnu"),
    [
        (UNEVEN, MODE_ITERATIVE, 0),
        ([[1], [2, 3], [4, 5, 6]], MODE_ITERATIVE, 0),
        ([[1], [2, 3], [4, 5], [6]], MODE_ITERATIVE, 0),
        (SINGLE13, MODE_SINGLE, 0),
        ([[r] for r in range(1, 12)], MODE_ITERATIVE, 1),  # 11 resultants, one dead: 9 differences
    ],
    ids=["uneven8", "three", "four", "single13", "eleven-one-dead"],
)
def test_agrees_with_numpy_on_random_frames(runtime, ref, pattern, mode, all_dnu):
    seed = int(np.random.default_rng().integers(2**31))  # fresh data every run
    rng = np.random.default_rng(seed)
    t = read_timing(pattern, FRAME_TIME)
    ny, nx = 128, 160
    data, gdq, rn, gain = realistic_frame(rng, t, ny, nx)
    gdq[:all_dnu] |= DNU
    assert search_mode(gdq) == mode
    params = JumpParams(min_jump_to_flag_neighbors=10.0, max_jump_to_flag_neighbors=200.0)  # both limits bite

    got = jump(runtime, data, gdq, rn, gain, t, params, reference_rate=ref)
    want = numpy_jump(data.copy(), gdq.copy(), rn, gain, t, params, reference_rate=ref)
    alone = numpy_jump(
        data.copy(), gdq.copy(), rn, gain, t, replace(params, flag_4_neighbors=False), reference_rate=ref
    )

    new = (want & JUMP) & ~(gdq & JUMP)
    assert new.any(axis=0).mean() > 0.005, f"the frame should have jumps (seed {seed})"
    assert np.count_nonzero(want & JUMP) > np.count_nonzero(alone & JUMP), f"and neighbour flags (seed {seed})"
    assert (((gdq & JUMP) != 0) & ((gdq & SAT) != 0)).any(), f"and input jumps on saturation (seed {seed})"
    near = _near_threshold(data, gdq, rn, gain, t, params, ref, want)
    n = assert_flags_match(got, want, near, f"groupdq (seed {seed}, {ref})")
    assert n == 0 or not exact(runtime), f"the CPU shim should be bit-exact (seed {seed})"


# ------------------------------------------------------------------------------ sanitizer
def _sanitized_run() -> None:
    """Golden and random cases through the ASan/UBSan build (run in a subprocess)."""
    rt = cpu_runtime(sanitize=True)
    for ref in REFERENCE_RATES:
        for rate in (0.0, 5.0):
            test_jump_just_above_and_below_threshold_in_every_difference(rt, ref, rate)
        test_neighbours_skip_saturated_and_donotuse_and_frame_edges(rt, ref)
        test_one_and_two_resultants(rt, ref)
        test_noise_zero_or_invalid_never_flags(rt, ref)
        test_split_hit_left_out_of_the_references(rt, ref)
        test_negative_step_left_out_of_the_references(rt, ref)
        for pattern in (UNEVEN, SINGLE13, [[1], [2, 3], [4]]):
            t = read_timing(pattern, FRAME_TIME)
            data, gdq, rn, gain = realistic_frame(np.random.default_rng(5), t, 31, 37)
            got = jump(rt, data, gdq, rn, gain, t, PARAMS, reference_rate=ref)
            want = numpy_jump(data.copy(), gdq.copy(), rn, gain, t, PARAMS, reference_rate=ref)
            np.testing.assert_array_equal(got, want)


def test_address_and_ub_sanitizer():
    from gpucal.kernels.cpu_shim import ShimBuildError, sanitizer_environment

    try:
        env = sanitizer_environment()
    except ShimBuildError as exc:
        pytest.skip(str(exc))
    root = Path(__file__).resolve().parents[2]
    code = "from tests.kernels.test_jump_kernel import _sanitized_run; _sanitized_run()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
