"""The CuPy backend: :class:`~gpucal.backends.device.backend.DeviceBackend` on a CUDA device.

:class:`CupyRuntime` is the :class:`gpucal.backends.runtime.DeviceRuntime` of a real GPU:

* one stream per runtime; every kernel launch and CuPy operation of the backend runs on
  it (``active()``), so the steps run back to back without host waits; it is a blocking
  stream, so array operations the steps make on CuPy's default stream stay in order;
* uploads go through page-locked (pinned) staging buffers from CuPy's pinned-memory pool,
  asynchronously on that stream.  A pageable source would make ``cudaMemcpyAsync`` wait
  for the stream's earlier work and stage the bytes synchronously, stalling the host
  between kernels even for a few constants; a pinned one does neither.  Each staging
  buffer is kept (with an event recorded after its copy) until the copy is done: pruned at
  every upload and released whenever the stream is known to be idle (downloads,
  :meth:`synchronize`), so none outlives the exposure's work;
* downloads wait for the stream (they are the end of an exposure's work);
* device time per label from CUDA events recorded on the stream (:meth:`timed`), counting
  the kernels and array operations a step launches, not the host work inside it: uploads
  (host staging and the copy), downloads, kernel compiles/loads and the step's own host
  computations (:meth:`untimed`; wfi18's ``curve_fit``) close the step's event pair and
  open a new one after, so the device's idle time while the host works is not counted;
* kernels are :func:`gpucal.kernels._loader.load_gpu_module` RawModules (compiled once
  per process by NVRTC, cached on disk by CuPy under ``CUPY_CACHE_DIR``); each kernel's
  launcher is made once and kept;
* out-of-memory is recognised however CUDA reports it (:func:`is_cuda_out_of_memory`),
  and the local memory the driver reserves for kernel stacks is counted
  (:meth:`CupyRuntime.local_memory_reserve`).

CuPy is imported when a runtime is made, never at module import.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpucal.backends.device.backend import DeviceBackend
from gpucal.backends.runtime import KernelFunction, TransferLog

__all__ = ["CupyRuntime", "CupyBackend", "is_cuda_out_of_memory"]

#: CUDA's status code for "out of memory" in the driver (CUDA_ERROR_OUT_OF_MEMORY), the
#: runtime (cudaErrorMemoryAllocation) and cuFFT (CUFFT_ALLOC_FAILED): all 2.
_OOM_STATUS = 2
_OOM_WORDS = ("CUDA_ERROR_OUT_OF_MEMORY", "cudaErrorMemoryAllocation", "CUFFT_ALLOC_FAILED", "out of memory")


def is_cuda_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that device or pinned host memory ran out, however CUDA said it.

    CuPy's pool raises ``OutOfMemoryError`` (a ``MemoryError``); a kernel launch whose local
    memory cannot be reserved raises ``CUDADriverError`` (CUDA_ERROR_OUT_OF_MEMORY); a
    pinned host allocation ``CUDARuntimeError`` (cudaErrorMemoryAllocation); a cuFFT plan
    ``CuFFTError`` (CUFFT_ALLOC_FAILED).
    """
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    if name in ("CUDADriverError", "CUDARuntimeError"):
        return getattr(exc, "status", None) == _OOM_STATUS or any(w in str(exc) for w in _OOM_WORDS)
    if name == "CuFFTError":
        return getattr(exc, "result", None) == _OOM_STATUS or "CUFFT_ALLOC_FAILED" in str(exc)
    return False


