"""Kernel launch sequences of jump detection and the ramp fits (see :mod:`.launch`).

``jump.cu``, ``ramp_fit_gls.cu``, ``ramp_fit_likely.cu``, ``ramp_fit_ols_cas22.cu`` and
``uniform_slope.cu``,
with the NumPy backend's signatures on device arrays.  Their read-pattern constants are
computed on the host by the very NumPy functions the NumPy backend uses
(:func:`cpu_fallback.jump.difference_noise`,
:func:`cpu_fallback.ramp_fit.gls.pattern_constants`,
:func:`cpu_fallback.ramp_fit.likely.pattern_constants`,
:func:`cpu_fallback.ramp_fit.ols_cas22.pattern_constants`,
:func:`cpu_fallback.uniform.uniform_weights`) and uploaded as ``"constants"``, so the
kernels and the NumPy backend agree to the bit.

Jump's frame-wide search mode is not read back: :func:`jump` computes it on the device
(:func:`jump_search_mode`, array reductions on the runtime's stream) and ``jump.cu`` reads
it from device memory; a caller holding the frame on the host may pass it instead
(:func:`frame_search_mode`, uploaded as ``"constants"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cpu_fallback.jump import MIN_DIFFS_SINGLE_PASS, MIN_USABLE_GROUPS, REFERENCE_RATES, difference_noise
from cpu_fallback.ramp_fit import gls as gls_np
from cpu_fallback.ramp_fit import likely as likely_np
from cpu_fallback.ramp_fit import ols_cas22 as ols_np
from cpu_fallback.ramp_fit._common import check_inputs
from cpu_fallback.uniform import uniform_weights
from gpucal.backends.device._launch_common import (
    check_resultants,
    frame_shape,
    kernel_define,
    launch,
    on_stream,
    require,
    upload_constants,
)
from gpucal.backends.protocol import JumpParams, RampFitParams, RampFitResult
from gpucal.backends.runtime import DeviceRuntime
from gpucal.dq import GroupFlag
from gpucal.readpattern import ReadTiming

__all__ = [
    "RAMP_FIT_ALGORITHMS",
    "difference_constants",
    "frame_search_mode",
    "jump_search_mode",
    "search_mode",
    "jump",
    "gls",
    "likely",
    "ols_cas22",
    "ramp_fit",
    "uniform_slope",
]

_I32 = np.int32
_F32 = np.float32
_DNU = np.uint8(GroupFlag.DO_NOT_USE)
#: ``algorithm`` values of :func:`ramp_fit`.
RAMP_FIT_ALGORITHMS = ("gls", "ols_cas22", "likely")


def _check_ramp_inputs(data: Any, groupdq: Any, pixeldq: Any, readnoise: Any, gain: Any, timing: ReadTiming) -> None:
    """The NumPy ramp fits' shape checks (ValueError), then dtypes and contiguity."""
    check_inputs(data, groupdq, pixeldq, readnoise, gain, timing.nresultants)
    for name, arr, dtype in (
        ("data", data, np.float32),
        ("groupdq", groupdq, np.uint8),
        ("pixeldq", pixeldq, np.uint32),
        ("readnoise", readnoise, np.float32),
        ("gain", gain, np.float32),
    ):
        require(arr, name, None, dtype)


# ------------------------------------------------------------------------------ jump
def difference_constants(timing: ReadTiming) -> np.ndarray:
    """``jump.cu``'s ``diff_consts`` table, on the host.

    Returns
    -------
    ndarray, shape (7, K - 1), float32
        Rows 1/dt (1/s), dt (s), read, photon (s), 1/dt**2, cov_read and cov_photon over
        dt_j dt_{j+1} (last entry 0): :func:`cpu_fallback.jump.difference_noise` in
        float64, then rounded to float32 as the NumPy backend rounds it.
    """
    noise = difference_noise(timing)
    nd = timing.nresultants - 1
    inv_dtdt = 1.0 / (noise.dt[:-1] * noise.dt[1:])

    def padded(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v, np.zeros(nd - v.size)])

    rows = (
        1.0 / noise.dt,
        noise.dt,
        noise.read,
        noise.photon,
        1.0 / noise.dt**2,
        padded(noise.cov_read * inv_dtdt),
        padded(noise.cov_photon * inv_dtdt),
    )
    return np.stack(rows).astype(np.float32)


