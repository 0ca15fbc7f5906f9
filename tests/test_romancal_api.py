"""A romancal user's Python code, run once with romancal 1.1.0's classes and once with
gpucal's: the same calls and the same assertions on both results.

Inputs are small: synthetic models built with roman_datamodels' ``create_fake_data``
(20 x 20, 8 resultants) with reference *models* handed as overrides, and the 64 x 256
demo exposure for the pipeline (romancal's refpix and dark_decay need the full detector,
so both are skipped there on both sides).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from tests.test_parity_small import array_differences, crds_environment, quiet_romancal

pytestmark = pytest.mark.oracle
pytest.importorskip("romancal", minversion="1.1.0")

IMPLS = ("romancal", "gpucal")
CLASSES = {
    "dq_init": ("romancal.dq_init:DQInitStep", "gpucal.dq_init:DQInitStep"),
    "saturation": ("romancal.saturation:SaturationStep", "gpucal.saturation:SaturationStep"),
    "refpix": ("romancal.refpix:RefPixStep", "gpucal.refpix:RefPixStep"),
    "linearity": ("romancal.linearity:LinearityStep", "gpucal.linearity:LinearityStep"),
    "ramp_fit": ("romancal.ramp_fitting:RampFitStep", "gpucal.ramp_fitting:RampFitStep"),
    "dark": ("romancal.dark_current:DarkCurrentStep", "gpucal.dark_current:DarkCurrentStep"),
    "flat_field": ("romancal.flatfield:FlatFieldStep", "gpucal.flatfield:FlatFieldStep"),
    "photom": ("romancal.photom:PhotomStep", "gpucal.photom:PhotomStep"),
    "roman_elp": ("romancal.pipeline:ExposurePipeline", "gpucal.pipeline.exposure:ExposurePipeline"),
}
SHAPE = (8, 20, 20)
#: ramp-fit products: gpucal's CPU backend matches romancal to rounding (float32 slopes)
SLOPE_RTOL = 1e-5


def cls(impl: str, step: str) -> Any:
    module, name = CLASSES[step][IMPLS.index(impl)].split(":")
    return getattr(importlib.import_module(module), name)


def call(impl: str, step: str, model: Any, **params: Any) -> Any:
    """``Step.call`` as a user writes it (gpucal pinned to its CPU backend)."""
    if impl == "gpucal":
        params.setdefault("backend", "cpu")
    with quiet_romancal():
        return cls(impl, step).call(model, **params)


# ------------------------------------------------------------------ synthetic models
def fake_raw() -> Any:
    """A 20 x 20, 8-resultant Level 1 model (create_fake_data) with rising ramps."""
    rng = np.random.default_rng(5)
    raw = rdm.ScienceRawModel.create_fake_data(shape=SHAPE)
    raw.meta.filename = "fake_uncal.asdf"
    raw.data = (1000 + np.cumsum(rng.integers(0, 400, SHAPE), axis=0)).astype(np.uint16)
    raw.meta.exposure.read_pattern = [[1], [2, 3], [4], [5, 6], [7], [8, 9, 10], [11], [12]]
    raw.meta.exposure.frame_time = 3.04
    return raw


def fake_refs() -> dict[str, Any]:
    """Reference models for the synthetic exposure (all WFI01, 20 x 20)."""
    rng = np.random.default_rng(6)
    ny, nx = SHAPE[1:]
    mask = rdm.MaskRefModel.create_fake_data(shape=(ny, nx))
    mask.dq = np.zeros((ny, nx), np.uint32)
    mask.dq[3, 5] = 1
    mask.dq[10, 11] = 2**20
    sat = rdm.SaturationRefModel.create_fake_data(shape=(ny, nx))
    sat.data = np.full((ny, nx), 3500.0, np.float32)
    sat.data[:5] = 2200.0  # some pixels saturate part-way up
    sat.dq = np.zeros((ny, nx), np.uint32)
    lin = rdm.LinearityRefModel.create_fake_data(shape=(ny, nx))
    coeffs = np.zeros((3, ny, nx), np.float32)
    coeffs[1] = 1.0
    coeffs[2] = rng.uniform(0, 2e-6, (ny, nx))
    lin.coeffs = coeffs
    lin.dq = np.zeros((ny, nx), np.uint32)
    ilin = rdm.InverselinearityRefModel.create_fake_data(shape=(ny, nx))
    icoeffs = np.zeros((3, ny, nx), np.float32)
    icoeffs[1] = 1.0
    icoeffs[2] = -coeffs[2]
    ilin.coeffs = icoeffs
    ilin.dq = np.zeros((ny, nx), np.uint32)
    readnoise = rdm.ReadnoiseRefModel.create_fake_data(shape=(ny, nx))
    readnoise.data = np.full((ny, nx), 5.0, np.float32)
    gain = rdm.GainRefModel.create_fake_data(shape=(ny, nx))
    gain.data = np.full((ny, nx), 2.0, np.float32)
    dark = rdm.DarkRefModel.create_fake_data(shape=(2, ny, nx))
    dark.dark_slope = rng.uniform(0.0, 0.02, (ny, nx)).astype(np.float32)
    dark.dark_slope_error = np.full((ny, nx), 1e-4, np.float32)
    dark.dq = np.zeros((ny, nx), np.uint32)
    trimmed = (ny - 8, nx - 8)
    flat = rdm.FlatFieldRefModel.create_fake_data(shape=trimmed) if hasattr(rdm, "FlatFieldRefModel") else \
        rdm.FlatRefModel.create_fake_data(shape=trimmed)
    flat.data = rng.uniform(0.9, 1.1, trimmed).astype(np.float32)
    flat.err = np.full(trimmed, 0.01, np.float32)
    flat.dq = np.zeros(trimmed, np.uint32)
    return {"mask": mask, "saturation": sat, "linearity": lin, "inverselinearity": ilin,
            "readnoise": readnoise, "gain": gain, "dark": dark, "flat": flat}


@pytest.fixture
def crds(small_demo):
    with crds_environment(small_demo.environment):
        yield small_demo


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory, to see that nothing is written behind the user's back."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ramp_chain(impl: str, refs: dict[str, Any]) -> Any:
    """dq_init -> saturation -> linearity on the synthetic model, references as models."""
    ramp = call(impl, "dq_init", fake_raw(), override_mask=refs["mask"])
    ramp = call(impl, "saturation", ramp, override_saturation=refs["saturation"])
    return call(impl, "linearity", ramp, override_linearity=refs["linearity"],
                override_inverselinearity=refs["inverselinearity"], override_integralnonlinearity="N/A")


# ------------------------------------------------------- items 1 and 2: models, small
def test_reference_models_and_small_exposures(crds, in_tmp):
    """Reference overrides as opened models, on a 20 x 20 create_fake_data exposure: the
    ramp steps, both ramp fits and the image steps agree; nothing is written to disk."""
    results: dict[str, dict[str, Any]] = {}
    for impl in IMPLS:
        refs = fake_refs()
        out: dict[str, Any] = {}
        ramp = out["ramp"] = ramp_chain(impl, refs)
        for algorithm in ("ols_cas22", "likely"):
            image = call(impl, "ramp_fit", ramp.copy(), algorithm=algorithm,
                         override_readnoise=refs["readnoise"], override_gain=refs["gain"])
            out[algorithm] = image
        image = call(impl, "dark", out["ols_cas22"], override_dark=refs["dark"])
        image = call(impl, "flat_field", image, override_flat=refs["flat"])
        image = call(impl, "photom", image, override_photom=rdm.WfiImgPhotomRefModel.create_fake_data())
        out["image"] = image
        results[impl] = out
        assert sorted(os.listdir(in_tmp)) == []  # no reference or product written
        # the user's reference models are untouched and still open
        assert refs["mask"].dq[3, 5] == 1 and refs["gain"].data[0, 0] == 2.0
    got, want = results["gpucal"], results["romancal"]
    for model in (got["ramp"], want["ramp"]):
        assert type(model).__name__ == "RampModel"
        for key in ("dq_init", "saturation", "linearity"):
            assert model.meta.cal_step[key] == "COMPLETE"
        assert model.meta.ref_file.mask == "override://MaskRefModel"
        assert model.meta.ref_file.saturation == "override://SaturationRefModel"
        assert model.meta.ref_file.linearity == "override://LinearityRefModel"
    failures, _ = array_differences(got["ramp"], want["ramp"], ("data", "groupdq", "pixeldq"), atol=1e-3)
    assert not failures, failures
    assert np.count_nonzero(want["ramp"].groupdq & 2), "the test should saturate some resultants"
    for algorithm in ("ols_cas22", "likely"):
        g, w = got[algorithm], want[algorithm]
        assert g.meta.cal_step.ramp_fit == w.meta.cal_step.ramp_fit == "COMPLETE"
        assert g.meta.ref_file.gain == w.meta.ref_file.gain == "override://GainRefModel"
        failures, _ = array_differences(g, w, ("data", "dq"), rtol=SLOPE_RTOL, atol=1e-6)
        assert not failures, (algorithm, failures)
    g, w = got["image"], want["image"]
    for model in (g, w):
        assert model.meta.cal_step.dark == "COMPLETE" and model.meta.cal_step.flat_field == "COMPLETE"
        assert model.meta.cal_step.photom == "COMPLETE"
        assert model.meta.ref_file.dark == "override://DarkRefModel"
        assert model.meta.ref_file.photom == "override://WfiImgPhotomRefModel"
    assert dict(g.meta.photometry) == dict(w.meta.photometry)
    failures, _ = array_differences(g, w, ("data", "dq"), rtol=SLOPE_RTOL, atol=1e-6)
    assert not failures, failures


def test_reference_model_checked_as_a_file_is(crds, in_tmp):
    """A reference model for another detector or of the wrong shape is refused like a file."""
    from gpucal.errors import ReferenceFileError

    refs = fake_refs()
    refs["mask"].meta.instrument.detector = "WFI02"
    with pytest.raises(ReferenceFileError, match="detector WFI02"):
        call("gpucal", "dq_init", fake_raw(), override_mask=refs["mask"])
    ramp = call("gpucal", "dq_init", fake_raw(), override_mask=fake_refs()["mask"])
    small = rdm.SaturationRefModel.create_fake_data(shape=(10, 10))
    with pytest.raises(ReferenceFileError, match="shape"):
        call("gpucal", "saturation", ramp, override_saturation=small)
    with pytest.raises(ReferenceFileError, match="GainRefModel, expected SaturationRefModel"):
        call("gpucal", "saturation", ramp, override_saturation=refs["gain"])


def test_steps_that_need_the_wfi_layout_or_read_pattern_say_so(crds, in_tmp):
    """refpix needs the 32-channel layout; the timed steps need a read pattern: one line each."""
    from gpucal.errors import InputFileError, ReadPatternError

    refs = fake_refs()
    ramp = call("gpucal", "dq_init", fake_raw(), override_mask=refs["mask"])
    with pytest.raises(InputFileError, match="not a WFI layout.*refpix needs it"):
        call("gpucal", "refpix", ramp, override_refpix=str(crds.references["refpix"]))
    ramp.meta.exposure.read_pattern = []
    for step, overrides in (("saturation", {"override_saturation": refs["saturation"]}),
                            ("ramp_fit", {"override_gain": refs["gain"], "override_readnoise": refs["readnoise"]})):
        with pytest.raises(ReadPatternError, match="needs meta.exposure.read_pattern") as info:
            call("gpucal", step, ramp, **overrides)
        assert "\n" not in str(info.value)
    # dq_init takes an empty read pattern and a placeholder frame time, as romancal's does
    raw = fake_raw()
    raw.meta.exposure.read_pattern = []
    raw.meta.exposure.frame_time = -999999.0
    for impl in IMPLS:
        assert call(impl, "dq_init", raw.copy(), override_mask=refs["mask"]).meta.cal_step.dq_init == "COMPLETE"


# --------------------------------------------------------------- item 9: exceptions
def test_read_pattern_mismatch_is_a_runtime_error(crds, in_tmp):
    refs = fake_refs()
    for impl in IMPLS:
        ramp = ramp_chain(impl, refs)
        ramp.meta.exposure.read_pattern = [list(r) for r in ramp.meta.exposure.read_pattern][:5]
        with pytest.raises(RuntimeError):
            call(impl, "ramp_fit", ramp, algorithm="ols_cas22",
                 override_readnoise=refs["readnoise"], override_gain=refs["gain"])


def test_missing_files_are_file_not_found_errors(crds, tmp_path):
    """romancal raises FileNotFoundError for a missing input or override file; so does gpucal
    (its error classes derive from both), with a one-line message."""
    for impl in IMPLS:
        with pytest.raises(FileNotFoundError):
            call(impl, "dq_init", str(tmp_path / "nope_uncal.asdf"))
        with pytest.raises(FileNotFoundError) as info:
            call(impl, "dq_init", str(crds.uncal), override_mask=str(tmp_path / "nope_mask.asdf"))
        assert "nope_mask.asdf" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------ item 6: get_reference_file
def test_get_reference_file(crds, in_tmp):
    uncal = str(crds.uncal)
    mask_model = fake_refs()["mask"]
    for impl in IMPLS:
        step = cls(impl, "dq_init")()
        model = rdm.open(uncal)
        path = step.get_reference_file(model, "mask")
        assert Path(path).name == Path(crds.references["mask"]).name and Path(path).is_file()
        assert Path(step.get_reference_file(model, "gain")).name == Path(crds.references["gain"]).name
        step = cls(impl, "dq_init")(override_mask=mask_model)
        assert step.get_reference_file(model, "mask") is mask_model


# ------------------------------------------------- items 3, 4, 5: the pipeline object
def make_pipeline(impl: str) -> Any:
    """A romancal user's pipeline set-up (refpix and dark_decay off: a 64 x 256 frame)."""
    pipe = cls(impl, "roman_elp")(**({"backend": "cpu"} if impl == "gpucal" else {}))
    pipe.refpix.skip = True
    pipe.dark_decay.skip = True
    pipe.source_catalog.skip = True
    pipe.tweakreg.skip = True
    pipe.rampfit.algorithm = "ols_cas22"
    if impl == "gpucal":
        pipe.jump.skip = True  # gpucal's extra jump step (romancal 1.1.0's ELP has none)
    return pipe


