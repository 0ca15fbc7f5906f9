"""Run gpucal's CUDA kernel sources on the CPU, launched exactly like ``cupy.RawKernel``.

CI has no GPU, yet it must test the very ``.cu`` text the GPU runs (spec/cuda-on-cpu.md).
This module compiles ``gpucal/kernels/<name>.cu`` with g++ through a generated launcher
that includes ``cpu_shim.h`` (CUDA qualifiers, built-in variables and intrinsics for the
CPU) and the kernel source unchanged, and exports one C entry point per
``extern "C" __global__`` kernel.  Blocks run in parallel on OpenMP threads, the threads of
a block one after the other, which is exact for the pure per-thread kernels gpucal writes
(STYLE.md item 4); ``__shared__``, barriers and warp intrinsics do not compile.

Usage, the same launch code for both devices::

    mod = load_cpu_module("saturation")               # or _loader.load_gpu_module(...)
    kern = mod.get_function("saturation_pixel")
    kern((blocks,), (256,), (data, groupdq, ..., np.int32(npix)))

Pointers are C-contiguous NumPy arrays of the parameter's dtype (writeable unless the
parameter is ``const``); values are NumPy scalars of the parameter's dtype.  Python
``int``/``float``/``bool`` count as int64/float64/bool, as CuPy passes them, so ``3`` for an
``int`` parameter is an error here rather than a silent misread on the GPU.

Builds are cached under ``$GPUCAL_SHIM_CACHE`` (default ``~/.cache/gpucal/shim``) by a hash
of the sources, headers, flags and compiler.  With ``sanitize=True`` the library is built
with AddressSanitizer and UBSan; loading it needs the ASan runtime preloaded, so run such
code in a subprocess started with :func:`sanitizer_environment`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucal.kernels._loader import CTYPE_OF, KERNEL_DIR, dtype_of_ctype

__all__ = [
    "CpuKernel",
    "CpuModule",
    "KernelParam",
    "ShimBuildError",
    "BASE_FLAGS",
    "SANITIZE_FLAGS",
    "build_cpu_module",
    "load_cpu_module",
    "parse_kernel_signatures",
    "sanitizer_environment",
    "shim_cache_dir",
]

log = logging.getLogger(__name__)

#: g++ flags of every build (no FMA contraction: CUDA code spells out the fused operations).
BASE_FLAGS: tuple[str, ...] = ("-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=off")
#: Added for ``sanitize=True``: reports name the ``.cu`` line; any report ends the process.
SANITIZE_FLAGS: tuple[str, ...] = (
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
)

SHIM_HEADER = KERNEL_DIR / "cpu_shim.h"
_LAUNCH_PREFIX = "gpucal_launch_"
_MAX_THREADS_PER_BLOCK = 1024
_MAX_BLOCK = (1024, 1024, 64)
_MAX_GRID = (2**31 - 1, 65535, 65535)


class ShimBuildError(RuntimeError):
    """The CPU shim could not be built (no compiler, or the kernel does not compile)."""


# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class KernelParam:
    """One parameter of an ``extern "C" __global__`` kernel."""

    name: str
    ctype: str  # normalised base type, e.g. "unsigned int"
    dtype: np.dtype
    pointer: bool
    const: bool

    def describe(self) -> str:
        const = "const " if self.const else ""
        star = "*" if self.pointer else ""
        return f"{const}{self.ctype}{star} {self.name}"


_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_BOUNDS = r"(?:__launch_bounds__\s*\([^)]*\)\s*)?"
_KERNEL = re.compile(r'extern\s*"C"\s+__global__\s+' + _BOUNDS + r"void\s+" + _BOUNDS + r"([A-Za-z_]\w*)\s*\(([^)]*)\)")
_QUALIFIERS = {"__restrict__", "__restrict", "volatile"}


def parse_kernel_signatures(source: str) -> dict[str, tuple[KernelParam, ...]]:
    """Every ``extern "C" __global__ void name(...)`` of a source, with its parameters.

    Raises
    ------
    ValueError
        A parameter is not a plain value or single pointer of a supported C type.
    """
    text = _COMMENTS.sub(" ", source)
    kernels: dict[str, tuple[KernelParam, ...]] = {}
    for m in _KERNEL.finditer(text):
        name, params = m.group(1), m.group(2).strip()
        parsed = [] if params in ("", "void") else [_parse_param(name, p) for p in params.split(",")]
        kernels[name] = tuple(parsed)
    return kernels


def _parse_param(kernel: str, text: str) -> KernelParam:
    tokens = re.findall(r"[A-Za-z_]\w*|\*|\[|&", text)
    if "[" in tokens or "&" in tokens or tokens.count("*") > 1 or len(tokens) < 2:
        raise ValueError(f"kernel {kernel}: unsupported parameter {text.strip()!r}")
    name = tokens[-1]
    pointer = "*" in tokens
    const = "const" in tokens[: tokens.index("*")] if pointer else "const" in tokens
    base = [t for t in tokens[:-1] if t not in _QUALIFIERS and t not in ("const", "*")]
    try:
        dtype = dtype_of_ctype(" ".join(base))
    except TypeError as exc:
        raise ValueError(f"kernel {kernel}, parameter {name}: {exc}") from None
    return KernelParam(name=name, ctype=CTYPE_OF[dtype], dtype=dtype, pointer=pointer, const=const)


# --------------------------------------------------------------------------------- build


def shim_cache_dir() -> Path:
    """Where built libraries go: ``$GPUCAL_SHIM_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    env = os.environ.get("GPUCAL_SHIM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpucal" / "shim"


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        raise ShimBuildError(
            f"C++ compiler {cxx!r} not found on PATH: the CPU kernel shim needs g++ (apt-get install g++) or $CXX"
        )
    return path


@functools.cache
def _compiler_identity(path: str) -> str:
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return f"{path}\n{proc.stdout.splitlines()[0] if proc.stdout else ''}"


def _launcher(source_path: Path, kernels: Sequence[str]) -> str:
    lines = [
        "// generated by gpucal.kernels.cpu_shim: the kernel source, unchanged, plus one entry per kernel",
        '#include "cpu_shim.h"',
        f'#include "{source_path}"',
        "",
    ]
    for k in kernels:
        lines.append(
            f'extern "C" int {_LAUNCH_PREFIX}{k}(const unsigned int* grid, const unsigned int* block, void** args)'
            f" {{ return gpucal_shim::launch(&{k}, grid, block, args); }}"
        )
    return "\n".join(lines) + "\n"


def _source_path(name: str, source_dir: Path | None) -> Path:
    if source_dir is None:
        from gpucal.kernels._loader import kernel_path

        return kernel_path(name)
    path = Path(source_dir).resolve() / f"{name}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no kernel source {path}")
    return path


