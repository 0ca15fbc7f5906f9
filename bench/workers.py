"""Files per hour against the number of Dask workers, with the I/O floor beside it.

Usage::

    python bench/workers.py [--size 256x512] [--nresultants 6] [--files 8] [--workers 1,2,4]
        [--backend cpu] [--files-per-worker 1] [--repeat 3] [--out bench/results/<name>.json]
        [--plot | --no-plot] [--workdir DIR]

Distinct exposures (the demo's, a different constant added to each; one reference set,
one local CRDS cache) are calibrated by ``gpucal.calibrate_many`` on a local cluster
(:func:`gpucal.scale.cluster.start_local_cluster`, the cluster ``strun --workers N``
starts) of 1, 2, 4, ... worker processes.  Each cluster is warmed up first (one untimed
file per worker: imports, backend, references), then the timed run calibrates every file
(``clobber``: nothing skipped); files per hour = files x 3600 / wall seconds of that run.

The I/O floor is what reading the uncal file and writing its products costs with no
calibration at all (``gpucal.io.open_model`` + ``write_model`` of the cal and wcs
products, warm page cache, median of ``--repeat``); its files per hour are given for one
process and for ``min(workers, cores)`` processes side by side, the ceiling the workers'
throughput cannot pass on this machine.  The JSON (``schema: gpucal-bench-workers/1``)
names the machine; the PNG plots both.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __package__:
    from . import cpu_benchmark as cb
else:  # run as a script: python bench/workers.py
    import cpu_benchmark as cb

__all__ = ["SCHEMA", "main", "run"]

SCHEMA = "gpucal-bench-workers/1"
log = logging.getLogger("bench.workers")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/workers.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=cb.parse_size, default=(256, 512), help="frame NYxNX (or NY)")
    parser.add_argument("--nresultants", type=int, default=6, help="resultants K")
    parser.add_argument("--files", type=int, default=8, help="exposures per timed run")
    parser.add_argument("--workers", type=_ints, default=[1, 2, 4], help="worker counts, comma separated")
    parser.add_argument("--backend", choices=("cpu", "gpu", "auto"), default="cpu")
    parser.add_argument("--files-per-worker", type=int, default=1, help="threads per worker (files held at once)")
    parser.add_argument("--repeat", type=int, default=3, help="I/O floor repeats (median)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/...)")
    parser.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True, help="also write the PNG")
    parser.add_argument("--workdir", type=Path, default=None, help="keep exposures and outputs here")
    return parser


def prepare(workdir: Path, ny: int, nx: int, nresultants: int, seed: int, files: int) -> tuple[list[Path], Any]:
    """``files`` distinct exposures and the demo's CRDS environment (set in os.environ)."""
    import numpy as np
    import roman_datamodels.datamodels as rdm

    from gpucal.demo.run import prepare_demo

    demo = prepare_demo(workdir / "demo", ny=ny, nx=nx, nresultants=nresultants, seed=seed)
    os.environ.update(demo.environment)  # before the workers start: they inherit it
    inputs = []
    with rdm.open(demo.uncal) as model:
        data = np.asarray(model.data).copy()
        for i in range(files):
            model.data = data + np.uint16(3 * i)
            path = workdir / "inputs" / f"w{i:03d}_uncal.asdf"
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save(path)
            inputs.append(path)
    return inputs, demo


def io_floor(uncal: Path, products: list[Path], out_dir: Path, repeat: int) -> dict[str, Any]:
    """Seconds to read ``uncal`` and write ``products`` again (no calibration); medians."""
    import gpucal.io

    models = [gpucal.io.open_model(p) for p in products]
    cycles = []
    for rep in range(repeat + 1):  # the first cycle warms the page cache and imports: not counted
        t0 = time.perf_counter()
        gpucal.io.open_model(uncal).close()
        t1 = time.perf_counter()
        for model, src in zip(models, products, strict=True):
            gpucal.io.write_model(model, out_dir / f"floor{rep}_{src.name}")
        t2 = time.perf_counter()
        if rep:
            cycles.append({"read_s": t1 - t0, "write_s": t2 - t1, "floor_s": t2 - t0})
    return {k: statistics.median(c[k] for c in cycles) for k in ("read_s", "write_s", "floor_s")} | {
        "repeats": cycles, "input_bytes": uncal.stat().st_size,
        "output_bytes": sum(p.stat().st_size for p in products)}


