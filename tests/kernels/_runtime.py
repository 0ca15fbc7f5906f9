"""Where kernel tests run a ``.cu``: the emulated device (CPU shim) or a real GPU (CuPy).

Both are :class:`gpucal.backends.runtime.DeviceRuntime` s, so the library's launch code
(:mod:`gpucal.backends.device.launch`) runs unchanged on each, and so does every test body.
"""

from __future__ import annotations

from typing import Any

from gpucal.backends.emulated import EmulatedRuntime


def cpu_runtime(sanitize: bool = False) -> EmulatedRuntime:
    """The emulated device: the exact ``.cu`` built by the CPU shim (optionally sanitized)."""
    return EmulatedRuntime(sanitize=sanitize)


def gpu_runtime_or_reason() -> tuple[Any | None, str]:
    """The CuPy runtime, or None and why not (``cupy.is_available()``; never raises then)."""
    try:
        import cupy
    except Exception as exc:
        return None, f"CuPy is not importable ({type(exc).__name__})"
    if not cupy.is_available():
        return None, "no usable CUDA device (cupy.is_available() is False)"
    from gpucal.backends.cupy_backend import CupyRuntime

    return CupyRuntime(), ""


def exact(rt: Any) -> bool:
    """Whether ``rt`` runs the kernels through the CPU shim (bit-for-bit NumPy's libm)."""
    return rt.kind == "emulated"
