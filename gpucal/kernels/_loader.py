"""The one loader of gpucal's CUDA kernels (STYLE.md item 5).

Kernel sources are package data: ``gpucal/kernels/<name>.cu``, each including
``common.cuh`` (and possibly other ``*.cuh`` of this folder) through the include path.  The
same text is compiled three ways:

* on a GPU by :func:`load_gpu_module` (a cached :class:`cupy.RawModule`);
* without a GPU by :func:`nvrtc_compile`, through the low-level ``cupy.cuda.nvrtc`` calls
  with an explicit ``-arch=sm_XX`` and CuPy's own options, returning the ptxas log that
  :func:`parse_ptxas_log` turns into registers, stack, spills and barriers per kernel
  (CuPy's ``compile_using_nvrtc`` cannot be used there: it asks the device for its arch);
* on the CPU by :mod:`gpucal.kernels.cpu_shim` (g++ and a small CUDA-to-C++ header).

The NumPy dtype <-> C type rules used by every launcher live here too (:data:`CTYPE_OF`).
CuPy is imported only inside the functions that need it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "kernel_entry_names",
    "KERNEL_DIR",
    "CUPY_OPTIONS",
    "CTYPE_OF",
    "DTYPE_OF",
    "KernelStats",
    "kernel_names",
    "kernel_path",
    "kernel_source",
    "headers_digest",
    "include_options",
    "ctype_of",
    "dtype_of_ctype",
    "load_gpu_module",
    "nvrtc_compile",
    "parse_ptxas_log",
]

#: Folder of the ``.cu``/``.cuh`` sources (installed as package data).
KERNEL_DIR = Path(__file__).resolve().parent

#: The options CuPy 13/14 compiles a RawModule with (besides its include paths and
#: ``-arch``): ``-ftz=true`` and ``--device-as-default-execution-space`` always, and
#: ``-std=c++17`` unless the caller names a standard.  Compile checks pass the same.
CUPY_OPTIONS: tuple[str, ...] = ("-ftz=true", "--device-as-default-execution-space", "-std=c++17")

#: NumPy dtype -> the C type a kernel parameter of that dtype must have.
CTYPE_OF: dict[np.dtype, str] = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int8): "signed char",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int16): "short",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.int32): "int",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.int64): "long long",
    np.dtype(np.bool_): "bool",
}

#: C type (normalised spelling) -> NumPy dtype; the inverse of :data:`CTYPE_OF`.
DTYPE_OF: dict[str, np.dtype] = {c: d for d, c in CTYPE_OF.items()}

# other spellings of the same C types
_CTYPE_ALIASES = {
    "unsigned": "unsigned int",
    "signed": "int",
    "signed int": "int",
    "short int": "short",
    "signed short": "short",
    "unsigned short int": "unsigned short",
    "long long int": "long long",
    "signed long long": "long long",
    "unsigned long long int": "unsigned long long",
    "int8_t": "signed char",
    "uint8_t": "unsigned char",
    "int16_t": "short",
    "uint16_t": "unsigned short",
    "int32_t": "int",
    "uint32_t": "unsigned int",
    "int64_t": "long long",
    "uint64_t": "unsigned long long",
}


def ctype_of(dtype: Any) -> str:
    """The C type of a kernel parameter holding ``dtype`` (``float32`` -> ``"float"``)."""
    dt = np.dtype(dtype)
    try:
        return CTYPE_OF[dt]
    except KeyError:
        raise TypeError(f"no kernel C type for dtype {dt}") from None


def dtype_of_ctype(ctype: str) -> np.dtype:
    """The NumPy dtype of a C type name, after normalising its spelling."""
    name = " ".join(ctype.split())
    name = _CTYPE_ALIASES.get(name, name)
    try:
        return DTYPE_OF[name]
    except KeyError:
        raise TypeError(f"unsupported kernel parameter type {ctype!r}") from None


def kernel_path(name: str) -> Path:
    """Path of ``<name>.cu``; raises FileNotFoundError naming the known kernels."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a kernel module name: {name!r}")
    path = KERNEL_DIR / f"{name}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no kernel source {path.name} in {KERNEL_DIR} (have: {', '.join(kernel_names())})")
    return path


def kernel_names() -> list[str]:
    """Names of every kernel source shipped (``saturation`` for ``saturation.cu``), sorted."""
    return sorted(p.stem for p in KERNEL_DIR.glob("*.cu"))


