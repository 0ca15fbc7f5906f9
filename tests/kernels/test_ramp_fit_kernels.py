"""Ramp-fit kernels against stated outcomes and against their NumPy twins.

``ramp_fit_likely.cu``, ``ramp_fit_ols_cas22.cu`` and ``uniform_slope.cu`` are compared
with ``cpu_fallback.ramp_fit.likely`` / ``.ols_cas22`` and ``cpu_fallback.uniform``.  Each
body runs on the CPU shim and, when a GPU is present, on the GPU (``runtime`` fixture).

* Random frames: read-level simulations (Poisson electrons per read, read noise per read,
  cosmic rays of 50-5000 e-, some pixels hit twice, stars saturating from every resultant,
  stray DO_NOT_USE resultants, NaN resultants, gains <= 0 or NaN) with 8, 10 and 18
  uneven resultants.  The kernels repeat the twins' operations in the same order without
  FMA contraction, so on the CPU shim every flag and every value must be identical to a
  NumPy run that uses the same libm (the ``references`` fixture explains).  On a GPU
  (CUDA's pow/log10, flush-to-zero) flags may differ only on pixels within rounding of a
  decision -- ols_cas22: flags that move when the threshold moves by 1e-5, at most 1e-5 of
  the pixels; likely: ramps with at most three usable differences, whose omit-fits are
  singular, at most 1e-3 -- and slopes agree to 1e-3 sigma, the rest to 1e-5.
* Golden cases with their expected outcomes: Appendix A.1, all saturated, one and two
  good resultants, jumps in the first and last difference, jumps 2e-3 above and below
  the threshold (also beyond ols_cas22's 1e4 e-/s clamp), DO_NOT_USE and NaN mid-ramp,
  bad gains, zero signal, likely's rounding-decided two-difference ramps, launch limits.
* The golden cases and one random frame again through the AddressSanitizer/UBSan build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpu_fallback.ramp_fit import fit_likely, fit_ols_cas22
from cpu_fallback.ramp_fit import ols_cas22 as ols_np
from cpu_fallback.uniform import uniform_slope as numpy_uniform_slope
from gpucal.backends.protocol import RampFitParams, RampFitResult
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.kernels._loader import KERNEL_DIR
from gpucal.readpattern import read_timing
from tests.kernels._drivers import likely, ols_cas22
from tests.kernels._drivers import uniform_slope as uniform
from tests.kernels._runtime import cpu_runtime, exact

SAT = int(GroupFlag.SATURATED)
DNU = int(GroupFlag.DO_NOT_USE)
JUMP = int(GroupFlag.JUMP_DET)
HOT = int(PixelFlag.HOT)
NO_GAIN = int(PixelFlag.NO_GAIN_VALUE)
_HEADER = (KERNEL_DIR / "ramp_common.cuh").read_text()
MAX_RESULTANTS = int(re.search(r"#define RAMP_MAX_RESULTANTS (\d+)", _HEADER)[1])  # per-thread array bound
FRAME_TIME = 3.04
PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]  # Appendix A
TIMING = read_timing(PATTERN, FRAME_TIME)
K = len(PATTERN)
RANDOM_PATTERNS = {
    8: [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17, 18], [19]],
    10: [[1], [2], [3, 4], [5, 6, 7], [8, 9, 10, 11], [12], [13, 14], [15, 16, 17, 18], [19], [20, 21]],
}
_F32 = np.float32


KERNELS = {"likely": likely, "ols_cas22": ols_cas22}
TWINS = {"likely": fit_likely, "ols_cas22": fit_ols_cas22}


def _columns(rt, algorithm, columns, gdq=None, gain=2.0, rn=7.0, pdq=0, timing=TIMING, params=None):
    """Pixels given as columns of a (K, 1, n) cube, through the kernel and the twin (checked equal)."""
    data = np.asarray(columns, dtype=np.float32).T[:, None, :].copy()
    n = data.shape[2]
    gdq = np.zeros(data.shape, np.uint8) if gdq is None else np.asarray(gdq, np.uint8).T[:, None, :].copy()
    rest = [np.broadcast_to(np.asarray(v, t), (1, n)).copy() for v, t in ((pdq, np.uint32), (rn, _F32), (gain, _F32))]
    extra = () if algorithm == "likely" else (params,)
    got = KERNELS[algorithm](rt, data, gdq, *rest, timing, *extra)
    if data.shape[0] >= 4 or algorithm == "ols_cas22":
        ref = TWINS[algorithm](data.copy(), gdq.copy(), *rest, timing, params or RampFitParams())
        _assert_agree(got, ref, algorithm, max_fraction=0.0)
    return got


def _line(rate, timing=TIMING, offset=1000.0):
    """Noise-free resultants of a constant rate (DN/s)."""
    return offset + rate * timing.tbar


# --------------------------------------------------------------------------- comparison
def _assert_agree(got: RampFitResult, ref: RampFitResult, what: str, near=None, max_fraction=1e-5) -> int:
    """Flags identical except on at most ``max_fraction`` of the pixels, each of them ``near``
    a threshold; on the others slopes within 1e-3 sigma and the rest within 1e-5.  Returns the
    number of pixels whose flags differ."""
    differ = (got.dq != ref.dq) | (got.groupdq != ref.groupdq).any(axis=0)
    n = int(differ.sum())
    if near is not None:
        far = differ & ~near
        assert not far.any(), (
            f"{what}: flags of {far.sum()} pixels away from any threshold differ: {np.argwhere(far)[:5]}"
        )
    assert n <= max_fraction * differ.size, f"{what}: flags of {n} of {differ.size} pixels differ"
    same = ~differ
    for name in ("slope", "err", "var_poisson", "var_rnoise", "chisq"):
        a = getattr(got, name)[same].astype(np.float64)
        b = getattr(ref, name)[same].astype(np.float64)
        assert getattr(got, name).dtype == np.float32
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{what} {name}: NaN positions")
        ok = ~np.isnan(b)
        a, b = a[ok], b[ok]
        if name == "slope":
            sigma = ref.err[same][ok].astype(np.float64)
            tol = 1e-3 * np.where(np.isfinite(sigma), sigma, 0.0) + 1e-6 * np.abs(b)
        elif name == "chisq":  # two usable differences: chi-square is rounding noise around 0
            tol = 1e-5 * np.abs(b) + 1e-5
        else:
            tol = 1e-5 * np.abs(b) + 1e-30
        with np.errstate(invalid="ignore"):  # inf - inf
            bad = ~(np.abs(a - b) <= tol) & ~((a == b) & np.isinf(b))
        assert not bad.any(), f"{what} {name}: {bad.sum()} values differ, e.g. {a[bad][:3]} vs {b[bad][:3]}"
    return n


def realistic(seed: int, pattern, shape=(100, 200)):
    """(data, groupdq, pixeldq, readnoise, gain, timing) of a read-level simulation."""
    rng = np.random.default_rng(seed)
    timing = read_timing(pattern, FRAME_TIME)
    nres, nread = len(pattern), pattern[-1][-1]
    gain = rng.uniform(1.7, 2.3, shape).astype(np.float32)
    rn = rng.uniform(4.0, 9.0, shape).astype(np.float32)
    rate = 10 ** rng.uniform(-1, 2, shape)  # DN/s
    stars = rng.random(shape) < 0.15
    rate[stars] = 10 ** rng.uniform(2, 4.3, stars.sum())  # saturating from resultant 0 on
    electrons = np.cumsum(rng.poisson((rate * gain * FRAME_TIME)[None], (nread, *shape)), axis=0).astype(np.float64)
    for fraction in (0.2, 0.05):  # cosmic rays of 50-5000 e-, some pixels hit twice
        hit = rng.random(shape) < fraction
        first = rng.integers(0, nread, shape)
        amp = np.where(hit, 10 ** rng.uniform(np.log10(50), np.log10(5000), shape), 0.0)
        electrons += (np.arange(nread)[:, None, None] >= first) * amp
    reads = 1000 + electrons / gain + rng.standard_normal((nread, *shape)) * rn
    data = np.stack([reads[np.array(p) - 1].mean(axis=0) for p in pattern]).astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[np.maximum.accumulate(data > 55000, axis=0)] = SAT
    gdq[rng.random(data.shape) < 0.01] |= DNU
    flat = data.reshape(nres, -1)
    holes = rng.choice(flat.shape[1], 12, replace=False)
    flat[rng.integers(0, nres, holes.size), holes] = np.nan
    bad = rng.choice(gain.size, 6, replace=False)
    gain.flat[bad] = [0.0, -1.0, np.nan, 0.0, -2.0, np.nan]
    pdq = np.where(rng.random(shape) < 0.02, np.uint32(HOT), np.uint32(0))
    return data, gdq, pdq, rn, gain, timing


# ------------------------------------------------------------------------ random frames
# name: (seed, read pattern, frame shape); 18 resultants exercise likely's intermediate
# determinant rescaling (every 10 differences)
FRAMES = {
    "K8": (108, RANDOM_PATTERNS[8], (100, 200)),
    "K10": (110, RANDOM_PATTERNS[10], (100, 200)),
    "K18": (118, [[1], [2], [3, 4], [5, 6, 7], [8], [9, 10], [11], [12, 13, 14], [15], [16, 17], [18],
                  [19, 20, 21], [22], [23, 24], [25], [26, 27, 28], [29], [30]], (40, 100)),
}  # fmt: skip
OLS_PARAMS = {
    "default": RampFitParams(),
    "nojump": RampFitParams(use_ramp_jump_detection=False),
    "thresholds": RampFitParams(threshold_intercept=4.0, threshold_constant=0.25),
}


def _frame(name: str):
    seed, pattern, shape = FRAMES[name]
    return realistic(seed, pattern, shape)


def _two_difference_ramps():
    """Jumps of 30-1e5 DN in resultant 1 or 2 of ramps saturated from resultant 3 on."""
    amps = np.round(10 ** np.linspace(1.5, 5, 1500))
    cols = [_line(20.0) + np.where(np.arange(K) >= first, a, 0.0) for first in (1, 2) for a in amps]
    data = np.asarray(cols, np.float32).T[:, None, :].copy()
    gdq = np.zeros(data.shape, np.uint8)
    gdq[3:] = SAT
    shape = data.shape[1:]
    return data, gdq, np.zeros(shape, np.uint32), np.full(shape, 7.0, _F32), np.full(shape, 2.0, _F32), TIMING


def _simd_libm_features() -> list[str]:
    """NumPy's dispatch targets whose pow/log10 are SIMD (SVML) rather than the C library's."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:  # pragma: no cover - other NumPy layouts: assume the C library's
        return []
    return [f for f in __cpu_dispatch__ if f == "X86_V4" or f.startswith("AVX512")]


