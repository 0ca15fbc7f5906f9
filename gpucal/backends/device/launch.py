"""Kernel launch sequences of the backend operations, on any :class:`DeviceRuntime`.

One function per backend operation (:class:`gpucal.backends.protocol.Backend`), with the
NumPy backend's signature and results, except that every array argument and result is a
*device* array of ``rt`` (C-contiguous, the NumPy backend's shapes and dtypes: ramps
``(K, ny, nx)``, pixel arrays ``(ny, nx)``, coefficient cubes ``(ncoeff, ny, nx)``).  Each
follows the launch contract written at the top of its ``.cu`` file: one thread per pixel,
1-D grids of 256-thread blocks, host scalars as NumPy scalars of the kernel's C type.

Transfers: only the small per-exposure tables derived from the read pattern, the timing or
an INL table go up (label ``"constants"``); nothing else is uploaded and nothing is
downloaded here.  The jump kernel's frame-wide search mode is no exception: it is computed
on the device (:func:`~gpucal.backends.device.launch_ramp.jump_search_mode`) and read by
the kernel from device memory, or given by the caller and uploaded as ``"constants"``
(:func:`~gpucal.backends.device.launch_ramp.frame_search_mode` of a host frame).  Kernels
update ``data``, ``groupdq`` and ``pixeldq`` in place where their contract says so, and the
results then hold those same arrays.

Row blocks: :func:`dq_init` and :func:`dark_decay` take the frame row of the block's first
row (``row0``), as their results depend on it, and :func:`jump` the whole frame's search
mode (``mode``); the other operations are per pixel (or, for saturation growth and jump's
neighbours, need halo rows, which is the caller's business).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cpu_fallback.dark_decay import NCHANNEL
from cpu_fallback.linearity import check_inl
from gpucal.backends.device._launch_common import (
    check_resultants,
    frame_shape,
    launch,
    on_stream,
    read_lists,
    require,
    upload_constants,
)
from gpucal.backends.device.launch_ramp import (
    frame_search_mode,
    gls,
    jump,
    jump_search_mode,
    likely,
    ols_cas22,
    ramp_fit,
    search_mode,
    uniform_slope,
)
from gpucal.backends.protocol import DQInitResult, InlTable, LinearityResult, SaturationResult
from gpucal.backends.runtime import DeviceRuntime
from gpucal.readpattern import ReadTiming

__all__ = [
    "guide_window_ranges",
    "dq_init",
    "saturation",
    "saturation_headroom",
    "linearity",
    "linearity_threshold",
    "frame_read_times",
    "dark_decay",
    "jump",
    "frame_search_mode",
    "jump_search_mode",
    "search_mode",
    "ramp_fit",
    "gls",
    "likely",
    "ols_cas22",
    "uniform_slope",
]

log = logging.getLogger(__name__)

_I32 = np.int32


# ------------------------------------------------------------------------------ dq_init
def guide_window_ranges(
    frame_shape: tuple[int, int], window: tuple[int, int, int, int] | None, expand: int
) -> tuple[int, int, int, int, int, int]:
    """romancal's guide-window slices as half-open ranges, for ``dq_init_pixeldq``.

    Same rules as ``cpu_fallback.dq_init._flag_guide_window``: validity and clipping
    against the number of rows, then Python slice semantics (``slice.indices``).

    Parameters
    ----------
    frame_shape : (ny, nx)
        Shape of the whole frame (not of a row block).
    window : (xstart, xstop, ystart, ystop) or None
        Guide-window bounds in frame pixels.
    expand : int
        Pixels by which the DO_NOT_USE box grows on every side.

    Returns
    -------
    (col_x0, col_x1, box_x0, box_x1, box_y0, box_y1)
        GW_AFFECTED_DATA columns and the DO_NOT_USE box, in frame pixels (all zeros: none).
    """
    ny, nx = frame_shape
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


@on_stream
def dq_init(
    rt: DeviceRuntime,
    raw: Any,
    reference_read: Any | None,
    encoding_offset: int,
    mask_dq: Any | None,
    guide_window_ranges: tuple[int, int, int, int, int, int],
    row0: int = 0,
) -> DQInitResult:
    """Raw resultants to float32 DN and the initial pixel DQ (``dq_init.cu``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    raw : device array, shape (K, ny, nx), uint16
        Raw resultants (DN).
    reference_read : device array, shape (ny, nx), uint16, or None
        The L1 reference read, added back to every resultant.
    encoding_offset : int
        Data encoding offset (DN), subtracted.
    mask_dq : device array, shape (ny, nx), uint32, or None
        MASK reference DQ, OR-ed in; ignored (with a warning) when its shape differs, as
        the NumPy backend does.
    guide_window_ranges : 6-tuple of int
        :func:`guide_window_ranges` of the whole frame.
    row0 : int
        Frame row of the first row of ``raw`` (row blocks); the box rows are shifted by it.

    Returns
    -------
    DQInitResult
        ``data`` (K, ny, nx) float32 DN (new) and ``pixeldq`` (ny, nx) uint32 (new).
    """
    nres, ny, nx = frame_shape(raw, "raw")
    npix = ny * nx
    require(raw, "raw", None, np.uint16)
    if reference_read is not None:
        require(reference_read, "reference_read", (ny, nx), np.uint16)
    out = rt.empty((nres, ny, nx), np.float32)
    ref = rt.zeros((1,), np.uint16) if reference_read is None else reference_read
    launch(rt, "dq_init", "dq_init_convert", npix, (
        raw, ref, _I32(reference_read is not None), np.float32(encoding_offset), out, _I32(nres), _I32(npix),
    ))  # fmt: skip

    use_mask = mask_dq is not None and tuple(mask_dq.shape) == (ny, nx)
    if mask_dq is not None and not use_mask:
        log.warning("MASK dq shape %s differs from the data's %s; mask not applied", tuple(mask_dq.shape), (ny, nx))
    if use_mask:
        require(mask_dq, "mask_dq", (ny, nx), np.uint32)
    mask = mask_dq if use_mask else rt.zeros((1,), np.uint32)
    cx0, cx1, bx0, bx1, by0, by1 = (int(v) for v in guide_window_ranges)
    by0, by1 = (min(max(v - int(row0), 0), ny) for v in (by0, by1))
    pixeldq = rt.empty((ny, nx), np.uint32)
    launch(rt, "dq_init", "dq_init_pixeldq", npix, (
        pixeldq, mask, _I32(use_mask), *(_I32(v) for v in (cx0, cx1, bx0, bx1, by0, by1)), _I32(nx), _I32(npix),
    ))  # fmt: skip
    return DQInitResult(out, pixeldq)


# ------------------------------------------------------------------------------ saturation
def _check_saturation_inputs(data: Any, groupdq: Any, pixeldq: Any, threshold: Any,
                             threshold_dq: Any) -> tuple[int, int, int]:
    """(K, ny, nx) of the saturation operations' inputs, their shapes and dtypes checked."""
    nres, ny, nx = frame_shape(data)
    require(data, "data", None, np.float32)
    require(groupdq, "groupdq", (nres, ny, nx), np.uint8)
    for name, arr, dtype in (
        ("pixeldq", pixeldq, np.uint32),
        ("threshold", threshold, np.float32),
        ("threshold_dq", threshold_dq, np.uint32),
    ):
        require(arr, name, (ny, nx), dtype)
    return nres, ny, nx


@on_stream
def saturation(
    rt: DeviceRuntime,
    data: Any,
    groupdq: Any,
    pixeldq: Any,
    threshold: Any,
    threshold_dq: Any,
    timing: ReadTiming,
    n_pix_grow_sat: int,
    backup: int,
) -> SaturationResult:
    """Saturation, A/D-floor and dilution flags (``saturation.cu``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN); read only.
    groupdq : device array, shape (K, ny, nx), uint8
        Group DQ, flagged in place.
    pixeldq : device array, shape (ny, nx), uint32
        Pixel DQ; ``threshold_dq`` is OR-ed in, in place.
    threshold : device array, shape (ny, nx), float32
        Saturation threshold (DN); NaN: no check (only 65536 DN saturates).
    threshold_dq : device array, shape (ny, nx), uint32
        SATURATION reference DQ.
    timing : ReadTiming
        Read pattern (dilution factors, second-resultant rule).
    n_pix_grow_sat : int
        SATURATED grows by a (2n+1)^2 box (0: no growth, one launch).
    backup : int
        Sweeps copying SATURATED back one multi-read resultant.

    Returns
    -------
    SaturationResult
        ``groupdq`` and ``pixeldq``: the arrays given, updated.
    """
    nres, ny, nx = _check_saturation_inputs(data, groupdq, pixeldq, threshold, threshold_dq)
    npix = ny * nx
    check_resultants(timing, nres)
    pattern = timing.read_pattern
    factor = upload_constants(rt, [np.mean(r) / r[-1] for r in pattern], np.float64)
    n_reads = upload_constants(rt, [len(r) for r in pattern], np.int32)
    mean0 = np.float64(np.mean(pattern[0]))
    last2 = np.float64(pattern[2][-1] if nres > 2 else 0)
    if n_pix_grow_sat == 0:
        launch(rt, "saturation", "saturation_pixel", npix, (
            data, groupdq, pixeldq, threshold, threshold_dq, factor, n_reads, mean0, last2, _I32(nres), _I32(npix),
            _I32(backup),
        ))  # fmt: skip
    else:
        n = _I32(n_pix_grow_sat)
        grown = rt.empty((nres, ny, nx), np.uint8)
        launch(rt, "saturation", "saturation_forward", npix, (
            data, groupdq, pixeldq, threshold, threshold_dq, _I32(nres), _I32(npix),
        ))  # fmt: skip
        launch(rt, "saturation", "saturation_grow", npix, (groupdq, grown, _I32(nres), _I32(ny), _I32(nx), n))
        launch(rt, "saturation", "saturation_dilute_grown", npix, (
            data, grown, groupdq, threshold, threshold_dq, factor, _I32(nres), _I32(ny), _I32(nx), n,
        ))  # fmt: skip
        launch(rt, "saturation", "saturation_finish", npix, (
            data, groupdq, threshold, threshold_dq, n_reads, mean0, last2, _I32(nres), _I32(npix), _I32(backup),
        ))  # fmt: skip
    return SaturationResult(groupdq, pixeldq)


@on_stream
def saturation_headroom(rt: DeviceRuntime, data: Any, groupdq: Any, pixeldq: Any, threshold: Any,
                        threshold_dq: Any) -> Any:
    """DN left below the saturation threshold at the last usable resultant (``saturation.cu``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN); read only.
    groupdq : device array, shape (K, ny, nx), uint8
        Group DQ after saturation flagging; read only.
    pixeldq : device array, shape (ny, nx), uint32
        Pixel DQ; read only.
    threshold : device array, shape (ny, nx), float32
        Saturation threshold (DN); NaN: no check.
    threshold_dq : device array, shape (ny, nx), uint32
        SATURATION reference DQ.

    Returns
    -------
    device array, shape (ny, nx), float32
        ``threshold - data[k*]`` (DN), k* the last resultant with no flag but JUMP_DET;
        +inf where there is none, the threshold is NaN or either DQ has NO_SAT_CHECK
        (``cpu_fallback.saturation.saturation_headroom``).
    """
    nres, ny, nx = _check_saturation_inputs(data, groupdq, pixeldq, threshold, threshold_dq)
    npix = ny * nx
    headroom = rt.empty((ny, nx), np.float32)
    launch(rt, "saturation", "saturation_headroom", npix, (
        data, groupdq, pixeldq, threshold, threshold_dq, headroom, _I32(nres), _I32(npix),
    ))  # fmt: skip
    return headroom


# ------------------------------------------------------------------------------ linearity
@on_stream
def linearity(
    rt: DeviceRuntime,
    data: Any,
    groupdq: Any,
    pixeldq: Any,
    lin_coeffs: Any,
    ilin_coeffs: Any | None,
    lin_dq: Any,
    inl: InlTable | None,
    timing: ReadTiming,
) -> LinearityResult:
    """Classic or read-level non-linearity correction, with INL (``linearity.cu``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN), corrected in place.
    groupdq : device array, shape (K, ny, nx), uint8
        Group DQ; clipped values get DO_NOT_USE in place.
    pixeldq : device array, shape (ny, nx), uint32
        Pixel DQ; ``lin_dq`` and NO_LIN_CORR are OR-ed in, in place.
    lin_coeffs : device array, shape (ncoeff, ny, nx), float32
        LINEARITY coefficients, constant term first (ncoeff >= 2).
    ilin_coeffs : device array, shape (ncoeff_i, ny, nx), float32, or None
        INVERSELINEARITY coefficients; given: the read-level correction, None: classic.
    lin_dq : device array, shape (ny, nx), uint32
        LINEARITY reference DQ.
    inl : InlTable or None
        Integral non-linearity (host tables; read-level path only), uploaded as constants.
    timing : ReadTiming
        Read pattern.

    Returns
    -------
    LinearityResult
        ``data``, ``groupdq`` and ``pixeldq``: the arrays given, updated.
    """
    nres, ny, nx = frame_shape(data)
    npix = ny * nx
    check_resultants(timing, nres)
    require(data, "data", None, np.float32)
    require(groupdq, "groupdq", (nres, ny, nx), np.uint8)
    require(pixeldq, "pixeldq", (ny, nx), np.uint32)
    require(lin_dq, "lin_dq", (ny, nx), np.uint32)
    for name, coeffs in (("lin_coeffs", lin_coeffs), ("ilin_coeffs", ilin_coeffs)):
        if coeffs is None:
            continue
        if coeffs.ndim != 3 or coeffs.shape[0] < 2:
            raise ValueError(f"linearity kernels need at least 2 coefficients, {name} has shape {coeffs.shape}")
        require(coeffs, name, (coeffs.shape[0], ny, nx), np.float32)
    ncoeff = _I32(lin_coeffs.shape[0])
    if ilin_coeffs is None:
        launch(rt, "linearity", "linearity_classic", npix, (
            data, groupdq, pixeldq, lin_coeffs, ncoeff, lin_dq, _I32(nres), _I32(npix),
        ))  # fmt: skip
        return LinearityResult(data, groupdq, pixeldq)

    if nres < 2:
        raise ValueError("read-level linearity needs at least 2 resultants")
    reads, read_start = read_lists(timing)
    mean_read = [np.mean(res) for res in timing.read_pattern]
    inl_args: tuple[Any, ...]
    if inl is None:
        inl_args = (rt.zeros((1,), np.float32), rt.zeros((1,), np.float64), rt.zeros((1,), np.int32), _I32(0), _I32(1))
    else:
        check_inl(inl, nx)
        valid = ~np.isnan(inl.corrections).all(axis=1)
        inl_args = (
            upload_constants(rt, inl.grid, np.float32),
            upload_constants(rt, inl.corrections, np.float64),
            upload_constants(rt, valid, np.int32),
            _I32(inl.grid.shape[0]),
            _I32(inl.channel_width),
        )
    launch(rt, "linearity", "linearity_read_level", npix, (
        data, groupdq, pixeldq, lin_coeffs, ncoeff, ilin_coeffs, _I32(ilin_coeffs.shape[0]), lin_dq,
        upload_constants(rt, reads, np.int32), upload_constants(rt, read_start, np.int32),
        upload_constants(rt, mean_read, np.float64), *inl_args, _I32(nres), _I32(nx), _I32(npix),
    ))  # fmt: skip
    return LinearityResult(data, groupdq, pixeldq)


@on_stream
def linearity_threshold(
    rt: DeviceRuntime, data: Any, groupdq: Any, headroom: Any, lin_coeffs: Any | None, lin_dq: Any | None
) -> Any:
    """The saturation threshold in linearized DN (``linearity.cu``'s ``linearity_threshold``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN) before the linearity correction; read only.
    groupdq : device array, shape (K, ny, nx), uint8
        Group DQ; read only.
    headroom : device array, shape (ny, nx), float32
        :func:`saturation_headroom` (DN).
    lin_coeffs : device array, shape (ncoeff, ny, nx), float32, or None
        LINEARITY coefficients, constant term first (ncoeff >= 2); None: no polynomial.
    lin_dq : device array, shape (ny, nx), uint32, or None
        LINEARITY reference DQ (None allowed only without ``lin_coeffs``).

    Returns
    -------
    device array, shape (ny, nx), float32
        ``P(data[k*] + headroom)`` (``cpu_fallback.linearity.linearity_threshold``); +inf
        where there is no usable resultant or the headroom is not finite.
    """
    nres, ny, nx = frame_shape(data)
    npix = ny * nx
    require(data, "data", None, np.float32)
    require(groupdq, "groupdq", (nres, ny, nx), np.uint8)
    require(headroom, "headroom", (ny, nx), np.float32)
    if lin_dq is not None:
        require(lin_dq, "lin_dq", (ny, nx), np.uint32)
    if lin_coeffs is None:  # the kernel then reads neither coefficients nor lin_dq
        coeffs, ncoeff = rt.zeros((1,), np.float32), 0
        lin_dq = rt.zeros((1,), np.uint32) if lin_dq is None else lin_dq
    else:
        if lin_coeffs.ndim != 3 or lin_coeffs.shape[0] < 2:
            raise ValueError(f"linearity kernels need at least 2 coefficients, lin_coeffs has shape {lin_coeffs.shape}")
        require(lin_coeffs, "lin_coeffs", (lin_coeffs.shape[0], ny, nx), np.float32)
        if lin_dq is None:
            raise ValueError("lin_dq is needed with lin_coeffs")
        coeffs, ncoeff = lin_coeffs, int(lin_coeffs.shape[0])
    level = rt.empty((ny, nx), np.float32)
    launch(rt, "linearity", "linearity_threshold", npix, (
        data, groupdq, headroom, coeffs, _I32(ncoeff), lin_dq, level, _I32(nres), _I32(npix),
    ))  # fmt: skip
    return level


# ------------------------------------------------------------------------------ dark decay
def _check_channels(ny: int, nx: int) -> None:
    if nx % NCHANNEL or nx <= 0 or ny <= 0:
        raise ValueError(f"frame must have a positive multiple of {NCHANNEL} columns, got {ny} x {nx}")


def frame_read_times(
    rt: DeviceRuntime, frame_time: float, sca: int, ny: int = 4096, nx: int = 4096, frame_number: float = 0
) -> Any:
    """Read time of every pixel of one frame (``dark_decay.cu``'s ``frame_read_times``).

    Parameters are those of ``cpu_fallback.dark_decay.frame_read_times``: frame time (s),
    WFI detector number, frame shape (``nx`` a multiple of 32) and frames elapsed before.

    Returns
    -------
    device array, shape (ny, nx), float64
        Read times (s).
    """
    _check_channels(ny, nx)
    times = rt.empty((ny, nx), np.float64)
    launch(rt, "dark_decay", "frame_read_times", ny * nx, (
        times, _I32(ny), _I32(nx), np.float64(frame_time), _I32(sca), np.float64(frame_number),
    ))  # fmt: skip
    return times


@on_stream
def dark_decay(
    rt: DeviceRuntime,
    data: Any,
    timing: ReadTiming,
    amplitude: float,
    time_constant: float,
    sca: int,
    row0: int = 0,
    frame_ny: int | None = None,
) -> Any:
    """Subtract the decaying dark signal, in place (``dark_decay.cu``'s ``dark_decay``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN), corrected in place: rows ``[row0, row0 + ny)`` of the frame.
    timing : ReadTiming
        Read pattern and frame time.
    amplitude : float
        Decay amplitude A (DN).
    time_constant : float
        Decay time constant T (s).
    sca : int
        WFI detector number (1-18).
    row0 : int
        Frame row of the first row of ``data`` (row blocks).
    frame_ny : int or None
        Rows of the whole frame (the read-time model depends on it); None: ``ny``.

    Returns
    -------
    device array, shape (K, ny, nx), float32
        ``data``.
    """
    nres, ny, nx = frame_shape(data)
    frame_rows = ny if frame_ny is None else int(frame_ny)
    _check_channels(frame_rows, nx)
    check_resultants(timing, nres)
    if row0 < 0 or row0 + ny > frame_rows:
        raise ValueError(f"rows [{row0}, {row0 + ny}) are not inside a frame of {frame_rows} rows")
    require(data, "data", None, np.float32)
    reads, offsets = read_lists(timing)
    launch(rt, "dark_decay", "dark_decay", ny * nx, (
        data, upload_constants(rt, offsets, np.int32), upload_constants(rt, reads, np.int32), _I32(nres), _I32(ny),
        _I32(nx), np.float64(timing.frame_time), np.float64(amplitude), np.float64(time_constant), _I32(sca),
        _I32(row0), _I32(frame_rows),
    ))  # fmt: skip
    return data
