"""refpix (NumPy backend): hand-built checks of each sub-step and parity with romancal 1.1.0.

The hand-built cases use a 32 x 256 frame: 32 channels of w = 8 columns, amp33 of 8 columns,
12 pad samples per channel row, so each channel series has L = 32 * 20 = 640 samples.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from cpu_fallback.refpix import PAD, _offset, refpix
from gpucal.dq import PixelFlag

NY, NX, NCHAN = 32, 256, 32
W = NX // NCHAN
PADDED = W + PAD
L = NY * PADDED
NFREQ = L // 2 + 1
REF_ROWS = [0, 1, 2, 3, NY - 4, NY - 3, NY - 2, NY - 1]


def _coeffs(gamma=0.0, zeta=0.0, alpha=0.0):
    return [np.full((NCHAN, NFREQ), value, dtype=np.complex128) for value in (gamma, zeta, alpha)]


def _from_read_order(series):
    """(K, NY, W + 12) series in read order, the same for every channel -> (data, amp33) parts."""
    cols = series[..., :W]
    data = np.concatenate([cols if c % 2 == 0 else cols[..., ::-1] for c in range(NCHAN)], axis=-1)
    return data, cols.copy()


def _read_time():
    """romancal's time variable n - mean(n) on the (NY, W + 12) channel grid."""
    return (np.arange(L, dtype=np.float64) - (L - 1) / 2).reshape(NY, PADDED)


def _ramp_with_constant_reference_rows(nres, rng):
    """Integer-valued ramps; the reference rows stay constant so R3 finds nothing to fit."""
    base = rng.integers(9000, 12000, size=(NY, NX)).astype(np.float32)
    slope = rng.integers(0, 200, size=(NY, NX)).astype(np.float32)
    slope[REF_ROWS] = 0
    data = base + slope * np.arange(nres, dtype=np.float32)[:, None, None]
    amp33 = np.broadcast_to(rng.integers(9000, 12000, size=(NY, W)), (nres, NY, W)).astype(np.uint16)
    return data, amp33


