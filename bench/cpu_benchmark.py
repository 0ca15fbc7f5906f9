"""CPU benchmark: gpucal's CPU backend against romancal 1.1.0, side by side, one exposure.

Usage::

    python bench/cpu_benchmark.py [--size 4096x4096] [--nresultants 8] [--seed 2026]
        [--algorithm likely|ols_cas22|likely,ols_cas22] [--repeat N]
        [--out bench/results/<name>.json] [--skip-romancal] [--workdir DIR]

One generated exposure (``gpucal.demo.run.prepare_demo``, fixed seed) and its offline CRDS
cache serve both tools.  Each tool calibrates it to the cal file (romancal with
source_catalog and tweakreg skipped) in its own fresh process, so wall time and peak
memory belong to that run alone: peak RSS is the child's ``VmHWM`` (the high-water mark
of the address space made at its ``exec``), which it reports at its end and this process
also polls; ``os.wait4``'s ``ru_maxrss`` for the pid is kept too, but Linux carries the
launcher's own high-water mark into it, so the demo is generated in a subprocess and the
cal files are compared only after the last timed run, to keep this process small.  Before
the timed runs, each tool does one small untimed warm-up run (its own process, its own
small demo) so the page cache holds both software stacks; it is reported apart, as is the
import time inside each timed child.  Per-step seconds come from the child
(:mod:`_child`).  The two cal files are then compared (median |delta slope| / err over
pixels good in both) to show the runs are like for like.

Results: a JSON file naming the machine, the software and the exposure (see
``bench/README.md``) and a text table on stdout.  Ratios are romancal / gpucal, measured
in the same invocation; absolute seconds hold for the named machine only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import Any

if __package__:
    from ._common import add_step_times, load, measure_process, read_child_result
else:  # run as a script: python bench/cpu_benchmark.py
    from _common import add_step_times, load, measure_process, read_child_result

SCHEMA = "gpucal-cpu-benchmark/1"
HERE = Path(__file__).resolve().parent
TOOLS = ("gpucal", "romancal")
PACKAGES = ("gpucal", "numpy", "scipy", "romancal", "stcal", "stpipe", "roman_datamodels", "rad", "asdf",
            "crds", "astropy", "gwcs")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
WARMUP_SIZE = (32, 4096)  # romancal's refpix needs the full 4096-column width
FULL_FRAME = (4096, 4096)
#: romancal 1.1.0's dark_decay broadcasts a (4096, 4096) correction onto the frame, so it
#: cannot calibrate fewer rows: its small warm-up skips that step (untimed, so no matter).
ROMANCAL_SUBFRAME_SKIPS = ("dark_decay",)


# ---------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    """Hostname, CPU model, cores, RAM and OS of this machine."""
    cpu_model = platform.processor() or None
    ram_kib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kib = int(line.split()[1])
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.platform()})"
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(ram_kib / 2**20, 2) if ram_kib else None,
        "os": os_name,
        "gpu": None,
    }


def software_info() -> dict[str, Any]:
    """Python and package versions of this interpreter (the children use the same one)."""
    versions: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["thread_env"] = {k: os.environ.get(k) for k in THREAD_VARS}
    versions["gpucal_git"] = git_state()
    return versions


def git_state() -> dict[str, Any] | None:
    """Commit of the gpucal checkout and its uncommitted package files (an editable install runs them)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--", "gpucal", "cpu_fallback").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "uncommitted": changed}


# ---------------------------------------------------------------------------- exposure
@dataclass
class Demo:
    """What ``prepare_demo`` made (the parts the benchmark needs)."""

    uncal: Path
    context: str
    environment: dict[str, str]
    generate_seconds: float


