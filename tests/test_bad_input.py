"""Bad input: one clear line, the right exit status, no output left, input unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asdf
import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from gpucal.cli import run_strun


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv, outdir, capsys):
    """Exit status and the error lines (log records on stderr are not errors)."""
    status = run_strun([*argv, f"--output_dir={outdir}"])
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    return status, [line for line in stderr.splitlines() if line.startswith("strun: error:")]


def _assert_clean(outdir: Path):
    leftovers = sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []
    assert leftovers == [], leftovers


def _write_unvalidated(model, path: Path, monkeypatch) -> None:
    """Write a deliberately malformed model (bypassing asdf's schema check on write)."""
    import asdf.yamlutil

    monkeypatch.setattr(asdf.yamlutil.schema, "validate", lambda *args, **kwargs: None)
    model.to_asdf(path)
    monkeypatch.undo()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"SIMPLE  =                    T / a FITS file, not ASDF\n" * 10, "not an ASDF file"),
    ],
)
def test_not_asdf(tmp_path, capsys, content, message, crds_env):
    bad = tmp_path / "bad_uncal.asdf"
    bad.write_bytes(content)
    before = _digest(bad)
    out = tmp_path / "out"
    status, err = _run(["roman_elp", str(bad)], out, capsys)
    assert status == 1 and len(err) == 1 and message in err[0]
    assert _digest(bad) == before
    _assert_clean(out)


def test_missing_file(tmp_path, capsys):
    status, err = _run(["roman_elp", str(tmp_path / "nope_uncal.asdf")], tmp_path / "out", capsys)
    assert status == 1 and len(err) == 1 and "not found" in err[0]


