"""One timed calibration run, in its own process (started by ``cpu_benchmark.py``).

The parent writes a spec JSON (tool, uncal, output_dir, algorithm, result path) and runs
``python bench/cpu_benchmark.py --child SPEC``; this module imports the tool (timed apart as
``import_s``), calibrates the exposure to the cal file (``run_s``: configuration, reading,
every step, writing) and writes what it measured to the spec's ``result`` path:

* ``steps``: seconds per pipeline step.  gpucal: ``ExposurePipeline.timings``.  romancal:
  stpipe's ``Step.run`` wrapped so every call made by the pipeline's ``process`` is timed
  (one level below the pipeline; skipped steps take ~0 s and are kept);
* ``read_s`` / ``write_s``: opening the uncal file / saving the cal and wcs files (gpucal:
  ``gpucal.io.open_model`` / ``save_model``; romancal: ``open_dataset`` / the pipeline's
  ``save_model``, which also writes the wcs file).  romancal opens arrays lazily, so part
  of its reading lands in its first step;
* gpucal only: ``backend`` (the spec's ``backend``, default ``cpu``), ``device`` and
  ``device_ms``: milliseconds per step from the backend's optional ``device_times()``
  (CUDA events around the step's launches; uploads, downloads, kernel loads and host work
  inside a step are left out), null when the backend has none; on a GPU the kernel modules
  are loaded before the timed run (``kernel_warm_s``, part of ``import_s``);
* ``vmhwm_after_import_kib`` / ``vmhwm_kib``: this process's peak resident set
  (``VmHWM``) after the imports and at the end.  ``VmHWM`` belongs to the address space
  made at ``exec``, so it is this run's alone; ``ru_maxrss`` (also kept) is not: Linux
  carries the launching process's high-water mark into it at ``exec``.
"""

from __future__ import annotations

import functools
import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__:
    from ._common import warm_device
else:  # loaded by bench/cpu_benchmark.py run as a script
    from _common import warm_device

STEP_ORDER = (
    "dq_init", "saturation", "refpix", "dark_decay", "wfi18_transient", "linearity", "jump",
    "rampfit", "dark_current", "assign_wcs", "photom", "flatfield", "source_catalog", "tweakreg",
)


def _maxrss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _vmhwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class _Timer:
    """Accumulates the seconds spent in wrapped callables, by label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        return timed


class _Run:
    """What one run measures: import time and footprint, step and I/O seconds."""

    def __init__(self) -> None:
        self.timer = _Timer()
        self.start = time.perf_counter()
        self.import_s = float("nan")
        self.vmhwm_after_import_kib: int | None = None
        self.steps: dict[str, float] = {}
        self.extra: dict[str, float] = {}
        self.info: dict[str, Any] = {}

    def imported(self) -> None:
        self.import_s = time.perf_counter() - self.start
        self.vmhwm_after_import_kib = _vmhwm_kib()


def _run_gpucal(spec: dict[str, Any], run: _Run) -> None:
    import asdf  # noqa: F401  (romancal imports these at module level too: same import phase)
    import roman_datamodels.datamodels  # noqa: F401

    import gpucal.io
    from gpucal.backends.select import select_backend
    from gpucal.pipeline import ExposurePipeline

    backend = spec.get("backend", "cpu")
    # imports the backend (NumPy or CuPy) now, not inside the timed run; on a GPU, loads the
    # kernel modules too (a first launch would compile or load them inside a timed step)
    warm = warm_device(select_backend(backend))
    run.imported()
    run.info["kernel_warm_s"] = warm

    gpucal.io.open_model = run.timer.wrap("read", gpucal.io.open_model)
    gpucal.io.save_model = run.timer.wrap("write", gpucal.io.save_model)  # every product goes through it
    start = time.perf_counter()
    pipeline = ExposurePipeline.from_values({
        "backend": backend, "save_results": True, "output_dir": spec["output_dir"],
        "steps": {"rampfit": {"algorithm": spec["algorithm"]}, **{k: {"skip": True} for k in spec["skip_steps"]}},
    })
    pipeline.run(spec["uncal"])
    run.extra["run_s"] = time.perf_counter() - start
    run.steps = {k: float(v) for k, v in pipeline.timings.items() if k in pipeline.steps}
    run.extra["pipeline_s"] = float(pipeline.timings.get(pipeline.name, float("nan")))
    used = pipeline.backend
    device_times = getattr(used, "device_times", None)  # optional: ms per step from CUDA events
    run.info.update(backend=getattr(used, "name", backend), device=getattr(used, "device_name", None),
                    device_ms={k: float(v) for k, v in device_times().items()} if callable(device_times) else None)
    _device_traffic(used, run)


def _device_traffic(backend: Any, run: _Run) -> None:
    """A device backend's bytes per step, host<->device copies, and the device's copy bandwidth."""
    device_bytes = getattr(backend, "device_bytes", None)
    runtime = getattr(backend, "rt", None)
    if not callable(device_bytes) or runtime is None:
        return
    run.info["device_bytes"] = {k: int(v) for k, v in device_bytes().items()}
    run.info["transfers_bytes"] = runtime.transfers.by_label()
    probe = getattr(runtime, "copy_bandwidth", None)
    if callable(probe):  # after the timed run, so it costs the run nothing
        run.info["copy_bandwidth_gbs"] = probe()


def _run_romancal(spec: dict[str, Any], run: _Run) -> None:
    import romancal.pipeline.exposure_pipeline as rep
    import stpipe.step
    from romancal.pipeline import ExposurePipeline

    run.imported()

    depth = [0]
    original_run = stpipe.step.Step.run

    def timed_run(self: Any, *args: Any) -> Any:
        depth[0] += 1
        start = time.perf_counter()
        try:
            return original_run(self, *args)
        finally:
            depth[0] -= 1
            if depth[0] == 1:  # a step called by the pipeline's process
                run.steps[self.name] = run.steps.get(self.name, 0.0) + time.perf_counter() - start
            elif depth[0] == 0:
                run.extra["pipeline_s"] = time.perf_counter() - start

    stpipe.step.Step.run = timed_run
    rep.open_dataset = run.timer.wrap("read", rep.open_dataset)
    ExposurePipeline.save_model = run.timer.wrap("write", ExposurePipeline.save_model)
    steps = {
        "rampfit": {"algorithm": spec["algorithm"]},
        "source_catalog": {"skip": True},
        "tweakreg": {"skip": True},
        **{k: {"skip": True} for k in spec["skip_steps"]},
    }
    start = time.perf_counter()
    ExposurePipeline.call(spec["uncal"], steps=steps, save_results=True, output_dir=spec["output_dir"])
    run.extra["run_s"] = time.perf_counter() - start


def main(spec_path: str) -> int:
    """Run the spec's tool once and write the measurements; return the exit status."""
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    vmhwm_start = _vmhwm_kib()
    run = _Run()
    (_run_gpucal if spec["tool"] == "gpucal" else _run_romancal)(spec, run)
    ordered = {k: run.steps[k] for k in STEP_ORDER if k in run.steps}
    ordered.update({k: v for k, v in run.steps.items() if k not in ordered})
    result = {
        "status": "ok",
        "import_s": run.import_s,
        "steps": ordered,
        "read_s": run.timer.seconds.get("read", 0.0),
        "write_s": run.timer.seconds.get("write", 0.0),
        "vmhwm_start_kib": vmhwm_start,
        "vmhwm_after_import_kib": run.vmhwm_after_import_kib,
        "vmhwm_kib": _vmhwm_kib(),
        "maxrss_kib": _maxrss_kib(),
        **run.extra,
        **run.info,
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=1))
    return 0
