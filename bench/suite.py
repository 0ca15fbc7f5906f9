"""gpucal's benchmark suite: ``gpucal bench`` or ``python bench/suite.py``.

Usage::

    python bench/suite.py [--size 4096x4096] [--nresultants 8] [--seed 2026] [--algorithm likely]
        [--backends gpu,cpu] [--batch-sizes 1,2,4] [--romancal | --no-romancal] [--repeat N]
        [--out bench/results/<name>.json] [--plot | --no-plot] [--workdir DIR]

On generated full-frame exposures (``gpucal.demo``, fixed seeds) and, in the same run, for
every backend asked for (default: those usable here) and romancal (when importable, on a
4096x4096 frame), it measures:

* one file, each run in a fresh process (``bench/_child.py``): end-to-end wall, per-step
  host seconds (``ExposurePipeline.timings``), per-step device milliseconds (CUDA events,
  when the backend has ``device_times()``), peak host memory (``VmHWM``);
* the I/O floor: reading the uncal file and writing a cal product of the same size and
  compression, nothing else (``bench/_suite_child.py``);
* batches of N files (``gpucal.batch.run_batch``, as ``strun roman_elp f1 ... fN``): files
  per hour and seconds per file;
* during every timed process, GPU utilisation, device memory and power sampled by NVML
  every 0.1 s in a thread (``bench/_nvml.py``), or why NVML is unavailable;

and writes a JSON file (``schema: gpucal-bench/1``) naming the machine, device and
versions, a PNG plot (per-step stacked bars; files per hour against batch size) and a
text table.  The goals (end-to-end / I/O floor <= 1.3; >= 3000 files per hour per GPU)
are reported, never asserted.  Ratios hold only within one run; absolute times only for
the named machine.  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import socket
import statistics
import sys
import tempfile
from importlib import util
from pathlib import Path
from typing import Any

if __package__:
    from . import _nvml, _plot, _suite_report
    from . import _suite_child as child_jobs
    from . import cpu_benchmark as cb
    from ._common import load, measure_process, mib, read_child_result
else:  # run as a script: python bench/suite.py
    import _nvml
    import _plot
    import _suite_child as child_jobs
    import _suite_report
    import cpu_benchmark as cb
    from _common import load, measure_process, mib, read_child_result

__all__ = ["SCHEMA", "main", "build_parser", "run_suite"]

SCHEMA = "gpucal-bench/1"
HERE = Path(__file__).resolve().parent
WARMUP_ROWS = 32
DEFAULT_DISTINCT = 2


# ---------------------------------------------------------------------------- options
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return sorted(set(values))


def _backend_list(text: str) -> list[str]:
    values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not values or any(v not in ("gpu", "cpu") for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give gpu and/or cpu, comma separated")
    return values


def default_backends() -> tuple[list[str], str]:
    """``gpu`` (when the GPU probe passes) and ``cpu``; the probe's reason.

    With ``GPUCAL_EMULATE_GPU=1`` (CI, and the GPU check's dry mode) ``gpu`` is the emulated
    device: the bench's device code paths run, its figures are host time and mean nothing.
    """
    import os

    from gpucal.backends.select import EMULATE_ENV, probe_gpu

    if os.environ.get(EMULATE_ENV) == "1":
        return ["gpu", "cpu"], f"{EMULATE_ENV}=1: 'gpu' is the emulated device (its figures are not a GPU's)"
    ok, reason = probe_gpu()
    return (["gpu", "cpu"] if ok else ["cpu"]), reason


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", type=cb.parse_size, default=(4096, 4096), help="frame NYxNX (or NY)")
    parser.add_argument("--nresultants", type=int, default=8, help="resultants K")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the first exposure (the next: seed+1, ...)")
    parser.add_argument("--algorithm", choices=("likely", "ols_cas22", "gls"), default="likely",
                        help="rampfit algorithm (likely is romancal 1.1.0's default, gls gpucal's; "
                             "romancal runs likely for gls)")
    parser.add_argument("--backends", type=_backend_list, default=None,
                        help="gpucal backends, comma separated (default: gpu,cpu with a usable GPU, else cpu)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 2, 4], help="files per batch, comma separated")
    parser.add_argument("--cpu-batch-sizes", type=_int_list, default=None,
                        help="batch sizes for the cpu backend only (default: --batch-sizes); the CPU backend "
                             "takes tens of seconds per full-frame file, so a GPU check may run it on fewer")
    parser.add_argument("--distinct", type=int, default=DEFAULT_DISTINCT,
                        help="distinct exposures generated (seeds seed..seed+n-1); a batch cycles over them")
    parser.add_argument("--romancal", action=argparse.BooleanOptionalAction, default=None,
                        help="time romancal too (default: when importable; it runs on 4096x4096 frames only)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed single-file runs per tool and I/O-floor repeats (medians reported)")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="one small untimed run per tool first (page cache; CUDA kernel cache)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default bench/results/suite_<backends>_<date>_<host>.json)")
    parser.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                        help="also write a PNG beside the JSON (needs matplotlib: the bench extra)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep exposures, outputs and logs here")
    parser.add_argument("--nvml-interval", type=float, default=0.1, help="seconds between NVML samples")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per child process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------------------- children
def run_job(job: str, spec: dict[str, Any], out_dir: Path, env: dict[str, str] | None,
            timeout: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One ``bench/_suite_child.py`` job in a fresh process: (its record, its report or None)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = out_dir / "spec.json", out_dir / "result.json"
    spec_path.write_text(json.dumps({**spec, "job": job, "result": str(result_path)}))
    record = measure_process([sys.executable, str(HERE / "suite.py"), "--child", str(spec_path)], env=env,
                             cwd=out_dir, log_path=out_dir / "child.log", timeout=timeout)
    return record, read_child_result(record, result_path)


def sampled(interval: float, func: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``func(...)``'s record with ``nvml``: what NVML saw while it ran."""
    with _nvml.NvmlSampler(interval) as sampler:
        record: dict[str, Any] = func(*args, **kwargs)
    record["nvml"] = sampler.summary()
    return record


def sampled_job(args: argparse.Namespace, job: str, spec: dict[str, Any], out_dir: Path,
                env: dict[str, str] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """:func:`run_job` with ``nvml`` added to its record."""
    with _nvml.NvmlSampler(args.nvml_interval) as sampler:
        record, report = run_job(job, spec, out_dir, env, args.timeout)
    record["nvml"] = sampler.summary()
    return record, report


def prepare(workdir: Path, ny: int, nx: int, nresultants: int, seed: int, distinct: int,
            timeout: float) -> tuple[cb.Demo, dict[str, Any]]:
    """Generate the exposure(s) in a child (its memory stays out of this process)."""
    spec = {"workdir": str(workdir), "ny": ny, "nx": nx, "nresultants": nresultants, "seed": seed,
            "distinct": distinct}
    record, made = run_job("prepare", spec, workdir / "prepare", None, timeout)
    if made is None:
        raise RuntimeError(f"generating the exposure failed:\n{record['error']}")
    demo = cb.Demo(Path(made["uncals"][0]), made["context"], made["environment"], made["generate_s"])
    return demo, made


def _brief(rec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keys = ("status", "wall_s", "run_s", "import_s", "backend", "device")
    return {**{k: rec[k] for k in keys if k in rec}, **extra, **({"error": rec["error"]} if "error" in rec else {})}


def warm_up(args: argparse.Namespace, workdir: Path, with_romancal: bool) -> dict[str, Any]:
    """One small untimed run per backend (and romancal) before anything is timed."""
    ny, nx = min(WARMUP_ROWS, args.size[0]), args.size[1]
    small, _ = prepare(workdir / "warmup", ny, nx, args.nresultants, args.seed, 1, args.timeout)
    warm: dict[str, Any] = {}
    for backend in args.backends:
        print(f"Warm-up: gpucal --backend={backend} ({ny}x{nx}) ...", file=sys.stderr)
        rec = cb.run_child("gpucal", small, args.algorithm, workdir / "warmup", f"gpucal_{backend}", args.timeout,
                           backend=backend)
        warm[backend] = _brief(rec, size=f"{ny}x{nx}")
    if with_romancal:
        print(f"Warm-up: romancal ({ny}x{nx}, dark_decay skipped) ...", file=sys.stderr)
        rec = cb.run_child("romancal", small, args.algorithm, workdir / "warmup", "romancal", args.timeout,
                           cb.ROMANCAL_SUBFRAME_SKIPS)
        warm["romancal"] = _brief(rec, size=f"{ny}x{nx}", skipped_steps=list(cb.ROMANCAL_SUBFRAME_SKIPS))
    return warm


def single_runs(args: argparse.Namespace, demo: cb.Demo, workdir: Path, tools: list[str]) -> dict[str, Any]:
    """``repeat`` single-file runs per tool (``gpucal:<backend>`` or ``romancal``), order alternating."""
    records: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
    for rep in range(args.repeat):
        for tool in tools if rep % 2 == 0 else tools[::-1]:
            print(f"Single-file run {rep + 1}/{args.repeat}: {tool} ...", file=sys.stderr)
            name, _, backend = tool.partition(":")
            label = f"{name}_{backend}_{rep}" if backend else f"{name}_{rep}"
            rec = sampled(args.nvml_interval, cb.run_child, name, demo, args.algorithm, workdir / "single", label,
                          args.timeout, backend=backend or "cpu")
            records[tool].append(rec)
            if rec["status"] != "ok":
                print(f"{tool} failed:\n{rec['error']}", file=sys.stderr)
            elif rep > 0:  # the first repeat's products feed the I/O floor and the comparison
                for product in Path(rec["log"]).parent.glob("*.asdf"):
                    product.unlink()
    return {tool: {"available": True, "repeats": recs, "summary": _summarize(recs)} for tool, recs in records.items()}


def _summarize(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """cpu_benchmark's medians, plus device milliseconds per step and the NVML figures."""
    summary = cb.summarize(recs)
    ok = [r for r in recs if r["status"] == "ok"]
    if not ok:
        return summary
    device = [r["device_ms"] for r in ok if r.get("device_ms")]
    summary["device_ms"] = ({k: round(statistics.median(d.get(k, 0.0) for d in device), 3) for k in device[0]}
                            if device else None)
    summary["nvml"] = _suite_report.nvml_overall([r.get("nvml", {}) for r in ok])
    for key in ("backend", "device", "device_bytes", "transfers_bytes", "copy_bandwidth_gbs"):
        summary[key] = ok[0].get(key)
    summary["device_bandwidth"] = _suite_report.device_bandwidth(summary)
    return summary


def io_floor(args: argparse.Namespace, demo: cb.Demo, cal: Path | None, workdir: Path) -> dict[str, Any]:
    """Read the uncal file, write a product of the cal file's size and compression; nothing else."""
    if cal is None or not cal.exists():
        return {"status": "failed", "error": "no cal file from a single-file run to size the output by"}
    wcs = cal.with_name(cal.name.replace("_cal.asdf", "_wcs.asdf"))
    spec = {"uncal": str(demo.uncal), "products": [str(p) for p in (cal, wcs) if p.exists()],
            "output_dir": str(workdir / "io_floor"), "repeat": args.repeat}
    print("I/O floor ...", file=sys.stderr)
    record, report = sampled_job(args, "io_floor", spec, workdir / "io_floor", cb.crds_environment(demo))
    if report is None:
        return record
    record.update({k: report[k] for k in ("cold", "repeats", "input_bytes", "output_bytes", "import_s")})
    record.update({k: round(report[k], 3) for k in ("read_s", "write_s", "floor_s", "read_unverified_s")})
    # what verifying the block checksums adds to the (median) read
    record["checksum_s"] = round(report["read_s"] - report["read_unverified_s"], 3)
    record.update({f"{k.removesuffix('_s')}_cold_s": round(v, 3) for k, v in report["cold"].items()})
    record["files_per_hour"] = round(3600.0 / report["floor_s"], 1) if report["floor_s"] > 0 else None
    record["products"] = [Path(p).name for p in spec["products"]]
    return record


def batches(args: argparse.Namespace, demo: cb.Demo, uncals: list[str], workdir: Path) -> dict[str, Any]:
    """For each backend and batch size N: one batch of N files (cycling over the distinct exposures)."""
    inputs_dir = workdir / "batch_inputs"
    inputs_dir.mkdir(parents=True, exist_ok=True)
    inputs = []
    for j in range(max(args.batch_sizes + (args.cpu_batch_sizes or []))):
        link = inputs_dir / child_jobs.exposure_name(j + 1)
        if not link.exists():
            link.symlink_to(uncals[j % len(uncals)])
        inputs.append(str(link))
    env = cb.crds_environment(demo)
    out: dict[str, Any] = {}
    for backend in args.backends:
        out[backend] = {}
        sizes = args.cpu_batch_sizes if backend == "cpu" and args.cpu_batch_sizes else args.batch_sizes
        for n in sizes:
            print(f"Batch: gpucal --backend={backend}, {n} file(s) ...", file=sys.stderr)
            run_dir = workdir / "batch" / f"{backend}_{n}"
            spec = {"backend": backend, "algorithm": args.algorithm, "inputs": inputs[:n],
                    "output_dir": str(run_dir / "out")}
            record, report = sampled_job(args, "batch", spec, run_dir, env)
            out[backend][str(n)] = _batch_record(record, report, n)
            if record["status"] != "ok":
                print(f"batch failed:\n{record['error']}", file=sys.stderr)
            shutil.rmtree(run_dir / "out", ignore_errors=True)
    return out


def _batch_record(record: dict[str, Any], report: dict[str, Any] | None, n: int) -> dict[str, Any]:
    record["files"] = n
    if report is None:
        return record
    if report["failed"]:
        record.update(status="failed", error="; ".join(report["failed"])[:3000])
    wall = report["batch_wall_s"]
    record.update(
        import_s=round(report["import_s"], 3),
        batch_wall_s=round(wall, 3),
        per_file_s=[round(s, 3) for s in report["per_file_s"]],
        seconds_per_file=round(wall / n, 3),
        files_per_hour=round(n / wall * 3600.0, 1),
        files_per_hour_process=round(n / record["wall_s"] * 3600.0, 1),
        device_ms_per_file=report["device_ms_per_file"],
        outputs=report["outputs"],
        rss_after_import_mib=mib(report.get("vmhwm_after_import_kib")),
    )
    return record


# ---------------------------------------------------------------------------- main
def romancal_plan(args: argparse.Namespace) -> tuple[bool, str]:
    """Whether romancal runs in this suite, and why not."""
    wanted = args.romancal if args.romancal is not None else util.find_spec("romancal") is not None
    if not wanted:
        return False, ("not asked for (--no-romancal)" if args.romancal is False
                       else f"romancal is not importable from {sys.executable}")
    if util.find_spec("romancal") is None:
        return False, f"romancal is not importable from {sys.executable}"
    if tuple(args.size) != cb.FULL_FRAME:
        ny, nx = args.size
        return False, f"romancal 1.1.0 cannot calibrate a {ny}x{nx} frame (its dark_decay needs 4096x4096)"
    return True, ""


def default_out(backends: list[str]) -> Path:
    host = socket.gethostname().split(".")[0]
    return HERE / "results" / f"suite_{'-'.join(backends)}_{dt.date.today():%Y%m%d}_{host}.json"


def run_suite(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Everything one suite run measures, as the JSON's dictionary."""
    ny, nx = args.size
    with_romancal, romancal_reason = romancal_plan(args)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "machine": cb.machine_info(),
        "device": _suite_report.device_info(),
        "software": {**cb.software_info(), **_suite_report.gpu_software()},
        "load": {"before": load()},
        "options": {"backends": args.backends, "backends_reason": args.backends_reason,
                    "batch_sizes": args.batch_sizes, "cpu_batch_sizes": args.cpu_batch_sizes or args.batch_sizes,
                    "algorithm": args.algorithm, "repeat": args.repeat,
                    "warmup": args.warmup, "romancal": with_romancal, "nvml_interval_s": args.nvml_interval},
        "notes": ["ratios are romancal/gpucal from this one run; absolute times hold for this machine only",
                  "inputs are read from the page cache (generated just before); outputs go to the page cache"],
    }
    result["machine"]["gpu"] = result["device"].get("name")
    distinct = max(1, min(args.distinct, max(args.batch_sizes)))
    print(f"Generating {distinct} {ny}x{nx}, K={args.nresultants} exposure(s) in {workdir} ...", file=sys.stderr)
    demo, made = prepare(workdir / "exposure", ny, nx, args.nresultants, args.seed, distinct, args.timeout)
    result["exposure"] = cb.describe_exposure(demo, ny, nx, args.nresultants, args.seed)
    result["exposure"].update(
        distinct_seeds=made["seeds"], extra_generate_s=round(made["extra_generate_s"], 2),
        batch_inputs=(f"a batch of N files is N symlinks with distinct names cycling over the {distinct} "
                      f"distinct exposure(s) (seeds {made['seeds']}; same references and CRDS cache)"))
    result["warmup"] = warm_up(args, workdir, with_romancal) if args.warmup else {}
    tools = [f"gpucal:{b}" for b in args.backends] + (["romancal"] if with_romancal else [])
    single = single_runs(args, demo, workdir, tools)
    result["single"] = {tool.partition(":")[2]: single[tool] for tool in tools if tool != "romancal"}
    result["romancal"] = single["romancal"] if with_romancal else {"available": False, "reason": romancal_reason}
    first_cal = next((Path(s["repeats"][0]["cal"]) for s in result["single"].values()
                      if s["repeats"][0]["status"] == "ok"), None)
    result["io_floor"] = io_floor(args, demo, first_cal, workdir)
    result["batch"] = batches(args, demo, made["uncals"], workdir)
    result["load"]["after"] = load()
    if with_romancal:
        _add_ratios(result)
    result["goals"] = _suite_report.goals(result)
    return result


def _add_ratios(result: dict[str, Any]) -> None:
    """romancal / gpucal per backend, and how close the cal files are (same work?)."""
    roman = result["romancal"]
    result["ratios"], result["comparison"] = {}, {}
    if roman["summary"]["status"] != "ok":
        return
    for backend, block in result["single"].items():
        if block["summary"]["status"] == "ok":
            result["ratios"][backend] = cb.ratios(block["summary"], roman["summary"])
            result["comparison"][backend] = cb.compare_cal(block["repeats"][0]["cal"], roman["repeats"][0]["cal"])


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the suite (or, with the hidden --child, one child's job); return the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.child:
        return child_jobs.main(args.child)
    if args.repeat < 1 or args.distinct < 1:
        parser.error("--repeat and --distinct must be >= 1")
    usable, reason = default_backends()
    if args.backends is None:
        args.backends = usable
    elif "gpu" in args.backends and "gpu" not in usable:
        parser.error(f"--backends gpu cannot run here: {reason}")
    args.backends_reason = reason
    out = args.out or default_out(args.backends)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gpucal-suite-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_suite(args, workdir)
    finally:
        if tmp is not None:
            tmp.cleanup()
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.plot:
        result["plot"] = _plot.plot(result, out.with_suffix(".png")).name
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(_suite_report.text_table(result))
    print(f"\nJSON: {out}" + (f"\nPNG:  {out.with_suffix('.png')}" if args.plot else ""))
    return 0 if _suite_report.all_ok(result) else 1


if __name__ == "__main__":
    sys.exit(main())