def search_mode(nresultants: int, all_do_not_use: int) -> int:
    """``jump.cu``'s ``mode`` from the frame-wide counts, as ``cpu_fallback.jump`` decides.

    Parameters
    ----------
    nresultants : int
        K.
    all_do_not_use : int
        Resultants flagged DO_NOT_USE on every pixel of the frame.

    Returns
    -------
    int
        ``JUMP_MODE_NONE`` (fewer than 3 usable resultants), ``JUMP_MODE_SINGLE`` (at least
        10 usable differences) or ``JUMP_MODE_ITERATIVE``.
    """
    usable = nresultants - all_do_not_use
    if usable < MIN_USABLE_GROUPS:
        return kernel_define("jump", "JUMP_MODE_NONE")
    if usable - 1 >= MIN_DIFFS_SINGLE_PASS:
        return kernel_define("jump", "JUMP_MODE_SINGLE")
    return kernel_define("jump", "JUMP_MODE_ITERATIVE")


def frame_search_mode(groupdq: np.ndarray) -> int:
    """:func:`search_mode` of a host ``groupdq`` (K, ny, nx) uint8 of the whole frame.

    For callers that hold the frame on the host (row blocks pass it to every block's
    :func:`jump`); the same rule as ``cpu_fallback.jump`` and :func:`jump_search_mode`.
    """
    g = np.asarray(groupdq)
    if g.ndim != 3:
        raise ValueError(f"groupdq must be (K, ny, nx), got shape {g.shape}")
    nres, npix = int(g.shape[0]), int(g.shape[1]) * int(g.shape[2])
    planes = ((g & _DNU) != 0).reshape(nres, npix).all(axis=1)
    return search_mode(nres, int(np.count_nonzero(planes)))


@on_stream
def jump_search_mode(rt: DeviceRuntime, groupdq: Any) -> Any:
    """:func:`search_mode` of a device ``groupdq`` (K, ny, nx) uint8 of the whole frame, on the device.

    Array reductions enqueued on the runtime's stream (after the kernels that wrote
    ``groupdq``, before those that read the result); nothing is copied either way.  Peak
    extra device memory: one uint8 array of ``groupdq``'s size.

    Returns
    -------
    device array, shape (1,), int32
        The mode, ``jump_detect``'s ``mode`` argument.
    """
    nres, ny, nx = frame_shape(groupdq, "groupdq")
    require(groupdq, "groupdq", None, np.uint8)
    xp = rt.xp
    with rt.active():  # on the runtime's stream, after the kernels that wrote groupdq
        if ny * nx == 0:  # no pixel: every (empty) plane is DO_NOT_USE everywhere
            all_dnu = xp.full((1,), nres, dtype=np.int64)
        else:
            # a plane is DO_NOT_USE on every pixel iff its smallest DNU bit is set
            lowest = (groupdq & _DNU).reshape(nres, ny * nx).min(axis=1)
            all_dnu = (lowest != 0).sum(keepdims=True)  # (1,): 1-element arrays stay on the device
        usable = nres - all_dnu
        mode = xp.where(
            usable < MIN_USABLE_GROUPS,
            kernel_define("jump", "JUMP_MODE_NONE"),
            xp.where(
                usable - 1 >= MIN_DIFFS_SINGLE_PASS,
                kernel_define("jump", "JUMP_MODE_SINGLE"),
                kernel_define("jump", "JUMP_MODE_ITERATIVE"),
            ),
        )
        return mode.astype(np.int32).reshape(1)  # a new C-contiguous array


