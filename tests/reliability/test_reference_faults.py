"""Issue 11 items 4, 5 and 6: references that do not fit, hold unusable values, or are cut short.

Each case runs ``strun roman_elp`` in a real process on the small demo, on the CPU backend
and on the device backend (emulated device), and checks the exit status, the one error
line (no traceback), every file left in the output directory (hidden ones included) and
the sha256 of the input and of every reference before and after.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from gpucal.dq import PixelFlag
from tests.reliability._faults import BACKENDS, fingerprints, listing, private_cache, strun, truncate

BORDER = 4


def _edited(crds_env, tmp_path: Path, reftype: str, **arrays) -> Path:
    """A copy of the demo's ``reftype`` reference with some arrays replaced."""
    ref = rdm.open(crds_env.references[reftype])
    for name, value in arrays.items():
        setattr(ref, name, value)
    dest = tmp_path / "refs" / f"edited_{crds_env.references[reftype].name}"
    dest.parent.mkdir(exist_ok=True)
    ref.save(dest)
    return dest


def _check_failed_cleanly(result, out: Path, before: dict[str, str], after: dict[str, str], *needles: str) -> str:
    line = result.one_error()
    assert result.status == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in line, (needle, line)
    assert listing(out) == []
    assert after == before
    return line


# ----------------------------------------------------------------------- item 4: shapes
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("reftype", "option"), [("mask", "dq_init.override_mask"),
                                                 ("flat", "flatfield.override_flat")])
def test_reference_of_the_wrong_shape_is_an_error(crds_env, uncal_copy, tmp_path, backend, reftype, option):
    """A MASK was 'not applied' and a FLAT 'skipped' with a warning, exit 0: now exit 1."""
    ref = rdm.open(crds_env.references[reftype])
    small = {name: np.asarray(getattr(ref, name))[:32, :32].copy() for name in ("data", "dq", "err")
             if name in ref._instance}
    bad = _edited(crds_env, tmp_path, reftype, **small)
    before = fingerprints(uncal_copy, bad, crds_env.crds_path)
    out = tmp_path / "out"
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}", f"--steps.{option}={bad}"], backend, tmp_path)
    _check_failed_cleanly(result, out, before, fingerprints(uncal_copy, bad, crds_env.crds_path),
                          f"{reftype} reference", str(bad), "shape", "(32, 32)")


# ------------------------------------------------------------------ item 6: truncated
@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_reference_names_itself(crds_env, uncal_copy, tmp_path, backend):
    """An overridden MASK and the CRDS cache's FLAT, each cut short: the reference and its
    type are named, not the uncal file with 'Decompressed data wrong size'."""
    mask = tmp_path / "refs" / crds_env.references["mask"].name
    mask.parent.mkdir()
    shutil.copy(crds_env.references["mask"], mask)
    truncate(mask, 0.8)
    before = fingerprints(uncal_copy, mask, crds_env.crds_path)
    out = tmp_path / "out"
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}", f"--steps.dq_init.override_mask={mask}"],
                   backend, tmp_path)
    line = _check_failed_cleanly(result, out, before, fingerprints(uncal_copy, mask, crds_env.crds_path),
                                 "mask reference", str(mask))
    assert "Decompressed data wrong size" not in line and not line.startswith(f"strun: error: {uncal_copy}")

    cache = private_cache(crds_env.crds_path, tmp_path / "cache")
    flat = next(cache.rglob(crds_env.references["flat"].name))
    truncate(flat, 0.7)
    before = fingerprints(uncal_copy, cache)
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}"], backend, tmp_path,
                   env={"CRDS_PATH": str(cache)})
    line = _check_failed_cleanly(result, out, before, fingerprints(uncal_copy, cache), "flat reference", str(flat))
    assert "Decompressed data wrong size" not in line