def prepare(workdir: Path, ny: int, nx: int, nresultants: int, seed: int) -> Demo:
    """Run ``prepare_demo`` in a subprocess (its memory must not inflate this process)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = workdir / "prepare.json", workdir / "prepared.json"
    spec_path.write_text(json.dumps({"workdir": str(workdir), "ny": ny, "nx": nx, "nresultants": nresultants,
                                     "seed": seed, "result": str(result_path)}))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--prepare", str(spec_path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"prepare_demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    made = json.loads(result_path.read_text())
    return Demo(Path(made["uncal"]), made["context"], made["environment"], made["generate_seconds"])


def _prepare_main(spec_path: str) -> int:
    from gpucal.demo.run import prepare_demo

    spec = json.loads(Path(spec_path).read_text())
    demo = prepare_demo(spec["workdir"], ny=spec["ny"], nx=spec["nx"], nresultants=spec["nresultants"],
                        seed=spec["seed"])
    Path(spec["result"]).write_text(json.dumps({"uncal": str(demo.uncal.resolve()), "context": demo.context,
                                                "environment": demo.environment,
                                                "generate_seconds": demo.generate_seconds}))
    return 0


def describe_exposure(demo: Demo, ny: int, nx: int, nresultants: int, seed: int) -> dict[str, Any]:
    """Shape, read pattern and exposure metadata of the generated uncal file."""
    import asdf

    with asdf.open(demo.uncal, lazy_load=True, memmap=False) as af:
        meta = af["roman"]["meta"]
        exposure = meta["exposure"]
        shape = list(af["roman"]["data"].shape)
        info = {
            "shape": shape,
            "ny": ny, "nx": nx, "nresultants": nresultants, "seed": seed,
            "read_pattern": [list(map(int, r)) for r in exposure["read_pattern"]],
            "frame_time_s": float(exposure["frame_time"]),
            "exposure_type": str(exposure["type"]),
            "detector": str(meta["instrument"]["detector"]),
            "optical_element": str(meta["instrument"]["optical_element"]),
        }
    info["uncal_bytes"] = demo.uncal.stat().st_size
    info["crds_context"] = demo.context
    info["generate_s"] = round(demo.generate_seconds, 2)
    return info


def crds_environment(demo: Demo) -> dict[str, str]:
    """This process's environment, pointed at the demo's offline CRDS cache."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRDS_PATH_SINGLE", "CRDS_MAPPATH", "CRDS_REFPATH", "CRDS_CFGPATH"))}
    env.update(demo.environment)
    return env