def _write_references(folder: str) -> None:
    """The twins' results on every random frame (and likely's on the two-difference ramps)."""
    ref = fit_likely(*_two_difference_ramps(), RampFitParams())
    np.savez(Path(folder) / "likely-two_differences.npz", **ref._asdict())
    for name in FRAMES:
        data, gdq, pdq, rn, gain, timing = _frame(name)
        ref = fit_likely(data.copy(), gdq.copy(), pdq, rn, gain, timing, RampFitParams())
        np.savez(Path(folder) / f"likely-{name}.npz", **ref._asdict())
        for pname, params in OLS_PARAMS.items():
            ref = fit_ols_cas22(data.copy(), gdq.copy(), pdq, rn, gain, timing, params)
            near = np.zeros(ref.dq.shape, bool)  # pixels whose flags move with the threshold
            if params.use_ramp_jump_detection:
                intercept = params.threshold_intercept or ols_np.DEFAULT_THRESHOLD_INTERCEPT
                for f in (1 - 1e-5, 1 + 1e-5):
                    moved = RampFitParams(
                        threshold_intercept=intercept * f, threshold_constant=params.threshold_constant
                    )
                    alt = fit_ols_cas22(data.copy(), gdq.copy(), pdq, rn, gain, timing, moved)
                    near |= (alt.groupdq != ref.groupdq).any(axis=0)
            np.savez(Path(folder) / f"ols-{pname}-{name}.npz", near=near, **ref._asdict())