def test_offset_is_the_mean_and_k1_is_nan():
    rng = np.random.default_rng(1)
    cube = rng.normal(1e4, 30, size=(6, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(_offset(cube), cube.astype(np.float64).mean(axis=0), rtol=2e-7)
    assert _offset(cube).dtype == np.float32
    with np.errstate(invalid="ignore"):
        assert np.isnan(_offset(cube[:1])).all()  # romancal's 0/0 for one resultant


def test_zero_coefficients_only_round_trip_offset():
    """R1 round trip only: constant reference rows (no R3 fit), constant amp33, no correction."""
    rng = np.random.default_rng(2)
    data, amp33 = _ramp_with_constant_reference_rows(5, rng)
    before = data.copy()
    res = refpix(data, amp33, np.zeros((NY, NX), np.uint32), *_coeffs())
    np.testing.assert_array_equal(data, before)  # input untouched
    assert res.data.dtype == np.float32 and res.amp33.dtype == np.uint16
    np.testing.assert_allclose(res.data, data, rtol=0, atol=2e-3)  # float32 (S - O) + O
    np.testing.assert_array_equal(res.amp33, amp33)  # S = 0 everywhere, R4 gives 0/0 -> 0


def test_bad_reference_pixels_are_zeroed():
    rng = np.random.default_rng(3)
    data, amp33 = _ramp_with_constant_reference_rows(4, rng)
    pixeldq = np.zeros((NY, NX), np.uint32)
    bad = [(0, 5), (2, 200), (17, 0), (20, NX - 1), (NY - 1, 77)]
    for y, x in bad:
        pixeldq[y, x] = PixelFlag.BAD_REF_PIXEL | PixelFlag.DO_NOT_USE
    pixeldq[9, 9] = PixelFlag.DO_NOT_USE  # other flags do nothing
    res = refpix(data, amp33, pixeldq, *_coeffs())
    rows, cols = zip(*bad, strict=True)
    assert np.all(res.data[:, rows, cols] == 0)
    keep = (pixeldq & PixelFlag.BAD_REF_PIXEL) == 0
    np.testing.assert_allclose(res.data[:, keep], data[:, keep], rtol=0, atol=2e-3)


def test_linear_trend_in_read_time_is_removed():
    """A per-resultant line m_k t + b_k in read time on every channel and amp33 (R3).

    The fit through the reference rows removes it wherever the data are non-zero; what stays
    is its mean over resultants, which R1 took out as part of the offset and R7 put back.
    """
    rng = np.random.default_rng(4)
    nres = 4
    data, amp33 = _ramp_with_constant_reference_rows(nres, rng)
    m = np.array([0.01, -0.02, 0.005, 0.03])[:, None, None]
    b = np.array([3.0, -7.0, 11.0, 0.5])[:, None, None]
    trend = m * _read_time() + b  # (K, NY, W + 12)
    det_trend, amp_trend = _from_read_order(trend)
    res = refpix(
        (data + det_trend).astype(np.float32),
        (amp33 + amp_trend).astype(np.float32).round().astype(np.uint16),
        np.zeros((NY, NX), np.uint32),
        *_coeffs(),
    )
    expected = data + det_trend.mean(axis=0)
    np.testing.assert_allclose(res.data, expected, rtol=0, atol=5e-3)
    # amp33 was rounded to integers on input, so its fit is only good to ~0.5 DN (truncated on output)
    amp_expected = amp33 + amp_trend.mean(axis=0)
    assert np.abs(res.amp33 - amp_expected).max() < 2.0


def test_amp33_interpolated_value_is_absolute_then_truncated():
    """R4 fills an all-zero amp33 pixel with its neighbours' value; R8 writes trunc(|value|)."""
    rng = np.random.default_rng(5)
    nres = 4
    data, _ = _ramp_with_constant_reference_rows(nres, rng)
    amp33 = np.full((nres, NY, W), 10, dtype=np.int64)
    science_rows = slice(4, NY - 4)
    amp33[:, science_rows] += 3 * np.arange(nres)[:, None, None]  # S_k = 3 (k - 1.5) = -4.5..4.5
    amp33[:, 10, 3] = 0  # constant -> S = 0 -> interpolated to S_k, offset 0
    res = refpix(data, amp33.astype(np.uint16), np.zeros((NY, NX), np.uint32), *_coeffs())
    np.testing.assert_array_equal(res.amp33[:, 10, 3], [4, 1, 1, 4])  # |-4.5| -> 4, not 5 or a wrap
    # the other science-row samples are non-zero after R1 and pass through unchanged
    untouched = np.zeros((NY, W), bool)
    untouched[science_rows] = True
    untouched[10, 3] = False
    np.testing.assert_array_equal(res.amp33[:, untouched], amp33[:, untouched])
    # the constant reference rows are zero after R1, so R4 fills those within 16 samples of
    # the science rows: row 3 columns 5-7 (read-order samples 65-67; row 4 starts at 80)
    np.testing.assert_array_equal(res.amp33[:, 3, 5:8], np.array([5, 8, 11, 14])[:, None].repeat(3, 1))
    np.testing.assert_array_equal(res.amp33[:, 3, :5], 10)


def test_left_and_right_border_self_correction():
    """gamma = L / ((w+12)/4 (L+2)) subtracts the left border series from each channel's first
    four read-order columns, so the left border itself becomes its offset; zeta likewise for
    the right border (science columns nx-4..nx-1 = channel 31's first four read-order columns)."""
    rng = np.random.default_rng(6)
    nres = 5
    data = rng.normal(1e4, 20, size=(nres, NY, NX)).astype(np.float32).round()
    amp33 = rng.normal(1e4, 20, size=(nres, NY, W)).round().astype(np.uint16)
    unit = L / ((PADDED / 4) * (L + 2))
    for kwargs, cols in (({"gamma": unit}, slice(0, 4)), ({"zeta": unit}, slice(NX - 4, NX))):
        res = refpix(data, amp33, np.zeros((NY, NX), np.uint32), *_coeffs(**kwargs))
        offset = data[:, :, cols].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(res.data[:, :, cols], np.broadcast_to(offset, res.data[:, :, cols].shape), atol=5e-3)


def test_common_mode_noise_is_removed():
    """1/f-like noise identical in all 32 channels and amp33, in read order (odd channels
    column-reversed); gamma = zeta = 0, alpha = L/(L+2), so R6 subtracts the amp33 series.

    The noise is integer (amp33 is uint16) with noise_k = k (mod 4), so no sample becomes
    exactly zero after R1 and every channel keeps the same R3 mask and fit.  What is left of
    the noise is its mean over resultants (part of the R1 offset).
    """
    rng = np.random.default_rng(7)
    nres = 4
    spectrum = rng.normal(size=(nres, NFREQ)) + 1j * rng.normal(size=(nres, NFREQ))
    spectrum /= np.sqrt(np.maximum(np.arange(NFREQ), 1))
    noise = np.fft.irfft(spectrum, n=L)
    noise = 4 * np.round(noise * 10 / noise.std()) + np.arange(nres)[:, None]  # rms ~ 40 DN
    det_noise, amp_noise = _from_read_order(noise.reshape(nres, NY, PADDED))
    base = rng.integers(9000, 12000, size=(NY, NX))
    data = (base + det_noise).astype(np.float32)
    amp33 = (10000 + amp_noise).astype(np.uint16)
    res = refpix(data, amp33, np.zeros((NY, NX), np.uint32), *_coeffs(alpha=L / (L + 2)))
    expected = base + det_noise.mean(axis=0)
    assert (det_noise - det_noise.mean(axis=0)).std() > 30
    np.testing.assert_allclose(res.data, np.broadcast_to(expected, res.data.shape), rtol=0, atol=1e-2)
    # amp33 gets no R6 correction, only its own R3 line: input minus a line in read time
    change = (res.amp33.astype(np.float64) - amp33).reshape(nres, -1)
    t = _read_time()[:, :W].ravel()
    for k in range(nres):
        line = np.polyval(np.polyfit(t, change[k], 1), t)
        assert np.abs(change[k] - line).max() < 1.0  # truncation of the uint16 cast


def test_chunking_and_threads_do_not_change_the_result():
    rng = np.random.default_rng(8)
    nres = 5
    data = rng.normal(1e4, 20, size=(nres, NY, NX)).astype(np.float32)
    amp33 = rng.normal(1e4, 20, size=(nres, NY, W)).astype(np.uint16)
    pixeldq = np.where(rng.random((NY, NX)) < 0.01, np.uint32(PixelFlag.BAD_REF_PIXEL), np.uint32(0))
    coeffs = [rng.normal(size=(NCHAN, NFREQ)) + 1j * rng.normal(size=(NCHAN, NFREQ)) for _ in range(3)]
    whole = refpix(data, amp33, pixeldq, *coeffs, resultants_per_chunk=nres, workers=1)
    for chunk, workers in ((1, 2), (2, 2), (4, 3)):
        part = refpix(data, amp33, pixeldq, *coeffs, resultants_per_chunk=chunk, workers=workers)
        np.testing.assert_array_equal(part.data, whole.data)
        np.testing.assert_array_equal(part.amp33, whole.amp33)


# ----------------------------------------------------------------------------- oracle
# romancal 1.1.0 hard-codes 128-column channels and 4096 detector columns (+ 128 of amp33);
# any ny >= 4 works when the coefficients have ny * 70 + 1 frequencies, K >= 2 for finite data.
FULL_NX, FULL_W = 4096, 128


def _romancal_refpix(data, amp33, pixeldq, gamma, zeta, alpha):
    """romancal's algorithm as RefPixStep.process calls it: its four default-True booleans
    passed positionally (they land on zero_bad_ref_pix .. cosine_interpolate; FFT
    interpolation is always on), on a RampModel-like namespace."""
    run_steps = pytest.importorskip("romancal.refpix.refpix").run_steps
    model = types.SimpleNamespace(
        data=data.copy(), amp33=amp33.copy(), pixeldq=pixeldq, border_ref_pix_left=None, border_ref_pix_right=None
    )
    refs = types.SimpleNamespace(gamma=gamma, zeta=zeta, alpha=alpha)
    remove_offset = remove_trends = cosine_interpolate = fft_interpolate = True  # the step's defaults
    run_steps(model, refs, remove_offset, remove_trends, cosine_interpolate, fft_interpolate)
    return model


def _realistic(nres, ny, rng):
    """Integer-DN ramps over a bias with common 1/f noise; amp33 alike; random complex coefficients."""
    length = ny * (FULL_W + PAD)
    nfreq = length // 2 + 1
    bias = rng.uniform(8000, 20000, size=(ny, FULL_NX))
    flux = rng.exponential(40, size=(ny, FULL_NX))
    spectrum = (rng.normal(size=(nres, nfreq)) + 1j * rng.normal(size=(nres, nfreq))) / np.sqrt(
        np.maximum(np.arange(nfreq), 1)
    )
    common = np.fft.irfft(spectrum, n=length).reshape(nres, ny, FULL_W + PAD)[..., :FULL_W]
    common *= 15 / common.std()  # in read order: odd channels see it column-reversed
    k = np.arange(nres)[:, None, None]
    data = (
        bias
        + flux * k
        + np.concatenate([common[..., :: 1 - 2 * (c % 2)] for c in range(NCHAN)], axis=-1)
        + rng.normal(0, 6, size=(nres, ny, FULL_NX))
    )
    amp33 = rng.uniform(9000, 11000, size=(ny, FULL_W)) + common + rng.normal(0, 6, size=(nres, ny, FULL_W))
    pixeldq = np.zeros((ny, FULL_NX), np.uint32)
    pixeldq[rng.random((ny, FULL_NX)) < 0.003] |= np.uint32(PixelFlag.BAD_REF_PIXEL)
    pixeldq[rng.random((ny, FULL_NX)) < 0.01] |= np.uint32(PixelFlag.HOT | PixelFlag.DO_NOT_USE)
    coeffs = [0.05 * (rng.normal(size=(NCHAN, nfreq)) + 1j * rng.normal(size=(NCHAN, nfreq))) for _ in range(3)]
    return np.round(data).astype(np.float32), np.round(amp33).astype(np.uint16), pixeldq, coeffs


def _assert_parity(data, amp33, pixeldq, coeffs):
    ours = refpix(data, amp33, pixeldq, *coeffs)
    theirs = _romancal_refpix(data, amp33, pixeldq, *coeffs)
    # observed: at most 1 float32 ulp of the output (0.002 DN at 2e4 DN), > 99.9 % bit-identical
    np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-5, atol=1e-2)
    np.testing.assert_array_equal(ours.amp33, theirs.amp33)
    assert np.abs(theirs.data - data).max() > 1  # the correction did something


@pytest.mark.oracle
def test_oracle_parity_random_realistic():
    rng = np.random.default_rng(2024)
    _assert_parity(*_realistic(6, 32, rng))


@pytest.mark.oracle
def test_oracle_parity_edge_cases():
    """ny = 6 (reference rows 2 and 3 used twice), no-fit and single-point R3 fits, amp33
    rows that vanish after R1 (R4's 0/0 -> 0 and its -8.7e-8 far tap), constant pixels."""
    rng = np.random.default_rng(99)
    nres, ny = 3, 6
    data, amp33, pixeldq, coeffs = _realistic(nres, ny, rng)
    bad = np.uint32(PixelFlag.BAD_REF_PIXEL)
    pixeldq[:, 5 * FULL_W : 6 * FULL_W] |= bad  # channel 5: every sample zero, no fit
    pixeldq[:, 7 * FULL_W : 8 * FULL_W] |= bad
    pixeldq[2, 7 * FULL_W + 40] = 0  # channel 7: one pixel in a duplicated row (x used twice)
    pixeldq[:, 9 * FULL_W : 10 * FULL_W] |= bad
    pixeldq[0, 9 * FULL_W + 3] = 0  # channel 9: a single point
    amp33[:, 2, :] = amp33[0, 2, :]  # constant over resultants -> zero after R1
    amp33[:, 4, 60:90] = amp33[0, 4, 60:90]
    data[:, 3, 1000:1010] = data[0, 3, 1000:1010]
    _assert_parity(data, amp33, pixeldq, coeffs)
