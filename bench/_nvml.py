"""GPU utilisation, memory and power sampled by NVML in a thread, while a benchmark child runs.

``with NvmlSampler() as sampler: ...`` samples one device every ``interval`` seconds
(default 0.1) until the block ends; ``sampler.summary()`` then gives the figures.  NVML
sees the whole device, not one process: the memory figures are the device's used memory
(``peak`` minus the ``baseline`` sampled before the block is what the run added), the
utilisation is the fraction of time a kernel was running, power is the board's draw.  Energy
comes from the device's energy counter when it has one (Volta and later), else from the
power samples (trapezoids).

Which device: the one CUDA uses as its device 0 (what the benchmark's children run on),
found by PCI bus id (:func:`gpucal.backends.nvml.cuda_pci_bus_id`, then NVML's handle for
that id), never by translating a ``CUDA_VISIBLE_DEVICES`` ordinal: NVML numbers devices by
PCI order and CUDA by its own, and the two differ on mixed machines.

The sampler never raises: without the ``nvidia-ml-py`` package, without a driver
(``pynvml.NVMLError_LibraryNotFound``), without a device, or when a query fails mid-run,
the summary says ``available: false`` (or keeps what was sampled) and gives the reason.
Each query is asked on its own: one that fails at the first sample (utilisation under MIG
raises ``NVMLError_NotSupported``) is listed in ``unsupported`` and not asked again, while
the others go on; one that worked and then fails (a lost GPU) ends the sampling with ``error``.
"""

from __future__ import annotations

import functools
import itertools
import statistics
import threading
import time
from types import ModuleType, TracebackType
from typing import Any

from gpucal.backends.nvml import cuda_pci_bus_id, error_name, handle_for_bus_id, normalize_bus_id

__all__ = ["NvmlSampler", "cuda_device_bus_id"]

MIB = 2.0**20
SERIES_POINTS = 200  # the JSON keeps at most this many samples per run (evenly thinned)


@functools.cache
def cuda_device_bus_id() -> tuple[str | None, str]:
    """PCI bus id of CUDA device 0 in this environment (what every child inherits), or why not."""
    return cuda_pci_bus_id(0)


def _import_pynvml() -> ModuleType:
    import pynvml

    return pynvml


