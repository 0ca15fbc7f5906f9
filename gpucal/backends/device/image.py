"""dark_current and flat_field on the device: the NumPy backend's code with the runtime's ``xp``.

:mod:`cpu_fallback.image` is written once against an array namespace (its module docstring
gives the maths, romancal 1.1.0's); here it runs on the device arrays of a
:class:`~gpucal.backends.runtime.DeviceRuntime`, so the results are the NumPy backend's bit
for bit wherever the device rounds elementwise float arithmetic as the CPU does (IEEE
division, multiplication and square root are correctly rounded on both).  Nothing is copied
between host and device.
"""

from __future__ import annotations

from typing import Any

from cpu_fallback.image import dark_current as host_dark_current
from cpu_fallback.image import flatfield_xp
from gpucal.backends.protocol import FlatResult
from gpucal.backends.runtime import DeviceRuntime

__all__ = ["dark_current", "flatfield"]


def dark_current(rt: DeviceRuntime, slope: Any, dq: Any, dark_slope: Any, dark_dq: Any) -> tuple[Any, Any]:
    """Subtract the dark rate and OR in the dark's DQ, in place on the device.

    Parameters
    ----------
    rt : DeviceRuntime
        The device; every array is one of its arrays.
    slope : device array, (ny, nx) float32, DN/s
        Rate image of the science area.
    dq : device array, (ny, nx) uint32
        Its DQ.
    dark_slope : device array, float32, DN/s
        Dark rate, of the image's shape or the full frame (then trimmed by 4).
    dark_dq : device array, uint32
        DARK reference DQ, shaped as ``dark_slope``.

    Returns
    -------
    slope, dq : device array
        The updated inputs (float32, uint32).
    """
    with rt.active():  # cpu_fallback's in-place arithmetic is namespace-neutral
        return host_dark_current(slope, dq, dark_slope, dark_dq)


def flatfield(
    rt: DeviceRuntime,
    data: Any,
    err: Any,
    var_poisson: Any,
    var_rnoise: Any | None,
    dumo: Any,
    dq: Any,
    flat: Any,
    flat_err: Any,
    flat_dq: Any,
    include_var_flat: bool,
) -> FlatResult:
    """Divide the rate image and its uncertainties by the flat field, on the device.

    Parameters
    ----------
    rt : DeviceRuntime
        The device; every array is one of its arrays.
    data : device array, (ny, nx) float32
        Rate image (DN/s or calibrated units).
    err, var_poisson, var_rnoise : device array, (ny, nx), usually float16
        Uncertainty (units of data) and variances (their square); ``var_rnoise`` may be
        None.  Updated in place.
    dumo : device array, (ny, nx) float16
        Uniform-minus-optimal slope difference.
    dq : device array, (ny, nx) uint32
        Image DQ.
    flat, flat_err : device array, (ny, nx) float32
        Flat field (dimensionless) and its uncertainty.  Not modified.
    flat_dq : device array, (ny, nx) uint32
        FLAT reference DQ.  Not modified.
    include_var_flat : bool
        Compute ``var_flat`` and add it to ``err``.

    Returns
    -------
    FlatResult
        Device arrays; ``var_flat`` is None unless ``include_var_flat``.
    """
    with rt.active():
        return flatfield_xp(
            rt.xp, data, err, var_poisson, var_rnoise, dumo, dq, flat, flat_err, flat_dq, include_var_flat
        )
