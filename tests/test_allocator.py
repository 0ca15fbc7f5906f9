"""The command line's allocator tuning (gpucal/allocator.py), in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "from gpucal.allocator import tune_allocator; print(tune_allocator(), tune_allocator())"


def _run(env_update: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GPUCAL_MALLOC_TUNE", "MALLOC_MMAP_THRESHOLD_",
                                                            "MALLOC_TRIM_THRESHOLD_")}
    env.update(env_update)
    proc = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_are_set_once_on_linux():
    assert _run({}) == "True True"


@pytest.mark.parametrize("env", [{"GPUCAL_MALLOC_TUNE": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "131072"}])
def test_switched_off_or_left_to_the_user(env):
    assert _run(env) == "False False"


def test_strun_tunes_its_process(tmp_path):
    """``run_strun`` (the body of ``strun``) sets the thresholds before it does anything."""
    code = ("from gpucal.cli import run_strun; import gpucal.allocator as a; "
            "run_strun(['--version']); print(a._state.get('done'))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPUCAL_MALLOC_TUNE", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          cwd=tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == ("True" if sys.platform.startswith("linux") else "False")
