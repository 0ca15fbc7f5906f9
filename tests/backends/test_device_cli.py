"""The device backend from the command line, in real processes (emulated device in CI).

``GPUCAL_EMULATE_GPU=1`` makes ``--backend=gpu`` run the device backend's whole code path on
the emulated device (:mod:`gpucal.backends.emulated`), so what a GPU user types is tested
here end to end; on a machine with a GPU the same commands run on it without the variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpucal.backends.select import probe_gpu


def _device_env(kind: str) -> dict[str, str]:
    env = dict(os.environ)
    if kind == "emulated":
        env["GPUCAL_EMULATE_GPU"] = "1"
    else:
        ok, reason = probe_gpu()
        if not ok:
            pytest.skip(f"GPU backend unavailable: {reason}")
        env.pop("GPUCAL_EMULATE_GPU", None)
    return env


@pytest.fixture(params=["emulated", "gpu"])
def device_env(request, crds_env):
    return _device_env(request.param)


def _strun(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from gpucal.cli import strun_main; strun_main(sys.argv[1:])", *args],
        cwd=cwd, env=env,
        capture_output=True, text=True, check=False, timeout=600,
    )


@pytest.mark.parametrize("how", ["save_results", "output_file"])
def test_intermediate_products_save_on_the_device_backend(device_env, uncal_copy, tmp_path, how):
    """Issue 10 §2: a step's intermediate product is saved while its arrays are on the device."""
    import roman_datamodels.datamodels as rdm

    out = tmp_path / "out"
    out.mkdir()
    opt = "--steps.saturation.save_results=true" if how == "save_results" else "--steps.saturation.output_file=mid"
    proc = _strun(["roman_elp", "--backend=gpu", str(uncal_copy), f"--output_dir={out}", opt], device_env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mids = sorted(out.glob("*saturation*.asdf"))
    assert len(mids) == 1, sorted(p.name for p in out.iterdir())
    cal = out / uncal_copy.name.replace("_uncal", "_cal")
    assert cal.exists()
    # the same intermediate product on the CPU backend
    cpu_out = tmp_path / "cpu"
    cpu_out.mkdir()
    env = {k: v for k, v in device_env.items() if k != "GPUCAL_EMULATE_GPU"}
    proc = _strun(["roman_elp", "--backend=cpu", str(uncal_copy), f"--output_dir={cpu_out}", opt], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with rdm.open(mids[0]) as dev, rdm.open(cpu_out / mids[0].name) as cpu:
        assert dev.meta.gpucal["backend"] in ("gpu", "emulated")
        np.testing.assert_array_equal(np.asarray(dev.groupdq), np.asarray(cpu.groupdq))
        np.testing.assert_array_equal(np.asarray(dev.pixeldq), np.asarray(cpu.pixeldq))
        np.testing.assert_array_equal(np.asarray(dev.data), np.asarray(cpu.data))