def test_pipeline_attributes_and_result(crds, in_tmp):
    results = {}
    for impl in IMPLS:
        pipe = make_pipeline(impl)
        assert pipe.rampfit.algorithm == "ols_cas22" and pipe.refpix.skip is True
        with quiet_romancal():
            result = pipe.run(str(crds.uncal))
        assert isinstance(result, tuple) and len(result) == 3
        model, catalog, segmentation = result
        assert type(model).__name__ == "ImageModel" and catalog is None and segmentation is None
        cal = dict(model.meta.cal_step)
        assert cal["refpix"] == cal["dark_decay"] == cal["source_catalog"] == cal["tweakreg"] == "SKIPPED"
        assert cal["ramp_fit"] == cal["flat_field"] == "COMPLETE"
        assert sorted(os.listdir(in_tmp)) == []
        results[impl] = model
    failures, _ = array_differences(results["gpucal"], results["romancal"], ("data", "dq"), rtol=SLOPE_RTOL, atol=1e-6)
    assert not failures, failures


def test_pipeline_parameters_are_checked_as_set(crds):
    from gpucal.errors import ParameterError

    pipe = cls("gpucal", "roman_elp")()
    with pytest.raises(ParameterError, match="not one of"):
        pipe.rampfit.algorithm = "fast"
    pipe.rampfit.rejection_threshold = "5"
    assert pipe.steps["rampfit"].params.rejection_threshold == 5.0
    with pytest.raises(ParameterError, match="no source_catalog step"):
        pipe.source_catalog.skip = False
    with pytest.raises(AttributeError):
        pipe.no_such_step  # noqa: B018