def _load(path: Path) -> tuple[RampFitResult, np.ndarray | None]:
    with np.load(path) as f:
        return RampFitResult(**{k: f[k] for k in RampFitResult._fields}), (f["near"] if "near" in f else None)


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> Path:
    """Folder of the twins' results on the random frames, computed with the C library's libm.

    The twins' libm calls are pow() (likely: determinant rescaling; ols_cas22: weights) and
    log10() (ols_cas22 threshold).  On AVX-512 machines NumPy takes them from SVML, which
    differs from glibc in the last bit for ~5% of inputs; in likely that bit can decide the
    drop in ramps with two usable differences (``_two_difference_ramps``).  The shim (g++:
    glibc) is therefore compared with NumPy runs whose SIMD targets are disabled, in a
    subprocess; with the same libm every value must agree bit for bit.
    """
    folder = tmp_path_factory.mktemp("ramp_fit_references")
    features = _simd_libm_features()
    if not features:
        _write_references(str(folder))
        return folder
    code = f"from tests.kernels.test_ramp_fit_kernels import _write_references as w; w({str(folder)!r})"
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(features)}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return folder


def _few_usable_differences(groupdq: np.ndarray) -> np.ndarray:
    """(ny, nx): at most 3 usable differences, where likely's omit-fits are singular."""
    good = groupdq == 0
    return np.count_nonzero(good[1:] & good[:-1], axis=0) <= 3


