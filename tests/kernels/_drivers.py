"""Host-array front ends of :mod:`gpucal.backends.device.launch` for the kernel tests.

Each function takes NumPy inputs exactly as the ``cpu_fallback`` function of the same name,
uploads them to the runtime (converted to the kernel's dtypes), calls the library launcher
and downloads every array of its result, so tests compare the two backends directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucal.backends.device import launch
from gpucal.backends.protocol import (
    DQInitResult,
    InlTable,
    JumpParams,
    LinearityResult,
    RampFitParams,
    RampFitResult,
    SaturationResult,
)
from gpucal.readpattern import ReadTiming

F32, U8, U16, U32 = np.float32, np.uint8, np.uint16, np.uint32


def up(rt: Any, host: np.ndarray | None, dtype: Any) -> Any:
    """A device copy of ``host`` as ``dtype`` (None stays None)."""
    return None if host is None else rt.upload(np.asarray(host), label="input", dtype=dtype)


def down(rt: Any, result: Any) -> Any:
    """Host copies of a device array, or of every array of a NamedTuple of them."""
    if isinstance(result, tuple):
        return type(result)(*(down(rt, r) for r in result))
    return rt.download(result, label="output")


def dq_init(
    rt: Any,
    data: np.ndarray,
    reference_read: np.ndarray | None,
    encoding_offset: int,
    mask_dq: np.ndarray | None,
    guide_window: tuple[int, int, int, int] | None,
    expand_gw_flagging: int,
) -> DQInitResult:
    ranges = launch.guide_window_ranges(data.shape[1:], guide_window, int(expand_gw_flagging))
    raw, ref, mask = up(rt, data, U16), up(rt, reference_read, U16), up(rt, mask_dq, U32)
    return down(rt, launch.dq_init(rt, raw, ref, encoding_offset, mask, ranges))


def saturation(
    rt: Any, data, groupdq, pixeldq, threshold, threshold_dq, timing: ReadTiming, n_pix_grow_sat: int, backup: int
) -> SaturationResult:
    args = (up(rt, data, F32), up(rt, groupdq, U8), up(rt, pixeldq, U32), up(rt, threshold, F32))
    return down(rt, launch.saturation(rt, *args, up(rt, threshold_dq, U32), timing, n_pix_grow_sat, backup))


def saturation_headroom(rt: Any, data, groupdq, pixeldq, threshold, threshold_dq) -> np.ndarray:
    args = (up(rt, data, F32), up(rt, groupdq, U8), up(rt, pixeldq, U32), up(rt, threshold, F32))
    return down(rt, launch.saturation_headroom(rt, *args, up(rt, threshold_dq, U32)))


def linearity_threshold(rt: Any, data, groupdq, headroom, lin_coeffs, lin_dq) -> np.ndarray:
    args = (up(rt, data, F32), up(rt, groupdq, U8), up(rt, headroom, F32), up(rt, lin_coeffs, F32))
    return down(rt, launch.linearity_threshold(rt, *args, up(rt, lin_dq, U32)))


def linearity(
    rt: Any, data, groupdq, pixeldq, lin_coeffs, ilin_coeffs, lin_dq, inl: InlTable | None, timing: ReadTiming
) -> LinearityResult:
    args = (up(rt, data, F32), up(rt, groupdq, U8), up(rt, pixeldq, U32), up(rt, lin_coeffs, F32))
    return down(rt, launch.linearity(rt, *args, up(rt, ilin_coeffs, F32), up(rt, lin_dq, U32), inl, timing))


def frame_read_times(rt: Any, frame_time: float, sca: int, ny: int = 4096, nx: int = 4096, frame_number=0.0):
    return down(rt, launch.frame_read_times(rt, frame_time, sca, ny, nx, frame_number))


def dark_decay(rt: Any, data, timing: ReadTiming, amplitude, time_constant, sca, row0=0, frame_ny=None):
    d = up(rt, data, F32)
    return down(rt, launch.dark_decay(rt, d, timing, amplitude, time_constant, sca, row0=row0, frame_ny=frame_ny))


def jump(
    rt: Any, data, groupdq, readnoise, gain, timing: ReadTiming, params: JumpParams, *, reference_rate="weighted"
) -> np.ndarray:
    args = (up(rt, data, F32), up(rt, groupdq, U8), up(rt, readnoise, F32), up(rt, gain, F32))
    return down(rt, launch.jump(rt, *args, timing, params, reference_rate))


def _ramp_inputs(rt: Any, data, groupdq, pixeldq, readnoise, gain) -> tuple[Any, ...]:
    types = (F32, U8, U32, F32, F32)
    return tuple(up(rt, a, t) for a, t in zip((data, groupdq, pixeldq, readnoise, gain), types, strict=True))


def gls(rt: Any, data, groupdq, pixeldq, readnoise, gain, timing, params=None, saturation_level=None) -> RampFitResult:
    inputs = _ramp_inputs(rt, data, groupdq, pixeldq, readnoise, gain)
    level = None if saturation_level is None else up(rt, saturation_level, F32)
    return down(rt, launch.gls(rt, *inputs, timing, params or RampFitParams(), level))


def likely(rt: Any, data, groupdq, pixeldq, readnoise, gain, timing: ReadTiming) -> RampFitResult:
    return down(rt, launch.likely(rt, *_ramp_inputs(rt, data, groupdq, pixeldq, readnoise, gain), timing))


def ols_cas22(rt: Any, data, groupdq, pixeldq, readnoise, gain, timing, params=None) -> RampFitResult:
    inputs = _ramp_inputs(rt, data, groupdq, pixeldq, readnoise, gain)
    return down(rt, launch.ols_cas22(rt, *inputs, timing, params or RampFitParams()))


def uniform_slope(rt: Any, data: np.ndarray, timing: ReadTiming) -> np.ndarray:
    return down(rt, launch.uniform_slope(rt, up(rt, data, F32), timing))
