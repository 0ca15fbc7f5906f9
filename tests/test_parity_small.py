"""Step-by-step parity with romancal 1.1.0 on a small full-width frame (64 x 4096).

romancal's steps need the full detector width (refpix splits the columns into 32
channels of 128), but most accept any number of rows; only ``dark_decay`` does not:
``romancal.lib.basic_utils.frame_read_times`` builds a 4096 x 4096 read-time map, so
on 64 rows it fails to broadcast.  Here a 64 x 4096, 6-resultant demo runs every other
step of the ExposurePipeline (``wfi18_transient`` takes its N/A path: the demo is WFI01);
``dark_decay`` is compared on the full frame in ``tests/fullframe/test_parity.py``.

Each gpucal step (CPU backend) and the romancal step get the **same** input, romancal's
previous output, so differences cannot accumulate.  Everything must agree exactly
(bit for bit, NaNs in the same places) except refpix, whose FFTs are computed in a
different order (tolerance ``REFPIX_ATOL`` DN; flags still identical).

The helpers here are shared with the full-frame parity module.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.oracle
pytest.importorskip("romancal", minversion="1.1.0")

WIDE_FRAME = {"ny": 64, "nx": 4096, "nresultants": 6, "seed": 7}

#: |gpucal - romancal| allowed after refpix (DN): float32 FFT rounding on values of
#: ~1e3-1e4 DN (measured: <= 5e-4 DN on the full frame)
REFPIX_ATOL = 2e-3

BORDERS = tuple(f"border_ref_pix_{side}" for side in ("left", "right", "top", "bottom"))
DQ_BORDERS = tuple(f"dq_{name}" for name in BORDERS)
RAMP_ARRAYS = ("data", "groupdq", "pixeldq", "amp33", *BORDERS, *DQ_BORDERS)
IMAGE_ARRAYS = ("data", "dq", "err", "var_poisson", "chisq", "dumo", "amp33", *BORDERS, *DQ_BORDERS)

#: ELP steps in order: (step key, romancal class path, gpucal class path, cal_step key)
RAMP_STEPS = (
    ("dq_init", "romancal.dq_init:DQInitStep", "gpucal.dq_init:DQInitStep", "dq_init"),
    ("saturation", "romancal.saturation:SaturationStep", "gpucal.saturation:SaturationStep", "saturation"),
    ("refpix", "romancal.refpix:RefPixStep", "gpucal.refpix:RefPixStep", "refpix"),
    ("dark_decay", "romancal.dark_decay:DarkDecayStep", "gpucal.dark_decay:DarkDecayStep", "dark_decay"),
    ("wfi18_transient", "romancal.wfi18_transient:WFI18TransientStep",
     "gpucal.wfi18_transient:WFI18TransientStep", "wfi18_transient"),
    ("linearity", "romancal.linearity:LinearityStep", "gpucal.linearity:LinearityStep", "linearity"),
)
RAMPFIT = ("romancal.ramp_fitting:RampFitStep", "gpucal.ramp_fitting:RampFitStep")
IMAGE_STEPS = (
    ("dark_current", "romancal.dark_current:DarkCurrentStep", "gpucal.dark_current:DarkCurrentStep", "dark"),
    ("assign_wcs", "romancal.assign_wcs:AssignWcsStep", "gpucal.assign_wcs:AssignWcsStep", "assign_wcs"),
    ("photom", "romancal.photom:PhotomStep", "gpucal.photom:PhotomStep", "photom"),
    ("flatfield", "romancal.flatfield:FlatFieldStep", "gpucal.flatfield:FlatFieldStep", "flat_field"),
)
#: reference types each step records in meta.ref_file
STEP_REFTYPES = {
    "dq_init": ("mask",), "saturation": ("saturation",), "refpix": ("refpix",),
    "dark_decay": ("darkdecaysignal",), "wfi18_transient": (),
    "linearity": ("linearity", "inverselinearity", "integralnonlinearity"),
    "rampfit": ("readnoise", "gain"), "dark_current": ("dark",), "assign_wcs": ("distortion",),
    "photom": ("photom",), "flatfield": ("flat",),
}


# ----------------------------------------------------------------------------- helpers
def load_class(path: str) -> Any:
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def crds_environment(environment: dict[str, str]) -> Iterator[None]:
    """Point crds (gpucal's and romancal's in-process client) at a demo cache."""
    from gpucal.crds_local import crds_info

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("CRDS_PATH_SINGLE", "CRDS_MAPPATH", "CRDS_REFPATH", "CRDS_CFGPATH")):
                mp.delenv(key)
        for key, value in environment.items():
            mp.setenv(key, value)
        crds_info()  # re-points crds and forgets mappings memoised under another cache
        yield


@contextlib.contextmanager
def quiet_romancal() -> Iterator[None]:
    """romancal logs every parameter of every step at INFO: keep pytest's capture small."""
    import logging

    names = ("stpipe", "romancal", "CRDS", "stcal")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def gpucal_input(romancal_model: Any) -> Any:
    """A private copy of romancal's in-memory output for gpucal's next step.

    romancal's refpix leaves ``border_ref_pix_left/right`` as views into ``data`` (so
    later in-place corrections show in them); a deep copy would cut that link, so it is
    restored here to hand gpucal the same in-memory state romancal's next step sees.
    """
    if romancal_model._asdf is None:  # built in memory (no file): copy() needs an AsdfFile
        model = type(romancal_model)(copy.deepcopy(romancal_model._instance))
    else:
        model = romancal_model.copy()
    inst = romancal_model._instance
    if "border_ref_pix_left" in inst and np.may_share_memory(inst["border_ref_pix_left"], inst["data"]):
        model.border_ref_pix_left = model.data[:, :, :4]
        model.border_ref_pix_right = model.data[:, :, -4:]
    return model


