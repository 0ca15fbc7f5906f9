"""Fixtures of the kernel tests: the runtime a test body launches kernels on."""

from __future__ import annotations

import pytest

from tests.kernels._runtime import cpu_runtime, gpu_runtime_or_reason


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def runtime(request):
    """The emulated device (CPU shim), then a real GPU (skipped with the reason when there is none)."""
    if request.param == "cpu":
        return cpu_runtime()
    rt, reason = gpu_runtime_or_reason()
    if rt is None:
        pytest.skip(f"GPU run of the kernel unavailable: {reason}")
    return rt
