"""dark_decay.cu against stated values and against cpu_fallback.dark_decay (algorithms.md §4).

Each body runs on the CPU shim and, when a GPU is present, on the GPU (``runtime``
fixture).  The read-time map has no transcendental function and must be bit-for-bit the
NumPy one; the decay goes through exp(), where the device's libm may differ from NumPy's
by an ulp of float64, so the float32 result may differ by at most one float32 ulp (and
almost never does).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpu_fallback.dark_decay import dark_decay as numpy_dark_decay
from cpu_fallback.dark_decay import frame_read_times as numpy_frame_read_times
from gpucal.readpattern import read_timing
from tests.kernels._drivers import dark_decay, frame_read_times
from tests.kernels._runtime import cpu_runtime, exact

FRAME_TIME = 3.04
PIXEL_TIME = 4.915263e-06
UNEVEN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]


# ------------------------------------------------------------------------------ read-time map
def test_map_single_row_channel_is_zero(runtime):
    """One row, one column per channel: every pixel is read at clock 0."""
    np.testing.assert_array_equal(frame_read_times(runtime, FRAME_TIME, 1, 1, 32), np.zeros((1, 32)))


@pytest.mark.parametrize("sca", [1, 3])
def test_map_two_rows(runtime, sca):
    """2 x 64 (2 columns per channel): clock(y, j) = j + 16 y, largest 17, one excursion of
    1.5 (Δ/p - 17) clocks; channels alternate direction; SCA 1 flips rows, SCA 3 columns."""
    per_gw = (FRAME_TIME / PIXEL_TIME - 17) * 1.5
    unit = FRAME_TIME / (17 + per_gw)
    rows = np.array([[0, 1, 1, 0], [16, 17, 17, 16]], float) * unit  # unflipped, one channel pair
    expected = np.tile(rows, (1, 16))
    expected = expected[::-1] if sca == 1 else expected[:, ::-1]
    got = frame_read_times(runtime, FRAME_TIME, sca, 2, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    assert got[1 if sca == 1 else 0, 0] == 0.0


def test_map_guide_window_steps(runtime):
    """768 rows: rows 256-511 read one excursion later, rows 512-767 two (SCA 3 leaves rows)."""
    ny = 768
    c0 = 767 * 15
    per_gw = (FRAME_TIME / PIXEL_TIME - c0) / 3 * 1.5
    y = np.arange(ny)
    expected = FRAME_TIME * (15 * y + np.minimum(y // 256, 2) * per_gw) / (c0 + 3 * per_gw)
    got = frame_read_times(runtime, FRAME_TIME, 3, ny, 32)
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-13, atol=1e-15)
    assert (got == got[:, :1]).all()  # one column per channel: every column alike


@pytest.mark.parametrize(
    ("frame_time", "sca", "ny", "nx", "frame_number"),
    [
        (FRAME_TIME, 7, 4096, 4096, 0.0),
        (FRAME_TIME, 3, 2048, 512, 0.0),
        (FRAME_TIME, 3, 512, 256, 2.5),
        (FRAME_TIME, 1, 100, 64, 0.0),
        (FRAME_TIME, 18, 1000, 96, 1.0),
        (0.001, 2, 1000, 64, 0.0),  # frame far shorter than its clocks: the latest pixel ends block 0
    ],
    ids=[
        "full-sca7",
        "2048x512-sca3",
        "512x256-frame2.5",
        "100x64-one-excursion",
        "1000x96-remainder-rows",
        "negative-excursions",
    ],
)
def test_map_matches_numpy_bit_for_bit(runtime, frame_time, sca, ny, nx, frame_number):
    got = frame_read_times(runtime, frame_time, sca, ny, nx, frame_number)
    np.testing.assert_array_equal(got, numpy_frame_read_times(frame_time, sca, ny, nx, frame_number))


def test_frame_checks():
    with pytest.raises(ValueError, match="multiple of 32"):
        frame_read_times(cpu_runtime(), FRAME_TIME, 1, 64, 100)


# ------------------------------------------------------------------------------ decay
def _expected_decay(pattern, t0: float, amplitude: float, tau: float) -> list[float]:
    return [
        sum(amplitude * math.exp(-(t0 + (r - 1.5) * FRAME_TIME) / tau) for r in reads) / len(reads) for reads in pattern
    ]


def test_decay_values_stated(runtime):
    """A one-row frame of 32 channels is read at t0 = 0: D_k -= mean_r A exp(-(r - 1.5)Δ/T);
    NaN stays NaN; other pixels are untouched by a NaN neighbour."""
    t = read_timing(UNEVEN, FRAME_TIME)
    data = np.full((7, 1, 32), 1000.0, np.float32)
    data[3, 0, 5] = np.nan
    got = dark_decay(runtime, data, t, 20.0, 7.0, 5)
    expected = (1000.0 - np.array(_expected_decay(UNEVEN, 0.0, 20.0, 7.0))).astype(np.float32)
    # resultant 0 = read 1, 0.5 frames before the amplitude's reference time: > A
    assert got[0, 0, 0] < 1000.0 - 20.0
    np.testing.assert_allclose(got[:, 0, 0], expected, rtol=2e-7)
    assert np.isnan(got[3, 0, 5]) and not np.isnan(np.delete(got[:, 0, :], 5, axis=1)).any()
    np.testing.assert_array_equal(got[:, 0, :], np.where(np.isnan(data[:, 0, :]), np.nan, got[:, :1, 0]))


def test_decay_per_pixel_read_time(runtime):
    """Two rows: each pixel uses its own t0 (from the map), later reads decay less."""
    t = read_timing(UNEVEN, FRAME_TIME)
    data = np.zeros((7, 2, 64), np.float32)
    got = dark_decay(runtime, data, t, 50.0, 3.0, 1)
    t0 = numpy_frame_read_times(FRAME_TIME, 1, 2, 64)
    for y, x in ((0, 0), (0, 1), (1, 0), (1, 2)):
        expected = -np.array(_expected_decay(UNEVEN, t0[y, x], 50.0, 3.0))
        np.testing.assert_allclose(got[:, y, x], expected.astype(np.float32), rtol=2e-7)
    assert (np.diff(got[:, 0, 0]) > 0).all()  # the subtracted signal shrinks with time
    assert got[0, 1, 0] < got[0, 0, 0]  # SCA 1: the last row is read first, so decays more


def test_zero_amplitude_leaves_data_bit_identical(runtime):
    t = read_timing(UNEVEN, FRAME_TIME)
    data = np.random.default_rng(3).normal(5000.0, 400.0, (7, 8, 64)).astype(np.float32)
    np.testing.assert_array_equal(dark_decay(runtime, data, t, 0.0, 7.0, 4), data)


def _assert_close_to_numpy(got: np.ndarray, ref: np.ndarray, what: str) -> int:
    """At most one float32 ulp anywhere, and identical on all but 1e-5 of the values."""
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=what)
    diff = np.abs(got[finite].astype(np.float64) - ref[finite])
    assert (diff <= np.spacing(np.abs(ref[finite]))).all(), f"{what}: max difference {diff.max()}"
    n = int(np.count_nonzero(diff))
    assert n <= 1e-5 * ref.size, f"{what}: {n} of {ref.size} values differ"
    return n


@pytest.mark.parametrize(
    ("sca", "ny", "nx", "pattern"),
    [
        (7, 256, 256, UNEVEN),
        (3, 300, 128, UNEVEN),
        (12, 64, 64, [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [11]]),
        (1, 96, 32, [[r] for r in range(1, 12)]),
    ],
    ids=["256x256-sca7", "300x128-sca3", "64x64-sca12-long-resultants", "96x32-sca1-single-reads"],
)
def test_decay_agrees_with_numpy_on_random_frames(runtime, sca, ny, nx, pattern):
    seed = int(np.random.default_rng().integers(2**31))  # fresh data every run
    rng = np.random.default_rng(seed)
    t = read_timing(pattern, FRAME_TIME)
    data = rng.normal(5000.0, 400.0, (t.nresultants, ny, nx)) + rng.lognormal(3, 1.5, (ny, nx)) * t.tbar[:, None, None]
    data = np.minimum(data, 65535.0).astype(np.float32)
    data[rng.random(data.shape) < 0.001] = np.nan
    amplitude, tau = rng.uniform(2.0, 80.0), rng.uniform(1.0, 40.0)
    got = dark_decay(runtime, data, t, amplitude, tau, sca)
    ref = numpy_dark_decay(data.copy(), t, amplitude, tau, sca)
    assert np.nanmax(np.abs(ref - data)) > 0.5, f"the decay should be visible (seed {seed})"
    n = _assert_close_to_numpy(got, ref, f"seed {seed}, A {amplitude}, T {tau}")
    assert n == 0 or not exact(runtime), f"the CPU shim should match NumPy exactly (seed {seed})"


def _in_row_blocks(rt, data, timing, amplitude, tau, sca, edges):
    """dark_decay of ``data`` launched block by block over the rows [edges[i], edges[i + 1])."""
    ny = data.shape[1]
    blocks = [
        dark_decay(rt, np.ascontiguousarray(data[:, a:b]), timing, amplitude, tau, sca, row0=a, frame_ny=ny)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    return np.concatenate(blocks, axis=1)


@pytest.mark.parametrize(
    ("sca", "ny", "edges"),
    [(7, 600, (0, 256, 300, 600)), (3, 600, (0, 511, 600)), (1, 64, (0, 1, 40, 64))],
    ids=["sca7-rows-flipped-3-blocks", "sca3-columns-flipped-2-blocks", "sca1-one-row-block"],
)
def test_row_blocks_are_bit_identical_to_the_whole_frame(runtime, sca, ny, edges):
    """The frame in 2-3 row blocks, each launched with its first frame row and the frame's
    row count, gives the whole-frame launch's values bit for bit (600 rows: two guide-window
    excursions, block edges on and off the 256-row stride); a block launched as a frame of
    its own would not."""
    rng = np.random.default_rng(11)
    t = read_timing(UNEVEN, FRAME_TIME)
    data = rng.normal(5000.0, 400.0, (t.nresultants, ny, 64)).astype(np.float32)
    whole = dark_decay(runtime, data, t, 30.0, 5.0, sca)
    np.testing.assert_array_equal(_in_row_blocks(runtime, data, t, 30.0, 5.0, sca, edges), whole)
    a, b = edges[1], edges[2]
    alone = dark_decay(runtime, np.ascontiguousarray(data[:, a:b]), t, 30.0, 5.0, sca)
    assert not np.array_equal(alone, whole[:, a:b])


def test_row_block_checks():
    t = read_timing(UNEVEN, FRAME_TIME)
    data = np.zeros((7, 10, 64), np.float32)
    for row0, frame_ny in ((-1, 100), (91, 100), (0, 9)):
        with pytest.raises(ValueError, match="inside a frame"):
            dark_decay(cpu_runtime(), data, t, 1.0, 1.0, 1, row0=row0, frame_ny=frame_ny)


# ------------------------------------------------------------------------------ sanitizer
def _sanitized_run() -> None:
    """Stated and random cases through the ASan/UBSan build (run in a subprocess)."""
    rt = cpu_runtime(sanitize=True)
    test_map_two_rows(rt, 1)
    test_map_guide_window_steps(rt)
    test_decay_values_stated(rt)
    t = read_timing(UNEVEN, FRAME_TIME)
    data = np.random.default_rng(1).normal(5000.0, 400.0, (7, 17, 64)).astype(np.float32)
    got = dark_decay(rt, data, t, 30.0, 5.0, 6)
    _assert_close_to_numpy(got, numpy_dark_decay(data.copy(), t, 30.0, 5.0, 6), "sanitized")
    np.testing.assert_array_equal(
        frame_read_times(rt, FRAME_TIME, 9, 300, 96), numpy_frame_read_times(FRAME_TIME, 9, 300, 96)
    )
    np.testing.assert_array_equal(_in_row_blocks(rt, data, t, 30.0, 5.0, 6, (0, 1, 9, 17)), got)


def test_address_and_ub_sanitizer():
    from gpucal.kernels.cpu_shim import ShimBuildError, sanitizer_environment

    try:
        env = sanitizer_environment()
    except ShimBuildError as exc:
        pytest.skip(str(exc))
    root = Path(__file__).resolve().parents[2]
    code = "from tests.kernels.test_dark_decay_kernel import _sanitized_run; _sanitized_run()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
