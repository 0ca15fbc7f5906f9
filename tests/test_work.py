"""The unit of work: one input to its outputs and a record; skip rules of a resumed run."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import roman_datamodels.datamodels as rdm

from gpucal import __version__
from gpucal.pipeline import ExposurePipeline
from gpucal.work import DONE, FAILED, SKIPPED, calibrate_file, file_sha256


def test_record_of_a_good_and_a_bad_input(crds_env, uncal_copy, tmp_path):
    out = tmp_path / "out"
    values = {"backend": "cpu", "output_dir": str(out)}
    record = calibrate_file(str(uncal_copy), ExposurePipeline, values, checksum=True)
    root = uncal_copy.name.removesuffix("_uncal.asdf")
    assert record.status == DONE and record.exit_code == 0 and record.error is None
    assert [os.path.basename(p) for p in record.outputs] == [f"{root}_cal.asdf", f"{root}_wcs.asdf"]
    assert [f[0] for f in record.output_files] == record.outputs
    assert all(f[1] == os.path.getsize(f[0]) for f in record.output_files)
    assert record.input_sha256 == file_sha256(uncal_copy)
    assert record.backend == "cpu" and record.gpucal_version == __version__
    assert {"read", "write", "dq_init", "rampfit", "roman_elp"} <= set(record.step_seconds)
    assert record.references["dark"][0].startswith("crds://") and record.references["dark"][2] > 0
    assert record.peak_rss_bytes and record.peak_rss_bytes > 10 << 20
    assert sorted(p.name for p in out.iterdir()) == [f"{root}_cal.asdf", f"{root}_wcs.asdf"]

    bad = tmp_path / "bad_uncal.asdf"
    bad.write_bytes(uncal_copy.read_bytes()[:5000])
    failed = calibrate_file(str(bad), ExposurePipeline, values)
    assert failed.status == FAILED and failed.exit_code == 1 and failed.cause == "bad input"
    assert str(bad) in failed.error and "\n" not in failed.error
    assert not (out / "bad_cal.asdf").exists()


def test_skip_only_when_everything_matches(crds_env, uncal_copy, tmp_path):
    out = tmp_path / "out"
    values = {"backend": "cpu", "output_dir": str(out)}
    first = calibrate_file(str(uncal_copy), ExposurePipeline, values, checksum=True)
    previous = dataclasses.asdict(first)

    again = calibrate_file(str(uncal_copy), ExposurePipeline, values, previous=previous, clobber=False)
    assert again.status == SKIPPED and again.outputs == first.outputs and again.output_files == first.output_files

    # --clobber redoes it (new files: new modification times)
    redone = calibrate_file(str(uncal_copy), ExposurePipeline, values, previous=previous, clobber=True)
    assert redone.status == DONE and redone.output_files != first.output_files
    previous = dataclasses.asdict(redone)

    # other parameters: redone
    other = {**values, "steps": {"jump": {"rejection_threshold": "5.0"}}}
    assert calibrate_file(str(uncal_copy), ExposurePipeline, other, previous=previous, clobber=False).status == DONE
    previous = dataclasses.asdict(
        calibrate_file(str(uncal_copy), ExposurePipeline, values, previous=previous, clobber=False))

    # an output replaced behind the ledger's back: redone
    cal = out / first.outputs[0].rsplit("/", 1)[1]
    os.utime(cal, ns=(0, 0))
    remade = calibrate_file(str(uncal_copy), ExposurePipeline, values, previous=previous, clobber=False)
    assert remade.status == DONE
    previous = dataclasses.asdict(remade)

    # another input under the same name: redone
    with rdm.open(uncal_copy) as model:
        model.data[0, 10, 10] += 1
        changed = tmp_path / "changed" / uncal_copy.name
        changed.parent.mkdir()
        model.save(changed)
    shutil.copy(changed, uncal_copy)
    assert file_sha256(uncal_copy) != previous["input_sha256"]
    assert calibrate_file(str(uncal_copy), ExposurePipeline, values, previous=previous, clobber=False).status == DONE


def test_skip_notices_a_changed_reference(crds_env, uncal_copy, tmp_path):
    out = tmp_path / "out"
    flat = tmp_path / "my_flat.asdf"
    shutil.copy(crds_env.references["flat"], flat)
    values = {"backend": "cpu", "output_dir": str(out), "steps": {"flatfield": {"override_flat": str(flat)}}}
    previous = dataclasses.asdict(calibrate_file(str(uncal_copy), ExposurePipeline, values, checksum=True))
    assert previous["references"]["flat"][1] == str(flat.resolve())
    assert calibrate_file(str(uncal_copy), ExposurePipeline, values, previous=previous,
                          clobber=False).status == SKIPPED
    with rdm.open(flat) as ref:
        ref.data = np.asarray(ref.data) * np.float32(1.01)
        ref.save(tmp_path / "tmp_flat.asdf")
    os.replace(tmp_path / "tmp_flat.asdf", flat)
    assert calibrate_file(str(uncal_copy), ExposurePipeline, values, previous=previous, clobber=False).status == DONE
