"""Full-frame fixtures shared by the truth and parity tests (all session-scoped).

* ``full_demo``: a 4096x4096, 8-resultant demo exposure, its references and CRDS cache
  (about 35 s on 2 cores);
* ``full_crds_env``: the environment that points the real crds client at that cache;
* ``gpucal_cal(algorithm)``: gpucal's cal file for that exposure (CPU backend), one run
  per algorithm per session;
* ``romancal_cal(algorithm)``: romancal 1.1.0's cal file for the same exposure and the
  same CRDS cache, run in a subprocess (source_catalog and tweakreg skipped), one run
  per algorithm per session; skips where romancal is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FULL_FRAME = {"ny": 4096, "nx": 4096, "nresultants": 8, "seed": 2026}


@pytest.fixture(scope="session")
def full_demo(tmp_path_factory):
    from gpucal.demo.run import prepare_demo

    return prepare_demo(tmp_path_factory.mktemp("fullframe"), **FULL_FRAME)


@pytest.fixture(scope="session")
def full_crds_env(full_demo) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRDS_PATH_SINGLE", "CRDS_MAPPATH", "CRDS_REFPATH", "CRDS_CFGPATH"))}
    env.update(full_demo.environment)
    return env


def _run_python(code: str, env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def gpucal_cal(full_demo, full_crds_env, tmp_path_factory):
    """Callable: algorithm -> Path of gpucal's cal file (extra strun args allowed)."""
    cache: dict[tuple[str, tuple[str, ...]], Path] = {}

    def run(algorithm: str = "ols_cas22", *extra: str) -> Path:
        key = (algorithm, extra)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"gpucal_{algorithm}")
            args = ["roman_elp", str(full_demo.uncal), "--backend=cpu", f"--output_dir={out}",
                    f"--steps.rampfit.algorithm={algorithm}", *extra]
            code = f"import sys; from gpucal.cli import run_strun; sys.exit(run_strun({args!r}))"
            _run_python(code, full_crds_env, out)
            cache[key] = out / full_demo.uncal.name.replace("_uncal", "_cal")
        return cache[key]

    return run


@pytest.fixture(scope="session")
def romancal_cal(full_demo, full_crds_env, tmp_path_factory):
    """Callable: algorithm -> Path of romancal 1.1.0's cal file for the same exposure."""
    pytest.importorskip("romancal")
    cache: dict[tuple[str, tuple[tuple[str, object], ...]], Path] = {}

    def run(algorithm: str = "likely", **rampfit: object) -> Path:
        key = (algorithm, tuple(sorted(rampfit.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"romancal_{algorithm}")
            steps = {
                "rampfit": {"algorithm": algorithm, **rampfit},
                "source_catalog": {"skip": True},
                "tweakreg": {"skip": True},
            }
            code = textwrap.dedent(
                f"""
                from romancal.pipeline import ExposurePipeline
                ExposurePipeline.call({str(full_demo.uncal)!r}, steps={steps!r}, save_results=True,
                                      output_dir={str(out)!r})
                """
            )
            _run_python(code, full_crds_env, out)
            cache[key] = out / full_demo.uncal.name.replace("_uncal", "_cal")
        return cache[key]

    return run
