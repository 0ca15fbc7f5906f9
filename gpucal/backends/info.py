"""``gpucal info``: devices (NVML), CUDA runtime and NVRTC versions, and what ``auto`` picks."""

from __future__ import annotations

import platform
from typing import Any

from gpucal.backends.nvml import cuda_pci_bus_id, normalize_bus_id, query

__all__ = ["describe", "nvml_devices"]

_ASK_CUDA = object()  # default of nvml_devices' cuda_bus_id: ask CUDA


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_devices(nvml: Any = None, cuda_bus_id: Any = _ASK_CUDA) -> tuple[list[dict[str, Any]], str]:
    """Per-device facts from NVML, and the driver version (or why NVML is unavailable).

    Every query is guarded on its own (:func:`gpucal.backends.nvml.query`): a figure NVML
    does not support there (utilisation under MIG, say) is None and named in the device's
    ``unsupported`` list, never an exception.  The device CUDA uses as its device 0 is
    found by PCI bus id (NVML's and CUDA's orders differ on mixed machines) and marked
    ``cuda_device_0``.

    Parameters
    ----------
    nvml : module, optional
        The ``pynvml`` module (tests pass a stand-in); default ``import pynvml``.
    cuda_bus_id : str or None, optional
        PCI bus id of CUDA device 0; default: asked of CUDA (None where there is none).
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return [], "nvidia-ml-py is not installed"
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound and friends
        return [], f"NVML unavailable ({type(exc).__name__})"
    if cuda_bus_id is _ASK_CUDA:
        cuda_bus_id = cuda_pci_bus_id(0)[0]
    cuda_bus = normalize_bus_id(cuda_bus_id) if cuda_bus_id else None
    try:
        driver, driver_error = query(nvml.nvmlSystemGetDriverVersion)
        count, count_error = query(nvml.nvmlDeviceGetCount)
        if count is None:
            return [], f"NVML cannot count the devices ({count_error})"
        devices = [_device(nvml, i, cuda_bus) for i in range(int(count))]
        return devices, f"driver {_text(driver)}" if driver is not None else f"driver unknown ({driver_error})"
    finally:
        query(nvml.nvmlShutdown)


def _device(nvml: Any, index: int, cuda_bus: str | None) -> dict[str, Any]:
    """One device's facts, each query on its own (None and listed in ``unsupported`` when it fails)."""
    handle, error = query(nvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return {"index": index, "name": None, "error": error, "unsupported": ["handle"], "cuda_device_0": False}
    unsupported: list[str] = []

    def ask(label: str, fn: Any) -> Any:
        value, err = query(fn, handle)
        if err is not None:
            unsupported.append(f"{label} ({err})")
        return value

    name = ask("name", nvml.nvmlDeviceGetName)
    pci = ask("pci", nvml.nvmlDeviceGetPciInfo)
    mem = ask("memory", nvml.nvmlDeviceGetMemoryInfo)
    util = ask("utilization", nvml.nvmlDeviceGetUtilizationRates)
    bus = normalize_bus_id(pci.busId) if pci is not None else None
    return {
        "index": index,
        "name": _text(name) if name is not None else None,
        "pci_bus_id": bus,
        "cuda_device_0": cuda_bus is not None and bus == cuda_bus,
        "memory_total_gib": mem.total / 2**30 if mem is not None else None,
        "memory_used_gib": mem.used / 2**30 if mem is not None else None,
        "utilization_gpu_pct": util.gpu if util is not None else None,
        "unsupported": unsupported,
    }


def _device_line(d: dict[str, Any]) -> str:
    if d.get("error"):
        return f"  GPU {d['index']}: NVML cannot open it ({d['error']})"
    mem = (f"{d['memory_used_gib']:.1f}/{d['memory_total_gib']:.1f} GiB used" if d["memory_total_gib"] is not None
           else "memory n/a")
    busy = f"{d['utilization_gpu_pct']}% busy" if d["utilization_gpu_pct"] is not None else "utilization n/a"
    extra = f" [not supported here: {', '.join(d['unsupported'])}]" if d["unsupported"] else ""
    cuda = " <- CUDA device 0" if d["cuda_device_0"] else ""
    return f"  GPU {d['index']}: {d['name']} (PCI {d['pci_bus_id']}), {mem}, {busy}{cuda}{extra}"


def describe(nvml: Any = None, cuda_bus_id: Any = _ASK_CUDA) -> str:
    """A human-readable report of the GPU environment (``nvml``, ``cuda_bus_id``: as :func:`nvml_devices`)."""
    from gpucal import __version__
    from gpucal.backends.select import probe_gpu

    lines = [f"gpucal {__version__} on {platform.node()} ({platform.machine()}, Python {platform.python_version()})"]
    devices, driver = nvml_devices(nvml, cuda_bus_id)
    lines.append(f"NVML: {driver}")
    for d in devices:
        lines.append(_device_line(d))
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
