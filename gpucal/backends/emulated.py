"""An emulated device for CI: the device backend's code path, run on the CPU.

:class:`EmulatedRuntime` implements :class:`gpucal.backends.runtime.DeviceRuntime` with
NumPy, so the whole :class:`~gpucal.backends.device_backend.DeviceBackend` (uploads,
reference cache, kernel launch sequences, row blocks, downloads) runs in tests on machines
without a GPU.  To make that a real check, it fails wherever CuPy would:

* device arrays are :class:`DeviceArray`, which holds a NumPy array but is *not* one:
  ``numpy.asarray``/``numpy.array``/``numpy.ascontiguousarray`` of it raise ``TypeError``
  (CuPy's "Implicit conversion to a NumPy array is not allowed"), and so do arithmetic,
  NumPy functions, indexing and assignment that mix it with a host ``ndarray`` (0-d ones
  included), lists, or Python scalars of subclassed types such as ``IntFlag`` members;
* only what CuPy has exists: a NumPy function, an array method or attribute, or an
  ``xp``/``xp.fft`` name that the installed CuPy lacks raises, and so does a keyword
  argument its CuPy counterpart does not take (checked against CuPy's signatures where they
  can be read), and ufuncs refuse ``where=``;
* the namespace :data:`xp` (:class:`EmulatedNumpy`) makes device arrays;
  ``xp.asarray``/``xp.array`` of a host array is an *implicit upload* and is recorded as
  such in the transfer log, and reading a device scalar on the host (``int()``, ``float()``,
  ``bool()``, ``.item()``, ``.tolist()``) is recorded as an implicit download (CuPy allows
  both, silently: the backend must make neither);
* device work (anything that computes on device arrays, not views or metadata) must run
  inside :meth:`EmulatedRuntime.active`, the runtime's stream: on a GPU, work queued on
  another stream is not ordered with the kernels (``StreamOrderError``);
* floating-point ``power`` (``x**2``) is refused: CuPy before 14.2 evaluates it with
  ``powf``, whose rounding differs from the host's, so the two backends would not agree bit
  for bit (write ``x * x``);
* kernels are the exact ``.cu`` sources compiled by :mod:`gpucal.kernels.cpu_shim`, and
  every array argument must be a C-contiguous device array;
* free memory is a budget the test sets, so row blocks can be forced.

Device time is host time here (no CUDA events).  Rounding can differ from a GPU at the
last digit (``spec/cuda-on-cpu.md``; the README's GPU/CPU numeric contract).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from gpucal.backends.runtime import KernelFunction, TransferLog

__all__ = ["DeviceArray", "EmulatedNumpy", "EmulatedRuntime", "HostDeviceMixError", "StreamOrderError",
           "CupyApiError"]


class HostDeviceMixError(TypeError):
    """A host array met a device array where CuPy would refuse it."""


class CupyApiError(AttributeError):
    """A NumPy name, method or keyword that CuPy does not provide."""


class StreamOrderError(RuntimeError):
    """Device work queued outside the runtime's stream."""


# ------------------------------------------------------------------ CuPy's API
@functools.cache
def _cupy() -> Any:
    try:
        import cupy
    except Exception:  # no CuPy at all: the API checks are skipped, the rest still holds
        return None
    return cupy


_SUBMODULES = ("fft", "linalg", "random")
_MISSING = object()


@functools.cache
def _cupy_callable(module: str, name: str) -> Any:
    """CuPy's counterpart of ``numpy[.module].name`` (None when CuPy is not installed)."""
    cupy = _cupy()
    if cupy is None:
        return None
    ns = getattr(cupy, module) if module else cupy
    target = getattr(ns, name, _MISSING)
    if target is _MISSING:
        where = f"cupy.{module}." if module else "cupy."
        raise CupyApiError(f"{where}{name} does not exist: CuPy cannot run this on the device")
    return target


