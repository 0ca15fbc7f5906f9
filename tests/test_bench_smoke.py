"""Smoke tests of ``bench/cpu_benchmark.py`` at a small size: the JSON's structure, not timings.

romancal 1.1.0 cannot calibrate a sub-frame (its dark_decay needs 4096x4096), so at this
size the script times gpucal only; with romancal installed it still warms romancal up on a
small frame (dark_decay skipped), which is what the ``oracle`` test checks.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "cpu_benchmark.py"
SMALL = ["--size", "64x4096", "--nresultants", "6", "--seed", "7"]


def _run_bench(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), *SMALL, "--out", str(out), "--workdir",
                           str(tmp_path / "work"), *extra],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def _check_common(result: dict, stdout: str) -> None:
    assert result["schema"] == "gpucal-cpu-benchmark/1"
    assert {"hostname", "cpu_model", "cores", "ram_gib", "os"} <= set(result["machine"])
    for name in ("python", "gpucal", "numpy", "scipy", "romancal", "stcal", "roman_datamodels", "asdf"):
        assert name in result["software"]
    assert result["software"]["gpucal"]
    exposure = result["exposure"]
    assert exposure["shape"] == [6, 64, 4096]
    assert (exposure["ny"], exposure["nx"], exposure["nresultants"], exposure["seed"]) == (64, 4096, 6, 7)
    assert len(exposure["read_pattern"]) == 6
    assert len(result["load"]["before"]) == 3 and len(result["load"]["after"]) == 3
    assert result["warmup"]["gpucal"]["status"] == "ok"

    block = result["runs"]["likely"]
    gpucal = block["gpucal"]
    assert gpucal["available"] is True and len(gpucal["repeats"]) == 1
    rec = gpucal["repeats"][0]
    assert rec["status"] == "ok" and rec["exit_status"] == 0
    for key in ("wall_s", "import_s", "run_s", "read_s", "write_s", "other_s", "peak_rss_mib", "cpu_user_s",
                "load_before", "load_after"):
        assert key in rec, key
    assert rec["peak_rss_mib"] > 0 and rec["run_s"] > 0
    assert rec["read_s"] > 0 and rec["write_s"] > 0  # the products are written through the timed save_model
    summary = gpucal["summary"]
    assert summary["status"] == "ok"
    assert {"dq_init", "saturation", "refpix", "linearity", "rampfit", "photom", "flatfield"} <= set(summary["steps"])
    assert block["romancal"]["available"] is False and block["romancal"]["reason"]
    assert "rampfit algorithm: likely" in stdout and "peak RSS (MiB)" in stdout


def test_bench_smoke_gpucal_only(tmp_path):
    result, stdout = _run_bench(tmp_path, "--skip-romancal")
    _check_common(result, stdout)
    assert set(result["warmup"]) == {"gpucal"}

    # Ratios and the table on a made-up romancal twice as slow: the side-by-side layout.
    sys.path.insert(0, str(ROOT))
    try:
        from bench.cpu_benchmark import ratios, text_table
    finally:
        sys.path.remove(str(ROOT))
    block = result["runs"]["likely"]
    g = block["gpucal"]["summary"]
    r = copy.deepcopy(g)
    for key in ("wall_s", "run_s", "peak_rss_mib"):
        r[key] = 2 * g[key]
    out = ratios(g, r)
    assert out["wall_s"] == pytest.approx(2.0, abs=0.01) and out["peak_rss_mib"] == pytest.approx(2.0, abs=0.01)
    assert "rampfit" in out["steps"]
    block["romancal"] = {"available": True, "summary": r}
    assert "ratio r/g" in text_table(result)


@pytest.mark.oracle
def test_bench_smoke_romancal_warmup(tmp_path):
    pytest.importorskip("romancal")
    result, stdout = _run_bench(tmp_path)
    _check_common(result, stdout)
    warm = result["warmup"]["romancal"]
    assert warm["status"] == "ok" and warm["skipped_steps"] == ["dark_decay"]
    assert "4096x4096" in result["runs"]["likely"]["romancal"]["reason"]
