"""wfi18_transient: the first-read transient of detector WFI18 (algorithms.md §5).

On the science pixels ``[4:-4, 4:-4]``, with t_k the mean read time of resultant k and
``d_k = t_{k+1} - t_k``, the first resultant expected from the next two is
``E = D_1 - d_0 (D_2 - D_1) / d_1`` and the residual ``rho = D_0 - E`` (float64).  Pixels
whose ``D_4 - D_3`` does not exceed a row median are "weakly illuminated" (romancal
compares pixel (y, x) with the median of row x, see below); the 3-sigma
clipped mean of their residuals (astropy ``sigma_clipped_stats``: median centre, 5
iterations) gives one value per row, which is fitted against the row's mean read time
(``frame_read_times(frame_time, 18)``) by ``a exp(-t/tau_a) + b exp(-t/tau_b)``
(scipy ``curve_fit``, Levenberg-Marquardt, start ``[1.1 r_0, -0.1 r_0, t_300, t_1000]``).
The model at each pixel's read time is then subtracted from ``D_0``.

Fallback, as romancal: with ``mask_rows``, fewer than 5 resultants, or a failed fit,
rows 0-999 of resultant 0 get DO_NOT_USE | WFI18_TRANSIENT instead.  romancal needs at
least 1001 science rows for its start values (it would raise IndexError); such small
frames take the fallback here.  The fit is a few thousand points, so it stays on the CPU.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from cpu_fallback.dark_decay import frame_read_times
from gpucal.dq import GroupFlag
from gpucal.readpattern import ReadTiming

__all__ = ["wfi18_transient", "MASKED_ROWS"]

log = logging.getLogger(__name__)

MASKED_ROWS = 1000  # frame rows of resultant 0 masked by the fallback
WFI18_SCA = 18
_MASK_FLAGS = np.uint8(GroupFlag.DO_NOT_USE | GroupFlag.WFI18_TRANSIENT)
_BORDER = 4


def _double_exp(t: np.ndarray, a: float, b: float, tau_a: float, tau_b: float) -> np.ndarray:
    return a * np.exp(-t / tau_a) + b * np.exp(-t / tau_b)


def _mask_rows(groupdq: np.ndarray) -> None:
    groupdq[0, :MASKED_ROWS, :] |= _MASK_FLAGS


def wfi18_transient(
    data: np.ndarray, groupdq: np.ndarray, timing: ReadTiming, mask_rows: bool
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Correct (or mask) the WFI18 first-read transient, in place.

    Parameters
    ----------
    data : ndarray, shape (K, ny, nx), float32
        Resultants (DN); resultant 0's science pixels are corrected when the fit succeeds.
    groupdq : ndarray, shape (K, ny, nx), uint8
        Group DQ; resultant 0, rows 0-999, flagged when the fallback is taken.
    timing : ReadTiming
        Read pattern and frame time.
    mask_rows : bool
        Take the masking fallback without fitting.

    Returns
    -------
    data, groupdq : ndarray
        The inputs, updated.
    fitted : bool
        True if the transient was fitted and subtracted, False if rows were masked.
    """
    from astropy.stats import sigma_clipped_stats
    from scipy import optimize

    nres, ny, nx = data.shape
    n_sci_rows = ny - 2 * _BORDER
    if mask_rows or nres < 5 or n_sci_rows <= 1000:
        if n_sci_rows <= 1000 and not mask_rows and nres >= 5:
            log.warning("Frame too small for the WFI18 transient fit; masking affected rows instead.")
        _mask_rows(groupdq)
        return data, groupdq, False

    frame_time = timing.frame_time
    t_pixel = frame_read_times(frame_time, WFI18_SCA, ny, nx)[_BORDER:-_BORDER, _BORDER:-_BORDER]
    t_resultant = np.array([np.mean([r * frame_time for r in reads]) for reads in timing.read_pattern])
    sci = data[:, _BORDER:-_BORDER, _BORDER:-_BORDER]
    t_row = np.mean(t_pixel, axis=1)

    dt = np.diff(t_resultant)
    estimated_first = sci[1] - (sci[2] - sci[1]) / dt[1] * dt[0]
    residual = sci[0] - estimated_first
    del estimated_first
    diff = sci[4] - sci[3]
    medians = np.median(diff, axis=1)
    # romancal compares diff[y, x] with the median of row *x* (a broadcast along the last
    # axis); kept for parity on the square science area, true row medians otherwise
    bright = diff > (medians if diff.shape[0] == diff.shape[1] else medians[:, None])
    del diff
    row_residual, _, _ = sigma_clipped_stats(residual, mask=bright, sigma=3.0, axis=1)
    del residual, bright

    p0 = [row_residual[0] * 1.1, row_residual[0] * -0.1, t_row[300], t_row[1000]]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", "Covariance of the parameters could not be estimated", optimize.OptimizeWarning
            )
            params, _ = optimize.curve_fit(_double_exp, t_row, row_residual, p0=p0)
    except (ValueError, RuntimeError):
        log.warning("Transient fit failed; masking affected rows instead.")
        _mask_rows(groupdq)
        return data, groupdq, False

    a, b, tau_a, tau_b = params
    log.debug("WFI18 transient fit: a=%g, b=%g, tau_a=%g, tau_b=%g", a, b, tau_a, tau_b)
    sci[0] -= _double_exp(t_pixel, a, b, tau_a, tau_b)
    return data, groupdq, True