def array_differences(got: Any, want: Any, names: Sequence[str], atol: float = 0.0,
                      rtol: float = 0.0) -> tuple[list[str], dict[str, float]]:
    """Compare arrays of two models: flags must be identical, values within tolerance.

    Returns the failure messages and the largest |got - want| of each float array
    (over elements finite on both sides).  NaNs must be at the same places.
    """
    failures: list[str] = []
    maxima: dict[str, float] = {}
    for name in names:
        in_got, in_want = name in got._instance, name in want._instance
        if in_got != in_want:
            failures.append(f"{name}: present in gpucal {in_got}, in romancal {in_want}")
            continue
        if not in_got:
            continue
        a, b = np.asarray(got[name]), np.asarray(want[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            failures.append(f"{name}: gpucal {a.dtype}{a.shape} vs romancal {b.dtype}{b.shape}")
            continue
        if a.dtype.kind in "iub":
            bad = a != b
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                failures.append(f"{name}: {int(bad.sum())} elements differ, first at {idx}: {a[idx]} vs {b[idx]}")
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        nan_a, nan_b = np.isnan(a64), np.isnan(b64)
        both = np.isfinite(a64) & np.isfinite(b64)
        diff = np.abs(a64 - b64, where=both, out=np.zeros(a.shape))
        maxima[name] = float(diff.max()) if diff.size else 0.0
        bad = (nan_a != nan_b) | (both & (diff > atol + rtol * np.abs(b64)))
        bad |= ~both & ~(nan_a & nan_b) & (a64 != b64)  # infinities must match too
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            failures.append(f"{name}: {int(bad.sum())} elements beyond tolerance (max |diff| {maxima[name]:.3g}), "
                            f"first at {idx}: {a[idx]!r} vs {b[idx]!r}")
    return failures, maxima


def meta_differences(got: Any, want: Any, cal_step_key: str, reftypes: Sequence[str]) -> list[str]:
    """The metadata a step owns: its cal_step value and its meta.ref_file records."""
    failures = []
    g_cal, r_cal = got.meta.cal_step.get(cal_step_key), want.meta.cal_step.get(cal_step_key)
    if g_cal != r_cal:
        failures.append(f"cal_step.{cal_step_key}: gpucal {g_cal!r}, romancal {r_cal!r}")
    for reftype in reftypes:
        g_ref, r_ref = got.meta.ref_file.get(reftype), want.meta.ref_file.get(reftype)
        if g_ref != r_ref:
            failures.append(f"ref_file.{reftype}: gpucal {g_ref!r}, romancal {r_ref!r}")
    return failures


def wcs_differences(got: Any, want: Any, shape: tuple[int, int], tol_deg: float = 1e-9) -> list[str]:
    """Compare two gwcs objects at a 17 x 17 grid of pixels (edges included) and their
    frames and bounding boxes; and the s_region strings."""
    failures = []
    g_wcs, r_wcs = got.meta.wcs, want.meta.wcs
    if (g_wcs is None) != (r_wcs is None):
        return [f"meta.wcs: gpucal {type(g_wcs).__name__}, romancal {type(r_wcs).__name__}"]
    if g_wcs is None:
        return []
    if g_wcs.available_frames != r_wcs.available_frames:
        failures.append(f"frames: {g_wcs.available_frames} vs {r_wcs.available_frames}")
    if np.asarray(g_wcs.bounding_box.bounding_box()).tolist() != np.asarray(r_wcs.bounding_box.bounding_box()).tolist():
        failures.append(f"bounding box: {g_wcs.bounding_box} vs {r_wcs.bounding_box}")
    ny, nx = shape
    y, x = np.meshgrid(np.linspace(-0.5, ny - 0.5, 17), np.linspace(-0.5, nx - 0.5, 17), indexing="ij")
    g_ra, g_dec = g_wcs(x, y)
    r_ra, r_dec = r_wcs(x, y)
    d_ra = np.abs((np.asarray(g_ra) - r_ra + 180.0) % 360.0 - 180.0)
    d_dec = np.abs(np.asarray(g_dec) - r_dec)
    worst = float(max(np.max(d_ra), np.max(d_dec)))
    if not np.isfinite(worst) or worst > tol_deg:
        failures.append(f"world coordinates differ by up to {worst:.3g} deg")
    g_reg, r_reg = got.meta.wcsinfo.get("s_region"), want.meta.wcsinfo.get("s_region")
    if g_reg != r_reg:
        failures.append(f"s_region: gpucal {g_reg!r}, romancal {r_reg!r}")
    return failures


def photometry_differences(got: Any, want: Any) -> list[str]:
    g_ph, r_ph = dict(got.meta.photometry), dict(want.meta.photometry)
    return [] if g_ph == r_ph else [f"meta.photometry: gpucal {g_ph}, romancal {r_ph}"]


def image_meta_differences(got: Any, want: Any) -> list[str]:
    """What a Level 2 image from ramp fitting must carry like romancal's."""
    failures = []
    for key in ("model_type", "product_type"):
        if got.meta[key] != want.meta[key]:
            failures.append(f"meta.{key}: {got.meta[key]!r} vs {want.meta[key]!r}")
    g_cal = {k: v for k, v in got.meta.cal_step.items() if k != "jump"}
    if g_cal != dict(want.meta.cal_step):
        failures.append(f"cal_step: gpucal {g_cal}, romancal {dict(want.meta.cal_step)}")
    return failures + photometry_differences(got, want)


def jump_index_differences(got: Any, want: Any) -> list[str]:
    in_got, in_want = "jump_indices" in got._instance, "jump_indices" in want._instance
    if in_got != in_want:
        return [f"jump_indices present: gpucal {in_got}, romancal {in_want}"]
    if not in_got:
        return []
    a, b = np.asarray(got.jump_indices), np.asarray(want.jump_indices)
    if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
        return [f"jump_indices: gpucal {a.dtype}{a.shape}, romancal {b.dtype}{b.shape}, equal values "
                f"{a.shape == b.shape and np.array_equal(a, b)}"]
    return []


def run_pair(romancal_cls: str, gpucal_cls: str, model: Any, **params: Any) -> tuple[Any, Any]:
    """(gpucal result, romancal result) of one step on the same input model or path.

    gpucal gets a private copy; romancal's step may change ``model`` in place.
    """
    g_in = model if isinstance(model, str | os.PathLike) else gpucal_input(model)
    got = load_class(gpucal_cls).call(g_in, backend="cpu", **params)
    with quiet_romancal():
        want = load_class(romancal_cls).call(model, **params)
    return got, want


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def wide_demo(tmp_path_factory):
    from gpucal.demo.run import prepare_demo

    return prepare_demo(tmp_path_factory.mktemp("wide_demo"), **WIDE_FRAME)


@pytest.fixture(scope="module")
def wide_chain(wide_demo) -> dict[str, Any]:
    """Failures per step of the ramp and image chain, each step fed romancal's output."""
    results: dict[str, list[str]] = {}
    with crds_environment(wide_demo.environment):
        model: Any = str(wide_demo.uncal)
        for key, r_cls, g_cls, cal_key in RAMP_STEPS:
            if key == "dark_decay":
                continue  # romancal's frame_read_times is 4096 x 4096 only
            got, model = run_pair(r_cls, g_cls, model)
            atol = REFPIX_ATOL if key == "refpix" else 0.0
            failures, _ = array_differences(got, model, RAMP_ARRAYS, atol=atol)
            results[key] = failures + meta_differences(got, model, cal_key, STEP_REFTYPES[key])
        ramp = model
        images = {}
        for algorithm, params in (("likely", {}), ("ols_cas22", {}),
                                  ("ols_cas22_nojump", {"use_ramp_jump_detection": False})):
            alg = algorithm.removesuffix("_nojump")
            got, want = run_pair(*RAMPFIT, ramp.copy(), algorithm=alg, **params)
            failures, _ = array_differences(got, want, IMAGE_ARRAYS)
            failures += meta_differences(got, want, "ramp_fit", STEP_REFTYPES["rampfit"])
            failures += image_meta_differences(got, want) + jump_index_differences(got, want)
            results[f"rampfit_{algorithm}"] = failures
            images[algorithm] = want
        image = images["likely"]
        shape = image.data.shape
        for key, r_cls, g_cls, cal_key in IMAGE_STEPS:
            got, image = run_pair(r_cls, g_cls, image)
            failures, _ = array_differences(got, image, IMAGE_ARRAYS)
            failures += meta_differences(got, image, cal_key, STEP_REFTYPES[key])
            failures += photometry_differences(got, image)
            if key == "assign_wcs":
                failures += wcs_differences(got, image, shape)
            results[key] = failures
    return results


WIDE_KEYS = [k for k, *_ in RAMP_STEPS if k != "dark_decay"] + [
    "rampfit_likely", "rampfit_ols_cas22", "rampfit_ols_cas22_nojump", *(k for k, *_ in IMAGE_STEPS)]


@pytest.mark.parametrize("step", WIDE_KEYS)
def test_step_parity_64x4096(wide_chain, step):
    failures = wide_chain[step]
    assert not failures, f"{step} differs from romancal 1.1.0:\n" + "\n".join(failures)

