"""bench/gpu_check.sh, the one prepared GPU call, in its dry mode (issue 10 §5).

Without a GPU the script runs every phase that needs none (gpucal info, gpucal kernels, a
small bench with 'gpu' on the emulated device beside the CPU backend), reports the GPU phases as "skipped: no GPU", and leaves at most 8 flat
files (the device tool's limit) with a summary; under a tiny budget the phases it cannot
fit are "skipped: out of time" and the results are still written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _run(out: Path, *args: str, budget: int | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    if budget is not None:
        env["GPU_CHECK_BUDGET"] = str(budget)
    return subprocess.run(["bash", str(SCRIPT), "--dry", "--out", str(out), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


def _phases(out: Path) -> dict[str, str]:
    return {p["name"]: p["status"] for p in json.loads((out / "summary.json").read_text())["phases"]}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    return out, _run(out)


def test_dry_run_writes_the_results(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.json", "bench.png", "info.txt", "logs.tar.gz", "summary.json", "summary.md"]
    assert all(p.is_file() and p.stat().st_size < 16 * 2**20 for p in out.iterdir())  # the device tool's limits


def test_dry_run_skips_the_gpu_phases_and_runs_the_rest(dry_run):
    out, _ = dry_run
    phases = _phases(out)
    assert list(phases) == ["wheels", "gpu_probe", "env", "info", "kernels", "gpu_tests", "agreement", "bench"]
    assert phases["gpu_tests"] == phases["agreement"] == "skipped: no GPU"
    assert phases["info"] == phases["kernels"] == phases["bench"] == phases["env"] == "ok"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gpu"] is False and summary["ok"] is True
    assert summary["bench"]["single"]["cpu"]["status"] == "ok" and summary["bench"]["io_floor"]["floor_s"] > 0
    assert summary["bench"]["single"]["gpu"]["status"] == "ok"
    text = (out / "summary.md").read_text()
    assert "mode: **dry" in text and "| gpu_tests | skipped: no GPU |" in text and "files/h" in text
    assert "--backend=auto uses: cpu" in (out / "info.txt").read_text()
    bench = json.loads((out / "bench.json").read_text())
    assert bench["schema"] == "gpucal-bench/1" and bench["options"]["backends"] == ["gpu", "cpu"]
    assert "GPUCAL_EMULATE_GPU=1" in bench["options"]["backends_reason"]  # 'gpu' is the emulated device here
    # the cpu backend's own batch sizes (a GPU check runs it on one file only)
    assert bench["options"]["cpu_batch_sizes"] == [2] and list(bench["batch"]["cpu"]) == ["2"]
    assert list(bench["batch"]["gpu"]) == ["1", "2"]
    assert bench["batch"]["cpu"]["2"]["device_ms_per_file"] == [None, None]  # no device clock
    # the device backend: each file of a batch its own device time (not 0 then the sum)
    per_file = bench["batch"]["gpu"]["2"]["device_ms_per_file"]
    one_file = bench["batch"]["gpu"]["1"]["device_ms_per_file"][0]
    assert len(per_file) == 2 and all(t > 0.3 * one_file for t in per_file), (per_file, one_file)
    device_ms = bench["single"]["gpu"]["summary"]["device_ms"]
    assert {"dq_init", "saturation", "linearity", "ramp_fit"} <= set(device_ms)
    assert summary["bench"]["single"]["gpu"]["device_ms"] == device_ms and "device ms per step" in text
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dry_run_logs_every_phase(dry_run):
    out, _ = dry_run
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
        kernels = tar.extractfile("logs/kernels.log").read().decode()
    assert {"logs/env.log", "logs/info.log", "logs/kernels.log", "logs/bench.log", "phases.tsv"} <= names
    assert any(n.startswith("logs/bench/") and n.endswith("child.log") for n in names)
    assert "CuPy include path: cuda_runtime.h" in kernels and "not warmed" not in kernels  # --no-warm in dry mode


def test_a_small_budget_skips_what_does_not_fit(tmp_path):
    """40 s minus the 25 s kept for the results: the first phases run with what is left
    (a phase cut at its limit is 'timed out', a failure), the rest are skipped."""
    proc = _run(tmp_path, budget=40)
    phases = _phases(tmp_path)
    # the last phase never runs to completion: skipped when under 10 s are left when it starts,
    # else cut at what is left (which of the two depends on how fast the machine ran the others)
    assert phases["bench"] == "skipped: out of time" or phases["bench"].startswith("timed out"), phases
    allowed = ("ok", "skipped: out of time", "skipped: no GPU", "skipped: dry mode", "timed out after")
    assert all(status.startswith(allowed) for status in phases.values()), phases
    cut = any(status.startswith("timed out") for status in phases.values())
    assert proc.returncode == (1 if cut else 0), proc.stdout[-3000:]
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "logs.tar.gz").is_file()


def test_script_help_lists_the_phases():
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "agreement" in proc.stdout
