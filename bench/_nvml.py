"""GPU utilisation, memory and power sampled by NVML in a thread, while a benchmark child runs.

``with NvmlSampler() as sampler: ...`` samples one device every ``interval`` seconds
(default 0.1) until the block ends; ``sampler.summary()`` then gives the figures.  NVML
sees the whole device, not one process: the memory figures are the device's used memory
(``peak`` minus the ``baseline`` sampled before the block is what the run added), the
utilisation is the fraction of time a kernel was running, power is the board's draw.  Energy
comes from the device's energy counter when it has one (Volta and later), else from the
power samples (trapezoids).

The sampler never raises: without the ``nvidia-ml-py`` package, without a driver
(``pynvml.NVMLError_LibraryNotFound``), without a device, or when a query fails mid-run,
the summary says ``available: false`` (or keeps what was sampled) and gives the reason.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from types import ModuleType, TracebackType
from typing import Any

__all__ = ["NvmlSampler", "device_index_from_env"]

MIB = 2.0**20
SERIES_POINTS = 200  # the JSON keeps at most this many samples per run (evenly thinned)


def device_index_from_env() -> int | str:
    """The NVML device CUDA's device 0 is: the first ``CUDA_VISIBLE_DEVICES`` entry, else 0.

    A UUID entry (``GPU-...``) is returned as it is, for a look-up by UUID.
    """
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.isdigit():
        return int(first)
    return first if first.startswith(("GPU-", "MIG-")) else 0


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
        NVML device index or UUID; default :func:`device_index_from_env`.
    nvml : module, optional
        The ``pynvml`` module (tests pass a stand-in); default ``import pynvml``.
    """

    def __init__(self, interval: float = 0.1, index: int | str | None = None, nvml: ModuleType | None = None):
        self.interval = interval
        self.index = device_index_from_env() if index is None else index
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
        try:
            if isinstance(self.index, str):
                self._handle = nvml.nvmlDeviceGetHandleByUUID(self.index)
            else:
                self._handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
            name = nvml.nvmlDeviceGetName(self._handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
            self.baseline_mib = nvml.nvmlDeviceGetMemoryInfo(self._handle).used / MIB
        except Exception as exc:
            self.reason = f"NVML has no device {self.index!r} ({type(exc).__name__}: {exc})"
            self._shutdown()
            return self
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
        nvml, handle = self._nvml, self._handle
        assert nvml is not None
        try:
            util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            used = nvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        try:
            power: float | None = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # mW -> W
        except Exception:  # not every board reports power
            power = None
        self.samples.append((time.perf_counter() - self._t0, util, used, power))
        return True

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
                               "interval_s": self.interval, "samples": len(self.samples), "error": self.error}
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
