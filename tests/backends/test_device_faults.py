"""Device faults and conversions a real GPU meets and the emulated device now shows.

Each test runs on the emulated device and, where a GPU is usable, on CuPy (skipped with the
probe's reason otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.refpix import amp33_cast
from gpucal.backends.device.backend import DeviceBackend, DeviceMemoryError, chain_bytes_per_pixel
from gpucal.backends.emulated import EmulatedRuntime
from tests.backends._runtimes import device_runtime
from tests.backends.test_device_pipeline import run_pipeline


@pytest.mark.parametrize("kind", ["emulated", "gpu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_amp33_cast_is_numpys_wrap_on_every_device(kind, dtype):
    """romancal's uint16(|amp33|) wraps above 65535 (NumPy on x86-64); a GPU's cast saturates."""
    rt = device_runtime(kind)
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.uniform(-80_000, 80_000, 4000),
        [0.4, 65535.9, 65536.2, 70000.7, 1e6, 2**31 - 1024.0, 2**31 + 1024.0, np.nan, np.inf, -np.inf, -70000.2],
    ]).astype(dtype)
    with np.errstate(invalid="ignore"):
        expected = np.abs(values).astype(np.uint16)  # what romancal computes
    np.testing.assert_array_equal(amp33_cast(np, values), expected)
    dev = rt.upload(values, "input")
    with rt.active():
        got = amp33_cast(rt.xp, dev)
    np.testing.assert_array_equal(rt.download(got, "result"), expected)


def test_cuda_out_of_memory_is_recognised_however_cuda_says_it():
    cupy = pytest.importorskip("cupy")
    from cupy_backends.cuda.api import runtime

    from gpucal.backends.cupy_backend import is_cuda_out_of_memory

    assert is_cuda_out_of_memory(cupy.cuda.memory.OutOfMemoryError(1 << 30, 1 << 29, 0))
    assert is_cuda_out_of_memory(runtime.CUDARuntimeError(2))  # cudaErrorMemoryAllocation (pinned host)
    assert not is_cuda_out_of_memory(runtime.CUDARuntimeError(1))  # cudaErrorInvalidValue
    assert not is_cuda_out_of_memory(ValueError("out of range"))


class _FailingRuntime(EmulatedRuntime):
    """The emulated device, failing at one place as a GPU would (CUDA's own exception)."""

    def __init__(self, where, exc, **kwargs):
        super().__init__(**kwargs)
        self.where, self.exc = where, exc

    def is_out_of_memory(self, exc):
        from gpucal.backends.cupy_backend import is_cuda_out_of_memory

        return is_cuda_out_of_memory(exc)

    def function(self, module, kernel):
        launch = super().function(module, kernel)
        if self.where != f"launch:{module}":
            return launch

        def fail(grid, block, args):
            raise self.exc

        return fail

    def download(self, array, label):
        if self.where == "download":
            raise self.exc
        return super().download(array, label)


@pytest.mark.parametrize("where", ["launch:ramp_fit_likely", "download"])
def test_out_of_memory_outside_the_pool_is_one_line(crds_env, uncal_copy, tmp_path, where):
    """A kernel launch that cannot reserve its local memory, and a pinned host buffer that
    cannot be allocated while the products come back: one DeviceMemoryError line, no product."""
    pytest.importorskip("cupy")
    from cupy_backends.cuda.api import runtime

    rt = _FailingRuntime(where, runtime.CUDARuntimeError(2))
    with pytest.raises(DeviceMemoryError) as info:
        run_pipeline(DeviceBackend(rt, name="emulated"), uncal_copy, tmp_path / "out", algorithm="likely")
    message = str(info.value)
    assert "out of device memory" in message and "cudaErrorMemoryAllocation" in message and "\n" not in message
    assert not list((tmp_path / "out").glob("*.asdf"))


def test_kernel_stack_reserve_counts_in_the_memory_budget(crds_env, uncal_copy, tmp_path):
    """The same free memory with the driver's local-memory reserve taken out: the exposure no
    longer fits whole and streams in row blocks, with the same product."""
    import roman_datamodels.datamodels as rdm

    with rdm.open(uncal_copy) as raw:
        nres, ny, nx = raw.data.shape
    need = chain_bytes_per_pixel(nres) * ny * nx
    budget = int(1.2 * need / 0.8)  # fits whole (MEMORY_FRACTION 0.8) ...
    whole = DeviceBackend(EmulatedRuntime(memory_budget=budget), name="emulated")
    a = run_pipeline(whole, uncal_copy, tmp_path / "whole")
    assert not whole.streamed
    reserve = budget // 2  # ... but not once the kernels' stacks are reserved
    blocked = DeviceBackend(EmulatedRuntime(memory_budget=budget, local_memory=reserve), name="emulated")
    b = run_pipeline(blocked, uncal_copy, tmp_path / "blocked")
    assert blocked.streamed
    assert blocked.rt.transfers.select("h2d", prefix="block:")
    np.testing.assert_array_equal(np.asarray(a.dq), np.asarray(b.dq))
    # streamed, refpix runs on the host (scipy's FFT rather than the device's): ulp-level
    np.testing.assert_allclose(np.asarray(b.data), np.asarray(a.data), rtol=3e-5)
