"""Launch sequences of gpucal's kernels, with the NumPy backend's signatures.

Each function takes host (NumPy) inputs exactly as the ``cpu_fallback`` function of the
same name, copies them to the runtime, launches the kernels as their ``.cu`` launch
contract says and returns host results in the same NamedTuple, so tests compare the two
directly.  The CuPy backend's launchers are expected to follow the same contracts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucal.backends.protocol import DQInitResult, InlTable, LinearityResult, SaturationResult
from gpucal.readpattern import ReadTiming
from tests.kernels._runtime import BLOCK, KernelRuntime, grid_for

_I32 = np.int32


def saturation(
    rt: KernelRuntime,
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    threshold: np.ndarray,
    threshold_dq: np.ndarray,
    timing: ReadTiming,
    n_pix_grow_sat: int,
    backup: int,
) -> SaturationResult:
    nres, ny, nx = data.shape
    npix = ny * nx
    pattern = timing.read_pattern
    factor = np.array([np.mean(r) / r[-1] for r in pattern], dtype=np.float64)
    n_reads = np.array([len(r) for r in pattern], dtype=np.int32)
    mean0 = np.float64(np.mean(pattern[0]))
    last2 = np.float64(pattern[2][-1] if nres > 2 else 0)
    mod = rt.module("saturation")
    grid, block = grid_for(npix), (BLOCK,)

    d = rt.put(data.reshape(nres, npix), np.float32)
    g = rt.put(groupdq.reshape(nres, npix), np.uint8)
    pdq = rt.put(pixeldq.reshape(npix), np.uint32)
    thr = rt.put(threshold.reshape(npix), np.float32)
    tdq = rt.put(threshold_dq.reshape(npix), np.uint32)
    f = rt.put(factor)
    nr = rt.put(n_reads)
    if n_pix_grow_sat == 0:
        mod.get_function("saturation_pixel")(
            grid, block, (d, g, pdq, thr, tdq, f, nr, mean0, last2, _I32(nres), _I32(npix), _I32(backup))
        )
    else:
        n = _I32(n_pix_grow_sat)
        g2 = rt.empty((nres, npix), np.uint8)
        mod.get_function("saturation_forward")(grid, block, (d, g, pdq, thr, tdq, _I32(nres), _I32(npix)))
        mod.get_function("saturation_grow")(grid, block, (g, g2, _I32(nres), _I32(ny), _I32(nx), n))
        mod.get_function("saturation_dilute_grown")(
            grid, block, (d, g2, g, thr, tdq, f, _I32(nres), _I32(ny), _I32(nx), n)
        )
        mod.get_function("saturation_finish")(
            grid, block, (d, g, thr, tdq, nr, mean0, last2, _I32(nres), _I32(npix), _I32(backup))
        )
    rt.synchronize()
    return SaturationResult(rt.get(g).reshape(nres, ny, nx), rt.get(pdq).reshape(ny, nx))


def linearity(
    rt: KernelRuntime,
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    lin_coeffs: np.ndarray,
    ilin_coeffs: np.ndarray | None,
    lin_dq: np.ndarray,
    inl: InlTable | None,
    timing: ReadTiming,
) -> LinearityResult:
    nres, ny, nx = data.shape
    npix = ny * nx
    pattern = timing.read_pattern
    if lin_coeffs.shape[0] < 2 or (ilin_coeffs is not None and ilin_coeffs.shape[0] < 2):
        raise ValueError("linearity kernels need at least 2 coefficients")
    mod = rt.module("linearity")
    grid, block = grid_for(npix), (BLOCK,)

    d = rt.put(data.reshape(nres, npix), np.float32)
    g = rt.put(groupdq.reshape(nres, npix), np.uint8)
    pdq = rt.put(pixeldq.reshape(npix), np.uint32)
    lin = rt.put(lin_coeffs.reshape(-1, npix), np.float32)
    ldq = rt.put(lin_dq.reshape(npix), np.uint32)
    if ilin_coeffs is None:
        mod.get_function("linearity_classic")(
            grid, block, (d, g, pdq, lin, _I32(lin_coeffs.shape[0]), ldq, _I32(nres), _I32(npix))
        )
    else:
        reads = np.array([r for res in pattern for r in res], dtype=np.int32)
        read_start = np.concatenate([[0], np.cumsum([len(res) for res in pattern])]).astype(np.int32)
        mean_read = np.array([np.mean(res) for res in pattern], dtype=np.float64)
        inl_args: tuple[Any, ...]
        if inl is None:
            inl_args = (
                rt.put(np.zeros(1, np.float32)),
                rt.put(np.zeros(1, np.float64)),
                rt.put(np.zeros(1, np.int32)),
                _I32(0),
                _I32(1),
            )
        else:
            needed = -(-nx // inl.channel_width)
            if inl.corrections.shape[0] < needed:
                raise ValueError(f"INL table has {inl.corrections.shape[0]} channels, {needed} needed")
            valid = (~np.isnan(inl.corrections).all(axis=1)).astype(np.int32)
            inl_args = (
                rt.put(inl.grid, np.float32),
                rt.put(inl.corrections, np.float64),
                rt.put(valid),
                _I32(inl.grid.shape[0]),
                _I32(inl.channel_width),
            )
        ilin = rt.put(ilin_coeffs.reshape(-1, npix), np.float32)
        mod.get_function("linearity_read_level")(
            grid,
            block,
            (
                d,
                g,
                pdq,
                lin,
                _I32(lin_coeffs.shape[0]),
                ilin,
                _I32(ilin_coeffs.shape[0]),
                ldq,
                rt.put(reads),
                rt.put(read_start),
                rt.put(mean_read),
                *inl_args,
                _I32(nres),
                _I32(nx),
                _I32(npix),
            ),
        )
    rt.synchronize()
    return LinearityResult(
        rt.get(d).reshape(nres, ny, nx), rt.get(g).reshape(nres, ny, nx), rt.get(pdq).reshape(ny, nx)
    )


def guide_window_ranges(
    shape: tuple[int, int], window: tuple[int, int, int, int] | None, expand: int
) -> tuple[int, int, int, int, int, int]:
    """romancal's guide-window slices as half-open ranges: (col_x0, col_x1, bx0, bx1, by0, by1).

    Same rules as ``cpu_fallback.dq_init._flag_guide_window``: validity and clipping
    against the number of rows, then Python slice semantics (``slice.indices``).
    """
    ny, nx = shape
    if window is None:
        return (0, 0, 0, 0, 0, 0)
    xs, xe, ys, ye = (int(v) for v in window)
    if not (0 <= xs < ny and 0 <= ys < ny):
        return (0, 0, 0, 0, 0, 0)
    cx0, cx1, _ = slice(xs, xe).indices(nx)
    if expand > 0:
        xs, xe, ys, ye = (min(max(v, 0), ny) for v in (xs - expand, xe + expand, ys - expand, ye + expand))
    bx0, bx1, _ = slice(xs, xe).indices(nx)
    by0, by1, _ = slice(ys, ye).indices(ny)
    return (cx0, cx1, bx0, bx1, by0, by1)


def dq_init(
    rt: KernelRuntime,
    data: np.ndarray,
    reference_read: np.ndarray | None,
    encoding_offset: int,
    mask_dq: np.ndarray | None,
    guide_window: tuple[int, int, int, int] | None,
    expand_gw_flagging: int,
) -> DQInitResult:
    nres, ny, nx = data.shape
    npix = ny * nx
    mod = rt.module("dq_init")
    grid, block = grid_for(npix), (BLOCK,)
    raw = rt.put(data.reshape(nres, npix), np.uint16)
    ref = rt.put(np.zeros(1, np.uint16) if reference_read is None else reference_read.reshape(npix), np.uint16)
    out = rt.empty((nres, npix), np.float32)
    mod.get_function("dq_init_convert")(
        grid,
        block,
        (raw, ref, _I32(reference_read is not None), np.float32(encoding_offset), out, _I32(nres), _I32(npix)),
    )
    use_mask = mask_dq is not None and mask_dq.shape == (ny, nx)
    mask = rt.put(mask_dq.reshape(npix) if use_mask and mask_dq is not None else np.zeros(1), np.uint32)
    pdq = rt.empty((npix,), np.uint32)
    ranges = guide_window_ranges((ny, nx), guide_window, int(expand_gw_flagging))
    mod.get_function("dq_init_pixeldq")(
        grid, block, (pdq, mask, _I32(use_mask), *(_I32(v) for v in ranges), _I32(nx), _I32(npix))
    )
    rt.synchronize()
    return DQInitResult(rt.get(out).reshape(nres, ny, nx), rt.get(pdq).reshape(ny, nx))
