"""Device time counts a step's launches, not the host work inside it; per file in a batch
(issue 10 §2: bench).

On the emulated device "device time" is host time, so the host work a step does (staging,
compiles, wfi18's ``curve_fit``) must be excluded explicitly (``untimed``) exactly where
:class:`~gpucal.backends.cupy_backend.CupyRuntime` closes its CUDA event pair; the GPU case
runs the same checks on CUDA events.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench._common import DeviceTimePerFile, warm_device
from gpucal.backends.device.backend import DeviceBackend
from gpucal.backends.device.wfi18 import wfi18_transient as device_wfi18
from gpucal.backends.emulated import EmulatedRuntime
from gpucal.readpattern import read_timing
from tests.backends._runtimes import device_runtime
from tests.cpu_fallback.test_dark_decay import _transient_frame

HOST_S = 0.3  # host work planted inside a timed step


RUNTIMES = [pytest.param("emulated", id="emulated"), pytest.param("gpu", id="gpu", marks=pytest.mark.gpu)]




@pytest.mark.parametrize("kind", RUNTIMES)
def test_untimed_host_work_is_left_out(kind):
    rt = device_runtime(kind)
    x = rt.upload(np.ones((256, 256), np.float32), "input")
    with rt.active():  # first use (the emulator loads CuPy's API to check against; CuPy compiles)
        _ = x * 2.0 + 1.0
        rt.synchronize()
    with rt.timed("step"):
        with rt.active():
            y = x * 2.0
        with rt.untimed():
            time.sleep(HOST_S)
            with rt.untimed():  # nested: still paused once
                pass
        with rt.active():
            y = y + 1.0
        with rt.timed("inner"):  # nested step: its time is the outer one's
            with rt.active():
                y = y * y
    rt.synchronize()
    times = rt.device_times()
    assert set(times) == {"step"}
    assert 0 <= times["step"] < 1e3 * HOST_S / 2, times
    rt.reset_times()
    assert rt.device_times() == {}


@pytest.mark.gpu
def test_uploads_and_downloads_are_not_a_steps_time():
    """CUDA events: the copies (and the pinned staging) of a step are not its kernel time.
    (On the emulated device a copy is a host memcpy, the same kind of time as its kernels.)"""
    rt = device_runtime("gpu")
    big = np.ones((64, 1024, 1024), np.float32)  # 256 MiB: a copy (and its staging) takes a while
    start = time.perf_counter()
    with rt.timed("step"):
        dev = rt.upload(big, "input")
        host = rt.download(dev, "result")
    wall_ms = 1e3 * (time.perf_counter() - start)
    assert host.shape == big.shape
    assert rt.device_times()["step"] < wall_ms / 4, (rt.device_times(), wall_ms)


def test_wfi18_host_fit_is_not_device_time(monkeypatch):
    """The fit runs on the host (scipy): slowed down here, it must not show in the step's time."""
    from scipy import optimize

    real = optimize.curve_fit

    def slow_fit(*args, **kwargs):
        time.sleep(HOST_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(optimize, "curve_fit", slow_fit)
    data, gdq, timing = _transient_frame(2)
    rt = EmulatedRuntime()
    d, g = rt.upload(data, "input"), rt.upload(gdq, "input")
    start = time.perf_counter()
    with rt.timed("wfi18_transient"):
        _, _, fitted = device_wfi18(rt, d, g, timing, False)
    wall_ms = 1e3 * (time.perf_counter() - start)
    assert fitted and wall_ms >= 1e3 * HOST_S
    assert rt.device_times()["wfi18_transient"] < wall_ms - 1e3 * HOST_S * 0.9


def test_device_time_is_per_file_in_a_batch():
    """Three files on one backend: each gets its own device time, not a running sum."""
    backend = DeviceBackend(EmulatedRuntime(), name="emulated")
    assert warm_device(backend) is None  # not a CUDA device: nothing to load
    timing = read_timing([[1], [2, 3], [4, 5, 6], [7, 8], [9]], 3.04)
    ramp = np.random.default_rng(3).normal(100, 5, (5, 64, 256)).astype(np.float32)
    clock = DeviceTimePerFile(backend)
    backend.uniform_slope(ramp, timing)  # before the batch: no file's
    for _ in range(3):
        clock.next_file()
        backend.uniform_slope(ramp, timing)  # a real step, plus a known stretch of device time
        with backend.rt.timed("known"):
            time.sleep(0.2)
    per_file = clock.finish()
    assert len(per_file) == 3
    # each file: ~200 ms of known device time plus one small step; a running sum would be
    # ~1x, ~2x, ~3x that
    assert all(t is not None and t >= 200 for t in per_file), per_file
    assert max(per_file) < 1.6 * min(per_file), per_file
    assert backend.device_times() == {}