def _assert_identical(got: RampFitResult, ref: RampFitResult, what: str) -> None:
    for name in RampFitResult._fields:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=f"{what} {name}")


@pytest.mark.parametrize("frame", FRAMES)
def test_likely_matches_numpy_on_random_frames(runtime, frame, references):
    """CPU shim: every flag and value identical (same operations, same order, same libm).
    GPU: CUDA's pow() may move rounding-decided drops of ramps with at most three usable
    differences (at most 1e-3 of the pixels); slopes within 1e-3 sigma."""
    data, gdq, pdq, rn, gain, timing = _frame(frame)
    ref, _ = _load(references / f"likely-{frame}.npz")
    got = likely(runtime, data, gdq, pdq, rn, gain, timing)
    if exact(runtime):
        _assert_identical(got, ref, f"likely {frame}")
    else:
        _assert_agree(got, ref, f"likely {frame}", near=_few_usable_differences(gdq), max_fraction=1e-3)
    npix = ref.dq.size
    assert np.count_nonzero(ref.dq & JUMP) > 0.1 * npix and np.count_nonzero(ref.dq & SAT) > 0.05 * npix
    assert np.count_nonzero(((ref.groupdq & JUMP) != 0).sum(axis=0) >= 2) > 0.01 * npix  # several passes
    assert np.isnan(ref.slope).sum() > 10  # NaN data and gains reached the comparison


def test_likely_with_numpy_simd_pow_differs_only_on_few_usable_differences(runtime):
    """In-process NumPy (SVML pow on AVX-512): only rounding-decided ramps may differ."""
    data, gdq, pdq, rn, gain, timing = _frame("K10")
    ref = fit_likely(data.copy(), gdq.copy(), pdq, rn, gain, timing, RampFitParams())
    got = likely(runtime, data, gdq, pdq, rn, gain, timing)
    _assert_agree(got, ref, "likely K10", near=_few_usable_differences(gdq), max_fraction=1e-3)


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("params", OLS_PARAMS)
def test_ols_cas22_matches_numpy_on_random_frames(runtime, frame, params, references):
    """CPU shim: identical.  GPU: flags may differ only on pixels whose NumPy flags move
    when the threshold moves by 1e-5, at most 1e-5 of them; slopes within 1e-3 sigma."""
    data, gdq, pdq, rn, gain, timing = _frame(frame)
    ref, near = _load(references / f"ols-{params}-{frame}.npz")
    got = ols_cas22(runtime, data, gdq, pdq, rn, gain, timing, OLS_PARAMS[params])
    if exact(runtime):
        _assert_identical(got, ref, f"ols_cas22 {frame}")
    else:
        _assert_agree(got, ref, f"ols_cas22 {frame}", near=near)
    if OLS_PARAMS[params].use_ramp_jump_detection:
        assert np.count_nonzero(ref.dq & JUMP) > 0.1 * ref.dq.size
    assert np.count_nonzero(ref.dq & NO_GAIN) == 4
    slope_e = ref.slope * gain  # some segments above the 1e4 e-/s clamp of the threshold
    assert np.count_nonzero(slope_e > 1e4) > 10


