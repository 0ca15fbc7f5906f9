"""roman_elp and every step end to end on a small demo exposure, through the real CRDS
client and real ASDF files; every written file is opened and validated."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from gpucal.cli import run_strun
from gpucal.pipeline import ExposurePipeline
from gpucal.stepbase import CAL_STEP_KEYS

STEP_CHAIN = [
    ("gpucal.dq_init.DQInitStep", "dqinit", "RampModel"),
    ("gpucal.saturation.SaturationStep", "saturation", "RampModel"),
    ("gpucal.refpix.RefPixStep", "refpix", "RampModel"),
    ("gpucal.dark_decay.DarkDecayStep", "dark_decay", "RampModel"),
    ("gpucal.wfi18_transient.WFI18TransientStep", "wfi18_transient", "RampModel"),
    ("gpucal.linearity.LinearityStep", "linearity", "RampModel"),
    ("gpucal.jump.JumpStep", "jump", "RampModel"),
    ("gpucal.ramp_fitting.RampFitStep", "rampfit", "ImageModel"),
    ("gpucal.dark_current.DarkCurrentStep", "darkcurrent", "ImageModel"),
    ("gpucal.assign_wcs.AssignWcsStep", "assignwcs", "ImageModel"),
    ("gpucal.photom.PhotomStep", "photom", "ImageModel"),
    ("gpucal.flatfield.FlatFieldStep", "flat", "ImageModel"),
]


def _open_valid(path):
    model = rdm.open(path)
    model.validate()
    return model


def test_strun_roman_elp_subprocess(crds_env, uncal_copy, tmp_path):
    """The installed `strun` console script, as a user runs it."""
    before = hashlib.sha256(uncal_copy.read_bytes()).hexdigest()
    proc = subprocess.run(
        [shutil.which("strun", path=os.path.dirname(sys.executable)) or shutil.which("strun"), "roman_elp", uncal_copy.name, "--backend=cpu"],
        cwd=uncal_copy.parent, env=dict(os.environ), capture_output=True, text=True, check=False, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = uncal_copy.name.removesuffix("_uncal.asdf")
    cal = _open_valid(uncal_copy.parent / f"{root}_cal.asdf")
    wcs = _open_valid(uncal_copy.parent / f"{root}_wcs.asdf")
    assert hashlib.sha256(uncal_copy.read_bytes()).hexdigest() == before
    assert type(cal).__name__ == "ImageModel" and type(wcs).__name__ == "WfiWcsModel"
    assert cal.data.shape == (56, 248) and cal.data.dtype == np.float32
    for name in ("err", "var_poisson", "chisq", "dumo"):
        assert getattr(cal, name).dtype == np.float16, name
    assert cal.dq.dtype == np.uint32
    assert cal.meta.filename == f"{root}_cal.asdf"
    assert cal.meta.calibration_software_name == "gpucal"
    assert cal.meta.gpucal["backend"] == "cpu"
    steps = cal.meta.cal_step
    for key in ("dq_init", "saturation", "refpix", "dark_decay", "linearity", "ramp_fit", "dark", "assign_wcs",
                "photom", "flat_field"):
        assert steps[key] == "COMPLETE", key
    assert steps["wfi18_transient"] == "N/A" and steps["jump"] == "COMPLETE"
    assert set(CAL_STEP_KEYS) <= set(steps)
    assert cal.meta.ref_file.mask.startswith("crds://")
    assert cal.meta.ref_file.crds.context == crds_env.context
    assert cal.meta.photometry.conversion_megajanskys > 0
    assert cal.meta.wcs is not None and cal.meta.wcsinfo.s_region.startswith("POLYGON ICRS  ")
    assert any(":: INFO ::" in line for line in cal.meta.cal_logs)
    assert 0 < cal.meta.statistics.good_pixel_fraction <= 1
    assert "Step rampfit" in proc.stderr  # progress is logged


def test_each_step_alone_by_class_name(crds_env, uncal_copy, capsys):
    """dq_init -> ... -> flatfield, each as `strun <class> <previous output>`."""
    current = uncal_copy
    root = uncal_copy.name.removesuffix("_uncal.asdf")
    for class_path, suffix, kind in STEP_CHAIN:
        status = run_strun([class_path, str(current), "--backend=cpu", f"--output_dir={current.parent}"])
        assert status == 0, (class_path, capsys.readouterr().err)
        written = current.parent / f"{root}_{suffix}.asdf"
        model = _open_valid(written)
        assert type(model).__name__ == kind
        current = written
    assert model.meta.cal_step.flat_field == "COMPLETE"


def test_rerun_overwrites_and_leaves_no_temporaries(crds_env, uncal_copy):
    args = ["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={uncal_copy.parent}"]
    assert run_strun(args) == 0
    root = uncal_copy.name.removesuffix("_uncal.asdf")
    cal = uncal_copy.parent / f"{root}_cal.asdf"
    first = cal.stat().st_mtime_ns
    assert run_strun([*args, "--steps.rampfit.algorithm=likely"]) == 0
    assert cal.stat().st_mtime_ns >= first
    assert rdm.open(cal).meta.cal_step.jump == "SKIPPED"  # likely finds its own jumps
    assert not [p for p in uncal_copy.parent.iterdir() if p.name.startswith(".gpucal-")]


def test_suffix_output_file_and_intermediates(crds_env, uncal_copy):
    out = uncal_copy.parent / "products"
    root = uncal_copy.name.removesuffix("_uncal.asdf")
    status = run_strun(["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={out}", "--suffix=star",
                        "--steps.saturation.save_results=true", "--save_calibrated_ramp=true"])
    assert status == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{root}_star.asdf", f"{root}_wcs.asdf", f"{root}_saturation.asdf",
                            f"{root}_ramp.asdf"])
    for name in names:
        _open_valid(out / name)
    # output_file names sub-step products but not the cal product (output_use_model)
    out2 = uncal_copy.parent / "named"
    status = run_strun(["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={out2}",
                        "--output_file=foo.asdf", "--steps.linearity.save_results=yes"])
    assert status == 0
    assert sorted(p.name for p in out2.iterdir()) == sorted([f"{root}_cal.asdf", f"{root}_wcs.asdf",
                                                             "foo_linearity.asdf"])


def test_skipping_steps_records_skipped(crds_env, uncal_copy):
    status = run_strun(["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={uncal_copy.parent}",
                        "--steps.dark_current.skip=true", "--steps.assign_wcs.skip=True"])
    assert status == 0
    cal = _open_valid(uncal_copy.parent / uncal_copy.name.replace("_uncal", "_cal"))
    assert cal.meta.cal_step.dark == "SKIPPED" and cal.meta.cal_step.assign_wcs == "SKIPPED"
    assert cal.meta.wcs is None


def test_python_api_returns_models_and_saves_nothing(crds_env, uncal_copy):
    result, catalog, segmentation = ExposurePipeline.call(
        str(uncal_copy), steps={"rampfit": {"algorithm": "likely"}}, backend="cpu"
    )
    assert type(result).__name__ == "ImageModel" and catalog is None and segmentation is None
    assert sorted(p.name for p in uncal_copy.parent.iterdir()) == [uncal_copy.name]


def test_overrides_need_no_crds(small_demo, uncal_copy, monkeypatch):
    """With every reference overridden, no CRDS cache or server is consulted."""
    monkeypatch.setenv("CRDS_PATH", str(uncal_copy.parent / "no_cache_here"))
    refs = small_demo.references
    args = ["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={uncal_copy.parent}"]
    for key, reftypes in {
        "dq_init": ["mask"], "saturation": ["saturation"], "refpix": ["refpix"],
        "dark_decay": ["darkdecaysignal"], "linearity": ["linearity", "inverselinearity", "integralnonlinearity"],
        "jump": ["gain", "readnoise"], "rampfit": ["gain", "readnoise"], "dark_current": ["dark"],
        "assign_wcs": ["distortion"], "photom": ["photom"], "flatfield": ["flat"],
    }.items():
        args += [f"--steps.{key}.override_{rt}={refs[rt]}" for rt in reftypes]
    assert run_strun(args) == 0
    cal = _open_valid(uncal_copy.parent / uncal_copy.name.replace("_uncal", "_cal"))
    assert cal.meta.ref_file.flat == str(refs["flat"].resolve())


def test_fully_saturated_exposure(crds_env, tmp_path):
    raw = rdm.open(crds_env.uncal)
    raw.data = np.full(np.shape(raw.data), 65535, dtype=np.uint16)
    path = tmp_path / "sat_uncal.asdf"
    raw.save(path)
    sat = rdm.open(crds_env.references["saturation"])
    sat.data = np.full(np.shape(sat.data), 50000.0, dtype=np.float32)  # no NaN (no-check) thresholds
    sat.dq = np.zeros(np.shape(sat.dq), dtype=np.uint32)
    sat_path = tmp_path / "all_checked_saturation.asdf"
    sat.save(sat_path)
    assert run_strun(["roman_elp", str(path), "--backend=cpu", f"--output_dir={tmp_path}",
                      f"--steps.saturation.override_saturation={sat_path}"]) == 0
    cal = _open_valid(tmp_path / "sat_cal.asdf")
    assert np.all(cal.data == 0) and np.all(cal.dq & 2)
    assert cal.meta.cal_step.ramp_fit == "SKIPPED" and cal.meta.cal_step.saturation == "COMPLETE"


@pytest.mark.parametrize("exposure_type", ["WFI_IM_DARK"])
def test_non_imaging_exposure_skips_flat(crds_env, tmp_path, exposure_type):
    raw = rdm.open(crds_env.uncal)
    raw.meta.exposure.type = exposure_type
    path = tmp_path / "dark_uncal.asdf"
    raw.save(path)
    refs = crds_env.references
    status = run_strun(["roman_elp", str(path), "--backend=cpu", f"--output_dir={tmp_path}",
                        f"--steps.jump.override_readnoise={refs['readnoise']}",
                        f"--steps.rampfit.override_readnoise={refs['readnoise']}",
                        f"--steps.dark_current.override_dark={refs['dark']}"])
    assert status == 0
    cal = _open_valid(tmp_path / "dark_cal.asdf")
    assert cal.meta.cal_step.flat_field == "SKIPPED"