@on_stream
def jump(
    rt: DeviceRuntime,
    data: Any,
    groupdq: Any,
    readnoise: Any,
    gain: Any,
    timing: ReadTiming,
    params: JumpParams,
    reference_rate: str = "weighted",
    *,
    mode: int | None = None,
) -> Any:
    """Two-point-difference jump detection and the 4-neighbour pass (``jump.cu``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN); read only.
    groupdq : device array, shape (K, ny, nx), uint8
        Group DQ; JUMP_DET set (and cleared on SATURATED/DO_NOT_USE resultants) in place.
    readnoise : device array, shape (ny, nx), float32
        Read noise of one read (DN).
    gain : device array, shape (ny, nx), float32
        Gain (e-/DN); pixels where it is not positive and finite are not searched.
    timing : ReadTiming
        Read pattern (1 <= K <= ``JUMP_MAX_RESULTANTS``).
    params : JumpParams
        Thresholds (sigma) and neighbour flagging.
    reference_rate : {"weighted", "median"}
        As ``cpu_fallback.jump.jump``.
    mode : int, optional
        The frame-wide search mode (:func:`search_mode`), uploaded as ``"constants"``; row
        blocks must pass the whole frame's (:func:`frame_search_mode`).  None: computed on
        the device from ``groupdq`` (:func:`jump_search_mode`), nothing copied.

    Returns
    -------
    device array, shape (K, ny, nx), uint8
        ``groupdq``, updated.
    """
    if data.ndim != 3 or tuple(data.shape) != tuple(groupdq.shape):
        raise ValueError(
            f"data {tuple(data.shape)} and groupdq {tuple(groupdq.shape)} must be equal (K, ny, nx) shapes"
        )
    nres, ny, nx = (int(n) for n in data.shape)
    npix = ny * nx
    if nres != timing.nresultants:
        raise ValueError(f"data has {nres} resultants, the read pattern {timing.nresultants}")
    if reference_rate not in REFERENCE_RATES:
        raise ValueError(f"reference_rate must be one of {REFERENCE_RATES}, got {reference_rate!r}")
    max_resultants = kernel_define("jump", "JUMP_MAX_RESULTANTS")
    if nres > max_resultants:
        raise ValueError(f"jump.cu handles at most {max_resultants} resultants, got {nres}")
    require(data, "data", None, np.float32)
    require(groupdq, "groupdq", None, np.uint8)
    require(readnoise, "readnoise", (ny, nx), np.float32)
    require(gain, "gain", (ny, nx), np.float32)
    ref_code = kernel_define("jump", "JUMP_REF_WEIGHTED" if reference_rate == "weighted" else "JUMP_REF_MEDIAN")
    if mode is None:
        search = jump_search_mode(rt, groupdq)
    else:
        modes = {kernel_define("jump", f"JUMP_MODE_{m}") for m in ("NONE", "ITERATIVE", "SINGLE")}
        if int(mode) not in modes:
            raise ValueError(f"mode must be one of {sorted(modes)}, got {mode!r}")
        search = upload_constants(rt, [int(mode)], np.int32)
    marks = rt.empty((ny, nx), np.uint32)
    consts = upload_constants(rt, difference_constants(timing), np.float32)
    # outlier2 is NumPy's float32 square (a powf, not always the correctly rounded product)
    outlier2 = _F32(params.rejection_threshold) ** 2
    launch(rt, "jump", "jump_detect", npix, (
        data, groupdq, readnoise, gain, consts, marks, _I32(nres), np.int64(npix), _I32(ref_code), search,
        _F32(params.rejection_threshold), _F32(params.three_group_rejection_threshold),
        _F32(params.four_group_rejection_threshold), outlier2, _I32(params.flag_4_neighbors),
        _F32(params.min_jump_to_flag_neighbors), _F32(params.max_jump_to_flag_neighbors),
    ))  # fmt: skip
    if params.flag_4_neighbors:
        launch(rt, "jump", "jump_neighbors", npix, (groupdq, marks, _I32(nres), _I32(ny), _I32(nx)))
    return groupdq


# ------------------------------------------------------------------------------ ramp fits
def _outputs(rt: DeviceRuntime, shape: tuple[int, int], n: int) -> list[Any]:
    return [rt.empty(shape, np.float32) for _ in range(n)]


