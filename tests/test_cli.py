"""strun's conventions: names, -h, options, exit statuses, delegation to stpipe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from gpucal.cli import gpucal_main, run_strun


def test_no_class_is_a_usage_error(capsys):
    assert run_strun([]) == 2
    err = capsys.readouterr().err
    assert "cfg_file_or_class" in err and "roman_elp" in err


def test_help_alone_without_class_is_a_usage_error(capsys):
    assert run_strun(["-h"]) == 2


@pytest.mark.parametrize("argv", [["roman_elp", "-h"], ["--help", "roman_elp"], ["roman_elp", "--help"]])
def test_pipeline_help_lists_every_parameter(argv, capsys):
    assert run_strun(argv) == 0
    out = capsys.readouterr().out
    for option in (
        "--backend", "--output_dir", "--output_file", "--save_results", "--suffix", "--skip",
        "--save_calibrated_ramp", "--steps.rampfit.algorithm", "--steps.dq_init.override_mask",
        "--steps.jump.override_gain", "--steps.jump.override_readnoise", "--steps.jump.rejection_threshold",
        "--steps.linearity.override_integralnonlinearity", "--steps.flatfield.include_var_flat",
        "--steps.refpix.override_refpix", "--steps.dark_current.override_dark", "--steps.photom.override_photom",
        "--steps.assign_wcs.override_distortion", "--steps.dark_decay.override_darkdecaysignal",
        "--steps.saturation.n_pix_grow_sat", "--steps.wfi18_transient.mask_rows",
    ):
        assert option in out, option
    assert "[default=gls]" in out
    assert "--steps.rampfit.backend" not in out  # one backend per run


@pytest.mark.parametrize(
    "name",
    [
        "gpucal.ramp_fitting.RampFitStep", "ramp_fit", "romancal.ramp_fitting.RampFitStep",
        "romancal.ramp_fitting.ramp_fit_step.RampFitStep", "calroman.ramp_fitting.RampFitStep",
    ],
)
def test_step_names(name, capsys):
    assert run_strun([name, "-h"]) == 0
    out = capsys.readouterr().out
    assert "--algorithm" in out and "--override_gain" in out and "--override_readnoise" in out


@pytest.mark.parametrize(
    "name",
    [
        "gpucal.pipeline.ExposurePipeline", "romancal.pipeline.ExposurePipeline",
        "romancal.pipeline.exposure_pipeline.ExposurePipeline", "gpucal.dq_init.DQInitStep",
        "gpucal.saturation.SaturationStep", "gpucal.jump.JumpStep", "gpucal.refpix.RefPixStep",
        "gpucal.linearity.LinearityStep", "gpucal.flatfield.FlatFieldStep", "gpucal.photom.PhotomStep",
        "gpucal.assign_wcs.AssignWcsStep", "gpucal.dark_current.DarkCurrentStep",
        "gpucal.dark_decay.DarkDecayStep", "gpucal.wfi18_transient.WFI18TransientStep",
        "romancal.dq_init.DQInitStep",
    ],
)
def test_every_class_path_resolves(name, capsys):
    assert run_strun([name, "-h"]) == 0


def test_unknown_option_is_a_usage_error(tmp_path, capsys):
    assert run_strun(["roman_elp", str(tmp_path / "x_uncal.asdf"), "--no_such_option=1"]) == 2
    assert "no_such_option" in capsys.readouterr().err


def test_bad_parameter_value_is_exit_1_with_one_line(small_demo, tmp_path, capsys):
    status = run_strun(["roman_elp", str(small_demo.uncal), "--steps.rampfit.algorithm=nope",
                        f"--output_dir={tmp_path}"])
    assert status == 1
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("strun: error:")]
    assert len(err) == 1 and "algorithm" in err[0] and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_input_is_a_usage_error(capsys):
    assert run_strun(["roman_elp"]) == 2


def test_version(capsys):
    assert run_strun(["--version"]) == 0
    assert "gpucal:" in capsys.readouterr().out


def test_unknown_name_without_stpipe_lists_ours():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["stpipe"] = None  # as if stpipe were not installed
        from gpucal.cli import run_strun
        sys.exit(run_strun(["no_such_step", "x.asdf"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "unknown step or pipeline 'no_such_step'" in proc.stderr and "roman_elp" in proc.stderr


def test_foreign_names_are_handed_to_stpipe(tmp_path):
    """With stpipe installed, a step gpucal does not provide runs under stpipe's strun."""
    pytest.importorskip("stpipe")
    (tmp_path / "echo_steps.py").write_text(
        textwrap.dedent(
            '''
            from stpipe import Step

            class EchoStep(Step):
                """Write a marker file."""
                spec = """
                    marker = string(default="none")
                    output_ext = string(default=".txt")
                """

                def process(self, *args):
                    with open("echo_marker.txt", "w") as fh:
                        fh.write(self.marker)
                    return None
            '''
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "STPIPE_DISABLE_CRDS_STEPPARS": "true"}
    strun = shutil.which("strun", path=os.path.dirname(sys.executable)) or shutil.which("strun")
    assert strun is not None
    proc = subprocess.run(
        [strun, "echo_steps.EchoStep", "--marker=from-stpipe"], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "echo_marker.txt").read_text() == "from-stpipe"


def test_installed_strun_is_gpucals():
    """The `strun` on PATH must be gpucal's (it forwards other names to stpipe)."""
    strun = shutil.which("strun", path=os.path.dirname(sys.executable)) or shutil.which("strun")
    assert strun is not None, "strun is not installed"
    assert "gpucal.cli" in open(strun).read()


def test_gpucal_info_runs_without_gpu():
    result = CliRunner().invoke(gpucal_main, ["info"])
    assert result.exit_code == 0
    assert "--backend=auto uses:" in result.output


def test_demo_rejects_bad_size():
    result = CliRunner().invoke(gpucal_main, ["demo", "--size", "100x100"])
    assert result.exit_code == 2