@pytest.mark.parametrize("frame", FRAMES)
def test_uniform_slope_matches_numpy(runtime, frame):
    data, *_, timing = _frame(frame)
    ref = numpy_uniform_slope(data, timing)
    got = uniform(runtime, data, timing)
    assert got.dtype == np.float64
    if exact(runtime):
        np.testing.assert_array_equal(got, ref)  # same products and sums, same order
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------- golden cases
A1_DATA = [
    [1030.4, 1078.4, 1165.0, 1236.1, 1300.4, 1417.7, 1517.3],
    [1618.7, 2516.1, 4339.0, 5867.9, 7082.9, 9512.8, 11328.6],
    [1030.2, 1081.6, 1156.4, 1239.5, 1788.8, 1915.3, 2002.1],
    [1150.1, 1369.9, 1838.2, 2217.3, 2518.5, 3107.9, 3579.7],
    [1001.1, 1004.7, 996.2, 1008.4, 1007.4, 1014.8, 1034.3],
]
A1_GDQ = [[0] * 7, [0] * 7, [0] * 7, [0, 0, 0, 0, 0, 2, 2], [0] * 7]


def test_appendix_a1_likely(runtime):
    r = _columns(runtime, "likely", A1_DATA, A1_GDQ)
    close = dict(rtol=2e-6, atol=0)
    np.testing.assert_allclose(r.slope[0], [9.884088, 199.6655, 9.806683, 50.08666, 0.540501], **close)
    np.testing.assert_allclose(r.err[0], [0.3526019, 1.445964, 0.4223771, 0.9677023, 0.1411855], **close)
    np.testing.assert_allclose(r.var_poisson[0], [0.1073006, 2.055137, 0.1145203, 0.871178, 0.006326163], **close)
    np.testing.assert_allclose(r.var_rnoise[0], [0.0170275, 0.03567386, 0.06388219, 0.06526963, 0.01360718], **close)
    np.testing.assert_allclose(r.chisq[0], [1.569835, 0.642049, 4.77336, 1.241215, 9.599865], **close)
    np.testing.assert_array_equal(r.dq[0], [0, 0, JUMP, SAT, 0])
    expected = np.array(A1_GDQ, np.uint8)
    expected[2, 4] = JUMP  # the later resultant of the dropped difference only
    np.testing.assert_array_equal(r.groupdq[:, 0, :].T, expected)


def test_appendix_a1_ols_cas22(runtime):
    r = _columns(runtime, "ols_cas22", A1_DATA, A1_GDQ)
    close = dict(rtol=2e-6, atol=0)
    np.testing.assert_allclose(r.slope[0], [9.96414, 199.6541, 9.228118, 50.03452, 0.5403835], **close)
    np.testing.assert_allclose(r.var_rnoise[0], [0.02815653, 0.03826341, 0.2024212, 0.08129812, 0.01357775], **close)
    np.testing.assert_allclose(r.var_poisson[0], [0.1034585, 2.053654, 0.176422, 0.8696676, 0.006383805], **close)
    np.testing.assert_allclose(r.err[0], np.sqrt(r.var_poisson[0] + r.var_rnoise[0]), rtol=1e-7)
    np.testing.assert_array_equal(r.dq[0], [0, 0, JUMP, 0, 0])  # SATURATED only when all are
    expected = np.array(A1_GDQ, np.uint8)
    expected[2, 3:5] = JUMP  # both resultants around the jump
    np.testing.assert_array_equal(r.groupdq[:, 0, :].T, expected)


def _sat_from(k):
    return [0] * k + [SAT] * (K - k)


def test_all_saturated(runtime):
    r = _columns(runtime, "likely", [_line(50.0)], [_sat_from(0)])
    for name in ("slope", "err", "var_poisson", "var_rnoise", "chisq"):
        assert np.isnan(getattr(r, name)[0, 0]), name  # no usable difference
    assert r.dq[0, 0] == SAT | DNU
    np.testing.assert_array_equal(r.groupdq[:, 0, 0], _sat_from(0))
    r = _columns(runtime, "ols_cas22", [_line(50.0)], [_sat_from(0)])
    assert (r.slope[0, 0], r.err[0, 0], r.var_poisson[0, 0], r.var_rnoise[0, 0]) == (0, 0, 0, 0)
    assert r.dq[0, 0] == SAT | DNU