def test_truncated_asdf(uncal_copy, tmp_path, capsys, crds_env):
    data = uncal_copy.read_bytes()
    uncal_copy.write_bytes(data[: len(data) * 2 // 3])
    before = _digest(uncal_copy)
    out = tmp_path / "out"
    status, err = _run(["roman_elp", str(uncal_copy)], out, capsys)
    assert status == 1 and len(err) == 1, err
    assert _digest(uncal_copy) == before
    _assert_clean(out)


def test_asdf_that_is_not_a_roman_model(tmp_path, capsys):
    path = tmp_path / "plain_uncal.asdf"
    asdf.AsdfFile({"data": np.zeros((2, 2))}).write_to(path)
    status, err = _run(["roman_elp", str(path)], tmp_path / "out", capsys)
    assert status == 1 and len(err) == 1 and "not a Roman datamodel" in err[0]


def test_wrong_kind_of_roman_model(tmp_path, capsys, crds_env):
    path = tmp_path / "mask_uncal.asdf"
    rdm.open(crds_env.references["mask"]).save(path)
    status, err = _run(["roman_elp", str(path)], tmp_path / "out", capsys)
    assert status == 1 and len(err) == 1 and "MaskRefModel" in err[0] and "ScienceRawModel" in err[0]


def test_wrong_shape(tmp_path, capsys, crds_env, monkeypatch):
    raw = rdm.open(crds_env.uncal)
    raw.data = np.asarray(raw.data)[:, :, :250].copy()  # 250 columns: not 32 channels
    path = tmp_path / "shape_uncal.asdf"
    raw.save(path)
    out = tmp_path / "out"
    status, err = _run(["roman_elp", str(path)], out, capsys)
    assert status == 1 and len(err) == 1 and "not a WFI layout" in err[0]
    _assert_clean(out)


def test_wrong_dtype(tmp_path, capsys, crds_env, monkeypatch):
    raw = rdm.open(crds_env.uncal)
    raw.data = np.asarray(raw.data).astype(np.float32)
    path = tmp_path / "dtype_uncal.asdf"
    _write_unvalidated(raw, path, monkeypatch)
    status, err = _run(["roman_elp", str(path)], tmp_path / "out", capsys)
    assert status == 1 and len(err) == 1 and "uint16" in err[0]


def test_missing_read_pattern(tmp_path, capsys, crds_env, monkeypatch):
    raw = rdm.open(crds_env.uncal)
    del raw.meta.exposure["read_pattern"]
    path = tmp_path / "nopattern_uncal.asdf"
    _write_unvalidated(raw, path, monkeypatch)
    status, err = _run(["roman_elp", str(path)], tmp_path / "out", capsys)
    assert status == 1 and len(err) == 1 and "read_pattern" in err[0]


def test_no_science_array_is_exit_64(tmp_path, capsys, crds_env, monkeypatch):
    raw = rdm.open(crds_env.uncal)
    del raw._instance["data"]
    path = tmp_path / "nodata_uncal.asdf"
    _write_unvalidated(raw, path, monkeypatch)
    out = tmp_path / "out"
    status, err = _run(["roman_elp", str(path)], out, capsys)
    assert status == 64 and len(err) == 1 and "no science data" in err[0]
    _assert_clean(out)


def test_empty_science_array_is_exit_64(tmp_path, capsys, crds_env):
    raw = rdm.open(crds_env.uncal)
    raw.data = np.zeros((0, 64, 256), dtype=np.uint16)
    raw.amp33 = np.zeros((0, 64, 8), dtype=np.uint16)
    path = tmp_path / "empty_uncal.asdf"
    raw.save(path)
    status, err = _run(["roman_elp", str(path)], tmp_path / "out", capsys)
    assert status == 64 and len(err) == 1


def test_every_resultant_do_not_use_is_exit_64(tmp_path, capsys, crds_env):
    raw = rdm.open(crds_env.uncal)
    raw.resultantdq = np.ones(np.shape(raw.data), dtype=np.uint8)
    path = tmp_path / "dnu_uncal.asdf"
    raw.save(path)
    status, err = _run(["roman_elp", str(path)], tmp_path / "out", capsys)
    assert status == 64 and len(err) == 1 and "DO_NOT_USE" in err[0]


def test_reference_of_another_detector(tmp_path, capsys, crds_env, uncal_copy):
    mask = rdm.open(crds_env.references["mask"])
    mask.meta.instrument.detector = "WFI02"
    other = tmp_path / "wfi02_mask.asdf"
    mask.save(other)
    out = tmp_path / "out"
    before = _digest(uncal_copy)
    status, err = _run(["roman_elp", str(uncal_copy), f"--steps.dq_init.override_mask={other}"], out, capsys)
    assert status == 1 and len(err) == 1 and "WFI02" in err[0] and "mask" in err[0]
    assert _digest(uncal_copy) == before
    _assert_clean(out)


def test_reference_of_the_wrong_shape(tmp_path, capsys, crds_env, uncal_copy):
    sat = rdm.open(crds_env.references["saturation"])
    sat.data = np.asarray(sat.data)[:32, :32].copy()
    sat.dq = np.asarray(sat.dq)[:32, :32].copy()
    small = tmp_path / "small_saturation.asdf"
    sat.save(small)
    out = tmp_path / "out"
    status, err = _run(["roman_elp", str(uncal_copy), f"--steps.saturation.override_saturation={small}"], out,
                       capsys)
    assert status == 1 and len(err) == 1 and "saturation" in err[0] and "shape" in err[0]
    _assert_clean(out)


def test_missing_override_file(tmp_path, capsys, crds_env, uncal_copy):
    status, err = _run(["roman_elp", str(uncal_copy), "--steps.dq_init.override_mask=/no/such/mask.asdf"],
                       tmp_path / "out", capsys)
    assert status == 1 and len(err) == 1 and "override_mask" in err[0]


def test_likely_needs_four_resultants(tmp_path, capsys, crds_env):
    raw = rdm.open(crds_env.uncal)
    raw.data = np.asarray(raw.data)[:3].copy()
    raw.amp33 = np.asarray(raw.amp33)[:3].copy()
    raw.meta.exposure.read_pattern = [list(r) for r in raw.meta.exposure.read_pattern[:3]]
    raw.meta.exposure.nresultants = 3
    path = tmp_path / "three_uncal.asdf"
    raw.save(path)
    out = tmp_path / "out"
    status, err = _run(["roman_elp", str(path), "--steps.rampfit.algorithm=likely"], out, capsys)
    assert status == 1 and len(err) == 1 and "at least 4 resultants" in err[0]
    _assert_clean(out)


def test_no_crds_cache_is_one_line(tmp_path, capsys, uncal_copy, monkeypatch):
    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("CRDS_SERVER_URL", "https://crds-serverless-mode.stsci.edu")
    monkeypatch.delenv("CRDS_CONTEXT", raising=False)
    out = tmp_path / "out"
    status, err = _run(["roman_elp", str(uncal_copy)], out, capsys)
    assert status == 1 and len(err) == 1 and "mask" in err[0].lower()
    _assert_clean(out)
