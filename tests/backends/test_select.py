"""Backend selection (issue 5 item 4): auto / gpu / cpu, the reason, the metadata."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from gpucal.backends.select import probe_gpu, select_backend
from gpucal.cli import gpucal_main, run_strun
from gpucal.errors import BackendUnavailableError
from gpucal.kernels._loader import kernel_names

GPU_OK, GPU_REASON = probe_gpu()
needs_no_gpu = pytest.mark.skipif(GPU_OK, reason="a GPU is usable here")
needs_gpu = pytest.mark.skipif(not GPU_OK, reason=f"GPU backend unavailable: {GPU_REASON}")


def test_probe_returns_a_reason_and_never_raises():
    ok, reason = probe_gpu()
    assert isinstance(ok, bool) and reason


def test_unknown_backend_is_refused():
    with pytest.raises(BackendUnavailableError, match="choose one of auto, gpu, cpu"):
        select_backend("tpu")


@needs_no_gpu
def test_explicit_gpu_without_one_is_an_error_naming_the_reason(crds_env, uncal_copy, capsys):
    status = run_strun(["roman_elp", str(uncal_copy), "--backend=gpu", f"--output_dir={uncal_copy.parent}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1] == f"strun: error: --backend=gpu cannot run: {GPU_REASON}"
    assert not list(uncal_copy.parent.glob("*_cal.asdf"))


@needs_no_gpu
def test_auto_without_gpu_warns_once_and_records_cpu(crds_env, uncal_copy, caplog, monkeypatch):
    import roman_datamodels.datamodels as rdm

    from gpucal.backends import select

    monkeypatch.setattr(select, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="gpucal.backends.select"):
        status = run_strun(["roman_elp", str(uncal_copy), f"--output_dir={uncal_copy.parent}"])
    assert status == 0
    select_backend("auto")  # a second file of a batch: no second warning
    warnings = [r for r in caplog.records if "No usable GPU" in r.getMessage()]
    assert len(warnings) == 1 and GPU_REASON in warnings[0].getMessage()
    with rdm.open(uncal_copy.parent / uncal_copy.name.replace("_uncal", "_cal")) as cal:
        assert cal.meta.gpucal["backend"] == "cpu"


@needs_gpu
def test_auto_with_gpu_uses_it_and_records_the_device(crds_env, uncal_copy):
    import roman_datamodels.datamodels as rdm

    assert run_strun(["roman_elp", str(uncal_copy), f"--output_dir={uncal_copy.parent}"]) == 0
    with rdm.open(uncal_copy.parent / uncal_copy.name.replace("_uncal", "_cal")) as cal:
        assert cal.meta.gpucal["backend"] == "gpu"
        assert cal.meta.gpucal["device"]
    assert select_backend("gpu") is select_backend("auto")  # one backend (and cache) per process


def test_gpucal_kernels_compiles_every_kernel_without_a_device():
    result = CliRunner().invoke(gpucal_main, ["kernels", "--arch", "90", "--no-warm"])
    assert result.exit_code == 0, result.output
    for name in kernel_names():
        assert f"{name}.cu sm_90:" in result.output
    assert "spills 0 B" in result.output
