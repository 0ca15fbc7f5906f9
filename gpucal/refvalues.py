"""Unusable values in reference arrays: counted, warned about, flagged, or refused.

A reference pixel whose value cannot be used (NaN, or zero where zero means nothing)
gets the DQ flags romancal 1.1.0 gives it where romancal defines them, and the step logs
one warning with the count.  A reference that is unusable at *every* pixel of the
exposure is an error naming the file: calibrating with it would only flag every pixel.

What each step does with such values (the flags are set by the backends, except the
dark's, set here on the host before the arrays go to the backend):

========================  ===========================  ==================================
reference, array          unusable value               pixels get (romancal 1.1.0 / stcal)
========================  ===========================  ==================================
FLAT ``data``             NaN or 0                     NO_FLAT_FIELD, flat taken as 1
GAIN ``data``             NaN, inf, 0 or < 0           NO_GAIN_VALUE (not finite or < 0,
                                                       ols_cas22), DO_NOT_USE (slope not
                                                       finite)
READNOISE ``data``        NaN or inf                   DO_NOT_USE (slope not finite)
SATURATION ``data``       NaN                          NO_SAT_CHECK (never saturated)
LINEARITY ``coeffs``      NaN, or a zero linear term   NO_LIN_CORR (left uncorrected)
DARK ``dark_slope``       NaN                          gpucal: UNRELIABLE_DARK | DO_NOT_USE
                                                       (romancal leaves dq 0 under a NaN
                                                       rate; gpucal flags it)
========================  ===========================  ==================================
"""

from __future__ import annotations

import logging

import numpy as np

from gpucal.errors import ReferenceFileError
from gpucal.refs import Resolved, derived

__all__ = ["screen", "flag_nan_dark", "DARK_NAN_FLAGS"]

log = logging.getLogger(__name__)

#: DQ bits a NaN dark rate sets in the image (its slope is NaN after the subtraction)
DARK_NAN_FLAGS = np.uint32((1 << 23) | (1 << 0))  # UNRELIABLE_DARK | DO_NOT_USE


def screen(source: Resolved, name: str, bad: np.ndarray, what: str, consequence: str) -> int:
    """Count the unusable pixels of one reference array; warn, or refuse an unusable file.

    Parameters
    ----------
    source : Resolved
        The reference file (its type and path name it in messages).
    name : str
        The array (``data``, ``dark_slope``...).
    bad : ndarray of bool
        True where the value is unusable, over the pixels the exposure uses.
    what : str
        The unusable values, in words (``"NaN or zero"``).
    consequence : str
        What happens to those pixels (``"flagged NO_FLAT_FIELD"``).

    Returns
    -------
    int
        The number of unusable pixels (0: nothing logged).

    Raises
    ------
    ReferenceFileError
        Every pixel is unusable.
    """
    count = int(np.count_nonzero(bad))
    total = int(bad.size)
    if total and count == total:
        raise ReferenceFileError(
            f"{source.reftype} reference {source.path}: {name} is {what} at every pixel "
            f"({total}); the file is unusable"
        )
    if count:
        log.warning(
            "%s reference %s: %s is %s at %d of %d pixels: %s",
            source.reftype.upper(), source.path, name, what, count, total, consequence,
        )
    return count


def flag_nan_dark(dark_slope: np.ndarray, dark_dq: np.ndarray, source: Resolved, trim: int) -> np.ndarray:
    """The dark DQ with :data:`DARK_NAN_FLAGS` where ``dark_slope`` is NaN.

    Parameters
    ----------
    dark_slope : ndarray, shape (ny, nx), float32
        Dark rate (DN/s) as in the file (full frame).
    dark_dq : ndarray, shape (ny, nx), uint32
        The DARK reference DQ (not modified).
    source : Resolved
        The DARK file.
    trim : int
        Border width not part of the image (only the science area is screened).

    Returns
    -------
    ndarray
        ``dark_dq`` itself when no science pixel is NaN, else a flagged copy (keyed to the
        file, so a device backend caches it as it does the file's own arrays).

    Raises
    ------
    ReferenceFileError
        Every science pixel's dark rate is NaN.
    """
    nan = np.isnan(dark_slope)
    science = nan[trim:-trim, trim:-trim] if trim else nan
    if not screen(source, "dark_slope", science, "NaN", "flagged UNRELIABLE_DARK and DO_NOT_USE"):
        return dark_dq
    flagged = dark_dq | (nan.astype(np.uint32) * DARK_NAN_FLAGS)
    return derived(flagged, dark_dq, "nan-dark-flags")