@on_stream
def gls(
    rt: DeviceRuntime,
    data: Any,
    groupdq: Any,
    pixeldq: Any,
    readnoise: Any,
    gain: Any,
    timing: ReadTiming,
    params: RampFitParams | None = None,
    saturation_level: Any = None,
) -> RampFitResult:
    """gpucal's generalised-least-squares ramp fit (``ramp_fit_gls.cu``).

    Arguments as :func:`ols_cas22`; ``params``: ``use_ramp_jump_detection`` and
    ``gls_jump_threshold`` (sigma) of the search for jumps inside the fit;
    ``saturation_level``: device array (ny, nx) float32, the level (DN, the units of
    ``data``) at which a read saturates, +inf/NaN where unknown, or None (unknown
    everywhere; :func:`cpu_fallback.ramp_fit.gls.fit_gls`).

    Returns
    -------
    RampFitResult
        New (ny, nx) float32 slope (DN/s), err, var_poisson, var_rnoise ((DN/s)**2),
        chisq and uint32 dq; ``groupdq`` is the array given, with JUMP_DET on the later
        resultant of every jump found and SATURATED on a last resultant found short.

    Raises
    ------
    ValueError
        Inconsistent shapes, or more than ``GLS_MAX_RESULTANTS`` resultants.
    """
    params = params or RampFitParams()
    _check_ramp_inputs(data, groupdq, pixeldq, readnoise, gain, timing)
    nres, ny, nx = (int(n) for n in data.shape)
    if nres > gls_np.GLS_MAX_RESULTANTS:
        raise ValueError(f"the gls ramp fit handles 1 to {gls_np.GLS_MAX_RESULTANTS} resultants, got {nres}")
    if saturation_level is None:
        level, has_level = rt.empty((1,), np.float32), _I32(0)  # never read
    else:
        require(saturation_level, "saturation_level", (ny, nx), np.float32)
        level, has_level = saturation_level, _I32(1)
    pat = gls_np.pattern_constants(timing)
    consts = upload_constants(rt, pat.table(), np.float64)
    outs = _outputs(rt, (ny, nx), 5)
    dq = rt.empty((ny, nx), np.uint32)
    launch(rt, "ramp_fit_gls", "ramp_fit_gls", ny * nx, (
        data, groupdq, pixeldq, readnoise, gain, level, has_level, consts, np.uint32(pat.multi),
        _I32(bool(params.use_ramp_jump_detection)), np.float64(params.gls_jump_threshold),
        np.float64(gls_np.SHORTFALL_SIGMA), np.float64(gls_np.SATURATION_MARGIN), np.float64(gls_np.QUANTIZATION_VAR),
        _I32(nres), _I32(ny * nx), *outs, dq,
    ))  # fmt: skip
    slope, err, var_poisson, var_rnoise, chisq = outs
    return RampFitResult(slope, err, var_poisson, var_rnoise, chisq, dq, groupdq)


@on_stream
def likely(
    rt: DeviceRuntime, data: Any, groupdq: Any, pixeldq: Any, readnoise: Any, gain: Any, timing: ReadTiming
) -> RampFitResult:
    """Maximum-likelihood ramp fit with its jump search (``ramp_fit_likely.cu``).

    Arguments as :func:`ols_cas22`.  K outside 4..``RAMP_MAX_RESULTANTS`` is not an error
    here: the kernel writes NaN results and DO_NOT_USE (``ramp_fit`` raises for K < 4, as
    the NumPy backend does).

    Returns
    -------
    RampFitResult
        New (ny, nx) float32 slope (DN/s), err, var_poisson, var_rnoise ((DN/s)**2),
        chisq and uint32 dq; ``groupdq`` is the array given, JUMP_DET OR-ed onto the later
        resultant of every dropped difference.
    """
    _check_ramp_inputs(data, groupdq, pixeldq, readnoise, gain, timing)
    nres, ny, nx = (int(n) for n in data.shape)
    pat = likely_np.pattern_constants(timing)
    thresh_one, thresh_two = likely_np.drop_thresholds()
    consts = [
        upload_constants(rt, a, np.float64)
        for a in (pat.delta_t, pat.alpha_ph, pat.alpha_rn, pat.beta_ph, pat.beta_rn, pat.two_omit_ok)
    ]
    outs = _outputs(rt, (ny, nx), 5)
    dq = rt.empty((ny, nx), np.uint32)
    launch(rt, "ramp_fit_likely", "ramp_fit_likely", ny * nx, (
        data, groupdq, pixeldq, readnoise, gain, *consts, np.float64(thresh_one), np.float64(thresh_two), _I32(nres),
        _I32(ny * nx), *outs, dq,
    ))  # fmt: skip
    slope, err, var_poisson, var_rnoise, chisq = outs
    return RampFitResult(slope, err, var_poisson, var_rnoise, chisq, dq, groupdq)


