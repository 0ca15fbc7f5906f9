"""Steps on the rate image: dark_current (§8) and flat_field (§12), as romancal 1.1.0.

dark_current: ``data -= dark_slope``, ``dq |= dark_dq`` on the science area; nothing else
(NaNs in the dark propagate; err and variances are untouched).

flat_field, with flat F, its error E and DQ Q: Q |= NO_FLAT_FIELD where F is NaN or 0; F = 1
wherever Q has NO_FLAT_FIELD; then ``data /= F`` and ``dumo /= F`` (each kept in its own
dtype), ``var_poisson /= F^2``, ``var_rnoise /= F^2``, ``err /= F`` (in place, in their
dtypes, float16 in an ImageModel), optionally ``var_flat = data^2 / F^2 * E^2`` (with the
divided data) and ``err = sqrt(err^2 + var_flat)`` (then float32, as in romancal), and
``dq |= Q``.
"""

from __future__ import annotations

import numpy as np

from gpucal.backends.protocol import FlatResult
from gpucal.dq import PixelFlag

__all__ = ["dark_current", "flatfield"]

_NO_FLAT_FIELD = np.uint32(PixelFlag.NO_FLAT_FIELD)
_BORDER = 4


def _science_area(ref: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``ref`` itself if it has the image's shape, its [4:-4, 4:-4] if it is a full frame."""
    if ref.shape == shape:
        return ref
    if ref.shape == (shape[0] + 2 * _BORDER, shape[1] + 2 * _BORDER):
        return ref[_BORDER:-_BORDER, _BORDER:-_BORDER]
    raise ValueError(f"{name} shape {ref.shape} matches neither the image {shape} nor its full frame")


def dark_current(
    slope: np.ndarray, dq: np.ndarray, dark_slope: np.ndarray, dark_dq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the dark rate and OR in the dark's DQ, in place.

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
    if flat.shape != data.shape:
        raise ValueError(f"flat shape {flat.shape} differs from the image's {data.shape}")
    f = np.array(flat)
    q = np.array(flat_dq, dtype=np.uint32)
    q[np.isnan(f) | (f == 0.0)] |= _NO_FLAT_FIELD
    f[(q & _NO_FLAT_FIELD) != 0] = 1.0

    data = (data / f).astype(data.dtype)
    dumo = (dumo / f).astype(dumo.dtype)
    f_squared = f**2
    var_poisson /= f_squared
    if var_rnoise is not None:
        var_rnoise /= f_squared
    err /= f
    var_flat = None
    if include_var_flat:
        var_flat = data**2 / f_squared * flat_err**2
        err = np.sqrt(err**2 + var_flat)
    dq = np.bitwise_or(dq, q, dtype=np.uint32)
    return FlatResult(data, err, var_poisson, var_rnoise, var_flat, dumo, dq)