# ---------------------------------------------------------------------------- children
def run_child(tool: str, demo: Demo, algorithm: str, workdir: Path, label: str, timeout: float,
              skip_steps: tuple[str, ...] = (), backend: str = "cpu") -> dict[str, Any]:
    """Calibrate ``demo`` with ``tool`` in a fresh process; return its measurements.

    ``wall_s`` spans process start to exit (interpreter start, imports, run, exit);
    ``peak_rss_mib`` is that one child's ``VmHWM`` (its own report, else the polled one).
    ``backend`` is gpucal's ``--backend`` (romancal ignores it).  romancal has no ``gls``:
    given it, romancal runs its default (``likely``; the run's spec.json says so).
    """
    if tool == "romancal" and algorithm == "gls":
        algorithm = "likely"
    out_dir = workdir / label
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = out_dir / "spec.json", out_dir / "result.json", out_dir / "child.log"
    spec = {"tool": tool, "uncal": str(demo.uncal), "output_dir": str(out_dir), "algorithm": algorithm,
            "result": str(result_path), "skip_steps": list(skip_steps), "backend": backend}
    spec_path.write_text(json.dumps(spec))
    record = measure_process([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                             env=crds_environment(demo), cwd=out_dir, log_path=log_path, timeout=timeout)
    child = read_child_result(record, result_path)
    if child is None:
        return record
    add_step_times(record, child)
    record["cal"] = str(out_dir / demo.uncal.name.replace("_uncal", "_cal"))
    for key in ("backend", "device", "device_ms"):  # what gpucal's child says of its backend
        if key in child:
            record[key] = child[key]
    return record


def summarize(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the successful repeats (peak RSS: the largest)."""
    ok = [r for r in repeats if r["status"] == "ok"]
    if not ok:
        return {"status": "failed"}
    summary: dict[str, Any] = {"status": "ok", "n": len(ok)}
    for key in ("wall_s", "import_s", "run_s", "read_s", "write_s", "other_s", "cpu_user_s", "cpu_sys_s"):
        summary[key] = round(statistics.median(r[key] for r in ok), 3)
    summary["run_s_min"] = round(min(r["run_s"] for r in ok), 3)
    summary["peak_rss_mib"] = max(r["peak_rss_mib"] for r in ok)
    names = list(dict.fromkeys(k for r in ok for k in r["steps"]))
    summary["steps"] = {k: round(statistics.median(r["steps"].get(k, 0.0) for r in ok), 3) for k in names}
    return summary


# ---------------------------------------------------------------------------- comparison
def compare_cal(gpucal_cal: str, romancal_cal: str) -> dict[str, Any]:
    """Median |slope_gpucal - slope_romancal| / err_romancal over pixels good in both."""
    import asdf
    import numpy as np

    def load_cal(path: str) -> tuple[Any, Any, Any]:
        with asdf.open(path, lazy_load=False, memmap=False) as af:
            roman = af["roman"]
            return (np.asarray(roman["data"], dtype=np.float64), np.asarray(roman["err"], dtype=np.float64),
                    np.asarray(roman["dq"]))

    g_data, _, g_dq = load_cal(gpucal_cal)
    r_data, r_err, r_dq = load_cal(romancal_cal)
    good = (g_dq == 0) & (r_dq == 0) & np.isfinite(g_data) & np.isfinite(r_data) & (r_err > 0)
    ngood = int(good.sum())
    result: dict[str, Any] = {
        "pixels": int(g_data.size),
        "good_in_both": ngood,
        "dq_equal_fraction": round(float((g_dq == r_dq).mean()), 6),
    }
    if ngood:
        z = np.abs(g_data[good] - r_data[good]) / r_err[good]
        result.update(
            median_abs_dslope_over_err=float(np.median(z)),
            p99_abs_dslope_over_err=float(np.percentile(z, 99)),
            max_abs_dslope_over_err=float(z.max()),
            fraction_over_0p1_err=float((z > 0.1).mean()),
            median_slope_romancal=float(np.median(r_data[good])),
        )
    return result


# ---------------------------------------------------------------------------- report
def ratios(gpucal: dict[str, Any], romancal: dict[str, Any]) -> dict[str, Any]:
    """romancal / gpucal for the totals, memory and each step both ran (None where 0)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(b / a, 2) if a and b is not None and a > 0 else None

    out = {key: ratio(gpucal.get(key), romancal.get(key))
           for key in ("wall_s", "run_s", "peak_rss_mib", "import_s", "read_s", "write_s")}
    out["cpu_s"] = ratio(gpucal["cpu_user_s"] + gpucal["cpu_sys_s"], romancal["cpu_user_s"] + romancal["cpu_sys_s"])
    out["steps"] = {k: ratio(gpucal["steps"].get(k), v) for k, v in romancal["steps"].items()
                    if k in gpucal["steps"] and gpucal["steps"][k] >= 0.01}
    return out


def _row(label: str, gv: float | None, rv: float | None, fmt: str = "{:12.2f}") -> str:
    gs = fmt.format(gv) if gv is not None else f"{'-':>12s}"
    rs = fmt.format(rv) if rv is not None else f"{'-':>12s}"
    ratio = f"{rv / gv:11.2f}" if gv and rv is not None and gv >= 0.01 else f"{'':>11s}"
    return f"{label:<22s}{gs}{rs}{ratio}"


def text_table(result: dict[str, Any]) -> str:
    """The readable table printed on stdout."""
    exp, mach = result["exposure"], result["machine"]
    lines = [f"gpucal CPU benchmark on {mach['hostname']} ({mach['cpu_model']}, {mach['cores']} cores, "
             f"{mach['ram_gib']} GiB); load {result['load']['before']} -> {result['load']['after']}",
             f"exposure {exp['ny']}x{exp['nx']}, K={exp['nresultants']} resultants, read pattern "
             f"{exp['read_pattern']}, seed {exp['seed']}; repeat {result['repeat']}"]
    for name, warm in result["warmup"].items():
        if warm.get("status") == "ok":
            lines.append(f"warm-up {name}: {warm['wall_s']:.1f} s wall ({warm['size']}), untimed")
    for algorithm, block in result["runs"].items():
        g, r = block["gpucal"]["summary"], block.get("romancal", {}).get("summary", {})
        have_r = r.get("status") == "ok"
        lines += ["", f"rampfit algorithm: {algorithm}",
                  f"{'':<22s}{'gpucal cpu':>12s}{'romancal':>12s}{'ratio r/g':>11s}"]

        if g.get("status") != "ok":
            lines.append("gpucal run failed; see the JSON")
            continue
        names = list(dict.fromkeys([*g["steps"], *(r.get("steps", {}) if have_r else {})]))
        rs = r.get("steps", {}) if have_r else {}
        rcpu = r["cpu_user_s"] + r["cpu_sys_s"] if have_r else None
        lines.append(_row("read (s)", g["read_s"], r.get("read_s")))
        lines += [_row(f"  {name}", g["steps"].get(name), rs.get(name)) for name in names]
        lines += [
            _row("write (s)", g["write_s"], r.get("write_s")),
            _row("other (s)", g["other_s"], r.get("other_s")),
            _row("run, read..write (s)", g["run_s"], r.get("run_s")),
            _row("import (s)", g["import_s"], r.get("import_s")),
            _row("process wall (s)", g["wall_s"], r.get("wall_s")),
            _row("cpu user+sys (s)", g["cpu_user_s"] + g["cpu_sys_s"], rcpu),
            _row("peak RSS (MiB)", g["peak_rss_mib"], r.get("peak_rss_mib"), "{:12.0f}"),
        ]
        cmp = block.get("comparison")
        if cmp and "median_abs_dslope_over_err" in cmp:
            lines.append(f"cal files: |dslope|/err median {cmp['median_abs_dslope_over_err']:.3g}, "
                         f"p99 {cmp['p99_abs_dslope_over_err']:.3g}, max {cmp['max_abs_dslope_over_err']:.3g} over "
                         f"{cmp['good_in_both']} pixels good in both; dq equal on "
                         f"{100 * cmp['dq_equal_fraction']:.2f}% of pixels")
        elif block.get("romancal", {}).get("available") is False:
            lines.append(f"romancal: {block['romancal']['reason']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"{text!r} is not NY or NYxNX")


def romancal_status(skip: bool) -> tuple[bool, str]:
    """Whether romancal can be run from this interpreter, and why not."""
    if skip:
        return False, "skipped (--skip-romancal)"
    if util.find_spec("romancal") is None:
        return False, f"romancal is not importable from {sys.executable}; run with the oracle venv"
    return True, ""


def default_out() -> Path:
    host = socket.gethostname().split(".")[0]
    return HERE / "results" / f"cpu_{dt.date.today():%Y%m%d}_{host}.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=(4096, 4096), help="NYxNX (default 4096x4096)")
    parser.add_argument("--nresultants", type=int, default=8, help="resultants K (default 8)")
    parser.add_argument("--seed", type=int, default=2026, help="demo seed (default 2026)")
    parser.add_argument("--algorithm", default="likely",
                        help="rampfit algorithm(s), comma separated: likely, ols_cas22, gls (default likely; "
                             "romancal runs likely for gls)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per tool and algorithm (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/cpu_<date>_<host>.json)")
    parser.add_argument("--skip-romancal", action="store_true", help="time gpucal only")
    parser.add_argument("--no-warmup", action="store_true", help="skip the small untimed warm-up runs")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the demo and outputs here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per child run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    return parser


def warm_up(workdir: Path, tools: tuple[str, ...], algorithm: str, nresultants: int, seed: int,
            timeout: float) -> dict[str, Any]:
    """One small untimed run per tool, each in its own process, before anything is timed."""
    wy, wx = WARMUP_SIZE
    small = prepare(workdir / "warmup", wy, wx, nresultants, seed)
    warmup: dict[str, Any] = {}
    for tool in tools:
        skips = ROMANCAL_SUBFRAME_SKIPS if tool == "romancal" else ()
        print(f"Warm-up: {tool} ({wy}x{wx}) ...", file=sys.stderr)
        rec = run_child(tool, small, algorithm, workdir / "warmup", f"{tool}_warmup", timeout, skips)
        warmup[tool] = {"size": f"{wy}x{wx}", "status": rec["status"], "wall_s": rec["wall_s"],
                        "run_s": rec.get("run_s"), "import_s": rec.get("import_s"), "skipped_steps": list(skips)}
        if rec["status"] != "ok":
            print(f"{tool} warm-up failed:\n{rec['error']}", file=sys.stderr)
    return warmup


def timed_runs(demo: Demo, workdir: Path, tools: tuple[str, ...], algorithm: str, repeat: int,
               timeout: float) -> dict[str, Any]:
    """``repeat`` timed runs per tool (who goes first alternates); the block for one algorithm."""
    records: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
    for rep in range(repeat):
        for tool in tools if rep % 2 == 0 else tools[::-1]:
            print(f"Timed run {rep + 1}/{repeat}: {tool}, {algorithm} ...", file=sys.stderr)
            rec = run_child(tool, demo, algorithm, workdir, f"{tool}_{algorithm}_{rep}", timeout)
            records[tool].append(rec)
            if rec["status"] != "ok":
                print(f"{tool} failed:\n{rec['error']}", file=sys.stderr)
            elif rep > 0:  # only the first repeat's products are compared: free the disk
                for product in Path(rec["log"]).parent.glob("*.asdf"):
                    product.unlink()
    block = {tool: {"available": True, "repeats": recs, "summary": summarize(recs)} for tool, recs in records.items()}
    if "romancal" in block and all(block[t]["summary"]["status"] == "ok" for t in tools):
        block["ratios"] = ratios(block["gpucal"]["summary"], block["romancal"]["summary"])
    return block


def main(argv: list[str] | None = None) -> int:
    """Benchmark (or, with the hidden --child / --prepare, one child's job); return the exit status."""
    args = build_parser().parse_args(argv)
    if args.child:
        sys.path.insert(0, str(HERE))
        from _child import main as child_main

        return child_main(args.child)
    if args.prepare:
        return _prepare_main(args.prepare)

    algorithms = [a.strip() for a in args.algorithm.split(",") if a.strip()]
    if not algorithms or any(a not in ("likely", "ols_cas22", "gls") for a in algorithms) or args.repeat < 1:
        build_parser().error("--algorithm takes likely, ols_cas22 and/or gls; --repeat must be >= 1")
    ny, nx = args.size
    romancal_ok, reason = romancal_status(args.skip_romancal)
    with_romancal = romancal_ok and args.size == FULL_FRAME
    if romancal_ok and not with_romancal:
        reason = (f"romancal 1.1.0 cannot calibrate a {ny}x{nx} frame (dark_decay needs 4096x4096): "
                  "it is warmed up only")
    tools = TOOLS if with_romancal else ("gpucal",)
    if not with_romancal:
        print(f"romancal: {reason}", file=sys.stderr)
    out = args.out or default_out()

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gpucal-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": [sys.executable, *sys.argv],
            "machine": machine_info(),
            "software": software_info(),
            "load": {"before": load()},
            "repeat": args.repeat,
            "notes": "ratios are romancal/gpucal from this one invocation; absolute times hold for this machine only",
        }
        print(f"Preparing the {ny}x{nx}, K={args.nresultants} demo exposure in {workdir} ...", file=sys.stderr)
        demo = prepare(workdir / "exposure", ny, nx, args.nresultants, args.seed)
        result["exposure"] = describe_exposure(demo, ny, nx, args.nresultants, args.seed)
        result["warmup"] = {} if args.no_warmup else warm_up(
            workdir, TOOLS if romancal_ok else ("gpucal",), algorithms[0], args.nresultants, args.seed, args.timeout)
        result["runs"] = {a: timed_runs(demo, workdir, tools, a, args.repeat, args.timeout) for a in algorithms}
        result["load"]["after"] = load()
        for block in result["runs"].values():  # after the last timed run: keeps this process small
            if not with_romancal:
                block["romancal"] = {"available": False, "reason": reason}
            elif "ratios" in block:
                block["comparison"] = compare_cal(block["gpucal"]["repeats"][0]["cal"],
                                                  block["romancal"]["repeats"][0]["cal"])
    finally:
        if tmp is not None:
            tmp.cleanup()

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(text_table(result))
    print(f"\nJSON: {out}")
    failed = [a for a, b in result["runs"].items() for t in tools if b[t]["summary"]["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
