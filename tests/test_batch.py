"""Batch mode: many inputs in one process, a bad file fails alone, products identical to
one-file runs."""

from __future__ import annotations

import shutil

import numpy as np
import roman_datamodels.datamodels as rdm

from gpucal.cli import run_strun


def test_batch_with_a_bad_file_and_a_list_file(crds_env, tmp_path, capsys):
    src = crds_env.uncal
    good = []
    for name in ("a_uncal.asdf", "b_uncal.asdf"):
        shutil.copy(src, tmp_path / name)
        good.append(tmp_path / name)
    bad = tmp_path / "bad_uncal.asdf"
    bad.write_bytes(b"")
    listing = tmp_path / "inputs.txt"
    listing.write_text("# a batch\na_uncal.asdf\nbad_uncal.asdf\n\nb_uncal.asdf\n")
    out = tmp_path / "out"
    status = run_strun(["roman_elp", str(listing), "--backend=cpu", f"--output_dir={out}"])
    err = capsys.readouterr().err
    assert status == 1
    assert [line for line in err.splitlines() if line.startswith("strun: error:")] == [
        f"strun: error: input file is empty: {bad}"
    ]
    assert "2 of 3 files calibrated" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_cal.asdf", "a_wcs.asdf", "b_cal.asdf", "b_wcs.asdf"]

    # each batch product equals a one-file run of the same input
    single = tmp_path / "single"
    assert run_strun(["roman_elp", str(good[0]), "--backend=cpu", f"--output_dir={single}"]) == 0
    batch_cal, single_cal = rdm.open(out / "a_cal.asdf"), rdm.open(single / "a_cal.asdf")
    for name in ("data", "dq", "err", "var_poisson", "chisq", "dumo"):
        np.testing.assert_array_equal(getattr(batch_cal, name), getattr(single_cal, name), err_msg=name)
    assert batch_cal.meta.filename == "a_cal.asdf"


def test_batch_all_good_exits_zero(crds_env, tmp_path, capsys):
    inputs = []
    for name in ("c_uncal.asdf", "d_uncal.asdf", "e_uncal.asdf"):
        shutil.copy(crds_env.uncal, tmp_path / name)
        inputs.append(str(tmp_path / name))
    assert run_strun(["roman_elp", *inputs, "--backend=cpu", f"--output_dir={tmp_path}"]) == 0
    assert "3 of 3 files calibrated" in capsys.readouterr().err
    for name in ("c", "d", "e"):
        rdm.open(tmp_path / f"{name}_cal.asdf").validate()
