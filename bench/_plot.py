"""The suite's PNG: per-step stacked bars (left) and files per hour against batch size (right).

Left: one bar per tool of a single file's host seconds, stacked read, steps, write, other
(medians over repeats); a backend that timed its steps on the device (CUDA events) gets a
second, hatched bar of those device seconds beside it.  Right: files per hour (batch wall
time, in-process) against files per batch, one line per backend, with the I/O floor's
files per hour and the 3000 files/hour goal as horizontal lines.  Matplotlib's Agg backend
(no display needed); matplotlib comes with the ``bench`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot"]

_OTHER_PARTS = ("read", "write", "other")


def _segments(summary: dict[str, Any]) -> dict[str, float]:
    parts = {"read": summary.get("read_s") or 0.0}
    parts.update(summary.get("steps", {}))
    parts.update(write=summary.get("write_s") or 0.0, other=max(0.0, summary.get("other_s") or 0.0))
    return parts


def plot(result: dict[str, Any], path: Path) -> Path:
    """Write the figure for ``result`` (the suite's JSON dictionary) to ``path``; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, dict[str, float], bool]] = []
    for backend, block in result.get("single", {}).items():
        summary = block["summary"]
        if summary.get("status") != "ok":
            continue
        bars.append((f"gpucal\n{backend}", _segments(summary), False))
        if summary.get("device_ms"):
            bars.append((f"gpucal\n{backend}\n(device)", {k: v / 1000.0 for k, v in summary["device_ms"].items()}, True))
    roman = result.get("romancal", {})
    if roman.get("available") and roman["summary"].get("status") == "ok":
        bars.append(("romancal", _segments(roman["summary"]), False))
    steps = [k for k in dict.fromkeys(k for _, parts, _ in bars for k in parts) if k not in _OTHER_PARTS]
    names = ["read", *steps, "write", "other"]  # stacked bottom to top
    cmap = plt.get_cmap("tab20")
    colours = {n: cmap(i % 20) for i, n in enumerate(steps)}
    colours.update(read="0.35", write="0.6", other="0.85")

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    for x, (_, parts, device) in enumerate(bars):
        bottom = 0.0
        for name in names:
            value = parts.get(name, 0.0)
            if value <= 0:
                continue
            left.bar(x, value, width=0.6, bottom=bottom, color=colours[name], edgecolor="white", linewidth=0.5,
                     hatch="//" if device else None)
            bottom += value
        left.annotate(f"{bottom:.1f} s", (x, bottom), ha="center", va="bottom", fontsize=8)
    left.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    left.set_xlim(-0.7, max(len(bars), 2) - 0.3)
    left.set_ylabel("seconds, one file (host; hatched: device)")
    left.set_title("Per-step time, single file")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
    left.legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if not bars:
        left.text(0.5, 0.5, "no successful single-file run", ha="center", transform=left.transAxes)

    _throughput(right, result)
    exp, dev = result["exposure"], result["device"]
    fig.suptitle(f"gpucal bench: {exp['ny']}x{exp['nx']}, K={exp['nresultants']}, {exp['crds_context']}; "
                 f"{result['machine']['cpu_model']} ({result['machine']['cores']} cores); GPU {dev['name']}; "
                 f"{result['created'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput(ax: Any, result: dict[str, Any]) -> None:
    values: list[float] = []
    for backend, runs in result.get("batch", {}).items():
        points = sorted((int(n), r["files_per_hour"]) for n, r in runs.items() if r.get("status") == "ok")
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"gpucal {backend}")
            values += [p[1] for p in points]
            for n, v in points:
                ax.annotate(f"{v:.0f}", (n, v), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    floor = result.get("io_floor", {}).get("files_per_hour")
    if floor:
        ax.axhline(floor, color="0.3", linestyle="--", label=f"I/O floor ({floor:.0f}/h)")
        values.append(floor)
    goal = result.get("goals", {}).get("files_per_hour", {}).get("goal_min")
    if goal:
        ax.axhline(goal, color="tab:red", linestyle=":", label=f"goal per GPU ({goal:.0f}/h)")
        values.append(goal)
    if values and max(values) / max(min(values), 1e-9) > 20:
        ax.set_yscale("log")
    sizes = sorted({int(n) for runs in result.get("batch", {}).values() for n in runs})
    if sizes:
        ax.set_xticks(sizes)
    ax.set_xlabel("files per batch (one process)")
    ax.set_ylabel("files per hour")
    ax.set_title("Batch throughput")
    ax.legend(fontsize=8, frameon=False)