class NvmlSampler:
    """Samples one GPU in a daemon thread between ``__enter__`` and ``__exit__``.

    Parameters
    ----------
    interval : float
        Seconds between samples.
    index : int or str, optional
        An explicit NVML device index or UUID.  Default: the device at the PCI bus id of
        CUDA device 0 (``bus_id``).
    nvml : module, optional
        The ``pynvml`` module (tests pass a stand-in); default ``import pynvml``.
    bus_id : str, optional
        PCI bus id of the device to sample; default :func:`cuda_device_bus_id`.
    """

    def __init__(self, interval: float = 0.1, index: int | str | None = None, nvml: ModuleType | None = None,
                 bus_id: str | None = None):
        self.interval = interval
        self.index = index
        self.bus_id = bus_id
        self._nvml = nvml
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._energy_mj: list[float] = []
        self.available = False
        self.reason = "not started"
        self.error: str | None = None
        self.name: str | None = None
        self.baseline_mib: float | None = None
        self.samples: list[tuple[float, float | None, float | None, float | None]] = []  # t, util %, MiB, W
        self.unsupported: dict[str, str] = {}  # query -> error name, for queries failing from the start
        self._worked: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> NvmlSampler:
        try:
            nvml = self._nvml if self._nvml is not None else _import_pynvml()
            self._nvml = nvml
        except Exception as exc:  # ImportError, or a broken install
            self.reason = f"nvidia-ml-py is not importable ({type(exc).__name__}: {exc})"
            return self
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound (no driver), NVMLError_DriverNotLoaded, ...
            self.reason = f"NVML did not initialise ({type(exc).__name__}: {exc})"
            return self
        if self.index is None and self.bus_id is None:
            self.bus_id, why = cuda_device_bus_id()
            if self.bus_id is None:
                self.reason = f"which NVML device CUDA uses is unknown: {why}"
                self._shutdown()
                return self
        try:
            if isinstance(self.index, str):
                self._handle = nvml.nvmlDeviceGetHandleByUUID(self.index)
            elif self.index is not None:
                self._handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
            else:
                assert self.bus_id is not None
                self._handle = handle_for_bus_id(nvml, self.bus_id)
            name = nvml.nvmlDeviceGetName(self._handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception as exc:
            where = repr(self.index) if self.index is not None else f"at PCI bus id {self.bus_id}"
            self.reason = f"NVML has no device {where} ({type(exc).__name__}: {exc})"
            self._shutdown()
            return self
        try:
            self.baseline_mib = nvml.nvmlDeviceGetMemoryInfo(self._handle).used / MIB
        except Exception as exc:  # memory not reported (some MIG set-ups): the other figures go on
            self.unsupported["memory"] = error_name(exc)
        self.available, self.reason = True, ""
        self._read_energy()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._sample()  # one last sample at the end
            self._read_energy()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._nvml is None:
            return
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # shutting down without a successful init, or a lost driver
            pass

    # ------------------------------------------------------------------ sampling
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._sample():
                return

    def _sample(self) -> bool:
        """One sample; False (and ``error`` set) when NVML fails, which ends the sampling."""
        if not self.available or self.error:
            return False
        nvml = self._nvml
        assert nvml is not None
        util = self._ask("utilization", lambda h: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu))
        used = self._ask("memory", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used / MIB)
        power = self._ask("power", lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)  # mW -> W
        if self.error:
            return False
        if util is None and used is None and power is None:
            self.error = "NVML reports none of utilization, memory and power for this device"
            return False
        self.samples.append((time.perf_counter() - self._t0, util, used, power))
        return True

    def _ask(self, label: str, fn: Any) -> float | None:
        """One query: None when unsupported (failed at its first ask, not asked again); a
        query that worked and then fails sets ``error`` (the device is gone)."""
        if label in self.unsupported:
            return None
        try:
            value = float(fn(self._handle))
        except Exception as exc:
            if label in self._worked:
                self.error = f"{label}: {type(exc).__name__}: {exc}"
            else:
                self.unsupported[label] = error_name(exc)
            return None
        self._worked.add(label)
        return value

    def _read_energy(self) -> None:
        try:
            self._energy_mj.append(float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)))  # type: ignore[union-attr]
        except Exception:  # pre-Volta boards, or stand-ins without it
            pass

    # ------------------------------------------------------------------ results
    def summary(self) -> dict[str, Any]:
        """What was sampled: ``available: false`` with a reason, or the figures below.

        ``utilization_gpu_pct`` (mean, max), ``memory_used_mib`` (baseline before the run,
        peak), ``memory_peak_above_baseline_mib``, ``power_w`` (mean, max), ``energy_j``
        and its ``energy_source``, ``samples``, ``duration_s`` and ``series`` (at most
        ``SERIES_POINTS`` samples: ``t_s``, ``util_pct``, ``mem_mib``, ``power_w``).
        """
        if not self.available:
            return {"available": False, "reason": self.reason}
        out: dict[str, Any] = {"available": True, "device": self.name, "index": self.index,
                               "pci_bus_id": normalize_bus_id(self.bus_id) if self.bus_id else None,
                               "interval_s": self.interval, "samples": len(self.samples), "error": self.error,
                               "unsupported": dict(self.unsupported)}
        if not self.samples:
            return out
        times = [s[0] for s in self.samples]
        utils = [s[1] for s in self.samples if s[1] is not None]
        mems = [s[2] for s in self.samples if s[2] is not None]
        powers = [s[3] for s in self.samples if s[3] is not None]
        peak = max(mems) if mems else None
        out.update(
            duration_s=round(times[-1], 3),
            utilization_gpu_pct={"mean": _round(statistics.fmean(utils)), "max": _round(max(utils))} if utils else None,
            memory_used_mib={"baseline": _round(self.baseline_mib), "peak": _round(peak)},
            memory_peak_above_baseline_mib=_round(peak - self.baseline_mib)
            if peak is not None and self.baseline_mib is not None else None,
            power_w={"mean": _round(statistics.fmean(powers)), "max": _round(max(powers))} if powers else None,
        )
        if len(self._energy_mj) == 2:
            out.update(energy_j=_round((self._energy_mj[1] - self._energy_mj[0]) / 1000.0), energy_source="counter")
        elif len(powers) == len(self.samples) and len(powers) > 1:
            joules = sum((a[0] - b[0]) * (a[3] + b[3]) / 2 for b, a in itertools.pairwise(self.samples))  # type: ignore[operator]
            out.update(energy_j=_round(joules), energy_source="power samples")
        step = max(1, -(-len(self.samples) // SERIES_POINTS))
        kept = self.samples[::step]
        out["series"] = {"t_s": [_round(s[0]) for s in kept], "util_pct": [s[1] for s in kept],
                         "mem_mib": [_round(s[2]) for s in kept], "power_w": [_round(s[3]) for s in kept]}
        return out


def _round(value: float | None, ndigits: int = 1) -> float | None:
    return None if value is None else round(value, ndigits)
