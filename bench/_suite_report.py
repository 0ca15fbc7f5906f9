"""The suite's description of the device and software, its goal evaluation and its text table."""

from __future__ import annotations

import statistics
from importlib import metadata
from typing import Any

__all__ = ["device_info", "gpu_software", "nvml_overall", "goals", "text_table", "all_ok",
           "GOAL_E2E_OVER_FLOOR", "GOAL_FILES_PER_HOUR"]

GOAL_E2E_OVER_FLOOR = 1.3  # end-to-end time per file / I/O floor, at most
#: Device kernel chain: effective bandwidth at least this share of the measured copy bandwidth.
GOAL_CHAIN_FRACTION = 0.6
GOAL_FILES_PER_HOUR = 3000.0  # per GPU, at least


# ---------------------------------------------------------------------------- describe
def device_info() -> dict[str, Any]:
    """The GPUs NVML sees (name, memory, driver), or ``name: "none"`` and why."""
    from gpucal.backends.info import nvml_devices

    try:
        devices, driver = nvml_devices()
    except Exception as exc:  # NVML failing after init: still describe the machine
        devices, driver = [], f"NVML failed ({type(exc).__name__}: {exc})"
    if not devices:
        return {"name": "none", "reason": driver, "devices": []}
    # the device the children run on: CUDA's device 0, found by PCI bus id (not NVML's order)
    chosen = next((d for d in devices if d.get("cuda_device_0")), None)
    return {"name": str((chosen or devices[0])["name"]), "driver": driver.removeprefix("driver "),
            "count": len(devices), "pci_bus_id": (chosen or {}).get("pci_bus_id"),
            "located_by": "PCI bus id of CUDA device 0" if chosen else "CUDA device 0 not identified: NVML's first",
            "devices": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in d.items()} for d in devices]}


