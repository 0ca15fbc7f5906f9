"""NVML helpers shared by ``gpucal info`` and the benchmark's sampler.

Two rules, both because NVML and CUDA see devices differently:

* **Which device.**  CUDA numbers the devices it can see (after ``CUDA_VISIBLE_DEVICES``,
  fastest first by default); NVML numbers every device of the machine by PCI order.  On a
  machine with mixed GPUs the two orders differ, so an ordinal is never translated:
  :func:`cuda_pci_bus_id` asks CUDA for its device's PCI bus id and
  :func:`handle_for_bus_id` finds NVML's handle by that id.
* **Every query may fail alone.**  Under MIG, on some boards or in containers, single
  queries (utilisation, power, energy) raise ``NVMLError_NotSupported`` while the rest
  work: :func:`query` returns ``(value, None)`` or ``(None, "NotSupported")`` and never
  raises, so one unsupported figure never costs the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["cuda_pci_bus_id", "normalize_bus_id", "handle_for_bus_id", "query", "error_name"]

_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]+):)?([0-9a-fA-F]+):([0-9a-fA-F]+)(?:\.([0-9a-fA-F]+))?$")


def cuda_pci_bus_id(device: int = 0) -> tuple[str | None, str]:
    """PCI bus id (``domain:bus:device.function``) of CUDA device ``device``, and why not.

    Asks the CUDA runtime through CuPy (``cudaDeviceGetPCIBusId``: no context is made, so
    no device memory is taken).  Returns ``(None, reason)`` without CuPy or a usable device.
    """
    try:
        import cupy

        return str(cupy.cuda.runtime.deviceGetPCIBusId(device)), ""
    except Exception as exc:  # no CuPy, no driver, no such device
        return None, f"CUDA device {device} has no PCI bus id here ({type(exc).__name__}: {exc})"


def normalize_bus_id(text: str | bytes) -> str:
    """One spelling of a PCI bus id: ``dddd:bb:dd.f`` in lower case (CUDA's and NVML's differ).

    NVML writes ``00000000:3B:00.0`` (8-digit domain, upper case), CUDA ``0000:3b:00.0``.
    """
    s = text.decode() if isinstance(text, bytes) else str(text)
    m = _BUS_ID.match(s.strip())
    if not m:
        return s.strip().lower()
    domain, bus, dev, fn = (int(g, 16) if g else 0 for g in m.groups())
    return f"{domain:04x}:{bus:02x}:{dev:02x}.{fn:x}"


def error_name(exc: BaseException) -> str:
    """``NotSupported`` for ``NVMLError_NotSupported``; the class name otherwise."""
    return type(exc).__name__.removeprefix("NVMLError_")


def query(fn: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
    """``(fn(*args), None)``, or ``(None, error name)`` when the query fails; never raises."""
    try:
        return fn(*args), None
    except Exception as exc:  # NVMLError_NotSupported (MIG), NoPermission, GpuIsLost, ...
        return None, error_name(exc)


def handle_for_bus_id(nvml: Any, bus_id: str) -> Any:
    """NVML's handle of the device at PCI bus id ``bus_id``.

    ``nvmlDeviceGetHandleByPciBusId`` first; if that refuses the spelling, a scan comparing
    every device's ``nvmlDeviceGetPciInfo().busId`` after :func:`normalize_bus_id`.

    Raises
    ------
    LookupError
        No NVML device has that bus id.
    """
    try:  # nvidia-ml-py passes the id to C as it is given (c_char_p): bytes
        return nvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode())
    except Exception:  # a spelling this driver refuses: compare normalised ids
        pass
    want = normalize_bus_id(bus_id)
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        info, _ = query(nvml.nvmlDeviceGetPciInfo, handle)
        if info is not None and normalize_bus_id(info.busId) == want:
            return handle
    raise LookupError(f"NVML has no device at PCI bus id {bus_id}")
