"""Choosing the array backend once per run: ``auto``, ``gpu`` or ``cpu``.

The GPU probe returns ``(ok, reason)`` and never raises: CuPy must import, see a device
(``cupy.is_available()``), reach NVRTC and find the CUDA headers its own kernels include
(:mod:`gpucal.kernels.cupy_toolchain`), and then kernels must actually run: it compiles and
launches one tiny RawKernel and one CuPy element-wise operation and checks the numbers read
back, so a missing header, a card this NVRTC no longer builds for or a broken driver makes
``auto`` fall back with the reason.  The GPU backend is made once per process, so its
reference cache serves every exposure of a batch.
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
    problem = toolchain_problem() or kernel_problem(cupy)
    if problem:
        return False, problem
    return True, "CUDA device available (a test kernel compiled, ran and returned the right numbers)"


def toolchain_problem(options: tuple[str, ...] | None = None) -> str | None:
    """Why CuPy could not compile its own kernels here (missing CUDA headers), or None.

    ``options``: the include options to look in; default CuPy's own.  Needs no device.
    """
    try:
        from gpucal.kernels.cupy_toolchain import cupy_compile_options, find_headers, install_hint

        opts = cupy_compile_options() if options is None else options
        missing = [h for h, hit in find_headers(opts, which_package=False).items() if hit is None]
    except Exception as exc:  # CuPy's internals changed or are broken: say so, never raise
        return f"CuPy's compiler options are unavailable ({type(exc).__name__}: {_first_line(exc)})"
    if missing:
        return (f"CuPy cannot compile kernels: the CUDA headers {', '.join(missing)} are not on its include path; "
                f"{install_hint()}")
    return None


#: The probe's RawKernel: y[i] = 2 x[i] + 1 (sm-independent, no headers).
_PROBE_SOURCE = r"""
extern "C" __global__ void gpucal_probe(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i] + 1.0f;
}
"""
_PROBE_N = 64


def kernel_problem(cupy: Any) -> str | None:
    """Compile and launch one RawKernel and one CuPy element-wise op; why that failed, or None."""
    import numpy as np

    host = np.arange(_PROBE_N, dtype=np.float32)
    try:
        x = cupy.asarray(host)
        y = cupy.empty_like(x)
        cupy.RawKernel(_PROBE_SOURCE, "gpucal_probe")((1,), (_PROBE_N,), (x, y, np.int32(_PROBE_N)))
        got = cupy.asnumpy(y * x)  # a CuPy element-wise kernel (NVRTC, CUDA headers); waits for both
    except Exception as exc:  # CompileException, CUDADriverError (no kernel image, bad driver), ...
        return f"a CUDA test kernel could not be compiled or run ({type(exc).__name__}: {_first_line(exc)})"
    want = (2.0 * host + 1.0) * host
    if not np.array_equal(got, want):
        bad = int(np.count_nonzero(got != want))
        return f"a CUDA test kernel ran but returned wrong numbers ({bad} of {_PROBE_N} values differ)"
    return None


def _first_line(exc: BaseException) -> str:
    """The most telling line of an exception's message (a compiler's first error), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return ((errors or lines or [type(exc).__name__])[0])[:300]


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