def test_every_reference_type_truncated(crds_env, tmp_path):
    """Every reference type, cut short in its blocks (or its YAML): one error naming the type
    and the file (in process: this is the function every step opens them with)."""
    from gpucal.errors import ReferenceFileError
    from gpucal.refs import Resolved, open_reference

    exposure = rdm.open(crds_env.uncal)
    tried = 0
    for reftype, path in sorted(crds_env.references.items()):
        from tests.reliability._faults import asdf_blocks

        blocks = asdf_blocks(path)
        size = path.stat().st_size
        # inside the first and the last block; a file without blocks (tables,
        # transforms) is cut inside its YAML tree
        cuts = ((blocks[0].data_at + blocks[0].used // 2, blocks[-1].data_at + blocks[-1].used - 3) if blocks
                else (size // 2, size - 40))
        for cut in cuts:
            bad = tmp_path / f"{reftype}_{cut}.asdf"
            bad.write_bytes(path.read_bytes()[:cut])
            with pytest.raises(ReferenceFileError) as err:
                open_reference(Resolved(reftype, str(bad), str(bad)), exposure)
            text = str(err.value)
            assert len(text.splitlines()) == 1
            assert text.startswith(f"{reftype} reference {bad}"), text
            tried += 1
    assert tried == 2 * len(crds_env.references) == 26


# --------------------------------------------------------------- item 5: unusable values
@pytest.mark.parametrize("backend", BACKENDS)
def test_unusable_reference_values_are_flagged_and_counted(crds_env, uncal_copy, tmp_path, backend):
    """NaN dark rates, NaN/zero flat values, NaN/zero gains: flagged as romancal does (the
    dark: UNRELIABLE_DARK | DO_NOT_USE, where romancal leaves dq 0), one warning each with
    the count, exit 0."""
    dark = rdm.open(crds_env.references["dark"])
    dark_slope = np.array(dark.dark_slope)
    dark_slope[10:30, 20:60] = np.nan  # 800 pixels, all in the science area
    flat_ref = rdm.open(crds_env.references["flat"])
    flat = np.array(flat_ref.data)
    flat[0:2, 0:3] = np.nan
    flat[5, 5:9] = 0.0
    gain_ref = rdm.open(crds_env.references["gain"])
    gain = np.array(gain_ref.data)
    gain[40:42, 100:110] = np.nan
    gain[50, 100:105] = 0.0
    paths = {
        "dark": _edited(crds_env, tmp_path, "dark", dark_slope=dark_slope),
        "flat": _edited(crds_env, tmp_path, "flat", data=flat),
        "gain": _edited(crds_env, tmp_path, "gain", data=gain),
    }
    before = fingerprints(uncal_copy, crds_env.crds_path, *paths.values())
    out = tmp_path / "out"
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}",
                    f"--steps.dark_current.override_dark={paths['dark']}",
                    f"--steps.flatfield.override_flat={paths['flat']}",
                    f"--steps.rampfit.override_gain={paths['gain']}", f"--steps.jump.override_gain={paths['gain']}"],
                   backend, tmp_path)
    assert result.status == 0, result.stderr[-3000:]
    assert result.errors == [] and "Traceback" not in result.stderr
    assert fingerprints(uncal_copy, crds_env.crds_path, *paths.values()) == before
    n_flat = int(np.count_nonzero(np.isnan(flat) | (flat == 0)))
    n_gain = int(np.count_nonzero(~np.isfinite(gain) | (gain <= 0)))
    warnings = [line for line in result.stderr.splitlines() if " - WARNING - " in line]
    for reftype, count, total in (("DARK", 800, 56 * 248), ("FLAT", n_flat, 56 * 248), ("GAIN", n_gain, 64 * 256)):
        assert any(f"{reftype} reference {paths[reftype.lower()]}" in w and f" at {count} of {total} pixels" in w
                   for w in warnings), (reftype, warnings)

    cal = rdm.open(next(out.glob("*_cal.asdf")))
    dq = np.asarray(cal.dq)
    assert cal.meta.gpucal["backend"] == ("cpu" if backend == "cpu" else "emulated")
    dark_bad = np.isnan(dark_slope)[BORDER:-BORDER, BORDER:-BORDER]
    want = PixelFlag.UNRELIABLE_DARK | PixelFlag.DO_NOT_USE
    assert np.all(dq[dark_bad] & want == want)
    assert np.all(np.isnan(np.asarray(cal.data)[dark_bad]))  # romancal's NaN, now flagged
    flat_bad = np.isnan(flat) | (flat == 0)
    assert np.all(dq[flat_bad] & PixelFlag.NO_FLAT_FIELD)
    gain_nan = np.isnan(gain)[BORDER:-BORDER, BORDER:-BORDER]
    gain_zero = (gain == 0)[BORDER:-BORDER, BORDER:-BORDER]
    assert np.all(dq[gain_nan] & (PixelFlag.NO_GAIN_VALUE | PixelFlag.DO_NOT_USE)
                  == (PixelFlag.NO_GAIN_VALUE | PixelFlag.DO_NOT_USE))
    assert np.all(dq[gain_zero] & PixelFlag.DO_NOT_USE)
    assert cal.meta.cal_step.flat_field == "COMPLETE" and cal.meta.cal_step.dark == "COMPLETE"


