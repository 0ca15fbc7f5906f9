"""wfi18_transient on the device: the first-read transient of detector WFI18.

The algorithm of :mod:`cpu_fallback.wfi18` (romancal 1.1.0's ``correct_anomaly``; the maths
are in that module's docstring), written against a runtime's ``xp``.  All per-pixel
arithmetic and the per-row statistics run on the device; only the row-residual vector
(``ny - 8`` float64, label ``wfi18_rows``) comes to the host, where scipy's ``curve_fit``
fits the double exponential, and the fitted model is subtracted on the device.

Per-row statistics, as romancal computes them with astropy's ``sigma_clipped_stats(residual,
mask=bright, sigma=3.0, axis=1)`` (astropy's fast C path for ``axis=int``: centre median,
spread population standard deviation, ``maxiters=5``, ``sigma_lower = sigma_upper = 3``):
per row, starting from the unmasked finite values, the bounds ``median -+ 3 std`` are
computed and the values outside them dropped, until nothing is dropped or 5 sets of
bounds have been used; the row's result is the mean of the values that are unmasked,
finite and within the *last* bounds (astropy re-applies only those to the original data, so
a value dropped early that lies within the last bounds counts again).  Here the dropped
values are NaNs and the statistics ``xp.nanmedian``, ``xp.nanstd`` and ``xp.nanmean``.  The
loop always runs 5 times: once a row has converged, recomputing gives the same bounds, so
the result is astropy's and the device never waits on a host-side stopping test.  astropy
sums the mean and spread sequentially and NumPy pairwise, so the bounds can differ in the
last bits: a value within an ulp of a bound may be kept by one and dropped by the other.

Read times: the host computes ``cpu_fallback.dark_decay.frame_read_times`` (for the rows'
mean read times that the fit needs, exactly as the NumPy backend) and uploads only the
``(ny, 2 nx / 32)`` block that the map repeats every two channels; the model is evaluated
on that block and tiled, the same float64 values as on the full map.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from cpu_fallback.dark_decay import NCHANNEL, frame_read_times
from cpu_fallback.wfi18 import _BORDER, _MASK_FLAGS, MASKED_ROWS, WFI18_SCA
from gpucal.backends.device._launch_common import on_stream
from gpucal.backends.runtime import DeviceRuntime
from gpucal.readpattern import ReadTiming

__all__ = ["wfi18_transient", "sigma_clipped_row_means"]

log = logging.getLogger(__name__)

#: astropy ``sigma_clipped_stats`` defaults used by romancal (sigma given as 3.0).
SIGMA = 3.0
MAXITERS = 5


def sigma_clipped_row_means(xp: Any, values: Any, mask: Any) -> Any:
    """Per-row sigma-clipped means, as astropy ``sigma_clipped_stats(values, mask=mask, sigma=3, axis=1)[0]``.

    Parameters
    ----------
    xp : module
        Array namespace of ``values`` and ``mask``.
    values : array, (nrows, ncols) float64
        Data (here DN).
    mask : array, (nrows, ncols) bool
        True where a value is excluded from the start.

    Returns
    -------
    array, (nrows,) float64
        Means of the kept values; NaN for a row with none.
    """
    values = values.astype(xp.float64)
    valid = ~mask & xp.isfinite(values)
    work = xp.where(valid, values, xp.nan)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as astropy
        for _ in range(MAXITERS):
            centre = xp.nanmedian(work, axis=1)
            spread = xp.nanstd(work, axis=1)
            lower = (centre - spread * SIGMA)[:, None]
            upper = (centre + spread * SIGMA)[:, None]
            work = xp.where((work < lower) | (work > upper), xp.nan, work)
        kept = valid & (values >= lower) & (values <= upper)
        return xp.nanmean(xp.where(kept, values, xp.nan), axis=1)


def _double_exp(xp: Any, t: Any, a: float, b: float, tau_a: float, tau_b: float) -> Any:
    """The transient model (DN) at read times ``t`` (s): the NumPy backend's operation order."""
    return a * xp.exp(-t / tau_a) + b * xp.exp(-t / tau_b)


def _mask_rows(groupdq: Any) -> None:
    groupdq[0, :MASKED_ROWS, :] |= _MASK_FLAGS


