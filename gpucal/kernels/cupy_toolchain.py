"""Whether CuPy's own kernel compiler has what it needs here (no GPU needed).

CuPy compiles every element-wise and reduction kernel (``x * y``, ``xp.where``, ``nanmean``)
with NVRTC at first use, with its own headers and CUDA's runtime headers on the include
path.  Those headers (``cuda_runtime.h``, ``vector_types.h``, ``cuda_fp16.h``) are not in the
NVRTC wheel: without them a GPU run fails at its first CuPy kernel.  They come from a CUDA
toolkit or from the ``nvidia-cuda-runtime`` wheel (``cuda-toolkit[cudart]``, which the
``cuda12``/``cuda13`` extras install).  This module checks, as CuPy would do it:

* :func:`cupy_compile_options`: the ``-I`` options (and standard) CuPy adds to a compile
  (``cupy._core.core.assemble_cupy_compiler_options`` in CuPy >= 14; its header folder and
  ``<CUDA root>/include`` before);
* :func:`find_headers`: where each of :data:`REQUIRED_HEADERS` resolves on that include
  path, and which installed distribution (wheel) holds it;
* :func:`compile_elementwise`: CuPy's own generated source of element-wise kernels gpucal
  uses (:data:`ELEMENTWISE_OPS`), compiled by NVRTC for an explicit ``sm_XX``;
* :func:`check_toolchain`: both, with one line per finding; raises :class:`ToolchainError`
  with a one-line reason otherwise (``gpucal kernels`` and the Docker build run it).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

__all__ = [
    "REQUIRED_HEADERS",
    "ELEMENTWISE_OPS",
    "ToolchainError",
    "cupy_compile_options",
    "include_dirs",
    "find_headers",
    "elementwise_source",
    "compile_elementwise",
    "check_toolchain",
    "install_hint",
]

#: CUDA headers CuPy's kernels include (directly or through ``cupy/float16.cuh``,
#: ``cupy/carray.cuh`` and CCCL) that only a CUDA toolkit or the cudart wheel provides.
REQUIRED_HEADERS = ("cuda_runtime.h", "vector_types.h", "cuda_fp16.h")

#: (ufunc, input dtypes) of element-wise operations the device steps run through CuPy.
ELEMENTWISE_OPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("multiply", ("float32", "float32")),  # image steps, refpix
    ("exp", ("float64",)),  # wfi18_transient's model
    ("isfinite", ("float64",)),  # wfi18_transient, refpix
)

#: The options CuPy's own compile adds besides includes and ``-arch`` (cupy/cuda/compiler.py).
_CUPY_FIXED_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")

# CuPy's argument kinds (cupy/_core/_kernel.pxd: ARG_KIND_NDARRAY = 1, ARG_KIND_INDEXER)
_ARG_NDARRAY, _ARG_INDEXER = 1, 2


class ToolchainError(RuntimeError):
    """CuPy's compiler lacks something (one line: what, and how to install it)."""


def cupy_compile_options() -> tuple[str, ...]:
    """The include options and standard CuPy passes to NVRTC for its own kernels."""
    from cupy._core import core

    assemble = getattr(core, "assemble_cupy_compiler_options", None)
    if assemble is not None:  # CuPy >= 14: CCCL, its headers, the CUDA headers it located
        return tuple(assemble(()))
    import cupy

    options = [f"-I{core._get_header_dir_path()}"]
    root = cupy.cuda.get_cuda_path()
    if root:
        options.append(f"-I{Path(root) / 'include'}")
    return tuple(options)


def include_dirs(options: tuple[str, ...]) -> list[Path]:
    """The folders of the ``-I`` options, in order."""
    return [Path(o[2:]) for o in options if o.startswith("-I")]


def _distribution_of(path: Path) -> str | None:
    """``name version`` of the installed distribution whose files include ``path``."""
    resolved = path.resolve()
    for dist in importlib.metadata.distributions():
        root = Path(str(dist.locate_file(""))).resolve()
        if root not in resolved.parents:
            continue
        rel = resolved.relative_to(root).as_posix()
        if any(str(f) == rel for f in dist.files or ()):
            return f"{dist.metadata['Name']} {dist.version}"
    return None


def find_headers(options: tuple[str, ...], which_package: bool = True) -> dict[str, tuple[Path, str | None] | None]:
    """Where each of :data:`REQUIRED_HEADERS` resolves on ``options``' include path.

    Returns ``{header: (path, "distribution version" or None) or None when not found}``:
    the first ``-I`` folder that holds it wins, as in the compiler.  ``which_package=False``
    skips naming the distribution (a scan of every installed package's file list, ~1 s).
    """
    found: dict[str, tuple[Path, str | None] | None] = {}
    dirs = include_dirs(options)
    for header in REQUIRED_HEADERS:
        hit = next((d / header for d in dirs if (d / header).is_file()), None)
        found[header] = None if hit is None else (hit, _distribution_of(hit) if which_package else None)
    return found


