"""Steps on the rate image: dark_current (§8) and flat_field (§12), as romancal 1.1.0.

dark_current: ``data -= dark_slope``, ``dq |= dark_dq`` on the science area; nothing else
(NaNs in the dark propagate; err and variances are untouched).

flat_field, with flat F, its error E and DQ Q: Q |= NO_FLAT_FIELD where F is NaN or 0; F = 1
wherever Q has NO_FLAT_FIELD; then ``data /= F`` and ``dumo /= F`` (each kept in its own
dtype), ``var_poisson /= F^2``, ``var_rnoise /= F^2``, ``err /= F`` (in place, in their
dtypes, float16 in an ImageModel), optionally ``var_flat = data^2 / F^2 * E^2`` (with the
divided data) and ``err = sqrt(err^2 + var_flat)`` (then float32, as in romancal), and
``dq |= Q``.

Both functions are written once against an array namespace ``xp`` (:func:`flatfield_xp`,
and :func:`dark_current`, which needs none): NumPy here, the device's in
:mod:`gpucal.backends.device.image`, with only operations that NumPy and CuPy share with the
same semantics, so that the two backends agree bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucal.backends.protocol import FlatResult
from gpucal.dq import PixelFlag

__all__ = ["dark_current", "flatfield", "flatfield_xp"]

_NO_FLAT_FIELD = np.uint32(PixelFlag.NO_FLAT_FIELD)
_BORDER = 4


def _science_area(ref: Any, shape: tuple[int, ...], name: str) -> Any:
    """``ref`` itself if it has the image's shape, its [4:-4, 4:-4] if it is a full frame."""
    if tuple(ref.shape) == tuple(shape):
        return ref
    if tuple(ref.shape) == (shape[0] + 2 * _BORDER, shape[1] + 2 * _BORDER):
        return ref[_BORDER:-_BORDER, _BORDER:-_BORDER]
    raise ValueError(f"{name} shape {ref.shape} matches neither the image {shape} nor its full frame")


def dark_current(slope: Any, dq: Any, dark_slope: Any, dark_dq: Any) -> tuple[Any, Any]:
    """Subtract the dark rate and OR in the dark's DQ, in place.

    In-place operators only, so the arrays may be NumPy's or a device's (all of one kind).

    Parameters
    ----------
    slope : ndarray, shape (ny, nx), float32
        Rate image (DN/s) of the science area.
    dq : ndarray, shape (ny, nx), uint32
        Its DQ.
    dark_slope : ndarray, float32
        Dark rate (DN/s), of the image's shape or the full frame (then trimmed by 4).
    dark_dq : ndarray, uint32
        DARK reference DQ, shaped as ``dark_slope``.

    Returns
    -------
    slope, dq : ndarray
        The updated inputs (float32, uint32).
    """
    slope -= _science_area(dark_slope, slope.shape, "dark_slope")
    dq |= _science_area(dark_dq, dq.shape, "dark dq")
    return slope, dq


def flatfield(
    data: np.ndarray,
    err: np.ndarray,
    var_poisson: np.ndarray,
    var_rnoise: np.ndarray | None,
    dumo: np.ndarray,
    dq: np.ndarray,
    flat: np.ndarray,
    flat_err: np.ndarray,
    flat_dq: np.ndarray,
    include_var_flat: bool,
) -> FlatResult:
    """Divide the rate image and its uncertainties by the flat field.

    Parameters
    ----------
    data : ndarray, shape (ny, nx), float32
        Rate image (DN/s or calibrated units).
    err, var_poisson, var_rnoise : ndarray, shape (ny, nx), usually float16
        Uncertainty (same units as data) and variances; ``var_rnoise`` may be None.
        Updated in place.
    dumo : ndarray, shape (ny, nx), float16
        Uniform-minus-optimal slope difference.
    dq : ndarray, shape (ny, nx), uint32
        Image DQ.
    flat, flat_err : ndarray, shape (ny, nx), float32
        Flat field and its uncertainty.  Not modified.
    flat_dq : ndarray, shape (ny, nx), uint32
        FLAT reference DQ.  Not modified.
    include_var_flat : bool
        Compute ``var_flat`` and add it to ``err``.

    Returns
    -------
    FlatResult
        ``var_flat`` is None unless ``include_var_flat``.
    """
    # the references may come as array-likes (the device version's arrays are always arrays)
    flat, flat_err, flat_dq, dq = (np.asarray(a) for a in (flat, flat_err, flat_dq, dq))
    return flatfield_xp(np, data, err, var_poisson, var_rnoise, dumo, dq, flat, flat_err, flat_dq, include_var_flat)


def flatfield_xp(
    xp: Any,
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
    """:func:`flatfield` on the arrays of the namespace ``xp`` (``numpy``, ``cupy``, ...).

    Same parameters and result as :func:`flatfield`, every array one of ``xp``'s.  Only
    elementwise operations and ``astype``: no boolean-mask assignment (a device
    synchronisation on CuPy) and no ``dtype=`` on ``bitwise_or`` (not in every CuPy).
    """
    if tuple(flat.shape) != tuple(data.shape):
        raise ValueError(f"flat shape {flat.shape} differs from the image's {data.shape}")
    bad = xp.isnan(flat) | (flat == 0.0)
    q = flat_dq.astype(np.uint32) | (bad.astype(np.uint32) * _NO_FLAT_FIELD)
    # F = 1 where NO_FLAT_FIELD is set, in F's own dtype
    f = xp.where((q & _NO_FLAT_FIELD) != 0, xp.ones((), dtype=flat.dtype), flat)

    data = (data / f).astype(data.dtype)
    dumo = (dumo / f).astype(dumo.dtype)
    # products, not ``**``: CuPy before 14.2 squares through powf (1-2 ulp off the host's);
    # NumPy's ``x**2`` is ``x * x``, so the host results are unchanged
    f_squared = f * f
    var_poisson /= f_squared
    if var_rnoise is not None:
        var_rnoise /= f_squared
    err /= f
    var_flat = None
    if include_var_flat:
        var_flat = data * data / f_squared * (flat_err * flat_err)
        err = xp.sqrt(err * err + var_flat)
    dq = dq.astype(np.uint32) | q
    return FlatResult(data, err, var_poisson, var_rnoise, var_flat, dumo, dq)
