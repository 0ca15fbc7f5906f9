"""An emulated device for CI: the device backend's code path, run on the CPU.

:class:`EmulatedRuntime` implements :class:`gpucal.backends.runtime.DeviceRuntime` with
NumPy, so the whole :class:`~gpucal.backends.device_backend.DeviceBackend` (uploads,
reference cache, kernel launch sequences, row blocks, downloads) runs in tests on machines
without a GPU.  To make that a real check of device residency, it keeps CuPy's rules:

* device arrays are :class:`DeviceArray`, a NumPy subclass; arithmetic, NumPy functions,
  indexing and assignment that mix a device array with a host ``ndarray`` (other than a
  0-d one) raise ``TypeError``, as CuPy does;
* the array namespace :data:`xp` (:class:`EmulatedNumpy`) makes device arrays;
  ``xp.asarray``/``xp.array`` of a host array is an *implicit upload* and is recorded as
  such in the transfer log (the backend must never make one);
* Python scalars must be plain ``int``/``float``/``complex``/``bool`` (or NumPy scalars):
  CuPy refuses subclasses such as ``IntFlag`` members;
* kernels are the exact ``.cu`` sources compiled by :mod:`gpucal.kernels.cpu_shim`, and
  every array argument must be a device array (CuPy rejects host arrays there too);
* free memory is a budget the test sets, so row blocks can be forced.

Device time is host time here (no CUDA events).  Rounding can differ from a GPU at the
last digit (``spec/cuda-on-cpu.md``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpucal.backends.runtime import KernelFunction, TransferLog

__all__ = ["DeviceArray", "EmulatedNumpy", "EmulatedRuntime", "HostDeviceMixError"]


class HostDeviceMixError(TypeError):
    """A host array met a device array where CuPy would refuse it."""


def _is_host(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) and not isinstance(obj, DeviceArray) and obj.ndim > 0


def _check(objs: Any, where: str) -> None:
    for obj in objs:
        if isinstance(obj, int | float | complex) and type(obj) not in (int, float, complex, bool):
            # CuPy takes Python scalars of exactly these types (and NumPy scalars): an
            # IntFlag member is refused with "Unsupported type"
            raise HostDeviceMixError(f"{type(obj).__name__} scalar in {where}: pass a NumPy scalar")
        if _is_host(obj):
            raise HostDeviceMixError(f"host ndarray {obj.shape} {obj.dtype} used with device arrays in {where}")
        if isinstance(obj, list | tuple):
            _check(obj, where)


def _plain(obj: Any) -> Any:
    if isinstance(obj, DeviceArray):
        return obj.view(np.ndarray)
    if isinstance(obj, tuple):
        return tuple(_plain(o) for o in obj)
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    return obj


def _wrap(obj: Any) -> Any:
    if isinstance(obj, np.ndarray) and not isinstance(obj, DeviceArray):
        return obj.view(DeviceArray)
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class DeviceArray(np.ndarray):
    """A NumPy array standing for device memory (see the module docstring)."""

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        _check(inputs, f"{ufunc.__name__}.{method}")
        if out is not None:
            _check(out, f"{ufunc.__name__}.{method} out=")
            kwargs["out"] = _plain(out)
        if kwargs.get("where", True) is not True:
            raise HostDeviceMixError(f"{ufunc.__name__}: CuPy ufuncs take no where=")
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        _check(args, func.__name__)
        _check(kwargs.values(), func.__name__)
        return _wrap(func(*_plain(args), **_plain(kwargs)))

    def __getitem__(self, key: Any) -> Any:
        _check(key if isinstance(key, tuple) else (key,), "indexing")
        return _wrap(np.ndarray.__getitem__(self.view(np.ndarray), _plain(key)))

    def __setitem__(self, key: Any, value: Any) -> None:
        _check(key if isinstance(key, tuple) else (key,), "index assignment")
        _check((value,), "assignment")
        np.ndarray.__setitem__(self.view(np.ndarray), _plain(key), _plain(value))

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise HostDeviceMixError("device code must download through the runtime, not .get()")


class _Fft:
    """``xp.fft``: NumPy's FFTs on device arrays, results on the device."""

    def __getattr__(self, name: str) -> Any:
        func = getattr(np.fft, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            _check(args, f"fft.{name}")
            return _wrap(func(*_plain(args), **_plain(kwargs)))

        return call


class EmulatedNumpy:
    """The emulated device's array namespace: NumPy whose creation functions make device arrays.

    ``asarray``/``array``/``ascontiguousarray`` of a host array count as an implicit upload
    (``runtime.transfers``, label ``implicit``): correct code never makes one.
    """

    _CREATE = ("empty", "zeros", "ones", "full", "arange", "linspace", "empty_like", "zeros_like",
               "ones_like", "full_like", "eye", "identity")
    _CONVERT = ("asarray", "array", "ascontiguousarray")

    def __init__(self, runtime: EmulatedRuntime) -> None:
        self._runtime = runtime
        self.fft = _Fft()
        self.ndarray = DeviceArray

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if name in self._CREATE:
            return lambda *a, **k: _wrap(attr(*_plain(a), **_plain(k)))
        if name in self._CONVERT:
            def convert(obj: Any, *a: Any, **k: Any) -> Any:
                if _is_host(obj):
                    self._runtime.transfers.record("h2d", obj.nbytes, "implicit")
                return _wrap(attr(_plain(obj), *a, **k))

            return convert
        return attr


class EmulatedRuntime:
    """A :class:`~gpucal.backends.runtime.DeviceRuntime` on the CPU (see the module docstring).

    Parameters
    ----------
    memory_budget : int
        Bytes the backend is told it may allocate (``free_memory``); small values force the
        row-block path.
    sanitize : bool
        Build the kernels with AddressSanitizer/UBSan (needs the sanitizer runtime preloaded).
    """

    kind = "emulated"

    def __init__(self, memory_budget: int = 16 * 2**30, sanitize: bool = False) -> None:
        self.device_name = "emulated device (CPU shim)"
        self.memory_budget = int(memory_budget)
        self.sanitize = sanitize
        self.transfers = TransferLog()
        self.xp = EmulatedNumpy(self)
        self._times: dict[str, float] = {}
        self._timed_label: str | None = None  # the step being timed, its paused (host) seconds
        self._paused_s = 0.0
        self._pausing = False

    def upload(self, host: np.ndarray, label: str, dtype: Any = None) -> DeviceArray:
        if isinstance(host, DeviceArray):
            raise HostDeviceMixError(f"upload of {label}: already a device array")
        a = np.ascontiguousarray(host, dtype=dtype)
        self.transfers.record("h2d", a.nbytes, label)
        return np.array(a, copy=True, order="C").view(DeviceArray)

    def download(self, array: Any, label: str) -> np.ndarray:
        if not isinstance(array, DeviceArray):
            raise HostDeviceMixError(f"download of {label}: not a device array ({type(array).__name__})")
        self.transfers.record("d2h", array.nbytes, label)
        return np.array(array.view(np.ndarray), copy=True, order="C")

    def is_device_array(self, obj: Any) -> bool:
        return isinstance(obj, DeviceArray)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        return np.empty(shape, dtype=dtype).view(DeviceArray)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        return np.zeros(shape, dtype=dtype).view(DeviceArray)

    def function(self, module: str, kernel: str) -> KernelFunction:
        from gpucal.kernels.cpu_shim import load_cpu_module

        k = load_cpu_module(module, sanitize=self.sanitize).get_function(kernel)

        def launch(grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
            for i, a in enumerate(args):
                if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray):
                    raise HostDeviceMixError(f"{module}.{kernel}: argument {i} is a host ndarray")
                if isinstance(a, DeviceArray) and not a.flags.c_contiguous:
                    raise HostDeviceMixError(f"{module}.{kernel}: argument {i} is not C-contiguous")
            k(grid, block, tuple(a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args))

        return launch

    def active(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def free_memory(self) -> int:
        return self.memory_budget

    def total_memory(self) -> int:
        return self.memory_budget

    def synchronize(self) -> None:
        return None

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        if self._timed_label is not None:  # nested: the outer label keeps the time
            yield
            return
        self._timed_label, self._paused_s = label, 0.0
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start - self._paused_s
            self._times[label] = self._times.get(label, 0.0) + 1e3 * elapsed
            self._timed_label = None

    @contextlib.contextmanager
    def untimed(self) -> Iterator[None]:
        """Host work inside a timed step, left out of its time (as CupyRuntime.untimed)."""
        if self._timed_label is None or self._pausing:
            yield
            return
        self._pausing = True
        start = time.perf_counter()
        try:
            yield
        finally:
            self._paused_s += time.perf_counter() - start
            self._pausing = False

    def device_times(self) -> dict[str, float]:
        return dict(self._times)

    def reset_times(self) -> None:
        self._times.clear()