def test_skipped_steps_do_not_check_their_input(crds, in_tmp):
    """Every step after dq_init skipped: the RampModel comes back (romancal's behaviour)."""
    after = ("saturation", "refpix", "dark_decay", "wfi18_transient", "linearity", "rampfit",
             "dark_current", "assign_wcs", "photom", "flatfield")
    for impl in IMPLS:
        pipe = make_pipeline(impl)
        for name in after:
            getattr(pipe, name).skip = True
        if impl == "gpucal":
            pipe.jump.skip = True
        with quiet_romancal():
            model, _, _ = pipe.run(str(crds.uncal))
        assert type(model).__name__ == "RampModel"
        assert model.meta.cal_step.dq_init == "COMPLETE"
        assert model.meta.cal_step.ramp_fit == "SKIPPED" and model.meta.cal_step.dark == "SKIPPED"


def association(tmp: Path, members: list[Path]) -> dict[str, Any]:
    return {"asn_type": "None", "asn_rule": "DMS_ELPP_Base", "asn_id": "a3001", "asn_pool": "none",
            "program": "1", "version_id": None, "code_version": "1",
            "products": [{"name": "product", "members": [{"expname": m.name, "exptype": "science"}
                                                          for m in members]}]}


@pytest.mark.parametrize("form", ["json", "dict", "library"])
def test_association_and_library_inputs(crds, tmp_path, monkeypatch, form):
    """Two exposures in an association file or a ModelLibrary: a library of two cal models."""
    import shutil

    from romancal.datamodels import ModelLibrary

    members = []
    for i in range(2):
        dest = tmp_path / crds.uncal.name.replace("_0001_", f"_000{i + 1}_")
        shutil.copy(crds.uncal, dest)
        members.append(dest)
    asn = association(tmp_path, members)
    asn_path = tmp_path / "asn.json"
    asn_path.write_text(json.dumps(asn))
    monkeypatch.chdir(tmp_path)
    names = {}
    for impl in IMPLS:
        out = tmp_path / impl
        out.mkdir()
        pipe = make_pipeline(impl)
        pipe.save_results = True
        pipe.output_dir = str(out)
        dataset = {"json": str(asn_path), "dict": asn}.get(form) or ModelLibrary(str(asn_path))
        with quiet_romancal():
            lib, catalogs, segmentations = pipe.run(dataset)
        assert isinstance(lib, ModelLibrary) and len(lib) == 2
        assert len(catalogs) == 0 and len(segmentations) == 0
        with lib:
            for index, model in enumerate(lib):
                assert type(model).__name__ == "ImageModel" and model.meta.cal_step.ramp_fit == "COMPLETE"
                lib.shelve(model, index, modify=False)
        names[impl] = sorted(p.name for p in out.iterdir())
    assert names["gpucal"] == names["romancal"]
    assert [n for n in names["gpucal"] if n.endswith("_cal.asdf")] == sorted(
        m.name.replace("_uncal", "_cal") for m in members)


