"""The launchers of gpucal.backends.device.launch as library code, on the emulated device.

What the kernel tests (which go through host-array front ends) cannot see: the launchers
take device arrays and give device arrays, upload nothing but their ``"constants"``
tables and download nothing (jump's frame-wide search mode included: it is computed on the
device); they refuse arrays of the wrong dtype, shape or layout; ``ramp_fit`` dispatches
and raises as the NumPy backend does; and ``dq_init`` in row blocks gives the whole
frame's pixel DQ.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.dq_init import dq_init as numpy_dq_init
from gpucal.backends.device import launch
from gpucal.backends.emulated import DeviceArray
from gpucal.backends.protocol import InlTable, JumpParams, RampFitParams
from gpucal.dq import GroupFlag
from gpucal.readpattern import read_timing
from tests.kernels._data import appendix_timing, random_ramps
from tests.kernels._drivers import F32, U8, U16, U32, down, up
from tests.kernels._runtime import cpu_runtime

SHAPE = (12, 64)
TIMING = appendix_timing()
K = TIMING.nresultants


def _frame(rt):
    """Device (data, groupdq, pixeldq, per-pixel ones) of a random frame, and the log cleared."""
    data = random_ramps(np.random.default_rng(2), SHAPE, TIMING)
    dev = (up(rt, data, F32), up(rt, np.zeros(data.shape), U8), up(rt, np.zeros(SHAPE), U32),
           up(rt, np.ones(SHAPE), F32))  # fmt: skip
    rt.transfers.clear()
    return dev


def _inl():
    grid = np.arange(0, 65536, 4096, dtype=np.float32)
    return InlTable(grid, np.zeros((2, grid.size)), channel_width=32)


CALLS = {
    "saturation": lambda rt, d, g, p, one: launch.saturation(rt, d, g, p, one * 5e4, p, TIMING, 1, 1),
    "linearity_classic": lambda rt, d, g, p, one: launch.linearity(
        rt, d, g, p, rt.xp.stack([one * 0, one]), None, p, None, TIMING
    ),
    "linearity_read_level_inl": lambda rt, d, g, p, one: launch.linearity(
        rt, d, g, p, rt.xp.stack([one * 0, one]), rt.xp.stack([one * 0, one]), p, _inl(), TIMING
    ),
    "saturation_headroom": lambda rt, d, g, p, one: launch.saturation_headroom(rt, d, g, p, one * 5e4, p),
    "linearity_threshold": lambda rt, d, g, p, one: launch.linearity_threshold(
        rt, d, g, one, rt.xp.stack([one * 0, one]), p
    ),
    "linearity_threshold_no_polynomial": lambda rt, d, g, p, one: launch.linearity_threshold(rt, d, g, one, None, None),
    "dark_decay": lambda rt, d, g, p, one: launch.dark_decay(rt, d, TIMING, 3.0, 5.0, 2, row0=6, frame_ny=24),
    "jump": lambda rt, d, g, p, one: launch.jump(rt, d, g, one, one, TIMING, JumpParams()),
    "jump_with_mode": lambda rt, d, g, p, one: launch.jump(rt, d, g, one, one, TIMING, JumpParams(), mode=1),
    "ramp_fit_likely": lambda rt, d, g, p, one: launch.ramp_fit(rt, d, g, p, one, one, TIMING, "likely", RampFitParams()),
    "ramp_fit_ols_cas22": lambda rt, d, g, p, one: launch.ramp_fit(
        rt, d, g, p, one, one, TIMING, "ols_cas22", RampFitParams()
    ),
    "uniform_slope": lambda rt, d, g, p, one: launch.uniform_slope(rt, d, TIMING),
}


@pytest.mark.parametrize("name", CALLS)
def test_device_in_device_out_and_only_constants_uploaded(name):
    rt = cpu_runtime()
    data, groupdq, pixeldq, one = _frame(rt)
    with rt.active():  # the test's own arithmetic on device arrays (one * 5e4) is device work
        result = CALLS[name](rt, data, groupdq, pixeldq, one)
    for arr in result if isinstance(result, tuple) else (result,):
        assert isinstance(arr, DeviceArray)
    assert rt.transfers.select("d2h") == []
    uploads = rt.transfers.select("h2d")
    assert {t.label for t in uploads} <= {"constants"}, rt.transfers.by_label()
    assert sum(t.nbytes for t in uploads) < 4096  # tables of the read pattern, never a frame


def test_dq_init_uploads_and_downloads_nothing():
    rt = cpu_runtime()
    raw = up(rt, np.ones((K, *SHAPE)), U16)
    rt.transfers.clear()
    res = launch.dq_init(rt, raw, None, 0, None, launch.guide_window_ranges(SHAPE, (2, 9, 1, 5), 1))
    assert isinstance(res.data, DeviceArray) and isinstance(res.pixeldq, DeviceArray)
    assert len(rt.transfers) == 0


@pytest.mark.parametrize(
    ("nres", "dnu_planes", "mode"),
    [(12, 0, 2), (12, 2, 1), (K, 0, 1), (K, 5, 0)],
    ids=["single", "iterative_dnu", "iterative", "none"],
)
def test_jump_finds_its_mode_on_the_device(nres, dnu_planes, mode):
    """Without ``mode``, nothing comes back and nothing goes up but ``"constants"``; the
    result equals the one with the frame's mode given."""
    rt = cpu_runtime()
    timing = read_timing([[r] for r in range(1, nres + 1)], TIMING.frame_time) if nres != K else TIMING
    host = random_ramps(np.random.default_rng(3), SHAPE, timing)
    host[nres // 2:, 4, 7] += 3000.0  # a jump, flagged in every searching mode
    g0 = np.zeros(host.shape, np.uint8)
    g0[:dnu_planes] = GroupFlag.DO_NOT_USE
    g0[dnu_planes, 3, 5] = GroupFlag.DO_NOT_USE  # on one pixel only: the plane stays usable
    assert launch.frame_search_mode(g0) == mode
    data, one = up(rt, host, F32), up(rt, np.ones(SHAPE), F32)
    groupdq = up(rt, g0, U8)
    rt.transfers.clear()
    got = launch.jump(rt, data, groupdq, one, one, timing, JumpParams())
    assert rt.transfers.select("d2h") == []
    assert {t.label for t in rt.transfers.select("h2d")} <= {"constants"}, rt.transfers.by_label()
    again = launch.jump(rt, data, up(rt, g0, U8), one, one, timing, JumpParams(), mode=mode)
    got = down(rt, got)
    np.testing.assert_array_equal(down(rt, again), got)
    assert bool((got[:, 4, 7] & GroupFlag.JUMP_DET).any()) == (mode != 0)


@pytest.mark.parametrize("bad", [-1, 3])
def test_jump_refuses_an_unknown_mode(bad):
    rt = cpu_runtime()
    data, groupdq, _, one = _frame(rt)
    with pytest.raises(ValueError, match="mode must be one of"):
        launch.jump(rt, data, groupdq, one, one, TIMING, JumpParams(), mode=bad)


def test_search_mode_counts_planes_all_do_not_use():
    """The device reduction (a (1,) int32 device array) and the host helper agree."""
    rt = cpu_runtime()
    g = np.zeros((11, 2, 3), np.uint8)

    def both(g):
        dev = launch.jump_search_mode(rt, up(rt, g, U8))
        assert isinstance(dev, DeviceArray) and dev.shape == (1,) and dev.dtype == np.int32
        assert dev.flags.c_contiguous
        return int(down(rt, dev)[0]), launch.frame_search_mode(g)

    assert both(g) == (2, 2)
    g[0] = GroupFlag.DO_NOT_USE | GroupFlag.SATURATED
    assert both(g) == (1, 1)
    g[1, 1, 2] = GroupFlag.DO_NOT_USE  # not on every pixel
    assert both(g) == (1, 1)
    g[1:9] = GroupFlag.DO_NOT_USE
    assert both(g) == (0, 0)
    g[:] = GroupFlag.SATURATED  # saturation does not count
    assert both(g) == (2, 2)
    assert both(np.zeros((11, 0, 3), np.uint8)) == (0, 0)


def test_wrong_dtype_shape_or_layout_refused():
    rt = cpu_runtime()
    data, groupdq, pixeldq, one = _frame(rt)
    with rt.active():
        one64 = one.astype(np.float64)
    with pytest.raises(TypeError, match="readnoise has dtype float64"):
        launch.ramp_fit(rt, data, groupdq, pixeldq, one64, one, TIMING, "likely", RampFitParams())
    with pytest.raises(ValueError, match="gain shape"):
        launch.ramp_fit(rt, data, groupdq, pixeldq, one, one[:5], TIMING, "ols_cas22", RampFitParams())
    with pytest.raises(ValueError, match="C-contiguous"):
        launch.uniform_slope(rt, data[:, :, ::2], TIMING)
    with pytest.raises(ValueError, match="resultants"):
        launch.saturation(rt, data[:3], groupdq[:3], pixeldq, one, pixeldq, TIMING, 0, 0)
    with pytest.raises(ValueError, match="at least 2 coefficients"):
        launch.linearity(rt, data, groupdq, pixeldq, one[None], None, pixeldq, None, TIMING)


def test_ramp_fit_dispatch_errors():
    rt = cpu_runtime()
    data, groupdq, pixeldq, one = _frame(rt)
    with pytest.raises(ValueError, match="unknown ramp-fit algorithm"):
        launch.ramp_fit(rt, data, groupdq, pixeldq, one, one, TIMING, "ols", RampFitParams())
    t3 = read_timing([[1], [2], [3]], TIMING.frame_time)
    with rt.active():
        data3, groupdq3 = data[:3].copy(), groupdq[:3].copy()
    with pytest.raises(ValueError, match="at least 4 resultants"):
        launch.ramp_fit(rt, data3, groupdq3, pixeldq, one, one, t3, "likely", RampFitParams())


@pytest.mark.parametrize("window", [(2, 9, 1, 5), (3, 40, 5, 70), (0, 64, 0, 64), (1, 3, 9, 11)], ids=str)
def test_dq_init_row_blocks_match_the_whole_frame(window):
    """Blocks of rows [0, 4), [4, 9), [9, 12), each given the whole frame's ranges and its
    first row: the same data and pixel DQ as the NumPy backend on the whole frame."""
    rt = cpu_runtime()
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 65536, (3, *SHAPE), dtype=np.uint16)
    mask = rng.integers(0, 2**32, SHAPE, dtype=np.uint32)
    ranges = launch.guide_window_ranges(SHAPE, window, 2)
    blocks = [
        down(rt, launch.dq_init(rt, up(rt, raw[:, a:b], U16), None, 7, up(rt, mask[a:b], U32), ranges, row0=a))
        for a, b in ((0, 4), (4, 9), (9, 12))
    ]
    want = numpy_dq_init(raw, None, 7, mask, window, 2)
    np.testing.assert_array_equal(np.concatenate([b.data for b in blocks], axis=1), want.data)
    np.testing.assert_array_equal(np.concatenate([b.pixeldq for b in blocks], axis=0), want.pixeldq)
