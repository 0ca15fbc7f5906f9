"""ruff and mypy over the packages, so style and types cannot drift (STYLE.md 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_clean():
    proc = _run("ruff", "check", "gpucal", "cpu_fallback", "tests", "bench")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_mypy_clean():
    proc = _run("mypy", "gpucal", "cpu_fallback")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