# ------------------------------------------------------------------ item 8: refpix
@pytest.mark.parametrize("flag", ["remove_offset", "remove_trends", "cosine_interpolate", "fft_interpolate"])
def test_refpix_flags_off_are_refused(crds, flag):
    from gpucal.errors import ParameterError

    with pytest.raises(ParameterError, match=f"{flag}=False is not supported") as info:
        call("gpucal", "refpix", str(crds.uncal), **{flag: False})
    assert "\n" not in str(info.value)
    with pytest.raises(ParameterError, match=f"{flag}=False"):
        cls("gpucal", "roman_elp")(steps={"refpix": {flag: False}})
    pipe = cls("gpucal", "roman_elp")()
    with pytest.raises(ParameterError, match=f"{flag}=False"):
        setattr(pipe.refpix, flag, False)
    assert getattr(pipe.refpix, flag) is True


# ------------------------------------------------------- item 10: stpipe's generics
def test_stpipe_generic_parameters(crds, tmp_path, monkeypatch):
    """The generic parameters are accepted; output_use_model names the product after
    meta.filename, as stpipe does."""
    monkeypatch.chdir(tmp_path)
    raw = rdm.open(crds.uncal)
    names = {}
    for impl in IMPLS:
        out = tmp_path / impl
        model = raw.copy()
        model.meta.filename = "renamed_uncal.asdf"
        call(impl, "dq_init", model, pre_hooks=[], post_hooks=[], update_version=True, search_output_file=True,
             output_use_index=True, output_use_model=True, save_results=True, output_dir=str(out))
        names[impl] = sorted(p.name for p in out.iterdir())
    assert names["gpucal"] == names["romancal"] and len(names["gpucal"]) == 1
    assert names["gpucal"][0].startswith("renamed_")


