"""The device runtimes a test body runs on: the emulated one, or CuPy's on a usable GPU."""

from __future__ import annotations

from typing import Any

import pytest

from gpucal.backends.emulated import EmulatedRuntime
from gpucal.backends.select import probe_gpu


def device_runtime(kind: str) -> Any:
    """A fresh ``"emulated"`` runtime, or a CuPy one (``"gpu"``; skipped with the probe's reason
    where no GPU is usable, which ``GPUCAL_REQUIRE_GPU=1`` turns into a failure)."""
    if kind == "emulated":
        return EmulatedRuntime()
    ok, reason = probe_gpu()
    if not ok:
        pytest.skip(f"GPU backend unavailable: {reason}")
    from gpucal.backends.cupy_backend import CupyRuntime

    return CupyRuntime()