def test_one_good_resultant(runtime):
    r = _columns(runtime, "likely", [_line(50.0)], [_sat_from(1)])
    assert np.isnan(r.slope[0, 0]) and np.isnan(r.err[0, 0])
    assert r.dq[0, 0] == SAT | DNU  # DO_NOT_USE: at most one good resultant (romancal)
    r = _columns(runtime, "ols_cas22", [_line(50.0)], [_sat_from(1)])
    assert r.slope[0, 0] == 0 and r.err[0, 0] == 0
    assert r.dq[0, 0] == DNU  # err <= 0; not all saturated, so no SATURATED


def test_two_good_resultants(runtime):
    col = _line(50.0)
    two_point = (np.float32(col[1]) - np.float32(col[0])) / (TIMING.tbar[1] - TIMING.tbar[0])
    r = _columns(runtime, "likely", [col], [_sat_from(2)])
    np.testing.assert_allclose(r.slope[0, 0], two_point, rtol=1e-6)
    assert abs(r.chisq[0, 0]) < 1e-6 and r.dq[0, 0] == SAT
    np.testing.assert_allclose(r.err[0, 0] ** 2, r.var_poisson[0, 0] + r.var_rnoise[0, 0], rtol=1e-5)
    r = _columns(runtime, "ols_cas22", [col], [_sat_from(2)])
    np.testing.assert_allclose(r.slope[0, 0], two_point, rtol=1e-6)
    assert r.err[0, 0] > 0 and r.dq[0, 0] == 0


def test_jump_in_first_and_last_difference(runtime):
    first, last = _line(20.0), _line(20.0)
    first[1:] += 800.0
    last[-1] += 800.0
    r = _columns(runtime, "likely", [first, last])
    assert list(np.flatnonzero(r.groupdq[:, 0, 0])) == [1] and list(np.flatnonzero(r.groupdq[:, 0, 1])) == [K - 1]
    np.testing.assert_allclose(r.slope[0], 20.0, rtol=1e-5)
    np.testing.assert_array_equal(r.dq[0], [JUMP, JUMP])
    r = _columns(runtime, "ols_cas22", [first, last])
    assert list(np.flatnonzero(r.groupdq[:, 0, 0])) == [0, 1]
    assert list(np.flatnonzero(r.groupdq[:, 0, 1])) == [K - 2, K - 1]
    np.testing.assert_allclose(r.slope[0], 20.0, rtol=1e-5)
    np.testing.assert_array_equal(r.dq[0], [JUMP, JUMP])


def _flip_amplitude(algorithm, k_jump, rate=20.0):
    """Smallest jump (DN, from resultant ``k_jump`` on) the NumPy twin flags, by bisection."""

    def flagged(amp):
        col = _line(rate) + np.where(np.arange(K) >= k_jump, amp, 0.0)
        data = np.asarray(col, np.float32)[:, None, None]
        ones = np.ones((1, 1), np.float32)
        args = (
            np.zeros(data.shape, np.uint8),
            np.zeros((1, 1), np.uint32),
            7 * ones,
            2 * ones,
            TIMING,
            RampFitParams(),
        )
        return bool(TWINS[algorithm](data.copy(), *args).dq[0, 0] & JUMP)

    lo, hi = 1.0, 20000.0
    assert not flagged(lo) and flagged(hi)
    while hi / lo > 1 + 1e-6:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if flagged(mid) else (mid, hi)
    return hi


@pytest.mark.parametrize("algorithm", KERNELS)
@pytest.mark.parametrize("k_jump", [1, 4, K - 1])
@pytest.mark.parametrize("rate", [20.0, 8000.0])  # 8000 DN/s: ols_cas22's threshold clamp at 1e4 e-/s
def test_jump_just_above_and_below_threshold(runtime, algorithm, k_jump, rate):
    """2e-3 above the flip amplitude the jump is flagged (likely: resultant k_jump; ols_cas22:
    k_jump - 1 and k_jump), 2e-3 below nothing is."""
    amp = _flip_amplitude(algorithm, k_jump, rate)
    cols = [_line(rate) + np.where(np.arange(K) >= k_jump, amp * f, 0.0) for f in (1 + 2e-3, 1 - 2e-3)]
    r = _columns(runtime, algorithm, cols)
    expected = [k_jump] if algorithm == "likely" else [k_jump - 1, k_jump]
    assert list(np.flatnonzero(r.groupdq[:, 0, 0] & JUMP)) == expected
    assert not r.groupdq[:, 0, 1].any() and r.dq[0, 1] == 0


