"""uniform_slope, dark_current and flatfield (NumPy backend); parity with romancal."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.image import dark_current, flatfield
from cpu_fallback.uniform import uniform_slope, uniform_weights
from gpucal.dq import PixelFlag
from gpucal.readpattern import read_timing

PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]
TIMING = read_timing(PATTERN, 3.04)
NFF = int(PixelFlag.NO_FLAT_FIELD)


# ----------------------------------------------------------------------------- uniform slope


def test_uniform_weights_annihilate_constants_and_measure_slopes():
    w = uniform_weights(TIMING)
    assert w.shape == (7,) and w.dtype == np.float64
    assert abs(w.sum()) < 1e-15
    np.testing.assert_allclose(w @ TIMING.tbar, 1.0, rtol=1e-12)


def test_uniform_slope_of_exact_ramp_ignores_flags():
    rate = np.array([[0.0, 1.5], [200.0, -3.0]])
    data = (5000 + rate * TIMING.tbar[:, None, None]).astype(np.float32)
    slope = uniform_slope(data, TIMING)
    assert slope.shape == (2, 2) and slope.dtype == np.float64
    np.testing.assert_allclose(slope, rate, atol=2e-4)


def test_uniform_slope_row_blocks(monkeypatch):
    import cpu_fallback.uniform as mod

    data = np.random.default_rng(1).normal(5000, 50, (7, 9, 5)).astype(np.float32)
    whole = uniform_slope(data, TIMING)
    monkeypatch.setattr(mod, "_BLOCK_PIXELS", 10)
    np.testing.assert_array_equal(uniform_slope(data, TIMING), whole)


# ----------------------------------------------------------------------------- dark current


def test_dark_current_subtracts_and_ors():
    slope = np.full((2, 3), 10.0, np.float32)
    dq = np.array([[1, 0, 0], [0, 0, 4]], np.uint32)
    dark = np.array([[0.5, np.nan, -1.0], [0, 0, 0]], np.float32)
    ddq = np.array([[0, int(PixelFlag.HOT), 0], [0, 0, 1]], np.uint32)
    s, q = dark_current(slope, dq, dark, ddq)
    np.testing.assert_array_equal(s, [[9.5, np.nan, 11.0], [10, 10, 10]])
    np.testing.assert_array_equal(q, [[1, int(PixelFlag.HOT), 0], [0, 0, 5]])
    assert s.dtype == np.float32 and q.dtype == np.uint32


def test_dark_current_trims_full_frame_reference():
    slope = np.zeros((2, 3), np.float32)
    dark = np.arange(10 * 11, dtype=np.float32).reshape(10, 11)
    s, _ = dark_current(slope, np.zeros((2, 3), np.uint32), dark, np.zeros((10, 11), np.uint32))
    np.testing.assert_array_equal(s, -dark[4:-4, 4:-4])
    with pytest.raises(ValueError):
        dark_current(slope, np.zeros((2, 3), np.uint32), np.zeros((5, 5), np.float32), np.zeros((5, 5), np.uint32))


# ----------------------------------------------------------------------------- flat field


def _image(n=4):
    data = np.linspace(1, 10, n * n, dtype=np.float32).reshape(n, n)
    err = np.full((n, n), 0.5, np.float16)
    vp = np.full((n, n), 0.2, np.float16)
    vr = np.full((n, n), 0.05, np.float16)
    dumo = np.full((n, n), 0.25, np.float16)
    dq = np.zeros((n, n), np.uint32)
    return data, err, vp, vr, dumo, dq


def test_flat_bad_values_get_no_flat_field_and_unit_flat():
    data, err, vp, vr, dumo, dq = _image()
    flat = np.full((4, 4), 2.0, np.float32)
    flat[0, 0], flat[0, 1] = np.nan, 0.0
    fdq = np.zeros((4, 4), np.uint32)
    fdq[0, 2] = NFF  # flagged: flat value ignored
    fdq[0, 3] = int(PixelFlag.UNRELIABLE_FLAT)
    d0 = data.copy()
    res = flatfield(data, err, vp, vr, dumo, dq, flat, np.zeros((4, 4), np.float32), fdq, False)
    np.testing.assert_array_equal(res.data[0, :3], d0[0, :3])
    assert res.data[0, 3] == np.float32(d0[0, 3] / 2) and res.data[1, 1] == np.float32(d0[1, 1] / 2)
    np.testing.assert_array_equal(res.dq[0], [NFF, NFF, NFF, int(PixelFlag.UNRELIABLE_FLAT)])
    assert not res.dq[1:].any()
    assert res.err[0, 0] == np.float16(0.5) and res.err[1, 1] == np.float16(0.25)
    assert res.var_poisson[1, 1] == np.float16(0.05) and res.var_rnoise[1, 1] == np.float16(0.0125)
    assert res.dumo[1, 1] == np.float16(0.125) and res.dumo.dtype == np.float16
    assert res.var_flat is None and res.err.dtype == np.float16
    assert np.isnan(flat[0, 0]) and fdq[0, 0] == 0  # references not modified


def test_flat_var_flat_and_no_var_rnoise():
    data, err, vp, _, dumo, dq = _image()
    flat = np.full((4, 4), 2.0, np.float32)
    ferr = np.full((4, 4), 0.1, np.float32)
    res = flatfield(data.copy(), err, vp, None, dumo, dq, flat, ferr, np.zeros((4, 4), np.uint32), True)
    assert res.var_rnoise is None
    expected_vf = (data / 2) ** 2 / 4 * np.float32(0.1) ** 2
    np.testing.assert_allclose(res.var_flat, expected_vf, rtol=1e-6)
    np.testing.assert_allclose(res.err, np.sqrt(0.25**2 + expected_vf), rtol=1e-3)


def test_flat_shape_mismatch_raises():
    data, err, vp, vr, dumo, dq = _image()
    with pytest.raises(ValueError):
        flatfield(
            data,
            err,
            vp,
            vr,
            dumo,
            dq,
            np.ones((3, 3), np.float32),
            np.ones((3, 3), np.float32),
            np.zeros((3, 3), np.uint32),
            False,
        )


# ----------------------------------------------------------------------------- oracle


@pytest.mark.oracle
def test_uniform_slope_matches_romancal():
    pytest.importorskip("romancal")
    from types import SimpleNamespace as NS

    from romancal.ramp_fitting.ramp_fit_step import slopes_uniform_weights

    pattern = [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19], [20, 21], [22]]
    timing = read_timing(pattern, 3.04)
    rng = np.random.default_rng(4)
    rate = rng.lognormal(np.log(30), 2.0, (64, 4096))
    data = (5000 + rate * timing.tbar[:, None, None] + rng.normal(0, 8, (8, 64, 4096))).astype(np.float32)
    model = NS(data=data, meta=NS(exposure=NS(read_pattern=pattern, frame_time=3.04, nresultants=8)))
    expected = slopes_uniform_weights(model)
    got = uniform_slope(data, timing)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def _l2(rng, n):
    data = rng.normal(5, 3, (n, n)).astype(np.float32)
    err = rng.uniform(0.1, 2, (n, n)).astype(np.float16)
    vp = rng.uniform(0.01, 1, (n, n)).astype(np.float16)
    vr = rng.uniform(0.01, 1, (n, n)).astype(np.float16)
    dumo = rng.normal(0, 0.3, (n, n)).astype(np.float16)
    dq = np.where(rng.random((n, n)) < 0.05, rng.integers(0, 2**31, (n, n)), 0).astype(np.uint32)
    return data, err, vp, vr, dumo, dq


@pytest.mark.oracle
def test_dark_current_matches_romancal():
    pytest.importorskip("romancal")
    from types import SimpleNamespace as NS

    from romancal.dark_current.dark_current_step import subtract_dark_current

    rng = np.random.default_rng(8)
    data, _, _, _, _, dq = _l2(rng, 120)
    dark = rng.normal(0.01, 0.005, (128, 128)).astype(np.float32)
    dark[rng.random((128, 128)) < 0.01] = np.nan
    ddq = np.where(rng.random((128, 128)) < 0.05, int(PixelFlag.HOT), 0).astype(np.uint32)
    model = NS(data=data.copy(), dq=dq.copy(), meta=NS(cal_step=NS()))
    subtract_dark_current(model, NS(dark_slope=dark, dq=ddq))
    s, q = dark_current(data.copy(), dq.copy(), dark, ddq)
    np.testing.assert_array_equal(s, model.data)
    np.testing.assert_array_equal(q, model.dq)


@pytest.mark.oracle
@pytest.mark.parametrize("include_var_flat", [False, True])
def test_flatfield_matches_romancal(include_var_flat):
    pytest.importorskip("romancal")
    from types import SimpleNamespace as NS

    from romancal.flatfield.flat_field import _apply_flat_field

    rng = np.random.default_rng(9)
    n = 256
    data, err, vp, vr, dumo, dq = _l2(rng, n)
    flat = rng.normal(1, 0.05, (n, n)).astype(np.float32)
    flat[rng.random((n, n)) < 0.01] = np.nan
    flat[rng.random((n, n)) < 0.01] = 0
    ferr = rng.uniform(0, 0.02, (n, n)).astype(np.float32)
    fdq = np.where(rng.random((n, n)) < 0.02, rng.choice([NFF, int(PixelFlag.UNRELIABLE_FLAT)], (n, n)), 0)
    fdq = fdq.astype(np.uint32)
    sci = NS(
        data=data.copy(), err=err.copy(), var_poisson=vp.copy(), var_rnoise=vr.copy(), dumo=dumo.copy(), dq=dq.copy()
    )
    _apply_flat_field(sci, NS(data=flat, err=ferr, dq=fdq), include_var_flat=include_var_flat)
    res = flatfield(
        data.copy(), err.copy(), vp.copy(), vr.copy(), dumo.copy(), dq.copy(), flat, ferr, fdq, include_var_flat
    )
    for name in ("data", "err", "var_poisson", "var_rnoise", "dumo", "dq"):
        got, want = getattr(res, name), getattr(sci, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    if include_var_flat:
        assert res.var_flat.dtype == sci.var_flat.dtype
        np.testing.assert_array_equal(res.var_flat, sci.var_flat)