@on_stream
def ols_cas22(
    rt: DeviceRuntime,
    data: Any,
    groupdq: Any,
    pixeldq: Any,
    readnoise: Any,
    gain: Any,
    timing: ReadTiming,
    params: RampFitParams | None = None,
) -> RampFitResult:
    """Casertano (2022) optimally weighted fit with jump splitting (``ramp_fit_ols_cas22.cu``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN); read only.
    groupdq : device array, shape (K, ny, nx), uint8
        Group DQ; JUMP_DET is set in place around every detected jump.
    pixeldq : device array, shape (ny, nx), uint32
        Pixel DQ, passed through into ``dq``; not modified.
    readnoise : device array, shape (ny, nx), float32
        Read noise of one read (DN).
    gain : device array, shape (ny, nx), float32
        Gain (e-/DN).
    timing : ReadTiming
        Read pattern and frame time.
    params : RampFitParams, optional
        Jump search switch and thresholds (defaults: ``RampFitParams()``).

    Returns
    -------
    RampFitResult
        New (ny, nx) float32 slope (DN/s), err, var_poisson, var_rnoise ((DN/s)**2),
        chisq (zeros) and uint32 dq; ``groupdq`` is the array given, updated.
    """
    params = params or RampFitParams()
    _check_ramp_inputs(data, groupdq, pixeldq, readnoise, gain, timing)
    nres, ny, nx = (int(n) for n in data.shape)
    pat = ols_np.pattern_constants(timing)
    intercept = _F32(
        ols_np.DEFAULT_THRESHOLD_INTERCEPT if params.threshold_intercept is None else params.threshold_intercept
    )
    constant = _F32(
        ols_np.DEFAULT_THRESHOLD_CONSTANT if params.threshold_constant is None else params.threshold_constant
    )
    consts = [upload_constants(rt, a, np.float32) for a in (pat.tbar, pat.tau64, pat.nreads)]
    outs = _outputs(rt, (ny, nx), 4)
    dq = rt.empty((ny, nx), np.uint32)
    use_jump = _I32(bool(params.use_ramp_jump_detection))
    launch(rt, "ramp_fit_ols_cas22", "ramp_fit_ols_cas22", ny * nx, (
        data, groupdq, pixeldq, readnoise, gain, *consts, use_jump, intercept, constant, _I32(nres), _I32(ny * nx),
        *outs, dq,
    ))  # fmt: skip
    slope, err, var_poisson, var_rnoise = outs
    return RampFitResult(slope, err, var_poisson, var_rnoise, rt.zeros((ny, nx), np.float32), dq, groupdq)


@on_stream
def ramp_fit(
    rt: DeviceRuntime,
    data: Any,
    groupdq: Any,
    pixeldq: Any,
    readnoise: Any,
    gain: Any,
    timing: ReadTiming,
    algorithm: str,
    params: RampFitParams,
    saturation_level: Any = None,
) -> RampFitResult:
    """Fit every pixel's ramp: :func:`gls`, :func:`ols_cas22` or :func:`likely` (``algorithm``).

    ``saturation_level`` (gls only) as :func:`gls`.

    Raises
    ------
    ValueError
        Unknown algorithm, inconsistent shapes, or ``likely`` with fewer than 4 resultants
        (as the NumPy backend).
    """
    if saturation_level is not None and algorithm != "gls":
        raise ValueError(f"a saturation level is an input of the gls ramp fit only, not of {algorithm}")
    if algorithm == "gls":
        return gls(rt, data, groupdq, pixeldq, readnoise, gain, timing, params, saturation_level)
    if algorithm == "ols_cas22":
        return ols_cas22(rt, data, groupdq, pixeldq, readnoise, gain, timing, params)
    if algorithm == "likely":
        nres = int(data.shape[0])
        if nres < likely_np.LIKELY_MIN_RESULTANTS:
            raise ValueError(
                f"the likely ramp fit needs at least {likely_np.LIKELY_MIN_RESULTANTS} resultants, got {nres}"
            )
        return likely(rt, data, groupdq, pixeldq, readnoise, gain, timing)
    raise ValueError(f"unknown ramp-fit algorithm {algorithm!r}; expected one of {RAMP_FIT_ALGORITHMS}")


@on_stream
def uniform_slope(rt: DeviceRuntime, data: Any, timing: ReadTiming) -> Any:
    """Flag-blind uniform-weight slope, for ``dumo`` (``uniform_slope.cu``).

    Parameters
    ----------
    rt : DeviceRuntime
        Where the arrays live and the kernels run.
    data : device array, shape (K, ny, nx), float32
        Resultants (DN).
    timing : ReadTiming
        Read pattern and frame time.

    Returns
    -------
    device array, shape (ny, nx), float64
        Slope (DN/s), in float64 as the NumPy backend (romancal) returns it.
    """
    nres, ny, nx = frame_shape(data)
    check_resultants(timing, nres)
    require(data, "data", None, np.float32)
    slope = rt.empty((ny, nx), np.float64)
    weights = upload_constants(rt, uniform_weights(timing), np.float64)
    launch(rt, "uniform_slope", "uniform_slope", ny * nx, (data, weights, _I32(nres), _I32(ny * nx), slope))
    return slope
