"""One set of checks for every device runtime: the emulated one (CI) and CuPy's (a GPU).

:class:`~gpucal.backends.runtime.DeviceRuntime` is what the device backend is written
against; these checks pin down what both runtimes must do, so the emulated device cannot
drift from CuPy's behaviour and :class:`~gpucal.backends.cupy_backend.CupyRuntime`'s own
code (pinned staging, its stream, CUDA events, the memory pool, launcher cache, local
memory and out-of-memory classification) is exercised wherever a GPU is usable.  On a
machine without one the CuPy cases skip, and fail under ``GPUCAL_REQUIRE_GPU=1``.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cpu_fallback.uniform import uniform_slope as host_uniform_slope
from gpucal.backends.device import launch
from gpucal.backends.emulated import EmulatedRuntime
from gpucal.backends.select import probe_gpu
from gpucal.readpattern import read_timing

GPU_OK, GPU_REASON = probe_gpu()


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def rt(request):
    if request.param == "emulated":
        return EmulatedRuntime()
    if not GPU_OK:
        pytest.skip(f"GPU backend unavailable: {GPU_REASON}")
    from gpucal.backends.cupy_backend import CupyRuntime

    return CupyRuntime()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float16, np.float32, np.float64])
def test_round_trip_is_exact_and_logged(rt, dtype):
    rng = np.random.default_rng(3)
    host = (rng.random((3, 17, 40)) * 200).astype(dtype)
    strided = host[:, ::2, 1::3]  # not contiguous: uploaded as a C-contiguous copy
    rt.transfers.clear()
    dev = rt.upload(strided, "x")
    assert rt.is_device_array(dev) and dev.flags.c_contiguous
    assert dev.shape == strided.shape and dev.dtype == strided.dtype
    back = rt.download(dev, "y")
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, strided)
    assert [(t.direction, t.nbytes, t.label) for t in rt.transfers] == [
        ("h2d", strided.nbytes, "x"), ("d2h", strided.nbytes, "y")]
    converted = rt.download(rt.upload(host, "x", np.float64), "y")
    assert converted.dtype == np.float64
    np.testing.assert_array_equal(converted, host.astype(np.float64))


def test_large_pinned_uploads_land_and_staging_is_released(rt):
    """Several MiB-sized uploads in a row on the runtime's stream (pinned staging on a GPU),
    each intact; after a synchronisation no staging buffer is kept."""
    rng = np.random.default_rng(4)
    hosts = [rng.random((5, 256, 256)).astype(np.float32) for _ in range(4)]
    devs = [rt.upload(h, "big") for h in hosts]
    for h in hosts:
        h[...] = -1.0  # the host buffers may be reused at once: the device copies are unaffected
    rt.synchronize()
    assert not getattr(rt, "_inflight", [])
    for h, d in zip(hosts, devs, strict=True):
        got = rt.download(d, "big")
        assert got.min() >= 0.0 and got.shape == h.shape


def test_numpy_conversion_and_host_mixing_refused(rt):
    dev = rt.upload(np.ones((4, 4), np.float32), "x")
    for convert in (np.asarray, np.array, np.ascontiguousarray):
        with pytest.raises(TypeError):
            convert(dev)
    with rt.active():
        with pytest.raises(TypeError):
            _ = dev + np.ones((4, 4), np.float32)
        with pytest.raises(TypeError):
            _ = dev * np.asarray(2.0, np.float32)  # 0-d host arrays too

        class Flag(enum.IntFlag):
            A = 4

        with pytest.raises(TypeError):
            _ = dev.astype(np.uint32) & Flag.A
        assert rt.is_device_array(dev * np.float32(2))
        assert rt.is_device_array(dev * 2)


def test_kernel_launch_matches_the_numpy_backend(rt):
    timing = read_timing([[1], [2, 3], [4, 5, 6], [7, 8, 9, 10], [11]], 3.04)
    rng = np.random.default_rng(5)
    data = (rng.random((5, 6, 64)) * 1000).astype(np.float32)
    dev = rt.upload(data, "x")
    with rt.active():
        slope = launch.uniform_slope(rt, dev, timing)
    got = rt.download(slope, "y")
    expected = host_uniform_slope(data, timing)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # the launcher of a kernel is made once and kept
    assert rt.function("uniform_slope", "uniform_slope") is rt.function("uniform_slope", "uniform_slope") or (
        rt.kind == "emulated")


def test_timing_memory_and_out_of_memory_classification(rt):
    rt.reset_times()
    dev = rt.upload(np.ones((2, 8, 256), np.float32), "x")
    with rt.timed("work"), rt.active():
        dev *= np.float32(3)
    times = rt.device_times()
    assert set(times) == {"work"} and times["work"] >= 0.0
    rt.reset_times()
    assert rt.device_times() == {}
    assert 0 < rt.free_memory() and rt.free_memory() <= max(rt.total_memory(), rt.free_memory())
    assert rt.local_memory_reserve() >= 0
    if rt.kind == "cuda":  # likely's stack: the driver reserves local memory for it
        assert rt.local_memory_reserve() > 0
    assert rt.is_out_of_memory(MemoryError("x"))
    assert not rt.is_out_of_memory(ValueError("x"))


def test_work_from_another_thread(rt):
    """Batch mode calibrates on the main thread but the runtime must not depend on it."""
    out = {}

    def work():
        d = rt.upload(np.arange(12, dtype=np.float32), "x")
        with rt.active():
            d += np.float32(1)
        out["v"] = rt.download(d, "y")

    t = threading.Thread(target=work)
    t.start()
    t.join()
    np.testing.assert_array_equal(out["v"], np.arange(12, dtype=np.float32) + 1)


def test_emulated_namespace_has_only_cupys_names_and_keywords():
    from gpucal.backends.emulated import CupyApiError, StreamOrderError

    pytest.importorskip("cupy")
    rt = EmulatedRuntime()
    dev = rt.upload(np.ones((4, 4), np.float32), "x")
    with pytest.raises(CupyApiError):
        rt.xp.busday_count  # noqa: B018 - NumPy has it, CuPy does not
    with rt.active():
        with pytest.raises(CupyApiError):
            np.sum(dev, where=True)  # CuPy's sum takes no where=
        with pytest.raises(CupyApiError):
            np.add(dev, dev, where=True)
        assert float(np.sum(dev)) == 16.0
    # device work outside the runtime's stream: not ordered with the kernels on a GPU
    with pytest.raises(StreamOrderError):
        _ = dev + dev
    # reading a device scalar on the host is a copy, and is logged as one
    rt.transfers.clear()
    with rt.active():
        assert int(np.count_nonzero(dev)) == 16
    assert [t.label for t in rt.transfers] == ["implicit-scalar"]


@pytest.mark.skipif(GPU_OK, reason="a GPU is usable here")
def test_require_gpu_turns_gpu_skips_into_failures():
    root = Path(__file__).resolve().parents[2]
    case = "tests/backends/test_runtime_conformance.py::test_work_from_another_thread[cuda]"
    env = {**os.environ, "GPUCAL_REQUIRE_GPU": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", case], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "GPUCAL_REQUIRE_GPU=1 but the GPU case was skipped" in proc.stdout
    env.pop("GPUCAL_REQUIRE_GPU")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", case], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout[-2000:]
