"""The CPU shim itself: signatures, launches like cupy.RawKernel, argument checks, errors."""

from __future__ import annotations

import numpy as np
import pytest

from gpucal.kernels import cpu_shim
from gpucal.kernels._loader import kernel_names
from gpucal.kernels.cpu_shim import ShimBuildError, load_cpu_module, parse_kernel_signatures

PROBE = r"""// probe.cu: test kernels for the shim (one thread per element of a 3-D launch)
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(128) where(unsigned int* __restrict__ out,
                                                        const float* in, float scale, long long n)
{
    // thread id of a 3-D grid of 3-D blocks, x fastest
    const long long b = ((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const long long t = ((long long)threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const long long i = b * (blockDim.x * blockDim.y * blockDim.z) + t;
    if (i < n) {
        out[i] = (unsigned int)(blockIdx.x + 10u * blockIdx.y + 100u * blockIdx.z) * 1000u
                 + threadIdx.x + 10u * threadIdx.y + 100u * threadIdx.z;
        (void)in;
        (void)scale;
    }
}

extern "C" __global__ void count(unsigned long long* counter, int* imax, float* fsum)
{
    atomicAdd(counter, 1ull);
    atomicMax(imax, (int)(blockIdx.x * blockDim.x + threadIdx.x));
    atomicAdd(fsum, 0.5f);
}

extern "C" __global__ void intrinsics(float* out, const float* x)
{
    const float v = x[0];
    out[0] = rsqrtf(v);
    out[1] = __fdividef(1.0f, v);
    out[2] = (float)__float2int_rz(-v);
    out[3] = (float)__float2int_rz(x[1]);  // NaN -> 0
    out[4] = min(v, x[1]);                  // NaN operand ignored, as fminf
    out[5] = (float)max(3, 7u);
    out[6] = isnan(x[1]) ? 1.0f : 0.0f;
    out[7] = isfinite(v) ? 1.0f : 0.0f;
    out[8] = fmaf(v, v, 1.0f);
    out[9] = __ldg(x);
    out[10] = copysignf(2.0f, -v);
    out[11] = (float)__float2int_rz(3.0e10f);  // saturates
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.cu").write_text(PROBE)
    with pytest.MonkeyPatch.context() as mp:  # keep test builds out of the user's cache
        mp.setenv("GPUCAL_SHIM_CACHE", str(folder / "cache"))
        yield load_cpu_module("probe", source_dir=folder)


def test_signature_parsing():
    sigs = parse_kernel_signatures(PROBE)
    assert list(sigs) == ["where", "count", "intrinsics"]
    assert [p.describe() for p in sigs["where"]] == [
        "unsigned int* out", "const float* in", "float scale", "long long n",
    ]
    with pytest.raises(ValueError, match="unsupported"):
        parse_kernel_signatures('extern "C" __global__ void k(float** p) {}')
    with pytest.raises(ValueError, match="unsupported kernel parameter type"):
        parse_kernel_signatures('extern "C" __global__ void k(half x) {}')


def test_grid_and_block_indices(probe):
    grid, block = (3, 2, 2), (4, 2, 3)
    n = 3 * 2 * 2 * 4 * 2 * 3
    out = np.zeros(n + 5, np.uint32)
    probe.get_function("where")(grid, block, (out, np.zeros(1, np.float32), np.float32(1), np.int64(n)))
    expected = [
        (bx + 10 * by + 100 * bz) * 1000 + tx + 10 * ty + 100 * tz
        for bz in range(2) for by in range(2) for bx in range(3)
        for tz in range(3) for ty in range(2) for tx in range(4)
    ]
    assert out[:n].tolist() == expected
    assert not out[n:].any()


def test_atomics_across_blocks(probe):
    counter, imax, fsum = np.zeros(1, np.uint64), np.zeros(1, np.int32), np.zeros(1, np.float32)
    probe.get_function("count")((64,), (128,), (counter, imax, fsum))
    assert (counter[0], imax[0], fsum[0]) == (64 * 128, 64 * 128 - 1, 64 * 128 * 0.5)


def test_intrinsics(probe):
    out = np.zeros(12, np.float32)
    probe.get_function("intrinsics")(1, 1, (out, np.array([4.0, np.nan], np.float32)))
    assert out.tolist() == [0.5, 0.25, -4.0, 0.0, 4.0, 7.0, 1.0, 1.0, 17.0, 4.0, -2.0, 2147483648.0]


def test_argument_checks(probe):
    k = probe.get_function("where")
    out, inp = np.zeros(4, np.uint32), np.zeros(4, np.float32)
    good = (out, inp, np.float32(1), np.int64(4))
    k((1,), (4,), good)
    bad_cases = [
        ((out, inp, np.float64(1), np.int64(4)), TypeError, "expected a float32 scalar, got float64"),
        ((out, inp, 1.0, np.int64(4)), TypeError, "float32 scalar, got float64"),  # Python float = double
        ((out, inp, np.float32(1), np.int32(4)), TypeError, "expected a int64 scalar, got int32"),
        ((out.astype(np.int32), inp, np.float32(1), np.int64(4)), TypeError, "expected dtype uint32"),
        ((out, [0.0], np.float32(1), np.int64(4)), TypeError, "expected a NumPy array"),
        ((out, inp, inp, np.int64(4)), TypeError, "expected a NumPy scalar"),
        ((out, inp, np.float32(1)), TypeError, "takes 4 arguments"),
        ((np.zeros(8, np.uint32)[::2], inp, np.float32(1), np.int64(4)), ValueError, "not C-contiguous"),
    ]
    k((1,), (4,), (out, inp, np.float32(1), 4))  # CuPy passes a Python int as long long: accepted
    for args, exc, message in bad_cases:
        with pytest.raises(exc, match=message):
            k((1,), (4,), args)
    readonly = out.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        k((1,), (4,), (readonly, inp, np.float32(1), np.int64(4)))
    frozen_in = inp.copy()
    frozen_in.flags.writeable = False
    k((1,), (4,), (out, frozen_in, np.float32(1), np.int64(4)))  # const pointer: fine
    with pytest.raises(ValueError, match="more than 1024 threads"):
        k((1,), (32, 33), good)
    with pytest.raises(ValueError, match="out of CUDA's limits"):
        k((1, 70000), (1,), good)
    with pytest.raises(ValueError, match="shared memory"):
        k((1,), (4,), good, shared_mem=16)
    with pytest.raises(KeyError, match="has no kernel 'nope'"):
        probe.get_function("nope")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("__syncthreads();", "__syncthreads is not available"),
        ("__shared__ float s[32]; s[0] = 1.0f;", "shared_memory_is_not_allowed"),
        ("x[0] = __shfl_sync(0xffffffffu, x[0], 1);", "__shfl_sync is not available"),
    ],
)
def test_cooperative_code_does_not_compile(tmp_path, monkeypatch, body, message):
    monkeypatch.setenv("GPUCAL_SHIM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "coop.cu").write_text(f'extern "C" __global__ void k(float* x) {{ {body} }}\n')
    with pytest.raises(ShimBuildError, match=message):
        load_cpu_module("coop", source_dir=tmp_path)


def test_missing_compiler_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-gxx-compiler")
    with pytest.raises(ShimBuildError, match=r"'no-such-gxx-compiler' not found on PATH") as info:
        cpu_shim.build_cpu_module("saturation")
    assert "\n" not in str(info.value)


def test_sanitized_load_without_asan_runtime_raises():
    with pytest.raises(ShimBuildError, match="ASan runtime preloaded"):
        load_cpu_module("saturation", sanitize=True)


def test_build_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCAL_SHIM_CACHE", str(tmp_path))
    first = cpu_shim.build_cpu_module("dq_init")
    stamp = first.stat().st_mtime_ns
    assert cpu_shim.build_cpu_module("dq_init") == first
    assert first.stat().st_mtime_ns == stamp
    assert first.parent == tmp_path


@pytest.mark.parametrize("name", kernel_names())
def test_every_kernel_source_builds_for_the_cpu(name):
    module = load_cpu_module(name)
    assert module.kernels
    for kernel in module.kernels:
        module.get_function(kernel)
