"""Device runtimes: where the device backend's arrays live and how its kernels launch.

:class:`gpucal.backends.device_backend.DeviceBackend` is written once against the
:class:`DeviceRuntime` protocol and runs on two of them:

* :class:`gpucal.backends.cupy_backend.CupyRuntime`: a CUDA device through CuPy (arrays are
  ``cupy.ndarray``; kernels are ``cupy.RawModule`` functions on one stream);
* :class:`gpucal.backends.emulated.EmulatedRuntime`: the same code on the CPU for CI, with
  NumPy arrays that refuse to mix with host arrays (as CuPy's do) and the exact ``.cu``
  kernels built by the CPU shim.

Every host <-> device copy the backend makes goes through :meth:`DeviceRuntime.upload` and
:meth:`DeviceRuntime.download` and is recorded in a :class:`TransferLog`, so tests can prove
that the ramp goes up once, references go up once per process, and only products come back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

__all__ = ["Transfer", "TransferLog", "DeviceRuntime", "KernelFunction"]

#: A launchable kernel: ``k(grid, block, args)`` exactly as ``cupy.RawKernel`` is called.
KernelFunction = Callable[[tuple[int, ...], tuple[int, ...], tuple[Any, ...]], None]


class Transfer(NamedTuple):
    """One host <-> device copy: direction, bytes and what it carried."""

    direction: Literal["h2d", "d2h"]
    nbytes: int
    label: str


@dataclass
class TransferLog:
    """Every copy a runtime made, in order (thread-safe)."""

    records: list[Transfer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, direction: Literal["h2d", "d2h"], nbytes: int, label: str) -> None:
        with self._lock:
            self.records.append(Transfer(direction, int(nbytes), label))

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def __iter__(self) -> Iterator[Transfer]:
        with self._lock:
            return iter(list(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def select(self, direction: str | None = None, prefix: str = "") -> list[Transfer]:
        """The copies in one direction (or both) whose label starts with ``prefix``."""
        return [t for t in self if (direction is None or t.direction == direction) and t.label.startswith(prefix)]

    def nbytes(self, direction: str | None = None, prefix: str = "") -> int:
        return sum(t.nbytes for t in self.select(direction, prefix))

    def by_label(self) -> dict[str, int]:
        """Bytes moved per ``direction:label``."""
        out: dict[str, int] = {}
        for t in self:
            key = f"{t.direction}:{t.label}"
            out[key] = out.get(key, 0) + t.nbytes
        return out


class DeviceRuntime(Protocol):
    """What :class:`~gpucal.backends.device_backend.DeviceBackend` needs of a device."""

    #: ``"cuda"`` or ``"emulated"``
    kind: str
    #: the device, in words (recorded in the output metadata)
    device_name: str
    #: the array namespace of device arrays (``cupy``, or the emulated NumPy namespace)
    xp: Any
    transfers: TransferLog

    def upload(self, host: np.ndarray, label: str, dtype: Any = None) -> Any:
        """A C-contiguous device copy of ``host`` (converted to ``dtype`` on the host first)."""
        ...

    def download(self, array: Any, label: str) -> np.ndarray:
        """A host copy of the device ``array`` (waits for the work that writes it)."""
        ...

    def is_device_array(self, obj: Any) -> bool: ...

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any: ...

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any: ...

    def function(self, module: str, kernel: str) -> KernelFunction:
        """Kernel ``kernel`` of ``gpucal/kernels/<module>.cu``, launched on the runtime's stream."""
        ...

    def active(self) -> AbstractContextManager[Any]:
        """Context in which array operations run on the runtime's stream."""
        ...

    def free_memory(self) -> int:
        """Bytes the backend may still allocate (device free memory plus pool reserve)."""
        ...

    def total_memory(self) -> int: ...

    def local_memory_reserve(self) -> int:
        """Bytes the driver sets aside for the kernels' per-thread stacks (local memory) at launch."""
        ...

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the device (or pinned host memory for it) ran out."""
        ...

    def synchronize(self) -> None: ...

    def timed(self, label: str) -> AbstractContextManager[None]:
        """Account the device time of the work enqueued inside to ``label``."""
        ...

    def untimed(self) -> AbstractContextManager[None]:
        """Host work inside :meth:`timed` (staging, compiles, a host fit): not the device's time."""
        ...

    def device_times(self) -> dict[str, float]:
        """Milliseconds of device time per label since the last :meth:`reset_times`."""
        ...

    def reset_times(self) -> None: ...
