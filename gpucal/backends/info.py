"""``gpucal info``: devices (NVML), CUDA runtime and NVRTC versions, and what ``auto`` picks."""

from __future__ import annotations

import platform

__all__ = ["describe", "nvml_devices"]


def nvml_devices() -> tuple[list[dict[str, object]], str]:
    """Per-device facts from NVML, and the driver version (or why NVML is unavailable)."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound and friends
        return [], f"NVML unavailable ({type(exc).__name__})"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            devices.append(
                {
                    "index": i,
                    "name": pynvml.nvmlDeviceGetName(h),
                    "memory_total_gib": mem.total / 2**30,
                    "memory_used_gib": mem.used / 2**30,
                    "utilization_gpu_pct": util.gpu,
                }
            )
        return devices, f"driver {driver}"
    finally:
        pynvml.nvmlShutdown()


def describe() -> str:
    """A human-readable report of the GPU environment."""
    from gpucal import __version__
    from gpucal.backends.select import probe_gpu

    lines = [f"gpucal {__version__} on {platform.node()} ({platform.machine()}, Python {platform.python_version()})"]
    devices, driver = nvml_devices()
    lines.append(f"NVML: {driver}")
    for d in devices:
        lines.append(
            f"  GPU {d['index']}: {d['name']}, {d['memory_used_gib']:.1f}/{d['memory_total_gib']:.1f} GiB used, "
            f"{d['utilization_gpu_pct']}% busy"
        )
    try:
        import cupy

        lines.append(f"CuPy {cupy.__version__}")
        try:
            runtime = cupy.cuda.runtime.runtimeGetVersion()
            lines.append(f"CUDA runtime {runtime // 1000}.{runtime % 1000 // 10}")
        except Exception as exc:
            lines.append(f"CUDA runtime: unavailable ({type(exc).__name__})")
        try:
            major, minor = cupy.cuda.nvrtc.getVersion()
            lines.append(f"NVRTC {major}.{minor}")
        except Exception as exc:
            lines.append(f"NVRTC: unavailable ({type(exc).__name__})")
    except ImportError:
        lines.append("CuPy: not installed (pip install 'gpucal[cuda12]' or 'gpucal[cuda13]')")
    ok, reason = probe_gpu()
    lines.append(f"--backend=auto uses: {'gpu' if ok else 'cpu'} ({reason})")
    return "\n".join(lines)