@functools.cache
def _parameters(target: Any) -> frozenset[str] | None:
    """Keyword names ``target`` takes, or None where that cannot be read (or any is taken)."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return frozenset(sig.parameters)


def _check_keywords(target: Any, kwargs: dict[str, Any], what: str) -> None:
    if target is None or not kwargs:
        return
    accepted = _parameters(target)
    if accepted is None:
        return
    bad = sorted(set(kwargs) - accepted)
    if bad:
        raise CupyApiError(f"{what}: CuPy's version takes no {', '.join(bad)}")


def _check_function(func: Any, kwargs: dict[str, Any]) -> None:
    """``func`` (a NumPy function) exists in CuPy and takes ``kwargs`` there."""
    module = (getattr(func, "__module__", None) or "numpy").split(".")
    ns = module[1] if len(module) > 1 and module[1] in _SUBMODULES else ""
    target = _cupy_callable(ns, func.__name__)
    _check_keywords(target, kwargs, f"numpy.{func.__name__}")


@functools.cache
def _cupy_has_attr(name: str) -> bool:
    cupy = _cupy()
    return cupy is None or hasattr(cupy.ndarray, name)


# --------------------------------------------------------------------- streams
_STREAM = threading.local()


def _in_stream() -> bool:
    return getattr(_STREAM, "depth", 0) > 0


def _require_stream(what: str) -> None:
    if not _in_stream():
        raise StreamOrderError(
            f"{what} on device arrays outside the runtime's stream: on a GPU it is not ordered with "
            "the kernels (run it inside runtime.active() or make it a backend operation)"
        )


# ------------------------------------------------------------------ checking
_PLAIN_SCALARS = (int, float, complex, bool)


def _check(objs: Any, where: str) -> None:
    for obj in objs:
        if isinstance(obj, DeviceArray) or obj is None or isinstance(obj, np.generic | str | slice | type(Ellipsis)):
            continue
        if isinstance(obj, int | float | complex):
            if type(obj) not in _PLAIN_SCALARS:
                # CuPy takes Python scalars of exactly these types (and NumPy scalars): an
                # IntFlag member is refused with "Unsupported type"
                raise HostDeviceMixError(f"{type(obj).__name__} scalar in {where}: pass a NumPy scalar")
            continue
        if isinstance(obj, np.ndarray):
            raise HostDeviceMixError(f"host ndarray {obj.shape} {obj.dtype} used with device arrays in {where}")
        if isinstance(obj, tuple | list):
            _check(obj, where)


def _plain(obj: Any) -> Any:
    if isinstance(obj, DeviceArray):
        return obj._a
    if isinstance(obj, tuple):
        return tuple(_plain(o) for o in obj)
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _log_of(objs: Any) -> TransferLog | None:
    for obj in objs:
        if isinstance(obj, DeviceArray):
            return obj._log
        if isinstance(obj, tuple | list):
            found = _log_of(obj)
            if found is not None:
                return found
    return None


def _wrap(obj: Any, log: TransferLog | None, parent: DeviceArray | None = None) -> Any:
    """Device arrays for NumPy results (NumPy scalars become 0-d arrays, as in CuPy)."""
    if isinstance(obj, np.ndarray):
        base = None
        if parent is not None and np.may_share_memory(obj, parent._a):
            base = parent._base if parent._base is not None else parent
        return DeviceArray(obj, log, base)
    if isinstance(obj, np.generic):
        return DeviceArray(np.asarray(obj), log)
    if isinstance(obj, tuple):
        return tuple(_wrap(o, log) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o, log) for o in obj]
    return obj


#: NumPy functions that return facts about arrays, not device data.
_HOST_RESULTS = frozenset({"shape", "ndim", "size", "result_type", "can_cast", "min_scalar_type", "iscomplexobj",
                           "isrealobj", "may_share_memory", "shares_memory", "broadcast_shapes"})
#: Array attributes that are metadata (no device work).
_METADATA = frozenset({"shape", "dtype", "ndim", "size", "nbytes", "itemsize", "strides", "flags"})
#: Array methods that return views (no device work).
_VIEWS = frozenset({"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel", "T", "real", "imag", "diagonal"})


class DeviceArray(NDArrayOperatorsMixin):
    """Device memory, emulated by a NumPy array it holds (see the module docstring).

    Not a NumPy array: NumPy's conversions refuse it, NumPy's functions and ufuncs dispatch
    to it and run only what CuPy has.  ``base`` is the array a view was made from (as in
    CuPy), so views of one allocation can be told apart from new ones.
    """

    __slots__ = ("_a", "_log", "_base")
    __array_priority__ = 100

    def __init__(self, array: np.ndarray, log: TransferLog | None = None, base: DeviceArray | None = None) -> None:
        if isinstance(array, DeviceArray) or not isinstance(array, np.ndarray):
            raise TypeError("DeviceArray holds a NumPy ndarray")
        self._a = array
        self._log = log
        self._base = base

    # ---------------------------------------------------------- conversions
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise HostDeviceMixError(
            "Implicit conversion to a NumPy array is not allowed (as in CuPy): download through the runtime"
        )

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise HostDeviceMixError("device code must download through the runtime, not .get()")

    def _scalar(self, what: str) -> Any:
        _require_stream(what)
        if self._log is not None:
            self._log.record("d2h", self._a.nbytes, "implicit-scalar")
        return self._a

    def __int__(self) -> int:
        return int(self._scalar("int()"))

    def __float__(self) -> float:
        return float(self._scalar("float()"))

    def __bool__(self) -> bool:
        return bool(self._scalar("bool()"))

    def __index__(self) -> int:
        return self._scalar("index").__index__()  # type: ignore[no-any-return]

    def item(self, *args: Any) -> Any:
        return self._scalar(".item()").item(*args)

    def tolist(self) -> Any:
        return self._scalar(".tolist()").tolist()

    def __repr__(self) -> str:  # debugging only (CuPy downloads for repr too)
        return f"DeviceArray({self._a!r})"

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[DeviceArray]:
        for i in range(len(self._a)):
            yield self[i]

    def __copy__(self) -> DeviceArray:
        return self.copy()

    def __deepcopy__(self, memo: Any) -> DeviceArray:
        return self.copy()

    # ------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    @property
    def itemsize(self) -> int:
        return self._a.itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        return self._a.strides

    @property
    def flags(self) -> Any:
        return self._a.flags

    @property
    def base(self) -> DeviceArray | None:
        return self._base

    @property
    def T(self) -> DeviceArray:  # noqa: N802 - NumPy's name
        return _wrap(self._a.T, self._log, self)  # type: ignore[no-any-return]

    @property
    def real(self) -> DeviceArray:
        return _wrap(self._a.real, self._log, self)  # type: ignore[no-any-return]

    @property
    def imag(self) -> DeviceArray:
        return _wrap(self._a.imag, self._log, self)  # type: ignore[no-any-return]

    # ------------------------------------------------------------- methods
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or not hasattr(np.ndarray, name):
            raise AttributeError(name)
        if not _cupy_has_attr(name):
            raise CupyApiError(f"cupy.ndarray has no {name}")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr, self._log, self)
        view = name in _VIEWS

        def method(*args: Any, **kwargs: Any) -> Any:
            _check(args, f".{name}()")
            _check(kwargs.values(), f".{name}()")
            cupy = _cupy()
            if cupy is not None:
                _check_keywords(getattr(cupy.ndarray, name, None), kwargs, f"ndarray.{name}")
            if not view:
                _require_stream(f".{name}()")
            return _wrap(attr(*_plain(args), **_plain(kwargs)), self._log, self if view else None)

        return method

    def __getitem__(self, key: Any) -> Any:
        keys = key if isinstance(key, tuple) else (key,)
        _check(keys, "indexing")
        computed = any(isinstance(k, DeviceArray) for k in keys)  # advanced indexing copies
        if computed:
            _require_stream("advanced indexing")
        return _wrap(self._a[_plain(key)], self._log, None if computed else self)

    def __setitem__(self, key: Any, value: Any) -> None:
        keys = key if isinstance(key, tuple) else (key,)
        _check(keys, "index assignment")
        _check((value,), "assignment")
        _require_stream("assignment")
        self._a[_plain(key)] = _plain(value)

    # ------------------------------------------------------ NumPy protocols
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__
        _check(inputs, name)
        out = kwargs.get("out")
        if out is not None:
            for o in out:
                if not isinstance(o, DeviceArray):
                    raise HostDeviceMixError(f"{name}: out= must be a device array")
            kwargs["out"] = tuple(o._a for o in out)
        if "where" in kwargs:
            raise CupyApiError(f"{name}: CuPy ufuncs take no where=")
        if ufunc is np.power and any(
            isinstance(x, DeviceArray) and x.dtype.kind in "fc" for x in inputs
        ):
            raise HostDeviceMixError(
                f"{name} of a floating device array: CuPy < 14.2 evaluates it with powf, which rounds "
                "differently from the host; write x * x"
            )
        if _cupy() is not None and not hasattr(_cupy(), ufunc.__name__):
            raise CupyApiError(f"cupy has no ufunc {ufunc.__name__}")
        _require_stream(name)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result, _log_of(inputs))

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        name = f"numpy.{func.__name__}"
        _check(args, name)
        _check(kwargs.values(), name)
        _check_function(func, kwargs)
        if func.__name__ in _HOST_RESULTS:
            return func(*_plain(args), **_plain(kwargs))
        _require_stream(name)
        result = func(*_plain(args), **_plain(kwargs))
        if isinstance(result, bool | int | float) and not isinstance(result, np.generic):
            result = np.asarray(result)  # CuPy's reductions give 0-d device arrays
        log = _log_of(args)
        return _wrap(result, log if log is not None else _log_of(list(kwargs.values())))


class _Fft:
    """``xp.fft``: NumPy's FFTs on device arrays, results on the device (CuPy's names only)."""

    def __getattr__(self, name: str) -> Any:
        func = getattr(np.fft, name)
        target = _cupy_callable("fft", name)

        def call(*args: Any, **kwargs: Any) -> Any:
            _check(args, f"fft.{name}")
            _check_keywords(target, kwargs, f"fft.{name}")
            _require_stream(f"fft.{name}")
            return _wrap(func(*_plain(args), **_plain(kwargs)), _log_of(args))

        return call


class EmulatedNumpy:
    """The emulated device's array namespace: NumPy whose functions make device arrays.

    Only names the installed CuPy has exist.  ``asarray``/``array``/``ascontiguousarray`` of
    a host array count as an implicit upload (``runtime.transfers``, label ``implicit``):
    correct code never makes one.
    """

    _CREATE = frozenset({"empty", "zeros", "ones", "full", "arange", "linspace", "eye", "identity"})
    _CONVERT = frozenset({"asarray", "array", "ascontiguousarray"})

    def __init__(self, runtime: EmulatedRuntime) -> None:
        self._runtime = runtime
        self.fft = _Fft()
        self.ndarray = DeviceArray

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(np, name)
        target = _cupy_callable("", name)
        log = self._runtime.transfers
        if isinstance(attr, type) and issubclass(attr, np.generic):
            return attr  # dtypes and scalar types (xp.float32, ...)
        if not callable(attr):
            return attr  # constants (xp.nan, xp.newaxis, ...)
        if name in self._CREATE:
            def create(*a: Any, **k: Any) -> Any:
                _check_keywords(target, k, f"cupy.{name}")
                return _wrap(attr(*a, **k), log)

            return create
        if name in self._CONVERT:
            def convert(obj: Any, *a: Any, **k: Any) -> Any:
                _check_keywords(target, k, f"cupy.{name}")
                if isinstance(obj, DeviceArray):
                    with _active_stream():
                        return _wrap(attr(obj._a, *a, **k), log)
                if isinstance(obj, np.ndarray | list | tuple):
                    log.record("h2d", np.asarray(obj).nbytes, "implicit")
                return _wrap(attr(obj, *a, **k), log)

            return convert

        def call(*a: Any, **k: Any) -> Any:
            _check(a, f"cupy.{name}")
            _check(k.values(), f"cupy.{name}")
            _check_keywords(target, k, f"cupy.{name}")
            if isinstance(attr, np.ufunc):
                return attr(*a, **k) if any(isinstance(x, DeviceArray) for x in a) else _wrap(attr(*a, **k), log)
            result = attr(*a, **k)
            return _wrap(result, log) if isinstance(result, np.ndarray | np.generic) else result

        return call


@contextlib.contextmanager
def _active_stream() -> Iterator[None]:
    _STREAM.depth = getattr(_STREAM, "depth", 0) + 1
    try:
        yield
    finally:
        _STREAM.depth -= 1


class EmulatedRuntime:
    """A :class:`~gpucal.backends.runtime.DeviceRuntime` on the CPU (see the module docstring).

    Parameters
    ----------
    memory_budget : int
        Bytes the backend is told it may allocate (``free_memory``); small values force the
        row-block path.
    local_memory : int
        Bytes the emulated driver reserves for kernel stacks (``local_memory_reserve``).
    sanitize : bool
        Build the kernels with AddressSanitizer/UBSan (needs the sanitizer runtime preloaded).
    """

    kind = "emulated"

    def __init__(self, memory_budget: int = 16 * 2**30, sanitize: bool = False, local_memory: int = 0) -> None:
        self.device_name = "emulated device (CPU shim)"
        self.memory_budget = int(memory_budget)
        self.local_memory = int(local_memory)
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
        return DeviceArray(np.array(a, copy=True, order="C"), self.transfers)

    def download(self, array: Any, label: str) -> np.ndarray:
        if not isinstance(array, DeviceArray):
            raise HostDeviceMixError(f"download of {label}: not a device array ({type(array).__name__})")
        self.transfers.record("d2h", array.nbytes, label)
        return np.array(array._a, copy=True, order="C")

    def is_device_array(self, obj: Any) -> bool:
        return isinstance(obj, DeviceArray)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        return DeviceArray(np.empty(shape, dtype=dtype), self.transfers)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        return DeviceArray(np.zeros(shape, dtype=dtype), self.transfers)

    def function(self, module: str, kernel: str) -> KernelFunction:
        from gpucal.kernels.cpu_shim import load_cpu_module

        k = load_cpu_module(module, sanitize=self.sanitize).get_function(kernel)

        def launch(grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
            for i, a in enumerate(args):
                if isinstance(a, np.ndarray):
                    raise HostDeviceMixError(f"{module}.{kernel}: argument {i} is a host ndarray")
                if isinstance(a, DeviceArray) and not a.flags.c_contiguous:
                    raise HostDeviceMixError(f"{module}.{kernel}: argument {i} is not C-contiguous")
            k(grid, block, tuple(a._a if isinstance(a, DeviceArray) else a for a in args))

        return launch

    def active(self) -> contextlib.AbstractContextManager[Any]:
        return _active_stream()

    def free_memory(self) -> int:
        return self.memory_budget

    def total_memory(self) -> int:
        return self.memory_budget

    def local_memory_reserve(self) -> int:
        return self.local_memory

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)

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
