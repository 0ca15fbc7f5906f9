"""CuPy's own kernel compiler has what it needs, from the installed extras (issue 10 §1).

No GPU: the include path CuPy passes to NVRTC must resolve the CUDA runtime headers from an
installed wheel (the ``cudart`` component the ``test``/``cuda12``/``cuda13`` extras install),
CuPy's generated element-wise source for operations gpucal runs must compile for sm_80 and
sm_90, and a missing header must be a one-line reason (for ``gpucal kernels``, the Docker
build and the GPU probe, which then falls back to the CPU).  On a GPU the probe itself must
have compiled, launched and read back its test kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gpucal.backends.select import kernel_problem, probe_gpu, toolchain_problem
from gpucal.cli import gpucal_main
from gpucal.kernels.cupy_toolchain import (
    ELEMENTWISE_OPS,
    REQUIRED_HEADERS,
    ToolchainError,
    check_toolchain,
    compile_elementwise,
    cupy_compile_options,
    elementwise_source,
    find_headers,
)

ARCHS = ("80", "90")


def test_cupy_include_path_resolves_the_cuda_headers_from_the_installed_extras():
    found = find_headers(cupy_compile_options())
    for header in REQUIRED_HEADERS:
        hit = found[header]
        assert hit is not None, f"{header} is not on CuPy's include path: the extras do not provide it"
        path, dist = hit
        # from the cudart wheel the extras install, not a system toolkit that happens to be there
        assert dist is not None and dist.startswith("nvidia-cuda-runtime"), (header, path, dist)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("ufunc", "dtypes"), ELEMENTWISE_OPS)
def test_cupy_elementwise_source_compiles_with_nvrtc(ufunc, dtypes, arch):
    source = elementwise_source(ufunc, dtypes)
    # CuPy's own template: its headers, its indexer, the ufunc's loop body
    assert "#include <cupy/carray.cuh>" in source and "CIndexer" in source and f"cupy_{ufunc}" in source
    ok, log = compile_elementwise(source, arch, cupy_compile_options())
    assert ok, f"cupy.{ufunc}{dtypes} does not compile for sm_{arch}:\n{log[-3000:]}"


def test_an_include_path_without_the_headers_is_a_one_line_error(tmp_path):
    with pytest.raises(ToolchainError) as info:
        check_toolchain(ARCHS, options=(f"-I{tmp_path}",))
    message = str(info.value)
    assert "\n" not in message
    assert "cuda_runtime.h" in message and str(tmp_path) in message and "pip install 'gpucal[cuda" in message


def test_the_headers_matter_to_nvrtc(tmp_path):
    """Without CUDA's include folder, CuPy's half-precision header (which includes
    cuda_fp16.h) does not compile: the header check guards a real failure."""
    with_cuda = cupy_compile_options()
    without = tuple(o for o in with_cuda if not (o.startswith("-I") and (Path(o[2:]) / "cuda_runtime.h").is_file()))
    assert len(without) == len(with_cuda) - 1
    source = '#include <cupy/float16.cuh>\nextern "C" __global__ void k(float* a) { a[0] = 1.0f; }\n'
    assert compile_elementwise(source, "90", with_cuda)[0]
    ok, log = compile_elementwise(source, "90", without)
    assert not ok and "cuda_fp16.h" in log


def test_probe_toolchain_step_names_missing_headers(tmp_path):
    assert toolchain_problem() is None  # the extras are installed here
    reason = toolchain_problem(options=(f"-I{tmp_path}",))
    assert reason is not None and "cuda_runtime.h" in reason and "pip install" in reason


def test_gpucal_kernels_reports_the_cupy_compiler_check():
    result = CliRunner().invoke(gpucal_main, ["kernels", "--arch", "80,90", "--no-warm"])
    assert result.exit_code == 0, result.output
    assert "CuPy include path: cuda_runtime.h ->" in result.output
    for ufunc, _ in ELEMENTWISE_OPS:
        assert f"CuPy element-wise kernel cupy.{ufunc}" in result.output
    assert "compiles for sm_80, sm_90" in result.output


@pytest.mark.gpu
def test_probe_on_a_gpu_ran_its_test_kernels():
    ok, reason = probe_gpu()
    if not ok:
        pytest.skip(f"GPU backend unavailable: {reason}")
    import cupy

    assert "test kernel" in reason
    assert kernel_problem(cupy) is None


class _CupyStandIn:
    """Just what the probe's launch step calls, on NumPy arrays: CuPy itself needs a device
    here, so its failures are played by this stand-in raising CuPy's own exceptions."""

    def __init__(self, compile_error: BaseException | None = None, off_by: float = 0.0):
        self.compile_error, self.off_by = compile_error, off_by

    def asarray(self, a):
        return np.array(a)

    def empty_like(self, a):
        return np.empty_like(a)

    def asnumpy(self, a):
        return np.asarray(a)

    def RawKernel(self, source, name):  # noqa: N802 - CuPy's name
        assert "__global__" in source and name in source
        if self.compile_error is not None:
            raise self.compile_error

        def launch(grid, block, args):
            x, y, n = args
            assert grid[0] * block[0] >= int(n)
            y[...] = 2 * x + 1 + self.off_by

        return launch


def test_probe_launch_step_reports_a_compile_failure_in_one_line():
    from cupy.cuda.compiler import CompileException

    log = 'kern.cu(1): catastrophic error: cannot open source file "cuda_fp16.h"\n\n1 catastrophic error detected'
    reason = kernel_problem(_CupyStandIn(CompileException(log, "src", "gpucal_probe", ())))
    assert reason is not None and "\n" not in reason
    assert "CompileException" in reason and 'cannot open source file "cuda_fp16.h"' in reason


def test_probe_launch_step_checks_the_numbers():
    assert kernel_problem(_CupyStandIn()) is None
    reason = kernel_problem(_CupyStandIn(off_by=1.0))
    assert reason is not None and "wrong numbers" in reason and "of 64 values differ" in reason
