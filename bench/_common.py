"""What the benchmarks share: one child process measured from outside, and its report read back.

:func:`measure_process` starts a command and waits for it with ``os.wait4``: wall time
(start to exit), CPU seconds, ``ru_maxrss`` and, polled from ``/proc`` every 0.25 s, the
child's ``VmHWM`` (the high-water mark of the address space made at its ``exec``, so this
run's alone; ``ru_maxrss`` also carries the launcher's mark, see ``bench/README.md``).
:func:`read_child_result` merges what a ``bench/_child.py``-style child wrote about itself
(import, read, step and write seconds; its own ``VmHWM``) into that record.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["KIB_PER_MIB", "DeviceTimePerFile", "add_step_times", "load", "measure_process", "mib", "read_child_result",
           "read_vmhwm_kib", "warm_device"]

KIB_PER_MIB = 1024.0


def load() -> list[float]:
    """1-, 5- and 15-minute load averages (other jobs on the machine make timings noisy)."""
    return [round(x, 2) for x in os.getloadavg()]


def mib(kib: int | None) -> float | None:
    """KiB to MiB, one decimal (None stays None, so does 0: "not measured")."""
    return round(kib / KIB_PER_MIB, 1) if kib else None


def read_vmhwm_kib(pid: int | str) -> int | None:
    """``VmHWM`` (KiB) of process ``pid`` (``"self"`` for this one), or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _poll_vmhwm(pid: int, stop: threading.Event, seen: list[int]) -> None:
    """Keep the largest ``VmHWM`` of ``pid`` in ``seen[0]`` until ``stop`` (a fallback)."""
    while not stop.wait(0.25):
        value = read_vmhwm_kib(pid)
        if value is not None:
            seen[0] = max(seen[0], value)


def measure_process(argv: Sequence[str], *, env: dict[str, str] | None, cwd: Path, log_path: Path,
                    timeout: float) -> dict[str, Any]:
    """Run ``argv`` (stdout and stderr to ``log_path``), killed after ``timeout`` s; what it cost.

    Returns ``wall_s`` (start to exit: interpreter, imports, run, exit), ``exit_status``,
    ``peak_rss_mib`` (polled ``VmHWM``), ``ru_maxrss_mib``, ``cpu_user_s``, ``cpu_sys_s``,
    the load averages before and after, and ``log``.
    """
    load_before = load()
    with log_path.open("w") as log_file:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        stop, polled = threading.Event(), [0]
        poller = threading.Thread(target=_poll_vmhwm, args=(proc.pid, stop, polled), daemon=True)
        poller.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            stop.set()
            poller.join()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait
    return {
        "wall_s": round(wall, 3),
        "exit_status": proc.returncode,
        "peak_rss_mib": mib(polled[0]),
        "peak_rss_source": "VmHWM polled",
        "ru_maxrss_mib": round(usage.ru_maxrss / KIB_PER_MIB, 1),
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_sys_s": round(usage.ru_stime, 2),
        "load_before": load_before,
        "load_after": load(),
        "log": str(log_path),
    }


def read_child_result(record: dict[str, Any], result_path: Path) -> dict[str, Any] | None:
    """Merge the child's own report into ``record`` (from :func:`measure_process`); return it.

    A child that failed (non-zero exit, or no report) marks ``record`` ``status: failed``
    with the tail of its log as ``error`` and gives None.  Otherwise ``record`` gets
    ``status: ok`` and, where the child reported it, its own ``VmHWM`` as ``peak_rss_mib``.
    """
    if record["exit_status"] != 0 or not result_path.exists():
        record.update(status="failed", error=Path(record["log"]).read_text(errors="replace")[-3000:])
        return None
    child: dict[str, Any] = json.loads(result_path.read_text())
    record["status"] = "ok"
    if child.get("vmhwm_kib"):
        record.update(peak_rss_mib=mib(child["vmhwm_kib"]), peak_rss_source="VmHWM at child's end")
    return child


def add_step_times(record: dict[str, Any], child: dict[str, Any]) -> None:
    """Import, run, read, write, other and per-step seconds of a ``bench/_child.py`` report."""
    accounted = child["read_s"] + child["write_s"] + sum(child["steps"].values())
    record.update(
        import_s=round(child["import_s"], 3),
        run_s=round(child["run_s"], 3),
        read_s=round(child["read_s"], 3),
        write_s=round(child["write_s"], 3),
        other_s=round(child["run_s"] - accounted, 3),
        steps={k: round(v, 3) for k, v in child["steps"].items()},
        rss_after_import_mib=mib(child.get("vmhwm_after_import_kib")),
    )


def warm_device(backend: Any) -> float | None:
    """On a CUDA backend, load every gpucal kernel module before anything is timed; seconds.

    A first launch compiles (NVRTC) or loads (CuPy's disk cache) its module on the host; done
    here, no timed step pays it.  The backend's device clocks are reset after.  None (and
    nothing done) on a backend that is not on a CUDA device.
    """
    runtime = getattr(backend, "rt", None)
    if getattr(runtime, "kind", None) != "cuda":
        return None
    from gpucal.kernels._loader import warm_gpu_cache

    start = time.perf_counter()
    warm_gpu_cache()
    backend.reset_device_times()
    return time.perf_counter() - start


class DeviceTimePerFile:
    """Device milliseconds of each file of a batch, from a backend that times its steps.

    The batch runs files one after the other on one backend, whose clocks add up until
    reset: :meth:`next_file` (called as each file's calibration starts, after the previous
    one's products came back) books what accumulated to the previous file and resets, and
    :meth:`finish` books the last.  A backend without ``device_times`` gives None per file.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.timed = callable(getattr(backend, "device_times", None))
        self.per_file: list[float | None] = []
        self._started = False

    def _take(self) -> float | None:
        if not self.timed:
            return None
        total = float(sum(self.backend.device_times().values()))
        self.backend.reset_device_times()
        return total

    def next_file(self) -> None:
        if self._started:
            self.per_file.append(self._take())
        else:  # what came before the batch (warm-up) is no file's
            self._take()
            self._started = True

    def finish(self) -> list[float | None]:
        if self._started:
            self.per_file.append(self._take())
            self._started = False
        return self.per_file
