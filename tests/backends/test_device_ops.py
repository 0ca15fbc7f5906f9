"""Device versions of refpix, wfi18_transient, dark_current and flatfield against the NumPy backend.

Each runs on the emulated device (``EmulatedRuntime``: NumPy arrays that refuse to meet host
arrays, as CuPy's do) with inputs uploaded through the runtime, and is compared with
:mod:`cpu_fallback` on fresh random realistic inputs.  Every test also checks that the
function made no implicit host <-> device copy and no download beyond its documented ones.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

import cpu_fallback.image as host_image
from cpu_fallback.refpix import refpix as host_refpix
from cpu_fallback.wfi18 import MASKED_ROWS
from cpu_fallback.wfi18 import wfi18_transient as host_wfi18
from gpucal.backends.device import image as device_image
from gpucal.backends.device.refpix import bytes_per_resultant, chunk_resultants
from gpucal.backends.device.refpix import refpix as device_refpix
from gpucal.backends.device.wfi18 import sigma_clipped_row_means
from gpucal.backends.device.wfi18 import wfi18_transient as device_wfi18
from gpucal.backends.emulated import DeviceArray, EmulatedRuntime
from gpucal.dq import PixelFlag
from tests.cpu_fallback.test_dark_decay import _transient_frame
from tests.cpu_fallback.test_refpix import FULL_W, NFREQ, NX, NY, _ramp_with_constant_reference_rows, _realistic

NFF = np.uint32(PixelFlag.NO_FLAT_FIELD)


def _up(rt, *arrays):
    """Upload each array (None stays None), then forget those copies in the transfer log."""
    out = [None if a is None else rt.upload(a, label="input") for a in arrays]
    rt.transfers.clear()
    return out


def _down(rt, *arrays):
    return [None if a is None else rt.download(a, label="result") for a in arrays]


def _assert_no_hidden_transfers(rt, downloads=()):
    """Nothing implicit, no uploads but constants, and only the documented downloads."""
    assert rt.transfers.select(prefix="implicit") == []
    assert {t.label for t in rt.transfers.select("h2d")} <= {"constants"}
    assert [t.label for t in rt.transfers.select("d2h")] == list(downloads)


# ----------------------------------------------------------------------------- refpix


def _edge_case_inputs(rng):
    """ny = 6 (duplicated reference rows), whole channels without samples (no R3 fit), single
    points, and amp33 rows that vanish after R1 (R4's 0/0 and far tap): tests/cpu_fallback's
    romancal edge case."""
    data, amp33, pixeldq, coeffs = _realistic(3, 6, rng)
    bad = np.uint32(PixelFlag.BAD_REF_PIXEL)
    pixeldq[:, 5 * FULL_W : 6 * FULL_W] |= bad
    pixeldq[:, 9 * FULL_W : 10 * FULL_W] |= bad
    pixeldq[0, 9 * FULL_W + 3] = 0
    amp33[:, 2, :] = amp33[0, 2, :]
    amp33[:, 4, 60:90] = amp33[0, 4, 60:90]
    return data, amp33, pixeldq, coeffs


def _small_frame_inputs(rng):
    """32 x 256 (w = 8, L = 640): many amp33 zeros to interpolate, random coefficients."""
    data, amp33 = _ramp_with_constant_reference_rows(5, rng)
    data = (data + rng.normal(0, 5, data.shape)).astype(np.float32)
    amp33[:, rng.random((NY, NX // 32)) < 0.1] = 0
    pixeldq = np.where(rng.random((NY, NX)) < 0.01, np.uint32(PixelFlag.BAD_REF_PIXEL), np.uint32(0))
    coeffs = [0.05 * (rng.normal(size=(32, NFREQ)) + 1j * rng.normal(size=(32, NFREQ))) for _ in range(3)]
    return data, amp33, pixeldq, coeffs


REFPIX_CASES = {
    "realistic_32x4096": lambda rng: _realistic(6, 32, rng),
    "edge_6x4096": _edge_case_inputs,
    "one_resultant": lambda rng: _realistic(1, 8, rng),
    "small_32x256": _small_frame_inputs,
}


class _ScipyFft:
    """``xp.fft`` on the emulated device with scipy.fft's transforms (the NumPy backend's)."""

    def __getattr__(self, name):
        from scipy import fft

        def call(a, *args, **kwargs):
            return DeviceArray(getattr(fft, name)(a._a, *args, **kwargs), a._log)

        return call


def _run_device_refpix(rt, inputs, **kwargs):
    data, amp33, pixeldq, coeffs = inputs
    args = _up(rt, data, amp33, pixeldq, *coeffs)
    with np.errstate(invalid="ignore"):
        res = device_refpix(rt, *args, **kwargs)
    _assert_no_hidden_transfers(rt)
    return _down(rt, res.data, res.amp33)


@pytest.mark.parametrize("case", sorted(REFPIX_CASES))
def test_refpix_matches_numpy_backend(case):
    inputs = REFPIX_CASES[case](np.random.default_rng(zlib.crc32(case.encode())))
    data = inputs[0]
    with np.errstate(invalid="ignore"):
        expected = host_refpix(*inputs[:3], *inputs[3])
    got_data, got_amp = _run_device_refpix(EmulatedRuntime(), inputs)
    assert got_data.dtype == np.float32 and got_amp.dtype == np.uint16
    np.testing.assert_array_equal(inputs[0], data)  # input untouched (uploaded copies anyway)
    if case == "one_resultant":  # romancal's 0/0 offset: NaN everywhere, as on the host
        assert np.isnan(got_data).all() and np.isnan(expected.data).all()
        np.testing.assert_array_equal(got_amp, expected.amp33)
        return
    # forward FFTs are numpy.fft here (cuFFT on a GPU), scipy.fft on the host: they sum in
    # another order, so results differ by up to a float32 ulp of the values worked on
    scale = np.spacing(np.maximum(np.abs(expected.data), np.abs(data)))
    assert np.all(np.abs(got_data - expected.data) <= 2 * scale)
    assert np.abs(got_data - data).max() > 1  # the correction did something
    # amp33: truncated |float|; only a value within rounding of an integer could flip
    flipped = got_amp.astype(np.int32) - expected.amp33
    assert np.abs(flipped).max() <= 1 and np.count_nonzero(flipped) <= max(1, flipped.size // 10_000)


@pytest.mark.parametrize("case", sorted(REFPIX_CASES))
def test_refpix_with_the_host_ffts_is_bit_identical(case):
    """With scipy's FFTs on the emulated device, the device algorithm is the host's bit for bit."""
    inputs = REFPIX_CASES[case](np.random.default_rng(7))
    with np.errstate(invalid="ignore"):
        expected = host_refpix(*inputs[:3], *inputs[3])
    rt = EmulatedRuntime()
    rt.xp.fft = _ScipyFft()
    got_data, got_amp = _run_device_refpix(rt, inputs)
    np.testing.assert_array_equal(got_data, expected.data)
    np.testing.assert_array_equal(got_amp, expected.amp33)


def test_refpix_chunks_do_not_change_the_result():
    inputs = _realistic(5, 16, np.random.default_rng(8))
    whole = _run_device_refpix(EmulatedRuntime(), inputs, resultants_per_chunk=5)
    for chunk in (1, 2):
        part = _run_device_refpix(EmulatedRuntime(), inputs, resultants_per_chunk=chunk)
        np.testing.assert_array_equal(part[0], whole[0])
        np.testing.assert_array_equal(part[1], whole[1])
    # a device budget that holds the fixed arrays and two resultants' work arrays chooses 2
    nres, ny, nx = inputs[0].shape
    fixed = (nres + 1) * ny * nx * 4 + (nres + 1) * ny * (nx // 32) * 4
    budget = fixed + int(2.5 * bytes_per_resultant(ny, nx) / 0.8)
    assert chunk_resultants(nres, ny, nx, budget) == 2
    small = _run_device_refpix(EmulatedRuntime(memory_budget=budget), inputs)
    np.testing.assert_array_equal(small[0], whole[0])


def test_refpix_chunk_estimate():
    """Full frame: about 150 MB of work arrays per resultant (measured with tracemalloc on
    the emulated device: 14-18 MB per resultant at 512 x 4096, estimate 18.8 MB)."""
    per = bytes_per_resultant(4096, 4096)
    assert 100e6 < per < 200e6
    assert chunk_resultants(10, 4096, 4096, 80 * 2**30) == 10
    fixed = 11 * 4096 * 4096 * 4 + 11 * 4096 * 128 * 4  # output ramp, offsets, amp33 copies
    chunk = chunk_resultants(10, 4096, 4096, 2 * 2**30)
    assert 1 < chunk < 10 and chunk * per <= 0.8 * (2 * 2**30 - fixed) < (chunk + 1) * per
    assert chunk_resultants(10, 4096, 4096, 2**20) == 1


# ----------------------------------------------------------------------------- wfi18


def test_sigma_clipped_row_means_are_astropys():
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(11)
    values = rng.standard_t(2, (400, 60)) * 10  # heavy tails: several clipping iterations
    values[::9, :6] += 150
    values[3, 2], values[4, 1], values[6, 7] = np.nan, np.inf, -np.inf
    mask = rng.random(values.shape) < 0.2
    mask[5] = True  # a row with nothing left: NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.ma.filled(sigma_clipped_stats(values, mask=mask, sigma=3.0, axis=1)[0], np.nan)
    rt = EmulatedRuntime()
    v, m = _up(rt, values, mask)
    with rt.active():
        means = sigma_clipped_row_means(rt.xp, v, m)
    (got,) = _down(rt, means)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[5]) and np.isfinite(np.delete(got, 5)).all()


def test_wfi18_fit_matches_numpy_backend():
    data, gdq, timing = _transient_frame(2)
    expected_data, expected_gdq, expected_fitted = host_wfi18(data.copy(), gdq.copy(), timing, False)
    rt = EmulatedRuntime()
    d, g = _up(rt, data, gdq)
    d_out, g_out, fitted = device_wfi18(rt, d, g, timing, False)
    assert d_out is d and g_out is g  # in place, as on the host
    _assert_no_hidden_transfers(rt, downloads=["wfi18_rows"])
    assert rt.transfers.nbytes("d2h") == (data.shape[1] - 8) * 8  # one float64 per science row
    got_data, got_gdq = _down(rt, d_out, g_out)
    assert fitted is expected_fitted is True
    np.testing.assert_allclose(got_data, expected_data, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(got_data[1:], data[1:])
    np.testing.assert_array_equal(got_gdq, expected_gdq)
    assert np.abs(got_data[0] - data[0]).max() > 100  # the transient was removed


@pytest.mark.parametrize("mask_rows, nres, ny", [(True, 6, 1024), (False, 4, 1024), (False, 6, 512)])
def test_wfi18_fallback_masks_rows_on_the_device(mask_rows, nres, ny):
    data, gdq, timing = _transient_frame(1, ny, 64, nres)
    expected_data, expected_gdq, _ = host_wfi18(data.copy(), gdq.copy(), timing, mask_rows)
    rt = EmulatedRuntime()
    d, g = _up(rt, data, gdq)
    _, _, fitted = device_wfi18(rt, d, g, timing, mask_rows)
    _assert_no_hidden_transfers(rt)
    got_data, got_gdq = _down(rt, d, g)
    assert not fitted
    np.testing.assert_array_equal(got_data, expected_data)
    np.testing.assert_array_equal(got_gdq, expected_gdq)
    assert got_gdq[0, : min(ny, MASKED_ROWS)].all()


# ----------------------------------------------------------------------------- dark current


@pytest.mark.parametrize("full_frame", [False, True])
def test_dark_current_matches_numpy_backend(full_frame):
    rng = np.random.default_rng(12)
    ny, nx = 40, 48
    slope = rng.lognormal(0, 2, (ny, nx)).astype(np.float32)
    dq = np.where(rng.random((ny, nx)) < 0.05, np.uint32(PixelFlag.SATURATED), np.uint32(0))
    shape = (ny + 8, nx + 8) if full_frame else (ny, nx)
    dark = rng.normal(0.01, 0.005, shape).astype(np.float32)
    dark[rng.random(shape) < 0.01] = np.nan
    ddq = np.where(rng.random(shape) < 0.05, np.uint32(PixelFlag.HOT), np.uint32(0))
    expected = host_image.dark_current(slope.copy(), dq.copy(), dark, ddq)
    rt = EmulatedRuntime()
    args = _up(rt, slope, dq, dark, ddq)
    out = device_image.dark_current(rt, *args)
    _assert_no_hidden_transfers(rt)
    for got, want in zip(_down(rt, *out), expected, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- flat field


def _flat_inputs(rng, ny=48, nx=40, with_rnoise=True):
    data = rng.lognormal(1, 2, (ny, nx)).astype(np.float32)
    data[rng.random((ny, nx)) < 0.01] = np.nan
    var_poisson = (data / 100).astype(np.float16)
    var_rnoise = rng.uniform(1e-3, 1e-2, (ny, nx)).astype(np.float16) if with_rnoise else None
    err = np.sqrt(var_poisson.astype(np.float32) + (0 if var_rnoise is None else var_rnoise)).astype(np.float16)
    dumo = rng.normal(0, 0.1, (ny, nx)).astype(np.float16)
    dq = np.where(rng.random((ny, nx)) < 0.05, np.uint32(PixelFlag.JUMP_DET), np.uint32(0))
    flat = rng.normal(1, 0.05, (ny, nx)).astype(np.float32)
    flat[rng.random((ny, nx)) < 0.02] = np.nan
    flat[rng.random((ny, nx)) < 0.02] = 0
    flat_err = rng.uniform(0, 0.01, (ny, nx)).astype(np.float32)
    flat_dq = np.zeros((ny, nx), np.uint32)
    flat_dq[rng.random((ny, nx)) < 0.02] |= NFF  # flagged: value ignored
    flat_dq[rng.random((ny, nx)) < 0.02] |= np.uint32(PixelFlag.UNRELIABLE_FLAT)
    return [data, err, var_poisson, var_rnoise, dumo, dq, flat, flat_err, flat_dq]


@pytest.mark.parametrize("include_var_flat, with_rnoise", [(False, True), (True, True), (True, False)])
def test_flatfield_matches_numpy_backend_bit_for_bit(include_var_flat, with_rnoise):
    inputs = _flat_inputs(np.random.default_rng(13), with_rnoise=with_rnoise)
    expected = host_image.flatfield(*[None if a is None else a.copy() for a in inputs], include_var_flat)
    rt = EmulatedRuntime()
    args = _up(rt, *inputs)
    result = device_image.flatfield(rt, *args, include_var_flat)
    _assert_no_hidden_transfers(rt)
    assert (result.var_flat is None) is (not include_var_flat)
    assert (result.var_rnoise is None) is (not with_rnoise)
    for name, got, want in zip(result._fields, _down(rt, *result), expected, strict=True):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert np.count_nonzero(expected.dq & NFF) > 0
    # the references on the device are not modified
    flat, flat_dq = _down(rt, args[6], args[8])
    np.testing.assert_array_equal(flat, inputs[6])
    np.testing.assert_array_equal(flat_dq, inputs[8])