def time_workers(n_workers: int, inputs: list[Path], out_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One cluster of ``n_workers``: warm-up, then the timed run over every input."""
    from distributed import Client, wait

    logging.getLogger("distributed").setLevel(logging.WARNING)  # (set up by the import)
    import gpucal
    from gpucal.scale.cluster import start_local_cluster

    t0 = time.perf_counter()
    cluster = start_local_cluster(n_workers, backend=args.backend, files_per_worker=args.files_per_worker,
                                  dashboard_address=":0")
    try:
        with Client(cluster) as client:
            client.wait_for_workers(n_workers)
            start_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            # warm-up: one file on each worker (imports, backend, references), outputs elsewhere
            warm = [client.submit(_warm, str(inputs[i % len(inputs)]), args.backend, str(out_dir / "warm"),
                                  workers=[w], pure=False) for i, w in enumerate(client.scheduler_info()["workers"])]
            wait(warm)
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            records = gpucal.calibrate_many(inputs, client, backend=args.backend, output_dir=str(out_dir / "run"),
                                            clobber=True)
            wall = time.perf_counter() - t0
    finally:
        cluster.close()
    done = [r for r in records if r.status == "done"]
    per_file = [r.seconds for r in done]
    return {
        "workers": n_workers, "files": len(inputs), "done": len(done),
        "failed": [r.error for r in records if r.status == "failed"],
        "wall_s": wall, "files_per_hour": len(done) * 3600 / wall if wall else None,
        "seconds_per_file_median": statistics.median(per_file) if per_file else None,
        "read_s_median": statistics.median(r.step_seconds.get("read", 0) for r in done) if done else None,
        "write_s_median": statistics.median(r.step_seconds.get("write", 0) for r in done) if done else None,
        "by_worker": {w: sum(1 for r in done if r.worker == w) for w in sorted({r.worker or "" for r in done})},
        "cluster_start_s": start_s, "warmup_s": warm_s,
    }


def _warm(path: str, backend: str, out_dir: str) -> str:
    from gpucal.pipeline import ExposurePipeline
    from gpucal.work import calibrate_file

    return calibrate_file(path, ExposurePipeline, {"backend": backend, "output_dir": out_dir}).status


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ny, nx = args.size
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    inputs, _demo = prepare(workdir, ny, nx, args.nresultants, args.seed, args.files)
    prepare_s = time.perf_counter() - t0
    from gpucal.pipeline import ExposurePipeline
    from gpucal.work import calibrate_file

    one = calibrate_file(str(inputs[0]), ExposurePipeline, {"backend": args.backend, "output_dir": str(workdir / "one")})
    floor = io_floor(inputs[0], [Path(p) for p in one.outputs], workdir / "floor", args.repeat)
    cores = os.cpu_count() or 1
    runs = [time_workers(n, inputs, workdir / f"w{n}", args) for n in args.workers]
    for rec in runs:
        rec["io_floor_files_per_hour"] = min(rec["workers"], cores) * 3600 / floor["floor_s"]
    return {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": cb.machine_info(),
        "software": cb.software_info(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "options": {"size": [ny, nx], "nresultants": args.nresultants, "files": args.files,
                    "workers": args.workers, "backend": args.backend, "files_per_worker": args.files_per_worker,
                    "repeat": args.repeat, "seed": args.seed},
        "prepare_s": prepare_s,
        "single_file": {"seconds": one.seconds, "step_seconds": one.step_seconds, "backend": one.backend},
        "io_floor": floor | {"files_per_hour_one_process": 3600 / floor["floor_s"]},
        "runs": runs,
        "notes": ["files per hour = files x 3600 / wall of calibrate_many on a warmed-up cluster",
                  "io_floor_files_per_hour = min(workers, cores) x 3600 / I/O floor seconds: the ceiling",
                  "a shared machine: other jobs' load (1, 5, 15-minute load averages before and after) slows every figure"],
    }


def plot(result: dict[str, Any], path: Path) -> Path:
    """Files per hour against workers, with the I/O-floor ceiling beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    workers = [r["workers"] for r in runs]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(workers, [r["files_per_hour"] for r in runs], "o-", label=f"gpucal ({result['options']['backend']})")
    ax.plot(workers, [r["io_floor_files_per_hour"] for r in runs], "s--", color="grey",
            label="I/O floor (read + write only)")
    ax.set_xlabel("Dask workers (processes)")
    ax.set_ylabel("files per hour")
    ax.set_xticks(workers)
    ax.set_yscale("log")
    mach = result["machine"]
    ny, nx = result["options"]["size"]
    ax.set_title(f"{mach['hostname']}: {mach['cores']} cores, {ny}x{nx}x{result['options']['nresultants']}, "
                 f"{result['options']['files']} files", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="gpucal-bench-workers-") as tmp:
            result = run(args, Path(tmp))
    out = args.out or HERE / "results" / (
        f"workers_{args.backend}_{dt.date.today():%Y%m%d}_{socket.gethostname().split('.')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {out}")
    floor = result["io_floor"]
    print(f"I/O floor {floor['floor_s']:.3f} s per file ({floor['read_s']:.3f} read + {floor['write_s']:.3f} write)")
    for rec in result["runs"]:
        print(f"{rec['workers']} workers: {rec['files_per_hour']:.0f} files/h "
              f"(I/O floor ceiling {rec['io_floor_files_per_hour']:.0f}), {rec['done']}/{rec['files']} done")
    if args.plot:
        print(f"wrote {plot(result, out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
