"""The short summary of ``bench/gpu_check.sh``: ``summary.md`` and ``summary.json``.

Reads what the script left in its work folder (``phases.tsv``: name, status, exit code,
seconds, command per phase; ``probe.txt``; ``logs/``: each phase's log and pytest's junit
XML; ``bench/bench.json``: the suite's JSON) and writes, into ``--out``, one page a person
reads first: the device, each phase's outcome, the tests, the full-frame agreement lines and
the bench's headline figures (per-step device time, end to end, I/O floor, files per hour
per batch size, NVML power and utilisation, the goals as measured, never asserted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

AGREEMENT_LINE = re.compile(r"^(ols_cas22|likely)\b.*$", re.MULTILINE)


def read_phases(path: Path) -> list[dict[str, Any]]:
    phases = []
    for line in path.read_text().splitlines():
        name, status, rc, seconds, command = (line.split("\t") + [""] * 5)[:5]
        phases.append({"name": name, "status": status, "rc": int(rc) if rc.strip() else None,
                       "seconds": int(seconds or 0), "command": command})
    return phases


def junit(path: Path) -> dict[str, Any] | None:
    """Counts of a pytest junit XML, and the failed and skipped tests with their messages."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": f"unreadable junit XML: {exc}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {"error": "no testsuite in the junit XML"}
    out: dict[str, Any] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    out["not_passed"] = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or node.text or "").strip().splitlines()
                out["not_passed"].append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": kind,
                                          "message": (message[0] if message else "")[:300]})
    return out


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def bench_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a suite JSON (see bench/README.md for their meaning)."""
    options = result.get("options", {})
    figures: dict[str, Any] = {"device": result.get("device", {}).get("name"),
                               "backends": options.get("backends"), "backends_reason": options.get("backends_reason"),
                               "exposure": result.get("exposure", {}).get("shape"), "single": {}, "batch": {}}
    for backend, block in result.get("single", {}).items():
        summary = block.get("summary", {})
        nvml = summary.get("nvml") or {}
        figures["single"][backend] = {
            "status": summary.get("status"),
            "run_s": summary.get("run_s"), "wall_s": summary.get("wall_s"),
            "read_s": summary.get("read_s"), "write_s": summary.get("write_s"),
            "steps_s": summary.get("steps"), "device_ms": summary.get("device_ms"),
            "copy_bandwidth_gbs": summary.get("copy_bandwidth_gbs"),
            "nvml": {k: nvml.get(k) for k in ("available", "reason", "device", "utilization_gpu_pct", "power_w",
                                              "energy_j", "memory_peak_above_baseline_mib", "unsupported")
                     if k in nvml},
        }
    floor = result.get("io_floor", {})
    figures["io_floor"] = {k: floor.get(k) for k in ("status", "floor_s", "floor_cold_s", "read_s", "write_s",
                                                     "files_per_hour")}
    for backend, sizes in result.get("batch", {}).items():
        figures["batch"][backend] = {
            n: {k: rec.get(k) for k in ("status", "files_per_hour", "seconds_per_file", "batch_wall_s",
                                        "device_ms_per_file")}
            | {"nvml": {k: (rec.get("nvml") or {}).get(k) for k in ("utilization_gpu_pct", "power_w", "energy_j")}}
            for n, rec in sizes.items()
        }
    figures["goals"] = result.get("goals")
    return figures


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# gpucal GPU check — {summary['created']}", ""]
    mode = "GPU" if summary["gpu"] else "dry (no GPU phases)"
    lines += [f"* host: {summary['host']}; mode: **{mode}**; device: {summary.get('device') or 'none'}",
              f"* GPU probe: {summary['probe']}",
              f"* time: {summary['elapsed_s']} s of a {summary['budget_s']} s budget; "
              f"overall: **{'ok' if summary['ok'] else 'FAILED'}**", "", "## Phases", "",
              "| phase | status | s |", "|---|---|---|"]
    lines += [f"| {p['name']} | {p['status']} | {p['seconds']} |" for p in summary["phases"]]
    for key, title in (("gpu_tests", "GPU tests (GPUCAL_REQUIRE_GPU=1)"), ("agreement", "Full-frame GPU/CPU agreement")):
        tests = summary.get(key)
        if tests is None:
            continue
        lines += ["", f"## {title}", ""]
        if "error" in tests:
            lines.append(f"* {tests['error']}")
            continue
        lines.append(f"* {tests['tests']} tests: {tests['failures']} failed, {tests['errors']} errors, "
                     f"{tests['skipped']} skipped")
        lines += [f"  * {t['kind']}: `{t['test']}`: {t['message']}" for t in tests["not_passed"][:20]]
    if summary.get("agreement_lines"):
        lines += ["", "Agreement figures (per algorithm):", "", "```", *summary["agreement_lines"], "```"]
    bench = summary.get("bench")
    if bench:
        lines += ["", "## Bench", "", f"device {bench['device']}, exposure {bench['exposure']}, backends "
                  f"{bench.get('backends')} ({bench.get('backends_reason')})", ""]
        lines += ["| backend | end to end (run) s | process s | read s | write s | device ms (sum of steps) |",
                  "|---|---|---|---|---|---|"]
        for backend, s in bench["single"].items():
            dev = sum(s["device_ms"].values()) if s.get("device_ms") else None
            lines.append(f"| {backend} | {_fmt(s['run_s'])} | {_fmt(s['wall_s'])} | {_fmt(s['read_s'])} | "
                         f"{_fmt(s['write_s'])} | {_fmt(dev, digits=1)} |")
        for backend, s in bench["single"].items():
            if s.get("device_ms"):
                steps = ", ".join(f"{k} {v:.1f}" for k, v in s["device_ms"].items())
                lines += ["", f"{backend} device ms per step: {steps}"]
            if s.get("copy_bandwidth_gbs"):
                lines.append(f"{backend} copy bandwidth GB/s: {s['copy_bandwidth_gbs']}")
            if s.get("nvml"):
                lines.append(f"{backend} NVML (single file): {json.dumps(s['nvml'])}")
        floor = bench["io_floor"]
        lines += ["", f"I/O floor: {_fmt(floor['floor_s'])} s warm, {_fmt(floor['floor_cold_s'])} s cold "
                      f"({_fmt(floor['files_per_hour'], digits=0)} files/h)", "",
                  "| backend | files | files/h | s/file | NVML util % (mean) | W (mean) |", "|---|---|---|---|---|---|"]
        for backend, sizes in bench["batch"].items():
            for n, rec in sizes.items():
                util = (rec["nvml"].get("utilization_gpu_pct") or {}).get("mean")
                power = (rec["nvml"].get("power_w") or {}).get("mean")
                lines.append(f"| {backend} | {n} | {_fmt(rec['files_per_hour'], digits=0)} | "
                             f"{_fmt(rec['seconds_per_file'])} | {_fmt(util, digits=0)} | {_fmt(power, digits=0)} |")
        if bench.get("goals"):
            lines += ["", "Goals (reported, never asserted):", "", "```",
                      json.dumps(bench["goals"], indent=1)[:4000], "```"]
    lines += ["", "Files: summary.md, summary.json, info.txt (gpucal info), bench.json/bench.png (the suite), "
                  "logs.tar.gz (every phase's log, junit XML, the bench's child logs)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--probe", type=Path)
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--elapsed", type=int, default=0)
    args = parser.parse_args(argv)
    phases = read_phases(args.phases)
    logs = args.work / "logs"
    probe = args.probe.read_text().strip().splitlines()[-1:] if args.probe and args.probe.is_file() else []
    summary: dict[str, Any] = {
        "schema": "gpucal-gpu-check/1",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "gpu": bool(args.gpu), "probe": probe[0] if probe else "n/a",
        "budget_s": args.budget, "elapsed_s": args.elapsed, "phases": phases,
        "ok": not any(p["status"].startswith(("failed", "timed out")) for p in phases),
        "gpu_tests": junit(logs / "gpu_tests.xml"), "agreement": junit(logs / "agreement.xml"),
    }
    agreement_log = logs / "agreement.log"
    if agreement_log.is_file():
        summary["agreement_lines"] = [m.group(0) for m in AGREEMENT_LINE.finditer(
            agreement_log.read_text(errors="replace"))][:10]
    bench_json = args.work / "bench" / "bench.json"
    if bench_json.is_file():
        summary["bench"] = bench_figures(json.loads(bench_json.read_text()))
        summary["device"] = summary["bench"]["device"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