@pytest.mark.parametrize("algorithm", KERNELS)
def test_do_not_use_mid_ramp_is_skipped(runtime, algorithm):
    col = _line(30.0)
    col[3] += 5000.0  # garbage in the flagged resultant must not matter
    g = [0, 0, 0, DNU, 0, 0, 0]
    r = _columns(runtime, algorithm, [col], [g], pdq=HOT)
    np.testing.assert_allclose(r.slope[0, 0], 30.0, rtol=1e-5)
    np.testing.assert_array_equal(r.groupdq[:, 0, 0], g)  # no jump flagged
    assert r.dq[0, 0] == HOT  # pixel DQ passes through; one DNU resultant is not all


def test_nan_mid_ramp(runtime):
    """likely: NaN anywhere (even in a flagged resultant) makes the median rate and the fit
    NaN, without flags; ols_cas22: an unflagged NaN spoils its segment (slope 0, err 0:
    DO_NOT_USE), a flagged one is skipped."""
    cols = [_line(30.0), _line(30.0)]
    cols[0][3] = cols[1][3] = np.nan
    g = [[0] * K, [0, 0, 0, DNU, 0, 0, 0]]
    r = _columns(runtime, "likely", cols, g)
    assert np.isnan(r.slope).all() and np.isnan(r.err).all() and np.isnan(r.chisq).all()
    np.testing.assert_array_equal(r.dq[0], [0, 0])
    np.testing.assert_array_equal(r.groupdq[:, 0, :].T, g)
    r = _columns(runtime, "ols_cas22", cols, g)
    assert r.slope[0, 0] == 0 and r.err[0, 0] == 0 and r.dq[0, 0] == DNU
    np.testing.assert_allclose(r.slope[0, 1], 30.0, rtol=1e-5)
    assert r.dq[0, 1] == 0


def test_bad_gain(runtime):
    cols = [_line(40.0)] * 4
    gain = np.array([2.0, -1.0, np.nan, 0.0], np.float32)
    r = _columns(runtime, "ols_cas22", cols, gain=gain)
    np.testing.assert_array_equal(r.dq[0], [0, NO_GAIN, NO_GAIN | DNU, DNU])  # gain 0: slope 0/0
    assert np.isfinite(r.slope[0, :2]).all() and np.isnan(r.slope[0, 2:]).all()
    r = _columns(runtime, "likely", cols, gain=gain)  # no gain check upstream: NaN, no flag
    assert np.isfinite(r.slope[0, 0]) and np.isnan(r.slope[0, 2]) and r.dq[0, 2] == 0


@pytest.mark.parametrize("algorithm", KERNELS)
def test_zero_signal_is_finite(runtime, algorithm):
    r = _columns(runtime, algorithm, [np.full(K, 1000.0)] * 3)
    assert np.all(np.abs(r.slope) < 1e-5) and np.all(np.abs(r.var_poisson) < 1e-6)
    assert np.all(np.isfinite(r.err)) and np.all(r.err > 0) and np.all(r.dq == 0)


def test_ols_cas22_without_jump_detection(runtime):
    col = _line(20.0)
    col[4:] += 800.0
    r = _columns(runtime, "ols_cas22", [col], params=RampFitParams(use_ramp_jump_detection=False))
    assert not r.groupdq.any() and r.dq[0, 0] == 0 and r.slope[0, 0] > 25


