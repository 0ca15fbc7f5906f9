"""Shared fixtures: the backend fixture and a small demo exposure with its CRDS cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpucal.backends.select import probe_gpu

#: ``GPUCAL_REQUIRE_GPU=1`` (the GPU machine's script, bench/gpu_check.sh) turns every
#: "no usable GPU" skip into a failure, so a GPU run cannot pass by skipping.
REQUIRE_GPU = os.environ.get("GPUCAL_REQUIRE_GPU") == "1"
#: How every GPU skip of the suite begins (fixtures, skipif markers, helpers).
GPU_SKIP_PREFIXES = ("GPU backend unavailable", "GPU run of the kernel unavailable")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if REQUIRE_GPU and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if any(prefix in reason for prefix in GPU_SKIP_PREFIXES):
            report.outcome = "failed"
            report.longrepr = f"GPUCAL_REQUIRE_GPU=1 but the GPU case was skipped: {reason}"
    return report


@pytest.fixture(params=["cpu", "gpu"])
def backend(request):
    """Each backend in turn; the GPU case skips with the probe's reason when unusable."""
    from gpucal.backends.select import select_backend

    if request.param == "gpu":
        ok, reason = probe_gpu()
        if not ok:
            pytest.skip(f"GPU backend unavailable: {reason}")
    return select_backend(request.param)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A 64x256, 6-resultant demo exposure, references and CRDS cache (session-wide)."""
    from gpucal.demo.run import prepare_demo

    workdir = tmp_path_factory.mktemp("demo")
    return prepare_demo(workdir, ny=64, nx=256, nresultants=6, seed=11)


@pytest.fixture
def crds_env(small_demo, monkeypatch):
    """Point the real crds client at the small demo's offline cache."""
    for key in list(os.environ):
        if key.startswith(("CRDS_PATH_SINGLE", "CRDS_MAPPATH", "CRDS_REFPATH", "CRDS_CFGPATH")):
            monkeypatch.delenv(key)
    for key, value in small_demo.environment.items():
        monkeypatch.setenv(key, value)
    return small_demo


@pytest.fixture
def uncal_copy(small_demo, tmp_path) -> Path:
    """A private copy of the small demo's uncal file in a fresh directory."""
    import shutil

    dest = tmp_path / small_demo.uncal.name
    shutil.copy(small_demo.uncal, dest)
    return dest