class CupyRuntime:
    """A CUDA device through CuPy (see the module docstring).

    Parameters
    ----------
    device : int
        CUDA device ordinal.
    """

    kind = "cuda"

    def __init__(self, device: int = 0) -> None:
        import cupy

        self.xp = cupy
        self._cupy = cupy
        self.device = cupy.cuda.Device(device)
        with self.device:
            # a blocking stream: work the steps queue on CuPy's default stream (array
            # methods called outside active(), e.g. while the image model is assembled)
            # is ordered after the kernels queued here, and before what follows
            self.stream = cupy.cuda.Stream(non_blocking=False)
        props = cupy.cuda.runtime.getDeviceProperties(device)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        self.device_name = f"{name} (CUDA device {device}, sm_{props['major']}{props['minor']})"
        self.transfers = TransferLog()
        self._pending: list[tuple[str, Any, Any]] = []
        self._times: dict[str, float] = {}
        self._inflight: list[tuple[Any, Any]] = []  # (event, pinned buffer) of async uploads
        self._lock = threading.Lock()
        self._timing = threading.local()  # this thread's open segment: label, start event
        self._functions: dict[tuple[str, str], KernelFunction] = {}
        self._local_reserve: int | None = None
        self._sms = int(props["multiProcessorCount"])
        self._threads_per_sm = int(props["maxThreadsPerMultiProcessor"])

    # ---------------------------------------------------------------- copies
    def upload(self, host: np.ndarray, label: str, dtype: Any = None) -> Any:
        with self.untimed():  # host staging and the copy are not a step's kernel time
            return self._upload(host, label, dtype)

    def _upload(self, host: np.ndarray, label: str, dtype: Any = None) -> Any:
        import cupyx

        cupy = self._cupy
        a = np.ascontiguousarray(host, dtype=dtype)
        with self.device, self.stream:
            dev = cupy.empty(a.shape, a.dtype)
            pinned = cupyx.empty_pinned(a.shape, a.dtype)  # from CuPy's pinned-memory pool
            np.copyto(pinned, a)
            dev.set(pinned, stream=self.stream)
            done = cupy.cuda.Event(block=False, disable_timing=True)
            done.record(self.stream)
            with self._lock:
                self._inflight = [(e, b) for e, b in self._inflight if not e.done]
                self._inflight.append((done, pinned))
        self.transfers.record("h2d", a.nbytes, label)
        return dev

    def download(self, array: Any, label: str) -> np.ndarray:
        with self.untimed(), self.device, self.stream:
            out = array.get(stream=self.stream)
            self.stream.synchronize()
        self._release_staging()
        self.transfers.record("d2h", out.nbytes, label)
        return np.ascontiguousarray(out)

    def _release_staging(self) -> None:
        """The stream is idle: every staged upload is done, its pinned buffer can go back."""
        with self._lock:
            self._inflight.clear()

    def is_device_array(self, obj: Any) -> bool:
        return isinstance(obj, self._cupy.ndarray)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        with self.device, self.stream:
            return self._cupy.empty(shape, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        with self.device, self.stream:
            return self._cupy.zeros(shape, dtype=dtype)

    # --------------------------------------------------------------- kernels
    def function(self, module: str, kernel: str) -> KernelFunction:
        key = (module, kernel)
        cached = self._functions.get(key)
        if cached is not None:
            return cached
        from gpucal.kernels._loader import load_gpu_module

        with self.untimed(), self.device:  # a first use compiles (or loads from CuPy's cache) on the host
            k = load_gpu_module(module).get_function(kernel)

        def launch(grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
            with self.device, self.stream:
                k(grid, block, args)

        self._functions[key] = launch
        return launch

    def local_memory_reserve(self) -> int:
        """Bytes the driver reserves when the deepest-stacked kernel of the chain launches.

        CUDA sets aside each kernel's local memory (its per-thread stack) for every thread the
        device can hold at once: stack bytes x SMs x threads per SM (about 0.8 GB on an H100
        for likely's ~3 KB stack).  It is not in CuPy's pool, so the row-block budget must
        leave it free.
        """
        if self._local_reserve is None:
            from gpucal.kernels._loader import kernel_entry_names, kernel_names, load_gpu_module

            deepest = 0
            with self.untimed(), self.device:  # may compile: host work, not a step's device time
                for module in kernel_names():
                    raw = load_gpu_module(module)
                    for name in kernel_entry_names(module):
                        deepest = max(deepest, int(raw.get_function(name).attributes["local_size_bytes"]))
            self._local_reserve = deepest * self._sms * self._threads_per_sm
        return self._local_reserve

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return is_cuda_out_of_memory(exc)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self.device, self.stream:
            yield

    # ---------------------------------------------------------------- memory
    def free_memory(self) -> int:
        with self.device:
            free, _ = self._cupy.cuda.runtime.memGetInfo()
            return int(free + self._cupy.get_default_memory_pool().free_bytes())

    def total_memory(self) -> int:
        with self.device:
            return int(self._cupy.cuda.runtime.memGetInfo()[1])

    def synchronize(self) -> None:
        self.stream.synchronize()
        self._release_staging()

    # ---------------------------------------------------------------- timing
    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        """Account the device time of the launches inside to ``label`` (a nested call adds
        to the outer label)."""
        state = self._timing
        if getattr(state, "label", None) is not None:
            yield
            return
        state.label = label
        self._open_segment()
        try:
            yield
        finally:
            self._close_segment()
            state.label = None

    @contextlib.contextmanager
    def untimed(self) -> Iterator[None]:
        """Host work inside a timed step: the step's event pair is closed before and a new
        one opened after, so the device's idle time meanwhile is not counted."""
        if getattr(self._timing, "start", None) is None:  # not timing, or already paused
            yield
            return
        self._close_segment()
        try:
            yield
        finally:
            self._open_segment()

    def _open_segment(self) -> None:
        with self.device:
            start = self._cupy.cuda.Event()
            start.record(self.stream)
        self._timing.start = start

    def _close_segment(self) -> None:
        start, self._timing.start = getattr(self._timing, "start", None), None
        if start is None:
            return
        with self.device:
            end = self._cupy.cuda.Event()
            end.record(self.stream)
        with self._lock:
            self._pending.append((self._timing.label, start, end))

    def device_times(self) -> dict[str, float]:
        with self._lock:
            pending, self._pending = self._pending, []
        for label, start, end in pending:
            end.synchronize()
            ms = self._cupy.cuda.get_elapsed_time(start, end)
            self._times[label] = self._times.get(label, 0.0) + float(ms)
        return dict(self._times)

    def reset_times(self) -> None:
        self.device_times()
        self._times.clear()

    def copy_bandwidth(self, nbytes: int = 1 << 29) -> dict[str, float]:
        """Measured copy bandwidth (GB/s): host->device and device->host from pinned
        memory, and device->device (read + write bytes), each timed by CUDA events after
        one untimed pass.  For the bench: a step's bytes over its device time, against this."""
        import cupyx

        cupy = self._cupy
        n = max(1, nbytes // 4)
        with self.device, self.stream:
            host = cupyx.empty_pinned((n,), np.float32)
            host[...] = 1.0
            dev = cupy.empty((n,), np.float32)
            dev2 = cupy.empty_like(dev)

            def seconds(fn: Any) -> float:
                fn()
                start, end = cupy.cuda.Event(), cupy.cuda.Event()
                start.record(self.stream)
                fn()
                end.record(self.stream)
                end.synchronize()
                return float(cupy.cuda.get_elapsed_time(start, end)) / 1e3

            h2d = seconds(lambda: dev.set(host, stream=self.stream))
            d2h = seconds(lambda: dev.get(stream=self.stream, out=host))
            d2d = seconds(lambda: dev2.__setitem__(Ellipsis, dev))
        size = n * 4
        return {"h2d_gbs": size / h2d / 1e9, "d2h_gbs": size / d2h / 1e9, "d2d_gbs": 2 * size / d2d / 1e9,
                "bytes": size}


class CupyBackend(DeviceBackend):
    """gpucal's GPU backend: the device backend on :class:`CupyRuntime` (name ``gpu``)."""

    def __init__(self, device: int = 0) -> None:
        super().__init__(CupyRuntime(device), name="gpu")