def test_likely_two_usable_differences_follow_numpy_rounding(runtime, references):
    """A jump with two usable differences: both omit-fits leave one difference, so which one
    is dropped (the later, the clean earlier, both -- a NaN slope -- or neither) is set by
    rounding.  On the CPU shim the kernel decides as the NumPy twin, amplitude by amplitude.
    On a GPU, CUDA's pow() may round the determinant scale differently and so move these
    decisions; there only the values of ramps that decided alike are compared."""
    data, gdq, pdq, rn, gain, timing = _two_difference_ramps()
    ref, _ = _load(references / "likely-two_differences.npz")
    got = likely(runtime, data, gdq, pdq, rn, gain, timing)
    for r in (ref, got):
        outcomes = {tuple(c) for c in ((r.groupdq[1:3, 0, :] & JUMP) != 0).T}
        assert outcomes == {(False, False), (True, False), (False, True), (True, True)}
    if exact(runtime):
        _assert_identical(got, ref, "likely two differences")
    else:
        _assert_agree(got, ref, "likely two differences", near=np.ones(ref.dq.shape, bool), max_fraction=1.0)


def test_likely_minimum_and_too_many_resultants(runtime):
    four = read_timing([[1], [2, 3], [4], [5, 6]], FRAME_TIME)
    r = _columns(runtime, "likely", [_line(10.0, four)], timing=four)
    np.testing.assert_allclose(r.slope[0, 0], 10.0, rtol=1e-5)
    for pattern in ([[1], [2, 3], [4]], [[r] for r in range(1, MAX_RESULTANTS + 2)]):
        t = read_timing(pattern, FRAME_TIME)
        data = _line(10.0, t).astype(np.float32)[:, None, None]
        g = np.zeros(data.shape, np.uint8)
        ones = np.ones((1, 1), np.float32)
        r = likely(runtime, data, g, np.full((1, 1), HOT, np.uint32), 7 * ones, 2 * ones, t)
        assert np.isnan(r.slope[0, 0]) and r.dq[0, 0] == HOT | DNU and not r.groupdq.any()


def test_ols_cas22_too_many_resultants(runtime):
    t = read_timing([[r] for r in range(1, MAX_RESULTANTS + 2)], FRAME_TIME)
    data = _line(10.0, t).astype(np.float32)[:, None, None]
    ones = np.ones((1, 1), np.float32)
    r = ols_cas22(runtime, data, np.zeros(data.shape, np.uint8), np.zeros((1, 1), np.uint32), 7 * ones, 2 * ones, t)
    assert np.isnan(r.slope[0, 0]) and r.dq[0, 0] == DNU and not r.groupdq.any()
    t = read_timing([[r] for r in range(1, MAX_RESULTANTS + 1)], FRAME_TIME)  # the largest allowed
    r = _columns(runtime, "ols_cas22", [_line(10.0, t)], timing=t)
    np.testing.assert_allclose(r.slope[0, 0], 10.0, rtol=1e-5)


# ----------------------------------------------------------------------------- sanitizer
def _sanitized_run() -> None:
    """Golden cases and a random frame through the ASan/UBSan build (run in a subprocess)."""
    rt = cpu_runtime(sanitize=True)
    test_appendix_a1_likely(rt)
    test_appendix_a1_ols_cas22(rt)
    test_all_saturated(rt)
    test_nan_mid_ramp(rt)
    test_likely_minimum_and_too_many_resultants(rt)
    test_ols_cas22_too_many_resultants(rt)
    data, gdq, pdq, rn, gain, timing = realistic(7, FRAMES["K18"][1], shape=(20, 50))
    ref = fit_likely(data.copy(), gdq.copy(), pdq, rn, gain, timing, RampFitParams())
    _assert_agree(likely(rt, data, gdq, pdq, rn, gain, timing), ref, "likely", max_fraction=0.0)
    ref = fit_ols_cas22(data.copy(), gdq.copy(), pdq, rn, gain, timing, RampFitParams())
    _assert_agree(ols_cas22(rt, data, gdq, pdq, rn, gain, timing), ref, "ols_cas22", max_fraction=0.0)
    np.testing.assert_array_equal(uniform(rt, data, timing), numpy_uniform_slope(data, timing))


def test_address_and_ub_sanitizer():
    from gpucal.kernels.cpu_shim import ShimBuildError, sanitizer_environment

    try:
        env = sanitizer_environment()
    except ShimBuildError as exc:
        pytest.skip(str(exc))
    root = Path(__file__).resolve().parents[2]
    code = "from tests.kernels.test_ramp_fit_kernels import _sanitized_run; _sanitized_run()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