def gpu_software() -> dict[str, Any]:
    """CuPy, CUDA runtime and NVRTC versions (None where absent), nvidia-ml-py and matplotlib."""
    out: dict[str, Any] = {}
    for dist in ("cupy-cuda12x", "cupy-cuda13x", "nvidia-ml-py", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["cuda_runtime"] = out["nvrtc"] = None
    try:
        import cupy

        runtime = cupy.cuda.runtime.runtimeGetVersion()
        out["cuda_runtime"] = f"{runtime // 1000}.{runtime % 1000 // 10}"
        out["nvrtc"] = ".".join(map(str, cupy.cuda.nvrtc.getVersion()))
    except Exception:  # no CuPy, or no CUDA libraries: the versions stay None
        pass
    return out


def nvml_overall(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' NVML summaries as one: medians of means, maxima of maxima."""
    ok = [s for s in summaries if s.get("available") and s.get("samples")]
    if not ok:
        first = summaries[0] if summaries else {}
        return {"available": False, "reason": first.get("reason", "no samples")}

    def pick(key: str, sub: str) -> list[float]:
        return [s[key][sub] for s in ok if s.get(key) and s[key].get(sub) is not None]

    def med(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    peaks = [s["memory_peak_above_baseline_mib"] for s in ok if s.get("memory_peak_above_baseline_mib") is not None]
    return {
        "available": True,
        "device": ok[0].get("device"),
        "runs": len(ok),
        "utilization_gpu_pct_mean": med(pick("utilization_gpu_pct", "mean")),
        "utilization_gpu_pct_max": max(pick("utilization_gpu_pct", "max"), default=None),
        "memory_peak_mib": max(pick("memory_used_mib", "peak"), default=None),
        "memory_peak_above_baseline_mib": max(peaks, default=None),
        "power_w_mean": med(pick("power_w", "mean")),
        "power_w_max": max(pick("power_w", "max"), default=None),
        "energy_j": med([s["energy_j"] for s in ok if s.get("energy_j") is not None]),
    }


# ---------------------------------------------------------------------------- goals
def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def device_bandwidth(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Per step and for the chain: device bytes / device time (GB/s), and its share of the
    device's measured device-to-device copy bandwidth (issue 6 goal: the chain >= 60%)."""
    ms, nbytes, copy = summary.get("device_ms"), summary.get("device_bytes"), summary.get("copy_bandwidth_gbs")
    if not ms or not nbytes:
        return None
    steps = {k: round(nbytes[k] / (ms[k] / 1e3) / 1e9, 2) for k in nbytes if ms.get(k)}
    total_ms = sum(ms.get(k, 0.0) for k in nbytes)
    chain = sum(nbytes.values()) / (total_ms / 1e3) / 1e9 if total_ms else None
    d2d = (copy or {}).get("d2d_gbs")
    return {"steps_gbs": steps, "chain_gbs": round(chain, 2) if chain else None, "d2d_copy_gbs": d2d,
            "chain_fraction_of_copy": round(chain / d2d, 3) if chain and d2d else None,
            "goal_min_fraction": GOAL_CHAIN_FRACTION}


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, evaluated per backend; reported, never asserted.

    ``end_to_end_over_io_floor``: a single file's read-to-write seconds (``run_s``) over the
    fresh-process floor (``floor_cold_s``), and the largest batch's seconds per file over the
    in-process floor (``floor_s``).  ``files_per_hour``: the best
    measured batch, and the marginal rate ``(wall_N - wall_1) / (N - 1)`` of the largest
    batch N over the one-file batch (the steady state once the process is warm).
    """
    floor_block = result.get("io_floor", {})
    ok = floor_block.get("status") == "ok"
    floor, floor_cold = (floor_block.get("floor_s"), floor_block.get("floor_cold_s")) if ok else (None, None)
    e2e: dict[str, Any] = {}
    fph: dict[str, Any] = {}
    for backend, block in result.get("single", {}).items():
        summary = block["summary"]
        run_s = summary.get("run_s") if summary.get("status") == "ok" else None
        single_ratio = _ratio(run_s, floor_cold)
        e2e[backend] = {"applies": backend == "gpu",
                        "single_file": {"seconds": run_s, "ratio": single_ratio,
                                        "met": single_ratio <= GOAL_E2E_OVER_FLOOR if single_ratio else None}}
        done = {int(n): r for n, r in result.get("batch", {}).get(backend, {}).items() if r.get("status") == "ok"}
        fph[backend] = {"applies": backend == "gpu", "best": None}
        if not done:
            continue
        largest = max(done)
        per_file = done[largest]["seconds_per_file"]
        batch_ratio = _ratio(per_file, floor)
        e2e[backend]["batch"] = {"files": largest, "seconds_per_file": per_file, "ratio": batch_ratio,
                                 "met": batch_ratio <= GOAL_E2E_OVER_FLOOR if batch_ratio else None}
        best_n = max(done, key=lambda n: done[n]["files_per_hour"])
        best = done[best_n]["files_per_hour"]
        fph[backend].update(best=best, at_batch_size=best_n, met=best >= GOAL_FILES_PER_HOUR)
        if 1 in done and largest > 1:
            marginal = (done[largest]["batch_wall_s"] - done[1]["batch_wall_s"]) / (largest - 1)
            fph[backend].update(marginal_seconds_per_file=round(marginal, 3),
                                marginal_files_per_hour=round(3600.0 / marginal, 1) if marginal > 0 else None)
    return {
        "reported_not_asserted": True,
        "note": "the goals are for the gpu backend on one GPU; other backends' figures are for reference",
        "end_to_end_over_io_floor": {"goal_max": GOAL_E2E_OVER_FLOOR, "io_floor_s": floor,
                                     "io_floor_cold_s": floor_cold, "backends": e2e},
        "device_chain_bandwidth": {"goal_min_fraction_of_copy": GOAL_CHAIN_FRACTION,
                                   "backends": {b: blk["summary"].get("device_bandwidth")
                                                for b, blk in result.get("single", {}).items()}},
        "files_per_hour": {"goal_min": GOAL_FILES_PER_HOUR, "per": "GPU",
                           "io_floor_files_per_hour": floor_block.get("files_per_hour"), "backends": fph},
    }


def all_ok(result: dict[str, Any]) -> bool:
    """Every timed run succeeded."""
    blocks = [b["summary"] for b in result.get("single", {}).values()]
    if result.get("romancal", {}).get("available"):
        blocks.append(result["romancal"]["summary"])
    blocks.append(result.get("io_floor", {}))
    blocks += [r for runs in result.get("batch", {}).values() for r in runs.values()]
    return all(b.get("status") == "ok" for b in blocks)


# ---------------------------------------------------------------------------- table
def _fmt(value: Any, fmt: str = "{:>11.2f}") -> str:
    return fmt.format(value) if isinstance(value, int | float) else f"{'-':>11s}"


def _columns(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cols = [(f"gpucal {b}", blk["summary"]) for b, blk in result.get("single", {}).items()]
    if result.get("romancal", {}).get("available"):
        cols.append(("romancal", result["romancal"]["summary"]))
    return cols


def text_table(result: dict[str, Any]) -> str:
    """The readable summary printed on stdout."""
    mach, dev, exp = result["machine"], result["device"], result["exposure"]
    device = dev["name"] if dev["name"] != "none" else f"none ({dev.get('reason')})"
    lines = [f"gpucal bench on {mach['hostname']} ({mach['cpu_model']}, {mach['cores']} cores, "
             f"{mach['ram_gib']} GiB); GPU: {device}; load {result['load']['before']} -> {result['load']['after']}",
             f"exposure {exp['ny']}x{exp['nx']}, K={exp['nresultants']}, seeds {exp['distinct_seeds']}, "
             f"rampfit {result['options']['algorithm']}, repeat {result['options']['repeat']}"]
    cols = _columns(result)
    lines += ["", "single file (s)".ljust(24) + "".join(f"{name:>11s}" for name, _ in cols)]
    ok = [(n, s) for n, s in cols if s.get("status") == "ok"]
    steps = list(dict.fromkeys(k for _, s in ok for k in s["steps"]))

    def row(label: str, key: str, fmt: str = "{:>11.2f}") -> str:
        return label.ljust(24) + "".join(_fmt(s.get(key), fmt) for _, s in cols)

    lines.append(row("read", "read_s"))
    lines += [f"  {name}".ljust(24) + "".join(_fmt(s.get("steps", {}).get(name)) for _, s in cols) for name in steps]
    lines += [row("write", "write_s"), row("other", "other_s"), row("run, read..write", "run_s"),
              row("process wall", "wall_s"), row("peak RSS (MiB)", "peak_rss_mib", "{:>11.0f}")]
    if any(s.get("device_ms") for _, s in cols):
        # device times are kept per backend method: rampfit is ramp_fit (plus uniform_slope: dumo)
        methods = {"rampfit": ("ramp_fit", "uniform_slope")}

        def device_ms(s: dict[str, Any], name: str) -> float | None:
            ms = s.get("device_ms") or {}
            found = [ms[k] for k in methods.get(name, (name,)) if k in ms]
            return sum(found) if found else None

        lines.append("device time (ms)")
        lines += [f"  {name}".ljust(24) + "".join(_fmt(device_ms(s, name), "{:>11.1f}") for _, s in cols)
                  for name in steps]
    nv = [(n, s.get("nvml", {})) for n, s in cols]
    if any(v.get("available") for _, v in nv):
        for label, key, fmt in (("GPU util mean (%)", "utilization_gpu_pct_mean", "{:>11.0f}"),
                                ("device mem peak (MiB)", "memory_peak_above_baseline_mib", "{:>11.0f}"),
                                ("power mean (W)", "power_w_mean", "{:>11.0f}")):
            lines.append(label.ljust(24) + "".join(_fmt(v.get(key), fmt) for _, v in nv))
    else:
        lines.append(f"NVML: {next((v.get('reason') for _, v in nv if v), 'not sampled')}")
    for backend, ratios in result.get("ratios", {}).items():
        lines.append(f"romancal / gpucal {backend}: run {ratios.get('run_s')}x, process wall {ratios.get('wall_s')}x, "
                     f"peak RSS {ratios.get('peak_rss_mib')}x")
    if not result.get("romancal", {}).get("available"):
        lines.append(f"romancal: {result.get('romancal', {}).get('reason')}")
    lines += _floor_and_batch_lines(result)
    return "\n".join(lines)


def _floor_and_batch_lines(result: dict[str, Any]) -> list[str]:
    floor = result.get("io_floor", {})
    lines = [""]
    if floor.get("status") == "ok":
        lines.append(f"I/O floor: read {floor['read_s']:.2f} s + write {floor['write_s']:.2f} s = "
                     f"{floor['floor_s']:.2f} s ({floor['files_per_hour']:.0f} files/h); first in a fresh "
                     f"process: {floor['read_cold_s']:.2f} + {floor['write_cold_s']:.2f} = {floor['floor_cold_s']:.2f} s")
        if floor.get("read_unverified_s") is not None:  # results from before checksums were verified lack it
            lines.append(f"  the read verifies ASDF block checksums: {floor['checksum_s']:+.2f} s of it "
                         f"(read without them {floor['read_unverified_s']:.2f} s)")
    else:
        lines.append(f"I/O floor: failed ({floor.get('error', '')[:200]})")
    sizes = sorted({int(n) for runs in result.get("batch", {}).values() for n in runs})
    lines.append("batch".ljust(24) + "".join(f"{'N=' + str(n):>11s}" for n in sizes))
    for backend, runs in result.get("batch", {}).items():
        got = {int(n): r for n, r in runs.items() if r.get("status") == "ok"}
        lines.append(f"{backend} files/h".ljust(24) + "".join(_fmt(got.get(n, {}).get("files_per_hour"), "{:>11.1f}")
                                                            for n in sizes))
        lines.append(f"{backend} s/file".ljust(24) + "".join(_fmt(got.get(n, {}).get("seconds_per_file"))
                                                           for n in sizes))
    g = result.get("goals", {})
    e2e, fph = g.get("end_to_end_over_io_floor", {}), g.get("files_per_hour", {})
    for backend, ev in e2e.get("backends", {}).items():
        batch = ev.get("batch", {})
        rate = fph.get("backends", {}).get(backend, {})
        lines.append(f"goals, {backend}{'' if ev.get('applies') else ' (for reference: goals are for gpu)'}: "
                     f"end-to-end/floor single {ev['single_file'].get('ratio')}, batch {batch.get('ratio')} "
                     f"(goal <= {e2e.get('goal_max')}); files/h best {rate.get('best')}, marginal "
                     f"{rate.get('marginal_files_per_hour')} (goal >= {fph.get('goal_min'):.0f} per GPU)")
    return lines