def test_hooks_are_refused_with_one_line(crds, tmp_path):
    from gpucal.config import read_parameter_file
    from gpucal.errors import ParameterError

    with pytest.raises(ParameterError, match="pre_hooks are not supported") as info:
        call("gpucal", "dq_init", str(crds.uncal), pre_hooks=["os.getcwd"])
    assert "\n" not in str(info.value)
    pars = tmp_path / "pars.yaml"
    pars.write_text("class: romancal.dq_init.DQInitStep\nparameters:\n  post_hooks: [\"echo hi\"]\n")
    _, values = read_parameter_file(pars)
    with pytest.raises(ParameterError, match="post_hooks are not supported"):
        cls("gpucal", "dq_init").call(str(crds.uncal), config_file=str(pars))
    assert values["post_hooks"] == ["echo hi"]


@pytest.mark.parametrize("hooks", ["pre_hooks", "post_hooks"])
def test_hooks_in_a_romancal_parameter_file_are_refused_by_strun(crds, tmp_path, capsys, hooks):
    """romancal's exported parameter file (empty hooks) runs; one with a hook is refused."""
    from romancal.pipeline import ExposurePipeline

    from gpucal.cli import run_strun

    pars = tmp_path / "elp.asdf"
    with quiet_romancal():
        pipe = ExposurePipeline()
        getattr(pipe.dq_init, hooks).append("echo hi")
        pipe.export_config(str(pars))
    status = run_strun([str(pars), str(crds.uncal), "--backend=cpu", f"--output_dir={tmp_path / 'out'}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("strun: error:")]
    assert status == 1 and len(err) == 1 and f"{hooks} are not supported" in err[0], err
    assert not (tmp_path / "out").exists()


def test_strun_association(crds, tmp_path):
    """``strun roman_elp asn.json`` calibrates every member and names products after them."""
    import shutil

    from gpucal.cli import run_strun

    members = []
    for name in ("a_uncal.asdf", "b_uncal.asdf"):
        shutil.copy(crds.uncal, tmp_path / name)
        members.append(tmp_path / name)
    (tmp_path / "asn.json").write_text(json.dumps(association(tmp_path, members)))
    out = tmp_path / "out"
    assert run_strun(["roman_elp", str(tmp_path / "asn.json"), "--backend=cpu", f"--output_dir={out}"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_cal.asdf", "a_wcs.asdf", "b_cal.asdf", "b_wcs.asdf"]


@pytest.mark.parametrize("search", [True, False])
def test_search_output_file_names_intermediates_alike(crds, tmp_path, search):
    """stpipe's search_output_file: a saved sub-step product takes the pipeline's
    output_file as its base name, unless the step turns the search off."""
    names = {}
    for impl in IMPLS:
        out = tmp_path / impl
        pipe = make_pipeline(impl)
        for name in ("saturation", "linearity", "rampfit", "dark_current", "assign_wcs", "photom", "flatfield"):
            getattr(pipe, name).skip = True
        pipe.output_dir = str(out)
        pipe.output_file = "custom"
        pipe.dq_init.save_results = True
        pipe.dq_init.search_output_file = search
        with quiet_romancal():
            pipe.run(str(crds.uncal))
        names[impl] = sorted(p.name for p in out.iterdir())
    assert names["gpucal"] == names["romancal"]
    assert any(n.startswith("custom") for n in names["gpucal"]) is search


def test_romancal_parameter_file_from_python(crds, tmp_path, monkeypatch):
    """``ExposurePipeline.call(x, config_file=...)`` with romancal's exported parameter file
    (source_catalog and tweakreg sections included) runs as strun runs it."""
    from romancal.pipeline import ExposurePipeline

    monkeypatch.chdir(tmp_path)
    pars = tmp_path / "elp.asdf"
    with quiet_romancal():
        pipe = ExposurePipeline()
        for name in ("refpix", "dark_decay", "rampfit", "dark_current", "assign_wcs", "photom", "flatfield"):
            getattr(pipe, name).skip = True
        pipe.export_config(str(pars))
    model, catalog, segmentation = cls("gpucal", "roman_elp").call(str(crds.uncal), config_file=str(pars),
                                                                    backend="cpu")
    assert type(model).__name__ == "RampModel" and catalog is None and segmentation is None
    assert model.meta.cal_step.saturation == "COMPLETE" and model.meta.cal_step.ramp_fit == "SKIPPED"