@functools.cache
def kernel_entry_names(name: str) -> tuple[str, ...]:
    """The ``extern "C" __global__`` functions of ``<name>.cu``, in source order."""
    found = re.findall(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(',
                       kernel_source(name))
    return tuple(found)


@functools.cache
def kernel_source(name: str) -> str:
    """The text of ``gpucal/kernels/<name>.cu``, unchanged (headers via :func:`include_options`)."""
    return kernel_path(name).read_text(encoding="utf-8")


def headers_digest(directory: Path = KERNEL_DIR) -> str:
    """SHA-256 over every ``*.cuh`` of ``directory`` (names and contents), as hex."""
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.cuh")):
        h.update(path.name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def include_options(directory: Path = KERNEL_DIR) -> tuple[str, ...]:
    """The ``-I`` option that lets ``#include "common.cuh"`` resolve."""
    return (f"-I{directory}",)


@functools.cache
def load_gpu_module(name: str) -> Any:
    """A :class:`cupy.RawModule` of ``<name>.cu``, built once per process.

    The headers' digest is appended to the source as a comment: CuPy's on-disk kernel cache
    keys on the source text and options only, so an edited ``common.cuh`` would otherwise
    be served stale.  Compilation is lazy (first ``get_function`` call) and needs a device.
    """
    import cupy

    source = kernel_source(name) + f"\n// gpucal headers sha256 {headers_digest()}\n"
    # CuPy adds -ftz=true and --device-as-default-execution-space itself (CUPY_OPTIONS);
    # the standard is named for CuPy 13, which does not default to C++17.
    return cupy.RawModule(code=source, options=("-std=c++17", *include_options()))


def _arch_number(arch: int | str) -> str:
    text = str(arch).lower().removeprefix("sm_").removeprefix("compute_")
    if not text.isdigit():
        raise ValueError(f"not a CUDA arch: {arch!r} (use e.g. 90 or 'sm_90')")
    return text


def _cupy_include_options() -> tuple[str, ...]:
    """The include paths CuPy adds to a RawModule compile (its headers and CUDA's)."""
    try:
        import cupy
        from cupy._core import core
    except Exception:  # pragma: no cover - CuPy absent: kernels include nothing of it anyway
        return ()
    paths = [core._get_header_dir_path()]
    cuda_path = cupy.cuda.get_cuda_path()
    if cuda_path:
        paths.append(str(Path(cuda_path) / "include"))
    return tuple(f"-I{p}" for p in paths)


def nvrtc_compile(name: str, arch: int | str, extra_options: tuple[str, ...] = ()) -> tuple[bool, str]:
    """Compile ``<name>.cu`` with NVRTC for ``sm_<arch>``, no device needed.

    Uses CuPy's options (:data:`CUPY_OPTIONS` plus its include paths), this folder as
    include path, ``-arch=sm_<arch>`` and ``--ptxas-options=-v``.

    Returns
    -------
    ok : bool
        Whether it compiled.
    log : str
        NVRTC's program log: diagnostics, then the ptxas report (see :func:`parse_ptxas_log`).
    """
    options = (
        *CUPY_OPTIONS,
        *include_options(),
        *_cupy_include_options(),
        f"-arch=sm_{_arch_number(arch)}",
        "--ptxas-options=-v",
        *extra_options,
    )
    return nvrtc_program(kernel_source(name), f"{name}.cu", options)


def nvrtc_program(source: str, filename: str, options: tuple[str, ...]) -> tuple[bool, str]:
    """Compile CUDA ``source`` with NVRTC and ``options``: whether it compiled, and NVRTC's log."""
    from cupy.cuda import nvrtc

    prog = nvrtc.createProgram(source, filename, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, options)
            ok = True
        except nvrtc.NVRTCError:
            ok = False
        log = nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return ok, log


@dataclass(frozen=True)
class KernelStats:
    """What ptxas reports for one compiled function (bytes for stack and spills)."""

    name: str
    arch: str
    registers: int
    stack_frame: int
    spill_stores: int
    spill_loads: int
    barriers: int
    is_entry: bool


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?")


def parse_ptxas_log(log: str) -> dict[str, KernelStats]:
    """Per-function statistics from a ``--ptxas-options=-v`` log (NVRTC or nvcc).

    Entry functions (``extern "C" __global__``) have ``is_entry`` True; device functions
    ptxas kept out of line (e.g. CUDA's ``__internal_accurate_pow``) appear with the
    registers of the kernel that calls them unknown (0) and ``is_entry`` False.
    """
    stats: dict[str, dict[str, Any]] = {}
    arch = ""
    current: str | None = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current, arch = m.group(1), m.group(2)
            stats.setdefault(current, {"arch": arch, "is_entry": True})
        elif m := _PROPS.search(line):
            current = m.group(1)
            stats.setdefault(current, {"arch": arch, "is_entry": False})
        elif current is not None and (m := _FRAME.search(line)):
            stats[current].update(stack_frame=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif current is not None and (m := _USED.search(line)):
            stats[current].update(registers=int(m[1]), barriers=int(m[2] or 0))
    return {
        name: KernelStats(
            name=name,
            arch=s["arch"],
            registers=s.get("registers", 0),
            stack_frame=s.get("stack_frame", 0),
            spill_stores=s.get("spill_stores", 0),
            spill_loads=s.get("spill_loads", 0),
            barriers=s.get("barriers", 0),
            is_entry=s["is_entry"],
        )
        for name, s in stats.items()
    }


def check_kernels(arches: tuple[str, ...] = ("80", "90")) -> list[str]:
    """Compile every kernel source with NVRTC for each arch (no device needed).

    Returns one report line per (source, arch): kernels, most registers, stack, spills.

    Raises
    ------
    RuntimeError
        A source did not compile (the NVRTC log is in the message).
    """
    lines = []
    for name in kernel_names():
        for arch in arches:
            ok, log = nvrtc_compile(name, arch)
            if not ok:
                raise RuntimeError(f"{name}.cu does not compile for sm_{_arch_number(arch)}:\n{log}")
            entries = [s for s in parse_ptxas_log(log).values() if s.is_entry]
            lines.append(
                f"{name}.cu sm_{_arch_number(arch)}: {len(entries)} kernels, "
                f"<= {max((s.registers for s in entries), default=0)} registers, "
                f"stack <= {max((s.stack_frame for s in entries), default=0)} B, "
                f"spills {sum(s.spill_stores + s.spill_loads for s in entries)} B"
            )
    return lines


def warm_gpu_cache() -> list[str]:
    """Build every kernel module on the current GPU, filling CuPy's on-disk cache.

    Returns one line per module.  Needs a usable device (``CUPY_CACHE_DIR`` says where
    the cubins go; later processes load them without compiling).
    """
    lines = []
    for name in kernel_names():
        module = load_gpu_module(name)
        module.compile()
        lines.append(f"{name}.cu built for the current device")
    return lines
