"""Choosing the array backend once per run: ``auto``, ``gpu`` or ``cpu``.

The GPU probe returns ``(ok, reason)`` and never raises: CuPy must import, see a device
(``cupy.is_available()``) and reach NVRTC.  The GPU backend is made once per process, so
its reference cache serves every exposure of a batch.
``auto`` falls back to the CPU with one warning; an explicit ``gpu`` that cannot run is
an error naming the reason.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from gpucal.errors import BackendUnavailableError

__all__ = ["probe_gpu", "select_backend", "gpu_backend", "emulated_backend", "BACKEND_CHOICES", "EMULATE_ENV"]

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "gpu", "cpu")

_WARNED: set[str] = set()


@functools.lru_cache(maxsize=1)
def probe_gpu() -> tuple[bool, str]:
    """Whether the GPU backend can run here, and why not."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc}); install gpucal[cuda12] or gpucal[cuda13]"
    try:
        if not cupy.is_available():
            return False, "CuPy sees no usable CUDA device (no GPU or no driver)"
    except Exception as exc:
        return False, f"CUDA device query failed: {type(exc).__name__}: {exc}"
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:
        return False, f"NVRTC is not usable ({type(exc).__name__}: {exc}); install the nvidia-cuda-nvrtc wheel"
    return True, "CUDA device available"


#: Set to ``1`` (CI and developers only) to run ``--backend=gpu``/``auto`` on the emulated
#: device: the device backend's whole code path with the CUDA kernels built for the CPU
#: (:mod:`gpucal.backends.emulated`), recorded as backend ``emulated`` in the product.
EMULATE_ENV = "GPUCAL_EMULATE_GPU"


@functools.lru_cache(maxsize=1)
def emulated_backend() -> Any:
    """The process's one emulated-device backend (``GPUCAL_EMULATE_GPU=1``)."""
    from gpucal.backends.device.backend import DeviceBackend
    from gpucal.backends.emulated import EmulatedRuntime

    return DeviceBackend(EmulatedRuntime(), name="emulated")


@functools.lru_cache(maxsize=1)
def gpu_backend() -> Any:
    """The process's one GPU backend (its reference cache serves every exposure)."""
    from gpucal.backends.cupy_backend import CupyBackend

    return CupyBackend()


def select_backend(name: str):  # noqa: ANN201 - returns a Backend implementation
    """Return the backend object for ``name`` (``auto``, ``gpu`` or ``cpu``).

    Raises
    ------
    BackendUnavailableError
        ``gpu`` was asked for and cannot run (the message says why).
    """
    if name not in BACKEND_CHOICES:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if name in ("auto", "gpu") and os.environ.get(EMULATE_ENV) == "1":
        return emulated_backend()
    if name in ("auto", "gpu"):
        ok, reason = probe_gpu()
        if ok:
            try:
                return gpu_backend()
            except Exception as exc:  # a device that probes well but cannot start
                ok, reason = False, f"the CUDA device failed to start ({type(exc).__name__}: {exc})"
        if name == "gpu":
            raise BackendUnavailableError(f"--backend=gpu cannot run: {reason}")
        if reason not in _WARNED:  # once per process, not once per file of a batch
            _WARNED.add(reason)
            log.warning("No usable GPU (%s); using the CPU backend", reason)
    from cpu_fallback import CpuBackend

    return CpuBackend()
