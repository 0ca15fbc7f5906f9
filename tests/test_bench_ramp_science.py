"""bench/ramp_science.py end to end on a small exposure: scores, table, JSON and figure."""

from __future__ import annotations

import json

from bench import ramp_science


def test_ramp_science_small(tmp_path, capsys):
    out = tmp_path / "science.json"
    args = ["--size", "64x256", "--exposures", "demo", "--algorithms", "gls,ols_cas22", "--workdir",
            str(tmp_path / "work"), "--out", str(out)]
    assert ramp_science.main(args) == 0
    result = json.loads(out.read_text())
    scores = result["exposures"]["demo"]["scores"]
    assert set(scores) == {"gls", "ols_cas22"}
    for s in scores.values():
        assert s["n_pull"] > 0.9 * 56 * 248 and abs(s["pull_median"]) < 0.2 and 0.8 < s["pull_std"] < 1.3
        assert 0 <= s["false_jumps"] <= s["n_clean"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "| median of (slope - true)/err |" in table and "gls (demo)" in table
    # --reuse scores the kept cal files again without recomputing them
    cal = next((tmp_path / "work" / "demo" / "gls").glob("*_cal.asdf"))
    mtime = cal.stat().st_mtime_ns
    assert ramp_science.main([*args, "--reuse"]) == 0
    assert cal.stat().st_mtime_ns == mtime
    assert json.loads(out.read_text())["exposures"]["demo"]["scores"] == scores
