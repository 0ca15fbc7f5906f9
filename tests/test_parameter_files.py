"""Parameter files: gpucal's own --save-parameters, YAML, INI, and stpipe's (romancal's)."""

from __future__ import annotations

import textwrap

import pytest
import roman_datamodels.datamodels as rdm

from gpucal.cli import run_strun
from gpucal.config import read_parameter_file


def _cal(uncal):
    return uncal.parent / uncal.name.replace("_uncal", "_cal")


def test_save_parameters_round_trip(crds_env, uncal_copy, tmp_path):
    pars = tmp_path / "elp_pars.asdf"
    args = ["roman_elp", str(uncal_copy), "--backend=cpu", f"--output_dir={uncal_copy.parent}",
            "--steps.rampfit.algorithm=likely", "--steps.flatfield.skip=true", f"--save-parameters={pars}"]
    assert run_strun(args) == 0
    cls, values = read_parameter_file(pars)
    assert cls == "gpucal.pipeline.ExposurePipeline"
    assert values["steps"]["rampfit"]["algorithm"] == "likely"
    assert values["steps"]["flatfield"]["skip"] is True
    # the file drives a run on its own; the command line still wins
    _cal(uncal_copy).unlink()
    assert run_strun([str(pars), str(uncal_copy), f"--output_dir={uncal_copy.parent}"]) == 0
    cal = rdm.open(_cal(uncal_copy))
    assert cal.meta.cal_step.flat_field == "SKIPPED" and cal.meta.cal_step.jump == "SKIPPED"  # likely


def test_yaml_and_ini_files(crds_env, uncal_copy, tmp_path):
    yml = tmp_path / "p.yaml"
    yml.write_text(textwrap.dedent(
        """
        class: romancal.pipeline.exposure_pipeline.ExposurePipeline
        name: ExposurePipeline
        parameters:
          backend: cpu
        steps:
        - class: romancal.dark_current.dark_current_step.DarkCurrentStep
          name: dark_current
          parameters:
            skip: true
        """
    ))
    assert run_strun([str(yml), str(uncal_copy), f"--output_dir={uncal_copy.parent}"]) == 0
    assert rdm.open(_cal(uncal_copy)).meta.cal_step.dark == "SKIPPED"
    ini = tmp_path / "p.cfg"
    ini.write_text("name = ExposurePipeline\nclass = romancal.pipeline.ExposurePipeline\nbackend = cpu\n"
                   "[steps]\n  [[photom]]\n    skip = yes\n")
    assert run_strun([str(ini), str(uncal_copy), f"--output_dir={uncal_copy.parent}"]) == 0
    assert rdm.open(_cal(uncal_copy)).meta.cal_step.photom == "SKIPPED"


def test_parameter_file_of_unknown_class(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "stpipe", None)  # as if stpipe were absent
    pars = tmp_path / "other.yaml"
    pars.write_text("class: jwst.pipeline.Detector1Pipeline\nparameters: {}\n")
    assert run_strun([str(pars), "x.asdf"]) == 1
    assert "does not provide" in capsys.readouterr().err


@pytest.mark.oracle
def test_romancal_parameter_file(crds_env, uncal_copy, tmp_path):
    """A parameter file exported by romancal/stpipe drives gpucal's pipeline."""
    romancal_pipeline = pytest.importorskip("romancal.pipeline")
    pars = tmp_path / "romancal_elp.asdf"
    pipe = romancal_pipeline.ExposurePipeline()
    pipe.rampfit.algorithm = "likely"
    pipe.dark_current.skip = True
    pipe.export_config(str(pars))
    cls, values = read_parameter_file(pars)
    assert cls is not None and cls.endswith("ExposurePipeline")
    status = run_strun([str(pars), str(uncal_copy), "--backend=cpu", f"--output_dir={uncal_copy.parent}"])
    assert status == 0
    cal = rdm.open(_cal(uncal_copy))
    assert cal.meta.cal_step.dark == "SKIPPED" and cal.meta.cal_step.jump == "SKIPPED"
