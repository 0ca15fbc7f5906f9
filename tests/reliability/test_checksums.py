"""Issue 11 item 3: ASDF block checksums are verified on read (inputs and references).

A flipped bit inside an lz4 block that still decodes to the right length, or a wrong
stored checksum, is one error line naming the file and the block, exit status 1, nothing
written; ``--no-verify-checksums`` / ``GPUCAL_VERIFY_CHECKSUMS=0`` turn the check off.
"""

from __future__ import annotations

import os
import shutil

import asdf
import numpy as np
import pytest

from tests.reliability._faults import (
    BACKENDS,
    ROOT,
    asdf_blocks,
    fingerprints,
    flip_bit,
    listing,
    private_cache,
    spoil_checksum,
    strun,
)

ENV_VERIFY = "GPUCAL_VERIFY_CHECKSUMS"  # gpucal.asdf_verify.ENV_VERIFY, spelled out as users do


def _read_unchecked(path):
    with asdf.open(path, lazy_load=False, memmap=False, validate_checksums=False) as af:
        return np.array(af.tree["roman"]["data"])


def test_flipped_bit_decodes_to_the_right_length(small_demo, tmp_path):
    """The damage the checksum must catch: asdf without checks reads it, wrong pixels and all."""
    bad = tmp_path / small_demo.uncal.name
    shutil.copy(small_demo.uncal, bad)
    assert asdf_blocks(bad)[0].compression.rstrip(b"\0") == b"lz4"
    flip_bit(bad)
    good, spoiled = _read_unchecked(small_demo.uncal), _read_unchecked(bad)
    assert good.shape == spoiled.shape
    assert 0 < np.count_nonzero(good != spoiled) <= 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_flipped_bit_in_the_input_is_an_error(crds_env, uncal_copy, tmp_path, backend):
    flip_bit(uncal_copy)
    refs = crds_env.crds_path
    before = fingerprints(uncal_copy, refs)
    out = tmp_path / "out"
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}"], backend, tmp_path)
    line = result.one_error()
    assert result.status == 1
    assert str(uncal_copy) in line and "ASDF block 0" in line and "'data'" in line and "checksum" in line
    assert listing(out) == []
    assert fingerprints(uncal_copy, refs) == before

    # the check is what stopped it: switched off, the damaged pixels calibrate to exit 0
    off = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}", "--no-verify-checksums"], backend, tmp_path)
    assert off.status == 0, off.stderr[-3000:]
    assert any(name.endswith("_cal.asdf") for name in listing(out))
    assert fingerprints(uncal_copy, refs) == before


def test_wrong_stored_checksum_and_env_switch(crds_env, uncal_copy, tmp_path):
    """The data intact but the header's MD5 wrong (block 1, amp33): still refused; the
    environment variable turns the check off as the flag does."""
    spoil_checksum(uncal_copy, block=1)
    before = fingerprints(uncal_copy, crds_env.crds_path)
    out = tmp_path / "out"
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}", "--steps.rampfit.skip=true"], "cpu",
                   tmp_path)
    line = result.one_error()
    assert result.status == 1 and "ASDF block 1" in line and "'amp33'" in line and "checksum" in line
    assert listing(out) == []
    off = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}"], "cpu", tmp_path, env={ENV_VERIFY: "0"})
    assert off.status == 0, off.stderr[-3000:]
    assert fingerprints(uncal_copy, crds_env.crds_path) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_flipped_bit_in_a_reference_is_an_error(crds_env, uncal_copy, tmp_path, backend):
    """An override (the MASK) and a file of the CRDS cache (the GAIN), each with one bit flipped."""
    mask = tmp_path / "refs" / crds_env.references["mask"].name
    mask.parent.mkdir()
    shutil.copy(crds_env.references["mask"], mask)
    flip_bit(mask)
    before = fingerprints(uncal_copy, mask, crds_env.crds_path)
    out = tmp_path / "out"
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}", f"--steps.dq_init.override_mask={mask}"],
                   backend, tmp_path)
    line = result.one_error()
    assert result.status == 1 and "mask reference" in line and str(mask) in line and "ASDF block 0" in line
    assert "checksum" in line
    assert listing(out) == []
    assert fingerprints(uncal_copy, mask, crds_env.crds_path) == before

    cache = private_cache(crds_env.crds_path, tmp_path / "cache")
    gain = next(cache.rglob(crds_env.references["gain"].name))
    flip_bit(gain)
    before = fingerprints(uncal_copy, cache)
    result = strun(["roman_elp", str(uncal_copy), f"--output_dir={out}"], backend, tmp_path,
                   env={"CRDS_PATH": str(cache)})
    line = result.one_error()
    assert result.status == 1 and "gain reference" in line and str(gain) in line and "checksum" in line
    assert listing(out) == []
    assert fingerprints(uncal_copy, cache) == before


def test_sequential_codec_checks_too(crds_env, uncal_copy, monkeypatch):
    """With GPUCAL_IO_THREADS=1 (asdf's own lz4 codec) the check still runs."""
    from gpucal.errors import InputFileError
    from gpucal.io import open_model

    flip_bit(uncal_copy)
    monkeypatch.setenv("GPUCAL_IO_THREADS", "1")
    with pytest.raises(InputFileError, match="ASDF block 0 .* checksum"):
        open_model(uncal_copy)
    monkeypatch.setenv(ENV_VERIFY, "0")
    assert open_model(uncal_copy).data.shape == (6, 64, 256)