@on_stream
def wfi18_transient(
    rt: DeviceRuntime, data: Any, groupdq: Any, timing: ReadTiming, mask_rows: bool
) -> tuple[Any, Any, bool]:
    """Correct (or mask) the WFI18 first-read transient, in place on the device.

    Parameters
    ----------
    rt : DeviceRuntime
        The device; ``data`` and ``groupdq`` are its arrays.
    data : device array, (K, ny, nx) float32, DN
        Resultants; resultant 0's science pixels ``[4:-4, 4:-4]`` are corrected when the
        fit succeeds.
    groupdq : device array, (K, ny, nx) uint8
        Group DQ; resultant 0, rows 0-999, get DO_NOT_USE | WFI18_TRANSIENT when the
        fallback is taken.
    timing : ReadTiming
        Read pattern and frame time (s).
    mask_rows : bool
        Take the masking fallback without fitting.

    Returns
    -------
    data, groupdq : device array
        The inputs, updated.
    fitted : bool
        True if the transient was fitted and subtracted, False if rows were masked.

    Notes
    -----
    One device-to-host copy, ``wfi18_rows``: the (ny - 8,) float64 row residuals.
    """
    from scipy import optimize

    xp = rt.xp
    nres, ny, nx = data.shape
    n_sci_rows = ny - 2 * _BORDER
    with rt.active():
        if mask_rows or nres < 5 or n_sci_rows <= MASKED_ROWS:
            if n_sci_rows <= MASKED_ROWS and not mask_rows and nres >= 5:
                log.warning("Frame too small for the WFI18 transient fit; masking affected rows instead.")
            _mask_rows(groupdq)
            return data, groupdq, False

        frame_time = timing.frame_time
        with rt.untimed():  # host work (the frame's read times): not the step's device time
            times = frame_read_times(frame_time, WFI18_SCA, ny, nx)
            t_row = np.mean(times[_BORDER:-_BORDER, _BORDER:-_BORDER], axis=1)
            block = rt.upload(times[:, : 2 * (nx // NCHANNEL)], label="constants")
            del times
            t_resultant = np.array([np.mean([r * frame_time for r in reads]) for reads in timing.read_pattern])
            dt = np.diff(t_resultant)

        row_residual = rt.download(_row_residuals(xp, data, float(dt[0]), float(dt[1])), label="wfi18_rows")

        p0 = [row_residual[0] * 1.1, row_residual[0] * -0.1, t_row[300], t_row[1000]]
        try:
            with rt.untimed(), warnings.catch_warnings():  # the fit runs on the host
                warnings.filterwarnings(
                    "ignore", "Covariance of the parameters could not be estimated", optimize.OptimizeWarning
                )
                params, _ = optimize.curve_fit(
                    lambda t, a, b, tau_a, tau_b: _double_exp(np, t, a, b, tau_a, tau_b), t_row, row_residual, p0=p0
                )
        except (ValueError, RuntimeError):
            log.warning("Transient fit failed; masking affected rows instead.")
            _mask_rows(groupdq)
            return data, groupdq, False

        a, b, tau_a, tau_b = (float(p) for p in params)
        log.debug("WFI18 transient fit: a=%g, b=%g, tau_a=%g, tau_b=%g", a, b, tau_a, tau_b)
        model = xp.tile(_double_exp(xp, block, a, b, tau_a, tau_b), (1, NCHANNEL // 2))
        # float64 model subtracted from float32 data, rounded once, as the NumPy backend
        data[0, _BORDER:-_BORDER, _BORDER:-_BORDER] -= model[_BORDER:-_BORDER, _BORDER:-_BORDER]
    return data, groupdq, True


def _row_residuals(xp: Any, data: Any, dt0: float, dt1: float) -> Any:
    """Sigma-clipped mean of each science row's first-resultant residual, (ny - 8,) float64 DN."""
    sci = data[:, _BORDER:-_BORDER, _BORDER:-_BORDER]
    # The NumPy backend's promotions made explicit (a float32 array divided by a NumPy float64
    # scalar is float64 in NumPy 2; CuPy might keep float32): float32 differences, float64 rest.
    step = (sci[2] - sci[1]).astype(xp.float64)
    estimated_first = sci[1].astype(xp.float64) - step / dt1 * dt0
    residual = sci[0].astype(xp.float64) - estimated_first
    del step, estimated_first
    diff = sci[4] - sci[3]
    medians = xp.median(diff, axis=1)
    # romancal compares diff[y, x] with the median of row *x* (a broadcast along the last
    # axis); kept for parity on the square science area, true row medians otherwise
    bright = diff > (medians if diff.shape[0] == diff.shape[1] else medians[:, None])
    del diff
    return sigma_clipped_row_means(xp, residual, bright)
