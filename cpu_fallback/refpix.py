"""refpix: FFT-based reference-pixel correction (algorithms.md §3, steps R0-R8).

Reproduces romancal 1.1.0's ``refpix.run_steps`` with every sub-step on (the step's
defaults, given the argument-shift quirk of pipeline.md §9 item 1), for a frame of ``ny``
rows and ``nx`` columns read by 32 channels of width ``w = nx // 32`` plus an amp33 output of
width ``w``.  Each channel row is followed by a 12-sample pause, so a channel's resultant is
a time series of ``L = ny * (w + 12)`` samples, ``n = (w + 12) * y + j`` (j in read order).

R0  zero the detector pixels whose pixeldq has BAD_REF_PIXEL.
R1  O = per-pixel least-squares intercept over the centred resultant index (the mean),
    computed in float32 as (sum_k S * Sxx - Sx * Sxy) / (K * Sxx - Sx^2); S -= O.
R2  split into 33 channels (odd detector channels column-reversed; amp33 last), append the
    12 zero pad columns and flatten each (channel, resultant) to u[n].
R3  per (channel, resultant): OLS line u ~ m t + b through the non-zero samples of the
    reference rows {0..3, ny-4..ny-1}, t = n - mean(n) (float32), solved in float64;
    u -= m t + b on every non-zero sample (in float64, stored float32).
R4  amp33: each zero sample becomes sum_e c_e u_{n+e} / sum_e c_e [u_{n+e} != 0] with
    c_e = sin((16 - e) pi / 32) (float32), e = -16..15 (c_{-16} = sin(pi) ~ -8.7e-8) and
    zeros outside [0, L); NaN -> 0, +-inf -> +-float32 max.
R5  amp33: 3 times  v = irfft(H * rfft(u)), u[pads] = v[pads], H_f = (1 + cos(2 pi f / L)) / 2.
R6  left = channel 0's first 4 read-order columns, right = channel 31's, zero elsewhere;
    Lf = (w+12)/4 * rfft(left / L), Rf likewise, Af = rfft(amp33 / L) (single precision);
    detector channel c -= float32(irfft(2 F (gamma_c Lf + zeta_c Rf + alpha_c Af))),
    F = L/2 + 1 (complex128 products, float64 inverse).
R7  drop the pads, undo the reversal, S += O.
R8  data = S[:, :, :nx] (float32); amp33 = uint16(|S[:, :, nx:]|) (truncating cast).

Precision follows romancal (numpy 2): float32 offsets and storage, single-precision forward
FFTs of float32 series, complex128 products and float64 inverse FFTs.  Note that numpy 2's
``polyfit`` on float32 data returns float64 coefficients, so romancal's R3 trend is
evaluated in float64 (algorithms.md says float32).

Memory is bounded by working on ``resultants_per_chunk`` resultants at a time (R1 needs all
of them only for the offset); the channel loops of R3 and R6 run on ``workers`` threads.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import fft

from gpucal.backends.protocol import RefpixResult
from gpucal.dq import PixelFlag

__all__ = ["refpix", "REF", "PAD", "N_CHANNELS", "FFT_ITERATIONS"]

log = logging.getLogger(__name__)

#: Reference columns at each side of the detector.
REF = 4
#: Pause, in pixel times, after each channel row.
PAD = 12
#: Detector channels (amp33 comes on top as channel 32).
N_CHANNELS = 32
#: Iterations of the FFT interpolation of amp33's pads (R5).
FFT_ITERATIONS = 3

_BAD_REF = np.uint32(PixelFlag.BAD_REF_PIXEL)
_HALF_TAPS = N_CHANNELS // 2


def refpix(
    data: np.ndarray,
    amp33: np.ndarray,
    pixeldq: np.ndarray,
    gamma: np.ndarray,
    zeta: np.ndarray,
    alpha: np.ndarray,
    *,
    resultants_per_chunk: int = 4,
    workers: int = 2,
) -> RefpixResult:
    """Correct the ramp with its reference pixels and amp33 (romancal 1.1.0 RefPixStep).

    Parameters
    ----------
    data : ndarray, (K, ny, nx) float32, DN
        Resultants including the 4-pixel reference border; nx a multiple of 32.  Not modified.
    amp33 : ndarray, (K, ny, nx // 32) uint16, DN
        The amp33 reference output.  Not modified.
    pixeldq : ndarray, (ny, nx) uint32
        Pixels with BAD_REF_PIXEL are zeroed before the correction (R0).
    gamma, zeta, alpha : ndarray, (32, L // 2 + 1) complex128
        Per-channel Fourier coefficients of the left border, right border and amp33,
        L = ny * (nx // 32 + 12).
    resultants_per_chunk : int
        Resultants processed together (the working set is about 33 L x 4 bytes each).
    workers : int
        Threads for the FFTs and the per-channel loops.

    Returns
    -------
    RefpixResult
        ``data`` (K, ny, nx) float32 and ``amp33`` (K, ny, nx // 32) uint16.
    """
    nres, ny, nx = data.shape
    width = nx // N_CHANNELS
    padded = width + PAD
    length = ny * padded
    nfreq = length // 2 + 1
    if nx % N_CHANNELS or width < REF:
        raise ValueError(f"refpix needs a width that is a multiple of {N_CHANNELS}, got {nx}")
    if amp33.shape != (nres, ny, width):
        raise ValueError(f"amp33 shape {amp33.shape} does not match data {data.shape}")
    if length % 2 or ny < REF:
        raise ValueError(f"refpix needs an even series length and >= {REF} rows, got {ny} x {padded}")
    for name, coeff in (("gamma", gamma), ("zeta", zeta), ("alpha", alpha)):
        if coeff.shape != (N_CHANNELS, nfreq):
            raise ValueError(f"{name} shape {coeff.shape} != {(N_CHANNELS, nfreq)}")

    out = np.array(data, dtype=np.float32, copy=True)
    # R0: romancal skips the masking when the DQ does not match the frame; so do we.
    if pixeldq.shape == (ny, nx):
        out[:, (pixeldq & _BAD_REF) != 0] = 0
    amp = np.asarray(amp33).astype(np.float32)

    offset_det = _offset(out)
    offset_amp = _offset(amp)
    del amp

    geometry = _Geometry(ny, width)
    log.debug("refpix: %d resultants of %d x %d, channel series of %d samples", nres, ny, nx, length)
    amp_out = np.empty((nres, ny, width), dtype=np.uint16)
    chunk = max(1, min(resultants_per_chunk, nres))
    work = np.empty((N_CHANNELS + 1, chunk, ny, padded), dtype=np.float32)
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k0 in range(0, nres, chunk):
            k1 = min(nres, k0 + chunk)
            chan = work[:, : k1 - k0]
            _to_channels(out[k0:k1], amp33[k0:k1], offset_det, offset_amp, chan)
            _remove_trends(chan, geometry, pool, workers)
            _cosine_interpolate(chan[N_CHANNELS], geometry)
            _fft_interpolate(chan[N_CHANNELS], geometry, workers)
            _apply_correction(chan, gamma, zeta, alpha, geometry, pool, workers)
            _from_channels(chan, offset_det, offset_amp, out[k0:k1], amp_out[k0:k1])
    return RefpixResult(data=out, amp33=amp_out)


class _Geometry:
    """Sizes and per-sample constants shared by the sub-steps of one frame geometry."""

    def __init__(self, ny: int, width: int) -> None:
        self.ny = ny
        self.width = width
        self.padded = width + PAD
        self.length = ny * self.padded
        # romancal's time variable: float32 arange minus its float32 mean.
        t = np.arange(self.length, dtype=np.float32)
        self.time = (t - np.mean(t)).astype(np.float64)
        # Reference rows in romancal's order; duplicates (ny < 8) count twice in the fit.
        self.ref_rows = np.array([*range(REF), *(ny - 1 - np.arange(REF))[::-1]])
        freq = np.fft.rfftfreq(self.length, 1 / self.length)
        self.apodize = (1 + np.cos(2 * np.pi * np.abs(freq) / self.length)) / 2
        self.taps = np.sin(np.arange(1, N_CHANNELS + 1, dtype=np.float32) * np.pi / N_CHANNELS)


def _offset(cube: np.ndarray) -> np.ndarray:
    """R1: float32 least-squares intercept over the centred resultant index, (K, ...) -> (...)."""
    nres = cube.shape[0]
    index = np.arange(nres, dtype=np.float32)
    index = index - np.mean(index)
    sx = np.sum(index)
    sxx = np.sum(index**2)
    # float32 sum along the resultant axis accumulates resultant by resultant, like romancal.
    numerator = np.sum(cube, axis=0) * sxx
    if sx != 0:  # zero for any centred index; kept for exactness of the general formula
        sxy = np.matmul(index, cube.reshape(nres, -1), dtype=np.float32).reshape(cube.shape[1:])
        numerator -= sx * sxy
    with np.errstate(invalid="ignore", divide="ignore"):  # K = 1 gives 0/0 as in romancal
        return numerator / (nres * sxx - sx**2)


def _to_channels(
    data: np.ndarray, amp33: np.ndarray, offset_det: np.ndarray, offset_amp: np.ndarray, chan: np.ndarray
) -> None:
    """R1 subtraction and R2: fill ``chan`` (33, k, ny, w + 12) in read order, pads zero."""
    nres, ny, nx = data.shape
    width = nx // N_CHANNELS
    src = data.reshape(nres, ny, N_CHANNELS, width).transpose(2, 0, 1, 3)
    off = offset_det.reshape(ny, N_CHANNELS, width).transpose(1, 0, 2)[:, None]
    np.subtract(src[0::2], off[0::2], out=chan[0:N_CHANNELS:2, :, :, :width])
    np.subtract(src[1::2, ..., ::-1], off[1::2, ..., ::-1], out=chan[1:N_CHANNELS:2, :, :, :width])
    np.subtract(amp33.astype(np.float32), offset_amp, out=chan[N_CHANNELS, :, :, :width])
    chan[..., width:] = 0


def _from_channels(
    chan: np.ndarray, offset_det: np.ndarray, offset_amp: np.ndarray, data: np.ndarray, amp33: np.ndarray
) -> None:
    """R7 and R8: write ``chan`` back to the frame layout, offsets restored."""
    nres, ny, nx = data.shape
    width = nx // N_CHANNELS
    dst = data.reshape(nres, ny, N_CHANNELS, width).transpose(2, 0, 1, 3)
    off = offset_det.reshape(ny, N_CHANNELS, width).transpose(1, 0, 2)[:, None]
    np.add(chan[0:N_CHANNELS:2, :, :, :width], off[0::2], out=dst[0::2])
    np.add(chan[1:N_CHANNELS:2, :, :, width - 1 :: -1], off[1::2], out=dst[1::2])
    restored = chan[N_CHANNELS, :, :, :width] + offset_amp
    amp33[...] = amp33_cast(np, restored)


#: Values at or above this become 0 in NumPy's float -> uint16 cast on x86-64 (the int32
#: conversion it goes through overflows to INT_MIN, whose low 16 bits are 0).
_CAST_LIMIT = 2.0**31


def amp33_cast(xp: Any, values: Any) -> Any:
    """romancal's ``uint16(|values|)`` of the corrected amp33, the same in every namespace.

    romancal casts with NumPy, which on x86-64 truncates through a 32-bit integer: values
    above 65535 wrap modulo 65536, and NaN, infinities and values of 2**31 or more give 0.
    A GPU's float -> uint16 conversion saturates instead (65535), so the wrap is written out
    here, with operations that are exact on both (truncation of values below 2**31 to
    int64, a bit mask), and NumPy and CuPy give the same bits.

    Parameters
    ----------
    xp : module
        ``numpy`` or the device's array namespace.
    values : array, float
        Corrected amp33 samples (DN).

    Returns
    -------
    array, uint16
    """
    magnitude = xp.abs(values)
    in_range = magnitude < _CAST_LIMIT  # False for NaN and infinities
    magnitude = xp.where(in_range, magnitude, xp.zeros((), dtype=magnitude.dtype))
    return (magnitude.astype(xp.int64) & xp.int64(0xFFFF)).astype(xp.uint16)


def _line_fits(ref: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R3 fits: float64 OLS slope and intercept of ``ref`` (..., M) on ``x`` (M,), zeros excluded.

    Equal to numpy.polyfit(x[mask], y[mask], 1) in double precision, including its
    minimum-norm answer when every used x is the same (one point, or a duplicated reference
    row when ny < 8): slope ybar / 2x, intercept ybar / 2.  No points: no fit, (0, 0).
    """
    y = ref.astype(np.float64)
    use = y != 0
    count = use.sum(axis=-1)
    xmin = np.where(use, x, np.inf).min(axis=-1)
    degenerate = xmin == np.where(use, x, -np.inf).max(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xbar = np.where(degenerate, xmin, (use * x).sum(axis=-1) / count)
        ybar = y.sum(axis=-1) / count
        xc = (x - xbar[..., None]) * use
        slope = (xc * y).sum(axis=-1) / (xc * xc).sum(axis=-1)
        slope = np.where(degenerate, ybar / (2 * xbar), slope)
        intercept = np.where(degenerate, ybar / 2, ybar - slope * xbar)
    empty = count == 0
    return np.where(empty, 0.0, slope), np.where(empty, 0.0, intercept)


def _remove_trends(chan: np.ndarray, geo: _Geometry, pool: ThreadPoolExecutor, workers: int) -> None:
    """R3 on all 33 channels of ``chan`` (33, k, ny, w + 12), in place."""
    nchan, nres = chan.shape[:2]
    x = geo.time.reshape(geo.ny, geo.padded)[geo.ref_rows].ravel()
    ref = chan[:, :, geo.ref_rows, :].reshape(nchan, nres, -1)
    slope, intercept = _line_fits(ref, x)

    def detrend(channels: range) -> None:
        trend = np.empty((nres, geo.length))
        nonzero = np.empty((nres, geo.length), dtype=bool)
        for c in channels:
            series = chan[c].reshape(nres, geo.length)
            np.multiply(geo.time, slope[c, :, None], out=trend)
            trend += intercept[c, :, None]
            np.not_equal(series, 0, out=nonzero)
            np.subtract(series, trend, out=series, where=nonzero)

    list(pool.map(detrend, _split(nchan, workers)))


def _split(count: int, nblocks: int) -> list[range]:
    """``range(count)`` cut into ``nblocks`` contiguous blocks (one per thread)."""
    nblocks = max(1, min(count, nblocks))
    edges = np.linspace(0, count, nblocks + 1).astype(int)
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _cosine_interpolate(amp: np.ndarray, geo: _Geometry) -> None:
    """R4: fill the zero samples of amp33 ``amp`` (k, ny, w + 12) by cosine-weighted means."""
    nres = amp.shape[0]
    series = amp.reshape(nres, geo.length)
    k, n = np.nonzero(series == 0)
    if k.size == 0:
        return
    # window j of sample n covers u[n - 16 + j], j = 0..31, and carries tap 31 - j.
    padded = np.zeros((nres, geo.length + N_CHANNELS), dtype=np.float32)
    padded[:, _HALF_TAPS : _HALF_TAPS + geo.length] = series
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_CHANNELS, axis=-1)[k, n]
    taps = geo.taps[::-1]
    numerator = (windows @ taps).astype(np.float64)
    denominator = (windows != 0) @ taps.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        filled = (numerator / denominator).astype(np.float32)
    series[k, n] = np.nan_to_num(filled)


def _fft_interpolate(amp: np.ndarray, geo: _Geometry, workers: int) -> None:
    """R5: replace amp33's pad samples by an apodised FFT reconstruction, 3 times."""
    nres = amp.shape[0]
    series = amp.reshape(nres, geo.length)
    for _ in range(FFT_ITERATIONS):
        spectrum = geo.apodize * fft.rfft(series, axis=-1, workers=workers) / geo.length
        smooth = fft.irfft(spectrum * geo.length, n=geo.length, axis=-1, workers=workers)
        amp[..., geo.width :] = smooth.reshape(amp.shape)[..., geo.width :]


def _reference_spectra(chan: np.ndarray, geo: _Geometry, workers: int) -> tuple[np.ndarray, ...]:
    """R6 forward transforms: (k, L/2 + 1) complex128 spectra of left, right and amp33."""
    nres = chan.shape[1]
    border_scale = geo.padded / REF
    spectra = []
    for source, scale in ((chan[0], border_scale), (chan[N_CHANNELS - 1], border_scale), (chan[N_CHANNELS], None)):
        if scale is None:
            series = source.reshape(nres, geo.length)
        else:
            border = np.zeros(source.shape, dtype=np.float32)
            border[..., :REF] = source[..., :REF]
            series = border.reshape(nres, geo.length)
        spectrum = fft.rfft(series / geo.length, axis=-1, workers=workers)  # float32 -> complex64
        if scale is not None:
            spectrum *= scale
        spectra.append(spectrum.astype(np.complex128))
    return tuple(spectra)


def _apply_correction(
    chan: np.ndarray,
    gamma: np.ndarray,
    zeta: np.ndarray,
    alpha: np.ndarray,
    geo: _Geometry,
    pool: ThreadPoolExecutor,
    workers: int,
) -> None:
    """R6: subtract each detector channel's predicted correlated noise, in place."""
    nres = chan.shape[1]
    left, right, amp = _reference_spectra(chan, geo, workers)
    normalisation = 2 * gamma.shape[1]

    def correct(channels: range) -> None:
        total = np.empty(left.shape, dtype=np.complex128)
        term = np.empty_like(total)
        correction = np.empty((nres, geo.length), dtype=np.float32)
        for c in channels:
            np.multiply(left, gamma[c], out=total)
            np.multiply(right, zeta[c], out=term)
            total += term
            np.multiply(amp, alpha[c], out=term)
            total += term
            total *= normalisation
            # cast to float32 before subtracting, as romancal does
            np.copyto(correction, fft.irfft(total, n=geo.length, axis=-1, workers=1), casting="same_kind")
            series = chan[c].reshape(nres, geo.length)
            series -= correction

    list(pool.map(correct, _split(N_CHANNELS, workers)))
