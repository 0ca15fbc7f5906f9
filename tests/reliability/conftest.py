"""The ``ws`` fixture: a fresh workspace per test, on the CPU backend and the emulated device."""

from __future__ import annotations

import pytest

from tests.reliability._harness import BACKENDS, Workspace


@pytest.fixture(params=BACKENDS)
def ws(request, small_demo, tmp_path) -> Workspace:
    work = tmp_path / "work"
    work.mkdir()
    space = Workspace(small_demo, work, request.param)
    space.protect(small_demo.uncal)
    space.protect(small_demo.crds_path)  # every reference CRDS can select
    space.protect(small_demo.references["mask"].parent)  # the demo's references (overrides)
    return space


@pytest.fixture
def cpu_ws(small_demo, tmp_path) -> Workspace:
    """A CPU-only workspace, for the cases that are about files, not backends."""
    work = tmp_path / "work"
    work.mkdir()
    space = Workspace(small_demo, work, "cpu")
    space.protect(small_demo.uncal)
    space.protect(small_demo.crds_path)
    space.protect(small_demo.references["mask"].parent)
    return space
