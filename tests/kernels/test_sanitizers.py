"""Each kernel once under AddressSanitizer + UBSan (the CPU shim built with -fsanitize).

ASan has to be the first runtime of the process, so every run is a subprocess started with
``sanitizer_environment()`` (``LD_PRELOAD`` of g++'s ``libasan.so``, leak checks off).  A
planted out-of-bounds kernel proves that the recipe does catch errors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpucal.kernels.cpu_shim import ShimBuildError, build_cpu_module, sanitizer_environment
from tests.kernels._sanitize_child import CASES

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"saturation", "linearity", "dq_init", "ramp_fit_gls"}

OOB = r"""// oob.cu: a deliberate off-by-one, for the sanitizer self-test
extern "C" __global__ void shifted_copy(const float* src, float* dst, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        dst[i] = src[i + 1];  // reads src[n] on the last thread
    }
}
"""


@pytest.fixture(scope="module")
def environment():
    try:
        env = sanitizer_environment()
    except ShimBuildError as exc:  # pragma: no cover - CI images have libasan with g++
        pytest.fail(f"sanitizer runtime missing: {exc}")
    env["PYTHONPATH"] = str(ROOT)
    for name in MODULES:  # build here, once; the children only load
        build_cpu_module(name, sanitize=True)
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.kernels._sanitize_child", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_is_clean_under_sanitizers(environment, case):
    proc = _run(environment, case)
    report = proc.stderr[-6000:]
    assert "AddressSanitizer" not in proc.stderr, report
    assert "runtime error" not in proc.stderr, report
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), report


def test_planted_out_of_bounds_is_reported(environment, tmp_path):
    (tmp_path / "oob.cu").write_text(OOB)
    env = dict(environment, GPUCAL_SHIM_CACHE=str(tmp_path / "cache"))
    proc = _run(env, "planted_out_of_bounds", str(tmp_path))
    assert proc.returncode != 0
    assert "heap-buffer-overflow" in proc.stderr, proc.stderr[-4000:]
    assert "oob.cu:6" in proc.stderr, "the report should name the kernel line"
