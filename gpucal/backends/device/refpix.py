"""refpix on the device: FFT-based reference-pixel correction with the runtime's ``xp``.

The same algorithm, precision and results as :mod:`cpu_fallback.refpix` (romancal 1.1.0's
RefPixStep, steps R0-R8 of that module's docstring), written against the array namespace of
a :class:`~gpucal.backends.runtime.DeviceRuntime` (``cupy`` on a GPU, the emulated NumPy
namespace in CI).  Only the NumPy/CuPy common API is used; nothing is copied to the host.

Frame geometry: ``ny`` rows, 32 channels of ``w = nx // 32`` columns plus amp33 (width
``w``); each channel row is followed by a 12-sample pause, so a channel's resultant is a
series of ``L = ny (w + 12)`` samples.

Precision (as romancal with numpy 2): float32 offsets and storage, single-precision forward
FFTs of float32 series (complex64), complex128 products, float64 inverse FFTs, R3 trends in
float64.  Differences from the NumPy backend are of the order of a float32 ulp:

* the forward FFTs are cuFFT (or numpy.fft) rather than scipy.fft, whose single-precision
  transforms sum in another order (with scipy's FFTs on the emulated device the results are
  the NumPy backend's bit for bit; R1's and R4's sums are made sequential for that);
* on CuPy, the reductions (R3 sums over the reference rows) sum in another order.

Memory: besides the output ramp, the offsets and a float32 copy of amp33, the work arrays
hold about ``(33 x 4 + 3 x 8 + 6 x 8) L + 64 ny w`` bytes per resultant (the channel series,
three complex128 reference spectra, the largest per-channel float64 temporaries, and the
even or odd half of the frame while it is reordered); resultants are processed in chunks
small enough for ``rt.free_memory()`` (:func:`chunk_resultants`).  The per-channel steps
(R3 detrending, R6 corrections) loop over channels so their float64 and complex128
temporaries are one channel's at a time.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cpu_fallback.refpix import FFT_ITERATIONS, N_CHANNELS, PAD, REF, amp33_cast
from gpucal.backends.device._launch_common import on_stream
from gpucal.backends.protocol import RefpixResult
from gpucal.backends.runtime import DeviceRuntime
from gpucal.dq import PixelFlag

__all__ = ["refpix", "chunk_resultants", "bytes_per_resultant"]

log = logging.getLogger(__name__)

_BAD_REF = np.uint32(PixelFlag.BAD_REF_PIXEL)
_HALF_TAPS = N_CHANNELS // 2
#: Fraction of the reported free memory the work arrays may use (pool fragmentation, FFT plans).
_MEMORY_HEADROOM = 0.8


def bytes_per_resultant(ny: int, nx: int) -> int:
    """Device bytes of the chunk work arrays per resultant (see the module docstring).

    Parameters
    ----------
    ny, nx : int
        Frame shape (rows, detector columns including the reference border).

    Returns
    -------
    int
        Bytes.
    """
    width = nx // N_CHANNELS
    length = ny * (width + PAD)
    nfreq = length // 2 + 1
    series = (N_CHANNELS + 1) * length * 4  # float32 channel series, pads included
    spectra = 3 * nfreq * 16  # complex128 left, right and amp33 spectra (R6)
    temporaries = 6 * length * 8  # one channel's float64 / complex128 temporaries (R3-R6)
    reorder = (N_CHANNELS // 2) * ny * width * 4  # even or odd detector channels, float32 (R2, R7)
    return series + spectra + temporaries + reorder


def chunk_resultants(nres: int, ny: int, nx: int, free_bytes: int) -> int:
    """Resultants per chunk: all of them if the work arrays fit in ``free_bytes``, else fewer.

    ``free_bytes`` is what :meth:`DeviceRuntime.free_memory` reports before :func:`refpix`
    allocates anything; the fixed allocations (output ramp, offsets, amp33 copy) are taken
    from it first, and the work arrays get :data:`_MEMORY_HEADROOM` of the rest.

    Parameters
    ----------
    nres, ny, nx : int
        Resultants and frame shape.
    free_bytes : int
        Device bytes available.

    Returns
    -------
    int
        Between 1 and ``nres``.
    """
    width = nx // N_CHANNELS
    fixed = (nres + 1) * ny * nx * 4 + (nres + 1) * ny * width * 4
    per = bytes_per_resultant(ny, nx)
    usable = int(_MEMORY_HEADROOM * (free_bytes - fixed))
    return max(1, min(nres, usable // per))


@on_stream
def refpix(
    rt: DeviceRuntime,
    data: Any,
    amp33: Any,
    pixeldq: Any,
    gamma: Any,
    zeta: Any,
    alpha: Any,
    *,
    resultants_per_chunk: int | None = None,
) -> RefpixResult:
    """Correct the ramp with its reference pixels and amp33 (romancal 1.1.0 RefPixStep).

    Parameters
    ----------
    rt : DeviceRuntime
        The device; every array argument is one of its arrays.
    data : device array, (K, ny, nx) float32, DN
        Resultants including the 4-pixel reference border; nx a multiple of 32.  Not modified.
    amp33 : device array, (K, ny, nx // 32) uint16, DN
        The amp33 reference output.  Not modified.
    pixeldq : device array, (ny, nx) uint32
        Pixels with BAD_REF_PIXEL are zeroed before the correction (R0); ignored if its
        shape is not the frame's (as romancal).
    gamma, zeta, alpha : device array, (32, L // 2 + 1) complex128
        Per-channel Fourier coefficients of the left border, right border and amp33,
        L = ny * (nx // 32 + 12).
    resultants_per_chunk : int, optional
        Resultants processed together; by default as many as ``rt.free_memory()`` allows
        (:func:`chunk_resultants`).  The result does not depend on it.

    Returns
    -------
    RefpixResult
        ``data`` (K, ny, nx) float32 DN and ``amp33`` (K, ny, nx // 32) uint16 DN, new
        device arrays.
    """
    xp = rt.xp
    nres, ny, nx = data.shape
    geo = _Geometry(ny, nx)
    if nx % N_CHANNELS or geo.width < REF:
        raise ValueError(f"refpix needs a width that is a multiple of {N_CHANNELS}, got {nx}")
    if tuple(amp33.shape) != (nres, ny, geo.width):
        raise ValueError(f"amp33 shape {amp33.shape} does not match data {data.shape}")
    if geo.length % 2 or ny < REF:
        raise ValueError(f"refpix needs an even series length and >= {REF} rows, got {ny} x {geo.padded}")
    for name, coeff in (("gamma", gamma), ("zeta", zeta), ("alpha", alpha)):
        if tuple(coeff.shape) != (N_CHANNELS, geo.nfreq):
            raise ValueError(f"{name} shape {coeff.shape} != {(N_CHANNELS, geo.nfreq)}")
    if resultants_per_chunk is None:
        chunk = chunk_resultants(nres, ny, nx, rt.free_memory())
    else:
        chunk = max(1, min(int(resultants_per_chunk), nres))
    log.debug("refpix: %d resultants of %d x %d in chunks of %d, series of %d samples", nres, ny, nx, chunk, geo.length)

    with rt.active(), np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        consts = _Constants(rt, geo)
        # R0, fused with the copy that keeps the caller's ramp unmodified; romancal skips the
        # masking when the DQ does not match the frame, so do we.
        if tuple(pixeldq.shape) == (ny, nx):
            bad = (pixeldq & _BAD_REF) != 0
            out = xp.where(bad, xp.zeros((), dtype=xp.float32), data).astype(xp.float32, copy=False)
        else:
            out = data.astype(xp.float32)
        offset_det = _offset(xp, out)
        offset_amp = _offset(xp, amp33.astype(xp.float32))
        amp_out = xp.empty((nres, ny, geo.width), dtype=xp.uint16)
        for k0 in range(0, nres, chunk):
            k1 = min(nres, k0 + chunk)
            chan = _to_channels(xp, out[k0:k1], amp33[k0:k1], offset_det, offset_amp, geo)
            _remove_trends(xp, chan, geo, consts)
            _cosine_interpolate(xp, chan[N_CHANNELS], geo, consts)
            _fft_interpolate(xp, chan[N_CHANNELS], geo, consts)
            _apply_correction(xp, chan, gamma, zeta, alpha, geo)
            _from_channels(xp, chan, offset_det, offset_amp, out[k0:k1], amp_out[k0:k1], geo)
            del chan
    return RefpixResult(data=out, amp33=amp_out)


class _Geometry:
    """Sizes of one frame geometry."""

    def __init__(self, ny: int, nx: int) -> None:
        self.ny = ny
        self.width = nx // N_CHANNELS
        self.padded = self.width + PAD
        self.length = ny * self.padded
        self.nfreq = self.length // 2 + 1


class _Constants:
    """Per-sample constants, computed on the host as the NumPy backend does and uploaded.

    Computing them with the host's NumPy keeps them bit-identical to the NumPy backend's
    (a device ``cos``/``mean`` may round differently); they are about 12 L bytes.
    """

    def __init__(self, rt: DeviceRuntime, geo: _Geometry) -> None:
        # romancal's time variable: float32 arange minus its float32 mean, used in float64.
        t = np.arange(geo.length, dtype=np.float32)
        time = (t - np.mean(t)).astype(np.float64)
        # reference rows in romancal's order: 0..3 then ny-4..ny-1 (duplicates when ny < 8)
        ref_time = np.concatenate([time.reshape(geo.ny, geo.padded)[:REF], time.reshape(geo.ny, geo.padded)[-REF:]])
        freq = np.fft.rfftfreq(geo.length, 1 / geo.length)
        apodize = (1 + np.cos(2 * np.pi * np.abs(freq) / geo.length)) / 2
        self.time = rt.upload(time, label="constants")
        self.ref_time = rt.upload(ref_time.ravel(), label="constants")
        self.apodize = rt.upload(apodize, label="constants")
        # R4 taps as host scalars (scalars may meet device arrays): tap j of the window
        # u[n - 16 + j], j = 0..31, is sin((32 - j) pi / 32) in float32.
        taps = np.sin(np.arange(1, N_CHANNELS + 1, dtype=np.float32) * np.pi / N_CHANNELS)[::-1]
        self.taps = [np.float32(c) for c in taps]


def _offset(xp: Any, cube: Any) -> Any:
    """R1: float32 least-squares intercept over the centred resultant index, (K, ...) -> (...)."""
    nres = cube.shape[0]
    index = np.arange(nres, dtype=np.float32)
    index = index - np.mean(index)
    sx = np.sum(index)
    sxx = np.sum(index**2)
    # Summed resultant by resultant in float32: the order of NumPy's (and romancal's)
    # reduction over the outer axis, made explicit so that a device reduction cannot reorder it.
    total = cube[0].copy()
    for k in range(1, nres):
        total += cube[k]
    numerator = total * sxx
    if sx != 0:  # zero for any centred index; kept for exactness of the general formula
        sxy = cube[0] * index[0]
        for k in range(1, nres):
            sxy += cube[k] * index[k]
        numerator -= sx * sxy
    return numerator / (nres * sxx - sx**2)  # K = 1 gives 0/0 as in romancal


def _to_channels(xp: Any, data: Any, amp33: Any, offset_det: Any, offset_amp: Any, geo: _Geometry) -> Any:
    """R1 subtraction and R2: the (33, k, ny, w + 12) float32 channel series in read order, pads zero."""
    nres, ny, nx = data.shape
    w = geo.width
    src = data.reshape(nres, ny, N_CHANNELS, w).transpose(2, 0, 1, 3)
    off = offset_det.reshape(ny, N_CHANNELS, w).transpose(1, 0, 2)[:, None]
    chan = xp.zeros((N_CHANNELS + 1, nres, ny, geo.padded), dtype=xp.float32)
    chan[0:N_CHANNELS:2, :, :, :w] = src[0::2] - off[0::2]
    chan[1:N_CHANNELS:2, :, :, :w] = src[1::2, ..., ::-1] - off[1::2, ..., ::-1]
    chan[N_CHANNELS, :, :, :w] = amp33.astype(xp.float32) - offset_amp
    return chan


def _from_channels(xp: Any, chan: Any, offset_det: Any, offset_amp: Any, data: Any, amp33: Any, geo: _Geometry) -> None:
    """R7 and R8: write ``chan`` back into the frame layout of ``data`` and ``amp33``, offsets restored."""
    nres, ny, nx = data.shape
    w = geo.width
    dst = data.reshape(nres, ny, N_CHANNELS, w).transpose(2, 0, 1, 3)
    off = offset_det.reshape(ny, N_CHANNELS, w).transpose(1, 0, 2)[:, None]
    dst[0::2] = chan[0:N_CHANNELS:2, :, :, :w] + off[0::2]
    dst[1::2] = chan[1:N_CHANNELS:2, :, :, w - 1 :: -1] + off[1::2]
    restored = chan[N_CHANNELS, :, :, :w] + offset_amp
    # romancal's cast (NumPy's wrap, not the device's saturation): one function for both backends
    amp33[...] = amp33_cast(xp, restored)


def _line_fits(xp: Any, ref: Any, x: Any) -> tuple[Any, Any]:
    """R3 fits: float64 OLS slope and intercept of ``ref`` (..., M) on ``x`` (M,), zeros excluded.

    :func:`cpu_fallback.refpix._line_fits` in ``xp``: numpy.polyfit(x[mask], y[mask], 1) in
    double precision, including its minimum-norm answer when every used x is the same
    (slope ybar / 2x, intercept ybar / 2); no points: (0, 0).
    """
    y = ref.astype(xp.float64)
    use = y != 0
    count = use.sum(axis=-1)
    xmin = xp.where(use, x, xp.inf).min(axis=-1)
    degenerate = xmin == xp.where(use, x, -xp.inf).max(axis=-1)
    xbar = xp.where(degenerate, xmin, (use * x).sum(axis=-1) / count)
    ybar = y.sum(axis=-1) / count
    xc = (x - xbar[..., None]) * use
    slope = (xc * y).sum(axis=-1) / (xc * xc).sum(axis=-1)
    slope = xp.where(degenerate, ybar / (2 * xbar), slope)
    intercept = xp.where(degenerate, ybar / 2, ybar - slope * xbar)
    empty = count == 0
    return xp.where(empty, 0.0, slope), xp.where(empty, 0.0, intercept)


def _remove_trends(xp: Any, chan: Any, geo: _Geometry, consts: _Constants) -> None:
    """R3 on all 33 channels of ``chan`` (33, k, ny, w + 12), in place."""
    nchan, nres = chan.shape[:2]
    ref = xp.concatenate([chan[:, :, :REF, :], chan[:, :, geo.ny - REF :, :]], axis=2).reshape(nchan, nres, -1)
    slope, intercept = _line_fits(xp, ref, consts.ref_time)
    for c in range(nchan):  # one channel at a time bounds the float64 temporaries
        series = chan[c].reshape(nres, geo.length)
        trend = consts.time * slope[c, :, None] + intercept[c, :, None]
        # float64 difference stored as float32, on the non-zero samples only
        detrended = xp.where(series != 0, (series - trend).astype(xp.float32), series)
        chan[c] = detrended.reshape(nres, geo.ny, geo.padded)


def _cosine_interpolate(xp: Any, amp: Any, geo: _Geometry, consts: _Constants) -> None:
    """R4: fill the zero samples of amp33 ``amp`` (k, ny, w + 12) by cosine-weighted means, in place.

    The window sums are evaluated for every sample as 32 shifted slices of the zero-padded
    series (no sliding windows, no gather of the zero positions: about 3 L float64 of
    temporaries) and then selected where the sample is zero.
    """
    nres = amp.shape[0]
    length = geo.length
    series = amp.reshape(nres, length)
    padded = xp.zeros((nres, length + N_CHANNELS), dtype=xp.float32)
    padded[:, _HALF_TAPS : _HALF_TAPS + length] = series
    numerator = xp.zeros((nres, length), dtype=xp.float32)
    denominator = xp.zeros((nres, length), dtype=xp.float64)
    for j, tap in enumerate(consts.taps):
        window = padded[:, j : j + length]  # u[n - 16 + j]
        # float32 products summed in tap order: the NumPy backend's float32 matmul of the
        # windows, bit for bit as measured (separate kernels: no fused multiply-add on a GPU)
        numerator += window * tap
        denominator += (window != 0).astype(xp.float64) * float(tap)
    del padded
    filled = xp.nan_to_num((numerator.astype(xp.float64) / denominator).astype(xp.float32))
    amp[...] = xp.where(series == 0, filled, series).reshape(amp.shape)


def _fft_interpolate(xp: Any, amp: Any, geo: _Geometry, consts: _Constants) -> None:
    """R5: replace amp33's pad samples by an apodised FFT reconstruction, 3 times, in place."""
    nres = amp.shape[0]
    series = amp.reshape(nres, geo.length)
    for _ in range(FFT_ITERATIONS):
        spectrum = consts.apodize * xp.fft.rfft(series, axis=-1) / geo.length  # complex64 -> complex128
        smooth = xp.fft.irfft(spectrum * geo.length, n=geo.length, axis=-1)
        amp[..., geo.width :] = smooth.reshape(amp.shape)[..., geo.width :].astype(xp.float32)


def _reference_spectra(xp: Any, chan: Any, geo: _Geometry) -> tuple[Any, Any, Any]:
    """R6 forward transforms: (k, L/2 + 1) complex128 spectra of left, right and amp33."""
    nres = chan.shape[1]
    border_scale = geo.padded / REF
    spectra = []
    for source, scale in ((chan[0], border_scale), (chan[N_CHANNELS - 1], border_scale), (chan[N_CHANNELS], None)):
        if scale is None:
            series = source.reshape(nres, geo.length)
        else:
            border = xp.zeros(source.shape, dtype=xp.float32)
            border[..., :REF] = source[..., :REF]
            series = border.reshape(nres, geo.length)
        spectrum = xp.fft.rfft(series / geo.length, axis=-1)  # float32 -> complex64
        if scale is not None:
            spectrum *= scale  # in complex64, as romancal
        spectra.append(spectrum.astype(xp.complex128))
    return spectra[0], spectra[1], spectra[2]


def _apply_correction(xp: Any, chan: Any, gamma: Any, zeta: Any, alpha: Any, geo: _Geometry) -> None:
    """R6: subtract each detector channel's predicted correlated noise, in place."""
    nres = chan.shape[1]
    left, right, amp = _reference_spectra(xp, chan, geo)
    normalisation = 2 * gamma.shape[1]
    for c in range(N_CHANNELS):  # one channel at a time bounds the complex128 temporaries
        total = left * gamma[c] + right * zeta[c]
        total = (total + amp * alpha[c]) * normalisation
        # cast to float32 before subtracting, as romancal does
        correction = xp.fft.irfft(total, n=geo.length, axis=-1).astype(xp.float32)
        chan[c] -= correction.reshape(nres, geo.ny, geo.padded)
