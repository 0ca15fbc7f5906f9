"""Smoke test of ``bench/workers.py`` (files per hour against Dask workers): the JSON's
structure and the plot at a tiny size, not timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="needs gpucal[distributed]")
ROOT = Path(__file__).resolve().parents[1]


def test_workers_bench_smoke(tmp_path):
    out = tmp_path / "workers.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "workers.py"), "--size", "64x256", "--files", "2", "--workers", "1",
         "--repeat", "1", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["schema"] == "gpucal-bench-workers/1"
    assert {"hostname", "cpu_model", "cores", "ram_gib"} <= set(result["machine"])
    floor = result["io_floor"]
    assert 0 < floor["read_s"] < floor["floor_s"] and floor["files_per_hour_one_process"] > 0
    (run,) = result["runs"]
    assert run["workers"] == 1 and run["done"] == 2 and not run["failed"]
    assert run["files_per_hour"] > 0 and run["io_floor_files_per_hour"] > 0
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "1 workers:" in proc.stdout
