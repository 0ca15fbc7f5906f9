"""The suite's jobs that run in their own process (started by ``bench/suite.py --child SPEC``).

The parent writes a spec JSON with ``job`` and ``result`` (the path this process writes its
report to); single-file calibrations go through ``bench/_child.py`` instead.  Jobs:

``prepare``
    ``prepare_demo`` (exposure, references, offline CRDS cache; fixed seed ``seed``), then
    ``distinct - 1`` more exposures from the same references with seeds ``seed + 1, ...``
    (so every file of a batch is calibrated with the references it was simulated from).
``batch``
    ``gpucal.batch.run_batch`` over ``inputs`` with one fresh ``roman_elp`` per file, as
    ``strun roman_elp --backend=B f1 ... fN`` does (read-ahead and write-behind threads).
    ``batch_wall_s`` is ``run_batch``'s wall time (first read to last write);
    ``per_file_s`` each file's time from the start of its calibration to its products on disk;
    ``device_ms_per_file`` each file's own device milliseconds (the backend's clocks are
    reset as each file starts; kernel modules are loaded before the batch, ``kernel_warm_s``).
``io_floor``
    What the pipeline cannot avoid: read the uncal file with ``gpucal.io.open_model`` (ASDF
    parse, lz4 decompression, checks) and write a cal product of the same size and
    compression with ``gpucal.io.write_model`` (the cal and wcs models of an earlier run,
    read once, untimed).  ``read_s`` verifies the ASDF block checksums (the pipeline's
    default); each cycle then reads the file once more without them
    (``read_unverified_s``), and ``checksum_s`` is the difference: what the check costs
    (meaningful in the warm repeats).  ``cold``: the first read and write of this fresh process (what a
    one-file ``strun`` pays); then ``repeat`` more cycles (``repeats``, medians as
    ``read_s``, ``write_s``, ``floor_s``): what each file of a batch pays.

Every report also has ``import_s`` and this process's ``VmHWM`` after the imports and at the end.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__:
    from ._common import DeviceTimePerFile, read_vmhwm_kib, warm_device
else:  # loaded by bench/suite.py run as a script
    from _common import DeviceTimePerFile, read_vmhwm_kib, warm_device

__all__ = ["main", "exposure_name"]

ROOT_PATTERN = "r0000101001001001001_{:04d}_wfi01_f158"  # exposure number varies, as in a visit


def exposure_name(number: int) -> str:
    """``<root>_uncal.asdf`` of exposure ``number`` (1-based) of the demo's visit."""
    return f"{ROOT_PATTERN.format(number)}_uncal.asdf"


def _prepare(spec: dict[str, Any], report: dict[str, Any]) -> None:
    from gpucal.demo.references import load_references
    from gpucal.demo.run import prepare_demo
    from gpucal.demo.synth import make_exposure

    report["import_s"] = time.perf_counter() - report.pop("_start")
    workdir = Path(spec["workdir"])
    demo = prepare_demo(workdir, ny=spec["ny"], nx=spec["nx"], nresultants=spec["nresultants"], seed=spec["seed"])
    uncals, seeds = [str(demo.uncal.resolve())], [spec["seed"]]
    start = time.perf_counter()
    if spec["distinct"] > 1:
        refs = load_references(demo.references)
        for i in range(1, spec["distinct"]):
            path = workdir / exposure_name(i + 1)
            make_exposure(path, refs, nresultants=spec["nresultants"], seed=spec["seed"] + i)
            uncals.append(str(path.resolve()))
            seeds.append(spec["seed"] + i)
    report.update(uncals=uncals, seeds=seeds, context=demo.context, environment=demo.environment,
                  generate_s=demo.generate_seconds, extra_generate_s=time.perf_counter() - start)


def _import_io_stack() -> None:
    """asdf and roman_datamodels: imported before the timing starts, as bench/_child.py does."""
    import asdf  # noqa: F401
    import roman_datamodels.datamodels  # noqa: F401


