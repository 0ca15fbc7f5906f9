"""What every kernel launcher shares: the 1-D launch geometry, argument checks and constants.

The launchers (:mod:`gpucal.backends.device.launch`, :mod:`.launch_ramp`) take device
arrays that are C-contiguous with the NumPy backend's shapes; a C-contiguous
``(K, ny, nx)`` array *is* the kernels' ``(K, npix)`` pixel-fastest layout, so arrays are
passed to the kernels as they are.  The checks here read only shapes, dtypes and flags
(metadata on the host), never the data.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from gpucal.backends.runtime import DeviceRuntime
from gpucal.kernels._loader import kernel_source
from gpucal.readpattern import ReadTiming

__all__ = [
    "BLOCK",
    "CONSTANTS",
    "check_resultants",
    "frame_shape",
    "grid_for",
    "kernel_define",
    "launch",
    "on_stream",
    "read_lists",
    "require",
    "upload_constants",
]

#: Threads per block of every launch (the kernels accept any block size).
BLOCK = 256
#: Transfer-log label of the small per-exposure tables the launchers upload.
CONSTANTS = "constants"


def grid_for(npix: int) -> tuple[int]:
    """1-D grid of :data:`BLOCK`-thread blocks covering ``npix`` threads (at least one block)."""
    return (max(1, -(-int(npix) // BLOCK)),)


@functools.cache
def kernel_define(module: str, name: str) -> int:
    """The integer of ``#define <name> <int>`` in ``gpucal/kernels/<module>.cu`` (one source of truth)."""
    found = re.search(rf"^#define {re.escape(name)} (-?\d+)\b", kernel_source(module), re.MULTILINE)
    if found is None:
        raise LookupError(f"{module}.cu defines no integer {name}")
    return int(found[1])


F = TypeVar("F", bound=Callable[..., Any])


def on_stream(func: F) -> F:
    """Run a launcher (first argument: the runtime) with the runtime's stream current, so its
    array operations (allocations, element-wise work) are ordered with its kernels whoever
    calls it."""

    @functools.wraps(func)
    def wrapper(rt: DeviceRuntime, *args: Any, **kwargs: Any) -> Any:
        with rt.active():
            return func(rt, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def launch(rt: DeviceRuntime, module: str, kernel: str, nthreads: int, args: tuple[Any, ...]) -> None:
    """Enqueue ``module.kernel`` on ``rt`` over ``nthreads`` threads, one per pixel."""
    rt.function(module, kernel)(grid_for(nthreads), (BLOCK,), args)


def require(array: Any, name: str, shape: tuple[int, ...] | None, dtype: Any) -> None:
    """Check a device argument's shape (``None``: any), dtype and C-contiguity.

    Raises
    ------
    ValueError
        Wrong shape (as the NumPy backend raises) or not C-contiguous.
    TypeError
        Wrong dtype (the kernel would read the memory as another type).
    """
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    if np.dtype(array.dtype) != np.dtype(dtype):
        raise TypeError(f"{name} has dtype {np.dtype(array.dtype)}, expected {np.dtype(dtype)}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def frame_shape(data: Any, name: str = "data") -> tuple[int, int, int]:
    """``(K, ny, nx)`` of a ramp-shaped argument (ValueError unless 3-D)."""
    if data.ndim != 3:
        raise ValueError(f"{name} must be (K, ny, nx), got shape {tuple(data.shape)}")
    nres, ny, nx = (int(n) for n in data.shape)
    return nres, ny, nx


def check_resultants(timing: ReadTiming, nres: int) -> None:
    """ValueError unless the read pattern has ``nres`` resultants (as the NumPy backend)."""
    if timing.nresultants != nres:
        raise ValueError(f"read pattern has {timing.nresultants} resultants, data has {nres}")


def upload_constants(rt: DeviceRuntime, host: Any, dtype: Any) -> Any:
    """A small host table on the device (label :data:`CONSTANTS`); empty tables get one
    zero element, so that no kernel is handed a zero-size allocation."""
    a = np.asarray(host, dtype=dtype).reshape(-1)
    if a.size == 0:
        a = np.zeros(1, dtype=dtype)
    return rt.upload(a, label=CONSTANTS, dtype=dtype)


def read_lists(timing: ReadTiming) -> tuple[np.ndarray, np.ndarray]:
    """The read pattern in CSR form, on the host.

    Returns
    -------
    reads : ndarray, shape (nreads,), int32
        1-based read numbers, resultant after resultant.
    offsets : ndarray, shape (K + 1,), int32
        Resultant k owns ``reads[offsets[k]:offsets[k + 1]]``; ``offsets[0] = 0``.
    """
    pattern = timing.read_pattern
    reads = np.array([r for res in pattern for r in res], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(res) for res in pattern])]).astype(np.int32)
    return reads, offsets
