"""Ramp-fit science figures of the three algorithms on demo exposures, and their figure.

Usage::

    python bench/ramp_science.py [--size 4096x4096] [--exposures demo,crowded]
                                 [--algorithms gls,ols_cas22,likely] [--workdir DIR [--reuse]]
                                 [--out bench/results/ramp_science_<size>.json]

For each exposure (``EXPOSURES``: the demo's 8-resultant pattern at a new seed, and a
crowded field with 6 resultants whose last one has 6 reads, so that pixels can reach full
well inside it) it writes the demo (:func:`gpucal.demo.run.prepare_demo`), runs
``roman_elp`` on the CPU backend once per algorithm (each in its own process, the CRDS
environment of the demo), scores every cal file against the truth
(:mod:`gpucal.demo.score`), and writes a JSON file, a Markdown table (stdout) and a PNG
beside the JSON: median pull and its robust width against the true rate, one line per
algorithm, one panel per exposure.  With ``--reuse``, cal files already in ``--workdir``
are scored again instead of recomputed (the exposures are regenerated: same seeds, same
data).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("gls", "ols_cas22", "likely")
#: name: (nresultants, read pattern or None for the demo's, seed, star-density multiplier)
EXPOSURES: dict[str, tuple[int, list[list[int]] | None, int, float]] = {
    "demo": (8, None, 2027, 1.0),
    "crowded": (6, [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15, 16, 17],
                    [18, 19, 20, 21, 22, 23]], 2028, 4.0),
}  # fmt: skip
#: Extra ``strun`` arguments per algorithm.  ``ols_cas22`` runs as gpucal's previous default
#: did (its jump step at 4.5 sigma; the step's default is now 5.5, the coarse pass before
#: gls's own search), so its column is the baseline issue 12 measures gls against.
ALGORITHM_ARGS: dict[str, list[str]] = {"gls": [], "ols_cas22": ["--steps.jump.rejection_threshold=4.5"],
                                        "likely": []}
RATE_EDGES = np.geomspace(0.3, 3e4, 21)  # DN/s
STYLES = {"gls": {"lw": 2.2, "color": "tab:blue"}, "ols_cas22": {"ls": "--", "color": "tab:orange"},
          "likely": {"ls": ":", "color": "tab:green", "lw": 2.0}}


def prepare(workdir: Path, name: str, ny: int, nx: int) -> Any:
    """The demo exposure ``name`` of :data:`EXPOSURES` in ``workdir / name``."""
    from gpucal.demo.run import prepare_demo

    nres, pattern, seed, crowding = EXPOSURES[name]
    return prepare_demo(workdir / name, ny=ny, nx=nx, nresultants=nres, seed=seed, read_pattern=pattern,
                        crowding=crowding)


def run_cal(demo: Any, algorithm: str, out: Path, backend: str = "cpu", timeout: float = 3600) -> Path:
    """Run roman_elp on the demo in a subprocess; return the cal file's path."""
    import os

    out.mkdir(parents=True, exist_ok=True)
    args = ["roman_elp", str(demo.uncal), f"--backend={backend}", f"--output_dir={out}",
            f"--steps.rampfit.algorithm={algorithm}", *ALGORITHM_ARGS.get(algorithm, [])]
    code = f"import sys; from gpucal.cli import run_strun; sys.exit(run_strun({args!r}))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    env.update(demo.environment)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=out, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"roman_elp {algorithm} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out / demo.uncal.name.replace("_uncal", "_cal")


def readnoise_of(demo: Any) -> np.ndarray:
    """The READNOISE reference of the demo (full frame, DN)."""
    import asdf

    with asdf.open(demo.references["readnoise"], lazy_load=False, memmap=False) as af:
        return np.asarray(af["roman"]["data"], dtype=np.float64)