def _digest(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _headers(dirs: Sequence[Path]) -> list[bytes]:
    out: list[bytes] = []
    for d in dirs:
        for path in sorted(d.glob("*.cuh")) + sorted(d.glob("*.h")):
            out += [str(path).encode(), path.read_bytes()]
    return out


_BUILD_LOCK = threading.Lock()


def build_cpu_module(name: str, sanitize: bool = False, *, source_dir: Path | None = None) -> Path:
    """Compile ``<name>.cu`` for the CPU (or find it in the cache); the shared library's path.

    Raises
    ------
    ShimBuildError
        No compiler, or the source does not compile (the message holds the diagnostics).
    """
    source = _source_path(name, source_dir)
    text = source.read_text(encoding="utf-8")
    kernels = list(parse_kernel_signatures(text))
    if not kernels:
        raise ShimBuildError(f'{source.name} has no extern "C" __global__ kernel')
    cxx = _compiler()
    include_dirs = list(dict.fromkeys([source.parent, KERNEL_DIR]))
    flags = [*BASE_FLAGS, *(SANITIZE_FLAGS if sanitize else ()), *(f"-I{d}" for d in include_dirs)]
    launcher = _launcher(source, kernels)
    digest = _digest(
        [_compiler_identity(cxx).encode(), " ".join(flags).encode(), launcher.encode(), text.encode()]
        + _headers(include_dirs)
    )
    cache = shim_cache_dir()
    target = cache / f"{name}-{digest[:20]}{'-san' if sanitize else ''}.so"
    if target.is_file():
        return target
    with _BUILD_LOCK:
        if target.is_file():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=f".build-{name}-") as tmp:
            cpp = Path(tmp) / f"{name}_launch.cpp"
            cpp.write_text(launcher, encoding="utf-8")
            out = Path(tmp) / target.name
            cmd = [cxx, *flags, "-o", str(out), str(cpp)]
            log.debug("building CPU shim: %s", " ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ShimBuildError(f"{source.name} does not compile for the CPU shim:\n{proc.stderr[-6000:]}")
            os.replace(out, target)
        _prune(cache, name, sanitize)
    return target


_KEEP_BUILDS = 3


def _prune(cache: Path, name: str, sanitize: bool) -> None:
    """Delete all but the newest few builds of one kernel source (each edit makes a new one)."""
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{20}}{'-san' if sanitize else ''}\.so")
    builds = sorted(
        (p for p in cache.glob(f"{name}-*.so") if pattern.fullmatch(p.name)),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    for old in builds[_KEEP_BUILDS:]:
        old.unlink(missing_ok=True)  # a process that loaded it keeps its mapping


# ------------------------------------------------------------------------------ running


def _dim3(value: Any, what: str, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, int | np.integer) else tuple(value)
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{what} must have 1 to 3 dimensions, got {value!r}")
    full = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(d < 1 or d > lim for d, lim in zip(full, limits, strict=True)):
        raise ValueError(f"{what} {full} out of CUDA's limits {limits}")
    return full[0], full[1], full[2]


def _python_scalar_dtype(value: Any) -> np.dtype | None:
    # what CuPy makes of a Python scalar kernel argument
    if isinstance(value, bool):
        return np.dtype(np.bool_)
    if isinstance(value, int):
        return np.dtype(np.int64)
    if isinstance(value, float):
        return np.dtype(np.float64)
    return None


class CpuKernel:
    """One kernel of a :class:`CpuModule`; call it like ``cupy.RawKernel``."""

    def __init__(self, module: CpuModule, name: str, params: tuple[KernelParam, ...]) -> None:
        self.module = module
        self.name = name
        self.params = params
        fn = getattr(module.library, _LAUNCH_PREFIX + name)
        fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        fn.restype = ctypes.c_int
        self._fn = fn

    def __repr__(self) -> str:
        return f"<CpuKernel {self.name}({', '.join(p.describe() for p in self.params)})>"

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], *, shared_mem: int = 0) -> None:
        """Run ``grid`` x ``block`` threads with ``args``, as ``cupy.RawKernel.__call__``.

        Raises
        ------
        TypeError
            Wrong number of arguments, or an argument of the wrong kind or dtype.
        ValueError
            A launch configuration outside CUDA's limits, a non-contiguous array, a
            read-only array for a non-const pointer, or dynamic shared memory.
        """
        if shared_mem:
            raise ValueError("the CPU shim has no shared memory (kernels must be pure per-thread)")
        g = _dim3(grid, "grid", _MAX_GRID)
        b = _dim3(block, "block", _MAX_BLOCK)
        if b[0] * b[1] * b[2] > _MAX_THREADS_PER_BLOCK:
            raise ValueError(f"block {b} has more than {_MAX_THREADS_PER_BLOCK} threads")
        args = tuple(args)
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        keep: list[Any] = []  # the argument values, alive until the call returns
        slots = (ctypes.c_void_p * max(len(args), 1))()
        for i, (param, value) in enumerate(zip(self.params, args, strict=True)):
            if param.pointer:
                slot = ctypes.c_void_p(self._pointer(i, param, value))
                keep.append(slot)
                slots[i] = ctypes.addressof(slot)
            else:
                scalar = self._scalar(i, param, value)
                keep.append(scalar)
                slots[i] = scalar.ctypes.data
        grid_arr = np.array(g, dtype=np.uint32)
        block_arr = np.array(b, dtype=np.uint32)
        self._fn(grid_arr.ctypes.data, block_arr.ctypes.data, ctypes.addressof(slots))
        del keep

    def _where(self, i: int, param: KernelParam) -> str:
        return f"{self.name} argument {i} ({param.describe()})"

    def _pointer(self, i: int, param: KernelParam, value: Any) -> int:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{self._where(i, param)}: expected a NumPy array, got {type(value).__name__}")
        if value.dtype != param.dtype:
            raise TypeError(f"{self._where(i, param)}: expected dtype {param.dtype}, got {value.dtype}")
        if not value.flags.c_contiguous:
            raise ValueError(f"{self._where(i, param)}: array is not C-contiguous (kernels ignore strides)")
        if not param.const and not value.flags.writeable:
            raise ValueError(f"{self._where(i, param)}: array is read-only but the parameter is not const")
        return int(value.ctypes.data)

    def _scalar(self, i: int, param: KernelParam, value: Any) -> np.ndarray:
        if isinstance(value, np.generic):
            dtype = value.dtype
        else:
            found = _python_scalar_dtype(value)
            if found is None:
                raise TypeError(f"{self._where(i, param)}: expected a NumPy scalar, got {type(value).__name__}")
            dtype = found
        if dtype != param.dtype:
            raise TypeError(
                f"{self._where(i, param)}: expected a {param.dtype} scalar, got {dtype}"
                f" (pass np.{param.dtype.name}(...))"
            )
        return np.array(value, dtype=param.dtype)