def _batch(spec: dict[str, Any], report: dict[str, Any]) -> None:
    _import_io_stack()
    from gpucal.backends.select import select_backend
    from gpucal.batch import run_batch
    from gpucal.pipeline import ExposurePipeline

    backend = select_backend(spec["backend"])  # the backend's imports, not inside the timed batch
    report["import_s"] = time.perf_counter() - report.pop("_start")
    report["vmhwm_after_import_kib"] = read_vmhwm_kib("self")
    report["kernel_warm_s"] = warm_device(backend)  # kernel modules loaded before the batch starts
    values = {"backend": spec["backend"], "output_dir": spec["output_dir"],
              "steps": {"rampfit": {"algorithm": spec["algorithm"]}}}
    clock = DeviceTimePerFile(backend)  # the process's one backend: its clocks are reset per file

    def make_step() -> Any:
        # made ahead by the reader thread; its calibration runs later, in the main thread
        step = ExposurePipeline.from_values(values)  # save_results off: the writer thread saves
        run_model = step.run_model

        def run_model_per_file(*args: Any, **kwargs: Any) -> Any:
            clock.next_file()  # this file starts; the previous one's device work is done (products came back)
            return run_model(*args, **kwargs)

        step.run_model = run_model_per_file
        return step

    result = run_batch(spec["inputs"], make_step)
    report.update(
        batch_wall_s=result.wall_seconds,
        per_file_s=[o.seconds for o in result.outcomes],
        failed=[o.error or o.input for o in result.failed],
        outputs=[Path(p).name for o in result.outcomes for p in o.outputs],
        device_ms_per_file=clock.finish(),
    )


def _io_floor(spec: dict[str, Any], report: dict[str, Any]) -> None:
    _import_io_stack()
    import gpucal.io

    report["import_s"] = time.perf_counter() - report.pop("_start")
    out_dir = Path(spec["output_dir"])
    sources = [Path(p) for p in spec["products"]]
    products: list[Any] = []

    def timed_read(verify: bool) -> tuple[Any, float]:
        os.environ["GPUCAL_VERIFY_CHECKSUMS"] = "1" if verify else "0"
        try:
            start = time.perf_counter()
            model = gpucal.io.open_model(spec["uncal"])
            return model, time.perf_counter() - start
        finally:
            os.environ.pop("GPUCAL_VERIFY_CHECKSUMS", None)

    def cycle(tag: str) -> dict[str, float]:
        # the read the pipeline does (block checksums verified, the default: the floor's),
        # then the same read without them (the difference is what the check costs; in the
        # cold cycle the first read also pays the process's first-use costs)
        model, read_s = timed_read(True)
        unverified, read_unverified_s = timed_read(False)
        unverified.close()
        if not products:  # untimed: the output to write, read after the first read as a run would
            products.extend(gpucal.io.open_model(src) for src in sources)
        start = time.perf_counter()
        written = [gpucal.io.write_model(product, out_dir / f"{tag}_{src.name}")
                   for product, src in zip(products, sources, strict=True)]
        write_s = time.perf_counter() - start
        report["output_bytes"] = sum(path.stat().st_size for path in written)
        model.close()
        for path in written:
            path.unlink()
        return {"read_s": read_s, "write_s": write_s, "floor_s": read_s + write_s,
                "read_unverified_s": read_unverified_s, "checksum_s": read_s - read_unverified_s}

    cold = cycle("cold")
    warm = [cycle(f"warm{rep}") for rep in range(spec["repeat"])]
    report.update(cold=cold, repeats=warm, input_bytes=Path(spec["uncal"]).stat().st_size,
                  **{k: statistics.median(r[k] for r in warm)
                     for k in ("read_s", "write_s", "floor_s", "read_unverified_s", "checksum_s")})


JOBS = {"prepare": _prepare, "batch": _batch, "io_floor": _io_floor}


def main(spec_path: str) -> int:
    """Run the spec's job and write its report; return the exit status."""
    report: dict[str, Any] = {"_start": time.perf_counter(), "vmhwm_start_kib": read_vmhwm_kib("self")}
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    JOBS[spec["job"]](spec, report)
    report.update(status="ok", job=spec["job"], vmhwm_kib=read_vmhwm_kib("self"))
    Path(spec["result"]).write_text(json.dumps(report, indent=1))
    return 0