def _all(value):
    return lambda arr: np.full_like(np.asarray(arr), value)


UNUSABLE = {
    # case: (reftype, step option, array, new value, words in the message)
    "flat all NaN": ("flat", "flatfield.override_flat", "data", np.nan, "data is NaN or zero at every pixel"),
    "gain all zero": ("gain", "rampfit.override_gain", "data", 0.0, "at every pixel"),
    "dark all NaN": ("dark", "dark_current.override_dark", "dark_slope", np.nan, "dark_slope is NaN at every pixel"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_reference_unusable_everywhere_is_an_error(crds_env, uncal_copy, tmp_path, backend, case):
    reftype, option, name, value, words = UNUSABLE[case]
    ref = rdm.open(crds_env.references[reftype])
    bad = _edited(crds_env, tmp_path, reftype, **{name: _all(value)(getattr(ref, name))})
    before = fingerprints(uncal_copy, bad, crds_env.crds_path)
    out = tmp_path / "out"
    args = ["roman_elp", str(uncal_copy), f"--output_dir={out}", f"--steps.{option}={bad}"]
    if reftype == "gain":
        args.append(f"--steps.jump.override_gain={bad}")
    result = strun(args, backend, tmp_path)
    _check_failed_cleanly(result, out, before, fingerprints(uncal_copy, bad, crds_env.crds_path),
                          f"{reftype} reference {bad}", words, "unusable")


@pytest.mark.parametrize(("reftype", "step", "name", "value"), [
    ("flat", "flatfield.override_flat", "data", 0.0),
    ("readnoise", "rampfit.override_readnoise", "data", np.nan),
    ("saturation", "saturation.override_saturation", "data", np.nan),
    ("linearity", "linearity.override_linearity", "coeffs", np.nan),
])
def test_other_references_unusable_everywhere(crds_env, uncal_copy, tmp_path, capsys, reftype, step, name, value):
    """The same rule for the other cases (in process, CPU backend: the rule is the step's)."""
    from gpucal.cli import run_strun

    ref = rdm.open(crds_env.references[reftype])
    bad = _edited(crds_env, tmp_path, reftype, **{name: _all(value)(getattr(ref, name))})
    out = tmp_path / "out"
    args = ["roman_elp", str(uncal_copy), f"--output_dir={out}", f"--steps.{step}={bad}", "--backend=cpu"]
    if reftype == "readnoise":
        args.append(f"--steps.jump.override_readnoise={bad}")
    status = run_strun(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("strun: error:")]
    assert status == 1 and len(err) == 1, err
    assert f"{reftype} reference {bad}" in err[0] and "every pixel" in err[0]
    assert listing(out) == []