def table(result: dict[str, Any]) -> str:
    """The Markdown table of ``result`` (one column per exposure and algorithm)."""
    cols = [(e, a) for e, block in result["exposures"].items() for a in block["scores"]]
    head = "| figure (unflagged pixels unless stated) | " + " | ".join(f"{a} ({e})" for e, a in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]

    def row(label: str, fmt: Any) -> None:
        vals = [fmt(result["exposures"][e]["scores"][a]) for e, a in cols]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    row("median of (slope - true)/err", lambda s: f"{s['pull_median']:+.4f}")
    row("robust std of that pull", lambda s: f"{s['pull_std']:.4f}")
    row("cosmic rays >= 100 e- flagged", lambda s: f"{s['cr_found']:.4f}")
    row("cosmic rays of 100-300 e- flagged", lambda s: f"{s['cr_found_100_300']:.4f}")
    row("... whose recorded charge is >= 100 e-", lambda s: f"{s['cr_found_recorded']:.4f}")
    row("false jumps (clean pixels with JUMP_DET)", lambda s: f"{s['false_jumps']:,}")
    row("full-well pixels with SATURATED (all)", lambda s: f"{s['sat_recall']:.3f} of {s['n_full_well']}")
    row("... where saturation moved a resultant >= 1 sigma",
        lambda s: f"{s['sat_required_found']:.3f} of {s['n_sat_required']}")
    row("SATURATED on pixels that never reached full well", lambda s: f"{s['sat_false']} of {s['n_never']:,}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Median pull and robust width against the true rate: one panel per exposure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exposures = list(result["exposures"])
    fig, axes = plt.subplots(2, len(exposures), figsize=(6 * len(exposures), 7), sharex=True, squeeze=False)
    centres = np.sqrt(RATE_EDGES[1:] * RATE_EDGES[:-1])
    for col, name in enumerate(exposures):
        block = result["exposures"][name]
        curves = block["pull_by_rate"]
        for algorithm in sorted(curves, key=lambda a: a == "gls"):  # gls drawn last, on top
            med, width = np.array(curves[algorithm]["median"], float), np.array(curves[algorithm]["width"], float)
            style = dict(marker="o", ms=3, label=algorithm, **STYLES.get(algorithm, {}))
            axes[0, col].plot(centres, med, **style)
            axes[1, col].plot(centres, width, **style)
        axes[0, col].axhline(0.0, color="k", lw=0.6)
        axes[0, col].axhspan(-0.005, 0.005, color="0.85", zorder=0)
        axes[1, col].axhline(1.0, color="k", lw=0.6)
        axes[0, col].set_title(f"{name}: {block['nresultants']} resultants, seed {block['seed']}")
        axes[0, col].set_ylabel("median of (slope - true) / err")
        axes[1, col].set_ylabel("robust std of the pull")
        axes[1, col].set_xlabel("true rate (DN/s)")
        axes[1, col].set_xscale("log")
        axes[0, col].legend(fontsize=8)
    fig.suptitle(f"gpucal ramp fits against the demo's truth ({result['size']}, unflagged pixels)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replot(json_path: Path) -> Path:
    """The PNG of a JSON this script wrote, beside it."""
    return plot(json.loads(json_path.read_text()), json_path.with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    from gpucal.demo.score import pull_by_rate, read_cal, score
    from gpucal.demo.synth import Truth

    parser = argparse.ArgumentParser(prog="ramp_science", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4096x4096", help="NYxNX of the exposures (default 4096x4096)")
    parser.add_argument("--exposures", default=",".join(EXPOSURES), help="comma separated: demo, crowded")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma separated ramp fits")
    parser.add_argument("--workdir", type=Path, help="keep exposures and cal files here (default: temporary)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/ramp_science_<size>.json)")
    parser.add_argument("--reuse", action="store_true", help="score cal files already in --workdir")
    args = parser.parse_args(argv)
    ny, nx = (int(v) for v in args.size.lower().split("x"))
    names = [e for e in args.exposures.split(",") if e]
    algorithms = [a for a in args.algorithms.split(",") if a]
    if any(e not in EXPOSURES for e in names) or any(a not in ALGORITHMS for a in algorithms):
        parser.error(f"exposures from {list(EXPOSURES)}, algorithms from {list(ALGORITHMS)}")
    if args.reuse and not args.workdir:
        parser.error("--reuse needs --workdir")
    out = args.out or ROOT / "bench" / "results" / f"ramp_science_{ny}x{nx}.json"
    with tempfile.TemporaryDirectory(prefix="ramp_science_") as tmp:
        workdir = args.workdir or Path(tmp)
        result: dict[str, Any] = {"size": f"{ny}x{nx}", "exposures": {}}
        for name in names:
            demo = prepare(workdir, name, ny, nx)
            truth = Truth.load(demo.truth)
            readnoise = readnoise_of(demo)
            nres, _, seed, crowding = EXPOSURES[name]
            block: dict[str, Any] = {"nresultants": nres, "seed": seed, "crowding": crowding,
                                     "read_pattern": [list(r) for r in truth.read_pattern], "scores": {},
                                     "pull_by_rate": {}, "seconds": {}}
            for algorithm in algorithms:
                start = time.perf_counter()
                done = workdir / name / algorithm / demo.uncal.name.replace("_uncal", "_cal")
                path = done if args.reuse and done.exists() else run_cal(demo, algorithm, workdir / name / algorithm)
                cal = read_cal(path)
                block["seconds"][algorithm] = round(time.perf_counter() - start, 1)
                block["scores"][algorithm] = score(cal, truth, readnoise)._asdict()
                med, width, count = pull_by_rate(cal, truth, RATE_EDGES)
                block["pull_by_rate"][algorithm] = {"median": med.tolist(), "width": width.tolist(),
                                                    "count": count.tolist()}
                print(f"{name} {algorithm}: {block['scores'][algorithm]}", file=sys.stderr)
            result["exposures"][name] = block
    result["rate_edges"] = RATE_EDGES.tolist()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, allow_nan=True))
    png = plot(result, out.with_suffix(".png"))
    print(table(result))
    print(f"\nwrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