def elementwise_source(ufunc_name: str, in_dtypes: tuple[str, ...]) -> str:
    """CuPy's generated CUDA source of ``cupy.<ufunc_name>`` for ``in_dtypes``.

    The kernel text comes from CuPy's own generator (``_get_elementwise_kernel_code``) for
    contiguous one-dimensional arrays, preceded by the headers CuPy prepends to every kernel.
    """
    import cupy
    from cupy._core import _carray, _kernel, core

    ufunc = getattr(cupy, ufunc_name)
    ins = tuple(np.dtype(d) for d in in_dtypes)
    op = next((o for o in ufunc._ops.ops if tuple(np.dtype(t) for t in o.in_types) == ins), None)
    if op is None:
        raise ToolchainError(f"cupy.{ufunc_name} has no loop for {in_dtypes}")
    outs = tuple(np.dtype(t) for t in op.out_types)
    params = ", ".join(f"{d.name} in{i}" for i, d in enumerate(ins)), ", ".join(
        f"{d.name} out{i}" for i, d in enumerate(outs)
    )
    kernel = _kernel.ElementwiseKernel(params[0], params[1], op.routine, f"cupy_{ufunc_name}")
    arrays = tuple(_kernel._ArgInfo(_ARG_NDARRAY, cupy.ndarray, d, 1, True, True) for d in ins + outs)
    indexer = _kernel._ArgInfo(_ARG_INDEXER, _carray.Indexer, None, 1, True, True)
    # the ufunc's routines may name in<i>_type / out<i>_type (CuPy typedefs them)
    types = tuple(sorted([(f"in{i}_type", d) for i, d in enumerate(ins)] + [(f"out{i}_type", d) for i, d in
                                                                           enumerate(outs)]))
    code = _kernel._get_elementwise_kernel_code(
        (*arrays, indexer), _kernel._TypeMap(types), kernel.params, kernel.operation, kernel.name, ""
    )
    headers = "".join(f"#include <{h}>\n" for h in core._cupy_header_list)
    return headers + code


def compile_elementwise(source: str, arch: int | str, options: tuple[str, ...]) -> tuple[bool, str]:
    """Compile ``source`` with NVRTC for ``sm_<arch>`` and CuPy's options; (ok, program log)."""
    from gpucal.kernels._loader import nvrtc_program

    arch_text = str(arch).lower().removeprefix("sm_")
    return nvrtc_program(source, "cupy_kernel.cu", (*options, *_CUPY_FIXED_OPTIONS, f"-arch=sm_{arch_text}"))


def install_hint() -> str:
    """How to get the CUDA headers for the CUDA major CuPy was built for."""
    try:
        import cupy

        major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:  # CuPy absent or broken: name both
        return "pip install 'gpucal[cuda13]' (or 'gpucal[cuda12]'), or a CUDA toolkit"
    return f"pip install 'gpucal[cuda{major}]' (cuda-toolkit[cudart]=={major}.*), or a CUDA {major} toolkit"


def check_toolchain(arches: tuple[str, ...] = ("80", "90"), options: tuple[str, ...] | None = None) -> list[str]:
    """Check CuPy's kernel compiler without a GPU; one report line per finding.

    Parameters
    ----------
    arches : tuple of str
        Architectures to compile CuPy's element-wise kernels for (``"90"`` = sm_90).
    options : tuple of str, optional
        The include options to check; default :func:`cupy_compile_options` (what CuPy uses).

    Raises
    ------
    ToolchainError
        CuPy or NVRTC is missing, a required header does not resolve, or a kernel does not
        compile (the first lines of NVRTC's log are in the message).
    """
    try:
        opts = cupy_compile_options() if options is None else options
    except Exception as exc:
        raise ToolchainError(f"CuPy is not usable ({type(exc).__name__}: {exc}); {install_hint()}") from None
    lines = []
    missing = []
    for header, hit in find_headers(opts).items():
        if hit is None:
            missing.append(header)
        else:
            lines.append(f"CuPy include path: {header} -> {hit[0]} ({hit[1] or 'not from a Python package'})")
    if missing:
        dirs = ", ".join(str(d) for d in include_dirs(opts)) or "none"
        raise ToolchainError(
            f"CuPy's kernel compiler cannot find the CUDA headers {', '.join(missing)} (include path: {dirs}); "
            f"{install_hint()}"
        )
    for name, dtypes in ELEMENTWISE_OPS:
        try:
            source = elementwise_source(name, dtypes)
        except ToolchainError:
            raise
        except Exception as exc:  # CuPy's private generator changed, or CuPy is broken
            raise ToolchainError(f"cannot generate CuPy's source of cupy.{name} ({type(exc).__name__}: {exc})") from None
        for arch in arches:
            ok, log = compile_elementwise(source, arch, opts)
            if not ok:
                first = " | ".join(line for line in log.splitlines() if line.strip())[:600]
                raise ToolchainError(f"CuPy's element-wise kernel cupy.{name}{dtypes} does not compile for "
                                     f"sm_{arch}: {first}; {install_hint()}")
        lines.append(f"CuPy element-wise kernel cupy.{name}{tuple(dtypes)}: compiles for "
                     f"{', '.join('sm_' + a for a in arches)}")
    return lines