def test_help_and_readme_document_the_switch(capsys):
    from gpucal.cli import run_strun

    assert run_strun(["roman_elp", "-h"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-verify-checksums" in text and ENV_VERIFY in text
    readme = (ROOT / "README.md").read_text()
    assert "--no-verify-checksums" in readme and ENV_VERIFY in readme


def test_a_reference_is_verified_once_per_process(crds_env, tmp_path):
    """A batch opens each reference once per exposure: hashed the first time only, and
    again once the file changes (a damaged copy put in its place is caught)."""
    import roman_datamodels.datamodels as rdm

    from gpucal.errors import ReferenceFileError
    from gpucal.refs import Resolved, open_reference

    exposure = rdm.open(crds_env.uncal)
    mask = tmp_path / crds_env.references["mask"].name
    shutil.copy(crds_env.references["mask"], mask)
    res = Resolved("mask", str(mask), str(mask))
    open_reference(res, exposure).close()
    # the same file (inode, size, mtime) is not hashed again: a stored checksum spoiled in
    # place, mtime put back, goes unseen by this process (the data themselves are intact)
    st = mask.stat()
    good = mask.read_bytes()
    spoil_checksum(mask)
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert mask.stat().st_ino == st.st_ino
    open_reference(res, exposure).close()
    mask.write_bytes(good)
    damaged = tmp_path / "damaged.asdf"
    shutil.copy(mask, damaged)
    spoil_checksum(damaged)
    damaged.replace(mask)  # another inode, same size
    with pytest.raises(ReferenceFileError, match="mask reference .* fails its checksum"):
        open_reference(res, exposure)


def test_batch_loses_only_the_damaged_file(crds_env, uncal_copy, tmp_path):
    """In a one-process batch the damaged input fails with its line; the other is calibrated."""
    other = tmp_path / "b" / uncal_copy.name.replace("_0001_", "_0002_")
    other.parent.mkdir()
    shutil.copy(uncal_copy, other)
    flip_bit(uncal_copy)
    before = fingerprints(uncal_copy, other, crds_env.crds_path)
    out = tmp_path / "out"
    result = strun(["roman_elp", str(uncal_copy), str(other), f"--output_dir={out}"], "cpu", tmp_path)
    line = result.one_error()
    assert result.status == 1 and str(uncal_copy) in line and "fails its checksum" in line
    assert "1 of 2 files calibrated" in result.stderr
    root = other.name.removesuffix("_uncal.asdf")
    assert listing(out) == [f"{root}_cal.asdf", f"{root}_wcs.asdf"]
    assert fingerprints(uncal_copy, other, crds_env.crds_path) == before


def test_large_blocks_are_hashed_in_a_thread(small_demo, tmp_path, monkeypatch):
    """The path full-frame blocks take (MD5 in its own thread beside the decoding), forced
    here on the small demo's blocks: clean file read exactly, flipped bit and truncation
    caught, no hashing thread left behind."""
    import threading

    from gpucal import asdf_verify
    from gpucal.errors import InputFileError
    from gpucal.io import open_model

    runs = []
    original_run = asdf_verify._HashingReader._run

    def counted(self):
        runs.append(1)
        return original_run(self)

    monkeypatch.setattr(asdf_verify, "_THREADED_HASH_BYTES", 1)
    monkeypatch.setattr(asdf_verify, "_HASH_QUEUE_CHUNKS", 2)
    monkeypatch.setattr(asdf_verify._HashingReader, "_run", counted)
    good = open_model(small_demo.uncal)
    assert runs and np.array_equal(np.asarray(good.data), _read_unchecked(small_demo.uncal))
    bad = tmp_path / small_demo.uncal.name
    shutil.copy(small_demo.uncal, bad)
    flip_bit(bad)
    with pytest.raises(InputFileError, match="ASDF block 0 .* fails its checksum"):
        open_model(bad)
    shutil.copy(small_demo.uncal, bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: asdf_blocks(bad)[0].data_at + 1000])
    with pytest.raises(InputFileError, match="cannot read|truncated|ends inside"):
        open_model(bad)
    assert not [t for t in threading.enumerate() if t.name == "gpucal-md5"]


def test_distributed_worker_takes_the_clients_choice(crds_env, uncal_copy, tmp_path, monkeypatch):
    """A Dask worker's environment is not the user's: each task carries the client's
    choice.  Here the worker's environment says 'verify', the task says 'do not'."""
    distributed = pytest.importorskip("distributed")
    from gpucal.scale.worker import calibrate_task

    flip_bit(uncal_copy)
    monkeypatch.setenv(ENV_VERIFY, "1")
    values = {"backend": "cpu", "output_dir": str(tmp_path / "out"), "save_results": True}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        checked = client.submit(calibrate_task, str(uncal_copy), "gpucal.pipeline.exposure:ExposurePipeline",
                                values, None, True, True, pure=False).result()
        unchecked = client.submit(calibrate_task, str(uncal_copy), "gpucal.pipeline.exposure:ExposurePipeline",
                                  values, None, True, False, pure=False).result()
    assert checked["status"] == "failed" and "fails its checksum" in checked["error"]
    assert unchecked["status"] == "done", unchecked.get("error")