class CpuModule:
    """A kernel source built for the CPU; :meth:`get_function` as ``cupy.RawModule``."""

    def __init__(self, name: str, path: Path, kernels: Mapping[str, tuple[KernelParam, ...]]) -> None:
        self.name = name
        self.path = path
        self.kernels = dict(kernels)
        self.library = ctypes.CDLL(str(path))
        self._functions: dict[str, CpuKernel] = {}

    def __repr__(self) -> str:
        return f"<CpuModule {self.name}: {', '.join(self.kernels)}>"

    def get_function(self, name: str) -> CpuKernel:
        """The kernel ``name`` (KeyError naming the module's kernels if it has none such)."""
        if name not in self.kernels:
            raise KeyError(f"{self.name}.cu has no kernel {name!r} (has: {', '.join(self.kernels)})")
        if name not in self._functions:
            self._functions[name] = CpuKernel(self, name, self.kernels[name])
        return self._functions[name]


_MODULES: dict[Path, CpuModule] = {}


def load_cpu_module(name: str, sanitize: bool = False, *, source_dir: Path | None = None) -> CpuModule:
    """Build (or reuse) and load ``gpucal/kernels/<name>.cu`` for the CPU.

    Parameters
    ----------
    name : str
        Kernel source name (``"saturation"`` for ``saturation.cu``).
    sanitize : bool
        Build with AddressSanitizer and UBSan.  The process must have the ASan runtime
        preloaded (see :func:`sanitizer_environment`); otherwise this raises rather than
        letting ASan abort the interpreter.
    source_dir : Path, optional
        Take ``<name>.cu`` from this folder instead (tests); ``common.cuh`` and
        ``cpu_shim.h`` still come from gpucal's kernel folder.

    Raises
    ------
    ShimBuildError
        No compiler, the source does not compile, or a sanitized build in a process
        without the ASan runtime.
    """
    if sanitize and not _asan_runtime_loaded():
        raise ShimBuildError(
            "a sanitized CPU shim needs the ASan runtime preloaded: run it in a subprocess "
            "with env=gpucal.kernels.cpu_shim.sanitizer_environment()"
        )
    path = build_cpu_module(name, sanitize, source_dir=source_dir)
    module = _MODULES.get(path)
    if module is None:
        kernels = parse_kernel_signatures(_source_path(name, source_dir).read_text(encoding="utf-8"))
        module = _MODULES[path] = CpuModule(name, path, kernels)
    return module


def _asan_runtime_loaded() -> bool:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: let the loader decide
        return True
    return "libasan" in maps


def sanitizer_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess that loads sanitized shims through ctypes.

    ASan must be the first runtime in the process, so ``libasan.so`` of the same g++ is
    preloaded; leak checking is off (the interpreter itself "leaks" at exit) and any report
    ends the process with a non-zero status.
    """
    cxx = _compiler()
    proc = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False)
    libasan = proc.stdout.strip()
    if proc.returncode != 0 or not Path(libasan).is_file():
        raise ShimBuildError(f"{cxx} has no libasan.so (install libasan for the sanitizer build)")
    env = dict(os.environ if base is None else base)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{libasan} {preload}".strip()
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=87"
    return env
