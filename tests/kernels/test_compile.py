"""Every kernel source compiles for the GPU without a GPU, and stays per-thread.

* NVRTC (through ``cupy.cuda.nvrtc``, CuPy's own options) for sm_80 and sm_90: the ptxas
  report must show 0 barriers, no spills and a bounded stack for every kernel;
* nvcc, with the exact command of the pre-submit hook (skipped only if nvcc is absent);
* source rules (STYLE.md items 4-5): no system includes, no ``__CUDA_ARCH__``, nothing
  cooperative, an opening comment; ``common.cuh`` agrees with ``gpucal.dq``.

These need ``cupy-cuda13x`` and ``nvidia-cuda-nvrtc`` (the ``test`` extra), never a device.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpucal.dq import GroupFlag, PixelFlag
from gpucal.kernels._loader import KERNEL_DIR, kernel_names, kernel_source, nvrtc_compile, parse_ptxas_log
from gpucal.kernels.cpu_shim import parse_kernel_signatures

ARCHS = (80, 90)
#: Per-thread local arrays (ramp fits keep a few per-resultant vectors) are allowed, within reason.
STACK_LIMIT_BYTES = 4096
NAMES = kernel_names()
NVCC = shutil.which("nvcc")


@pytest.fixture(scope="module")
def nvcc_runs():
    """Start the nvcc compiles at once, in the background, while NVRTC works in-process

    (requested by the NVRTC tests too, so that the two overlap).
    """
    if NVCC is None:
        yield {}
        return
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        runs = {name: pool.submit(_nvcc, name) for name in NAMES}
        yield runs


def _nvcc(name: str) -> subprocess.CompletedProcess[str]:
    out = f"/tmp/gpucal-test-{os.getpid()}-{name}.cubin"
    cmd = [str(NVCC), "-arch=sm_90", "-cubin", f"-I{KERNEL_DIR}", "-o", out, str(KERNEL_DIR / f"{name}.cu")]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    finally:
        if os.path.exists(out):
            os.remove(out)


_LOGS: dict[tuple[str, int], tuple[bool, str]] = {}


def _compiled(name: str, arch: int) -> tuple[bool, str]:
    if (name, arch) not in _LOGS:
        _LOGS[name, arch] = nvrtc_compile(name, arch)
    return _LOGS[name, arch]


def test_kernels_exist():
    assert {"saturation", "linearity", "dq_init"} <= set(NAMES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", NAMES)
def test_nvrtc_compiles_per_thread(name, arch, nvcc_runs):
    ok, log = _compiled(name, arch)
    assert ok, f"{name}.cu does not compile for sm_{arch}:\n{log[-4000:]}"
    stats = {k: s for k, s in parse_ptxas_log(log).items() if s.is_entry}
    kernels = set(parse_kernel_signatures(kernel_source(name)))
    assert set(stats) == kernels, "the shim's signature parser and ptxas see different kernels"
    for s in stats.values():
        assert s.arch == f"sm_{arch}"
        assert s.barriers == 0, f"{s.name} uses barriers: kernels must be pure per-thread"
        assert s.spill_stores == 0 and s.spill_loads == 0, f"{s.name} spills registers: {s}"
        assert s.stack_frame <= STACK_LIMIT_BYTES, f"{s.name} has a {s.stack_frame}-byte stack frame"


@pytest.mark.parametrize("name", NAMES)
def test_nvcc_cubin_sm90(name, nvcc_runs):
    """The pre-submit hook's command: nvcc -arch=sm_90 -cubin -I gpucal/kernels <f>.cu."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH (the NVRTC checks above still ran)")
    proc = nvcc_runs[name].result()
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "warning" not in proc.stderr.lower(), proc.stderr[-4000:]


def test_parse_ptxas_log():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k1' for 'sm_90'
ptxas info    : Function properties for k1
ptxas         .     16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 16 bytes cumulative stack size
ptxas info    : Function properties for helper
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""
    stats = parse_ptxas_log(log)
    k1 = stats["k1"]
    assert (k1.registers, k1.barriers, k1.stack_frame, k1.spill_stores, k1.spill_loads) == (40, 1, 16, 4, 8)
    assert k1.is_entry and k1.arch == "sm_90"
    assert not stats["helper"].is_entry


_SOURCES = sorted(KERNEL_DIR.glob("*.cu")) + sorted(KERNEL_DIR.glob("*.cuh"))
_FORBIDDEN = {
    r"#\s*include\s*<": "a system include (NVRTC has none)",
    r"__CUDA_ARCH__": "an arch-dependent path (the CPU shim cannot follow it)",
    r"\b__shared__\b": "shared memory",
    r"\b__syncthreads\w*\s*\(": "a barrier",
    r"\b__(shfl|ballot|any|all|match|reduce)\w*_sync\s*\(": "a warp intrinsic",
}


@pytest.mark.parametrize("path", _SOURCES, ids=lambda p: p.name)
def test_source_rules(path):
    text = path.read_text(encoding="utf-8")
    code = re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.DOTALL)
    for pattern, what in _FORBIDDEN.items():
        assert not re.search(pattern, code), f"{path.name} has {what}"
    assert text.lstrip().startswith(("//", "/*")), f"{path.name} must open with a comment (mapping, layouts, launch)"


def test_common_dq_bits_match_python():
    text = (KERNEL_DIR / "common.cuh").read_text(encoding="utf-8")
    found = {
        (m[1], m[2]): 1 << int(m[3])
        for m in re.finditer(r"static constexpr unsigned (?:int|char) (PIX|GRP)_(\w+) = 1u << (\d+);", text)
    }
    pixel = {("PIX", f.name): int(f) for f in PixelFlag if f.value and f.name}
    group = {("GRP", f.name): int(f) for f in GroupFlag if f.value and f.name}
    assert found == pixel | group


def test_gpu_module_is_lazy_and_keyed_on_headers():
    """Building the RawModule needs no device; the source carries the headers' digest.

    CuPy's disk cache keys on source text and options, so an edited common.cuh must
    change the text CuPy sees.
    """
    from gpucal.kernels._loader import headers_digest, load_gpu_module

    module = load_gpu_module("saturation")
    assert module.code.startswith(kernel_source("saturation"))
    assert headers_digest() in module.code
    assert f"-I{KERNEL_DIR}" in module.options
