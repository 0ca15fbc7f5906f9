"""Where kernel tests run a ``.cu``: the CPU shim (NumPy arrays) or a real GPU (CuPy).

A :class:`KernelRuntime` gives the module loader and the array transfers; the launch code
in ``_drivers.py`` is written once against it, so each test body runs unchanged on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpucal.kernels._loader import load_gpu_module
from gpucal.kernels.cpu_shim import load_cpu_module

BLOCK = 256


def grid_for(npix: int) -> tuple[int]:
    """1-D grid covering ``npix`` threads in blocks of :data:`BLOCK`."""
    return (max(1, -(-npix // BLOCK)),)


@dataclass
class KernelRuntime:
    """``kind`` is ``"cpu"`` (shim, optionally sanitized) or ``"gpu"`` (CuPy RawModule)."""

    kind: str
    sanitize: bool = False
    xp: Any = field(default=np, repr=False)

    def module(self, name: str) -> Any:
        if self.kind == "gpu":
            return load_gpu_module(name)
        return load_cpu_module(name, sanitize=self.sanitize)

    def put(self, array: np.ndarray, dtype: Any = None) -> Any:
        """A C-contiguous device copy (never a view of the caller's array)."""
        a = np.ascontiguousarray(array, dtype=dtype)
        if self.kind == "gpu":
            return self.xp.asarray(a)
        return a.copy()

    def get(self, array: Any) -> np.ndarray:
        if self.kind == "gpu":
            return self.xp.asnumpy(array)
        return np.asarray(array)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.xp.empty(shape, dtype=dtype)

    def synchronize(self) -> None:
        if self.kind == "gpu":
            self.xp.cuda.Device().synchronize()


def gpu_runtime_or_reason() -> tuple[KernelRuntime | None, str]:
    """The GPU runtime, or None and why not (``cupy.is_available()``; never raises)."""
    try:
        import cupy
    except Exception as exc:
        return None, f"CuPy is not importable ({type(exc).__name__})"
    if not cupy.is_available():
        return None, "no usable CUDA device (cupy.is_available() is False)"
    return KernelRuntime("gpu", xp=cupy), ""
