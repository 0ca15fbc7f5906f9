"""Tests of the built-in demo data: reference files and simulated Level 1 exposures."""

from __future__ import annotations

import numpy as np
import pytest

from gpucal.demo import (
    REFTYPES,
    Truth,
    default_read_pattern,
    demo_paths,
    load_references,
    make_exposure,
    make_references,
)
from gpucal.demo._detector import amp33_read_order_index, read_order_index
from gpucal.dq import PixelFlag
from gpucal.readpattern import read_timing

dm = pytest.importorskip("roman_datamodels.datamodels")

NY, NX, K = 64, 256, 6
W = NX // 32
CR_RATE = 2e-4  # ~150 hits on this frame, to test their steps


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    refs = make_references(out / "refs", ny=NY, nx=NX, seed=3)
    uncal, truth_path = demo_paths(out)
    truth = make_exposure(uncal, refs, nresultants=K, seed=5, cr_rate=CR_RATE)
    truth.save(truth_path)
    with dm.open(uncal) as model:
        data = np.asarray(model.data).copy()
        amp33 = np.asarray(model.amp33).copy()
    return refs, uncal, truth_path, truth, data, amp33


def _linearized(refs, data, amp33, truth):
    """Resultants -> linear DN as the pipeline would: amp33 common mode, dark decay, INL, lin."""
    from cpu_fallback.dark_decay import frame_read_times

    d = data.astype(np.float64)
    timing = read_timing(truth.read_pattern, truth.frame_time)
    # subtract the amp33 series (temporal mean removed) at the same read-order sample
    idx, idx_a = read_order_index(NY, NX), amp33_read_order_index(NY, W)
    amp = amp33.astype(np.float64)
    amp -= amp.mean(axis=0)
    for k in range(d.shape[0]):
        series = np.zeros(NY * (W + 12))
        series[idx_a] = amp[k]
        d[k] -= series[idx]
    # dark decay, science pixels only
    a, tau = refs.dark_decay
    t0 = frame_read_times(truth.frame_time, 1, NY, NX)
    for k, reads in enumerate(timing.read_pattern):
        decay = np.mean([a * np.exp(-(t0 + (r - 1.5) * truth.frame_time) / tau) for r in reads], axis=0)
        d[k, 4:-4, 4:-4] -= decay[4:-4, 4:-4]
    # INL then the LINEARITY polynomial of the file (identity where the pipeline uses it)
    chan = np.arange(NX) // W
    for c in range(32):
        cols = chan == c
        d[..., cols] += np.interp(d[..., cols], refs.inl_grid, refs.inl_correction[c])
    with dm.open(refs.paths["linearity"]) as lin:
        coeffs = np.asarray(lin.coeffs).astype(np.float64)
    lam = sum(coeffs[j] * d**j for j in range(coeffs.shape[0]))
    ident = refs.nonlin_b == 0
    lam[:, ident] = d[:, ident]
    return lam, timing


@pytest.fixture(scope="module")
def linear(demo):
    refs, _, _, truth, data, amp33 = demo
    return _linearized(refs, data, amp33, truth)


def _good_pixels(refs, truth):
    good = np.zeros((NY, NX), dtype=bool)
    good[4:-4, 4:-4] = True
    good &= truth.first_saturated < 0
    good[truth.cosmic_rays["y"], truth.cosmic_rays["x"]] = False
    good &= (refs.mask_dq & PixelFlag.DEAD) == 0
    return good


def test_reference_files_open_and_validate(demo):
    refs = demo[0]
    assert set(refs.paths) == set(REFTYPES)
    expected = {
        "mask": "MaskRefModel",
        "saturation": "SaturationRefModel",
        "refpix": "RefpixRefModel",
        "darkdecaysignal": "DarkdecaysignalRefModel",
        "linearity": "LinearityRefModel",
        "inverselinearity": "InverselinearityRefModel",
        "integralnonlinearity": "IntegralnonlinearityRefModel",
        "readnoise": "ReadnoiseRefModel",
        "gain": "GainRefModel",
        "dark": "DarkRefModel",
        "distortion": "DistortionRefModel",
        "photom": "WfiImgPhotomRefModel",
        "flat": "FlatRefModel",
    }
    for reftype, path in refs.paths.items():
        with dm.open(path) as model:
            model.validate()
            assert type(model).__name__ == expected[reftype]
            assert model.meta.instrument.detector == "WFI01"
            assert model.meta.reftype == ("PHOTOM" if reftype == "photom" else reftype.upper())
            assert model.meta.useafter.isot.startswith("2020-01-01")


def test_reference_shapes_and_content(demo):
    refs = demo[0]
    with dm.open(refs.paths["mask"]) as m:
        dq = np.asarray(m.dq)
        assert dq.shape == (NY, NX) and dq.dtype == np.uint32
        border = np.ones((NY, NX), bool)
        border[4:-4, 4:-4] = False
        assert np.all((dq[border] & PixelFlag.REFERENCE_PIXEL) != 0)
        assert not np.any(dq[~border] & PixelFlag.REFERENCE_PIXEL)
        assert np.any(dq[border] & PixelFlag.BAD_REF_PIXEL)
        assert np.any(dq & PixelFlag.DEAD)
    with dm.open(refs.paths["saturation"]) as m:
        s = np.asarray(m.data)
        assert s.dtype == np.float32 and s.shape == (NY, NX)
        nan = np.isnan(s)
        assert nan.any() and np.all((np.asarray(m.dq)[nan] & PixelFlag.NO_SAT_CHECK) != 0)
        assert 55000 <= np.nanmin(s) and np.nanmax(s) <= 62000
    with dm.open(refs.paths["refpix"]) as m:
        length = NY * (W + 12)
        for name in ("gamma", "zeta", "alpha"):
            arr = np.asarray(getattr(m, name))
            assert arr.dtype == np.complex128 and arr.shape == (32, length // 2 + 1)
        assert np.allclose(np.asarray(m.alpha), length / (length + 2))
    with dm.open(refs.paths["integralnonlinearity"]) as m:
        grid = np.asarray(m.value)
        assert grid.dtype == np.uint16 and grid.ndim == 1
        for c in range(1, 33):
            corr = np.asarray(m.inl_table[f"science_channel_{c:02d}"]["correction"])
            assert corr.dtype == np.float64 and corr.shape == grid.shape
            assert np.abs(corr).max() <= 1.0
    with dm.open(refs.paths["flat"]) as m:
        assert np.asarray(m.data).shape == (NY - 8, NX - 8)
        assert m.meta.instrument.optical_element == "F158"
    with dm.open(refs.paths["dark"]) as m:
        assert m.meta.exposure.p_exptype == "WFI_IMAGE|"
        slope = np.asarray(m.dark_slope)
        assert np.all((np.asarray(m.dq)[slope > 0.5] & PixelFlag.HOT) != 0)
    with dm.open(refs.paths["photom"]) as m:
        table = m.phot_table
        assert table["F158"]["photmjsr"] > 0 and table["PRISM"]["photmjsr"] is None
        assert table["DARK"]["wavelength"] is None
    with dm.open(refs.paths["distortion"]) as m:
        tr = m.coordinate_distortion_transform
        xc, yc = (NX - 9) / 2, (NY - 9) / 2
        v2, v3 = tr(xc, yc)
        assert np.allclose((v2, v3), refs.v2v3_ref)
        x, y = tr.inverse(*tr(10.0, 20.0))
        assert abs(x - 10) < 0.01 and abs(y - 20) < 0.01
        v2b, v3b = tr(xc + 1, yc)
        assert np.hypot(v2b - v2, v3b - v3) == pytest.approx(0.11, rel=0.01)
        bbox = tr.bounding_box.bounding_box(order="F")
        assert np.allclose(bbox, ((-0.5, NX - 8.5), (-0.5, NY - 8.5)))


def test_lin_ilin_round_trip(demo):
    refs = demo[0]
    with dm.open(refs.paths["linearity"]) as m:
        lin = np.asarray(m.coeffs).astype(np.float64)
        assert m.coeffs.dtype == np.float32 and lin.shape[1:] == (NY, NX)
        flagged = (np.asarray(m.dq) & PixelFlag.NO_LIN_CORR) != 0
    with dm.open(refs.paths["inverselinearity"]) as m:
        ilin = np.asarray(m.coeffs).astype(np.float64)
        assert m.coeffs.dtype == np.float32 and ilin.shape[0] >= 6
    nan = np.isnan(lin).any(axis=0) | np.isnan(ilin).any(axis=0)
    assert nan.any() and flagged.any()
    assert np.all(refs.nonlin_b[nan | flagged] == 0) and np.all(refs.nonlin_b[~(nan | flagged)] > 0)

    def poly(c, v):
        out = np.zeros_like(v)
        for cj in c[::-1]:
            out = out * v + cj
        return out

    ys, xs = np.nonzero(~nan)
    pick = np.linspace(0, ys.size - 1, 500).astype(int)
    c_lin, c_ilin = lin[:, ys[pick], xs[pick]][..., None], ilin[:, ys[pick], xs[pick]][..., None]
    raw = np.linspace(0.0, 65535.0, 300)[None, :]
    lam = poly(c_lin, np.broadcast_to(raw, (pick.size, raw.size)))  # linear DN up to full range
    back = poly(c_lin, poly(c_ilin, lam))
    assert np.abs(back - lam).max() < 0.05
    # the non-linearity is substantial: 6-12 % at 60000 raw DN
    frac = poly(c_lin, np.full((pick.size, 1), 60000.0)) / 60000.0 - 1
    assert 0.05 < frac.min() and frac.max() < 0.13


def test_exposure_opens_and_validates(demo):
    refs, uncal, _, truth, data, amp33 = demo
    with dm.open(uncal) as model:
        model.validate()
        assert type(model).__name__ == "ScienceRawModel"
        assert model.tag.endswith("wfi_science_raw-2.1.0")
        meta = model.meta
        assert meta.filename == uncal.name
        assert meta.exposure.type == "WFI_IMAGE"
        assert meta.exposure.nresultants == K
        assert [list(r) for r in meta.exposure.read_pattern] == default_read_pattern(K)
        assert meta.exposure.frame_time == pytest.approx(3.04)
        assert meta.instrument.detector == "WFI01" and meta.instrument.optical_element == "F158"
        assert meta.wcsinfo.aperture_name == "WFI01_FULL"
        assert 1.0 < meta.velocity_aberration.scale_factor < 1.0001
        gs = meta.guide_star
        assert 0 <= gs.window_xstart < gs.window_xstop <= NX and 0 <= gs.window_ystart < gs.window_ystop <= NY
    assert data.dtype == np.uint16 and data.shape == (K, NY, NX)
    assert amp33.dtype == np.uint16 and amp33.shape == (K, NY, W)
    assert 3500 < np.median(amp33) < 6500
    border = data[:, :4, :].astype(float)
    assert 3500 < np.median(border) < 6500
    assert truth.rate.shape == (NY, NX) and truth.rate.dtype == np.float32
    assert np.all(truth.rate[:4] == 0) and np.all(truth.rate[:, -4:] == 0)


def test_determinism(demo, tmp_path):
    refs, uncal, _, truth, data, amp33 = demo
    refs2 = make_references(tmp_path / "refs", ny=NY, nx=NX, seed=3)
    for name in ("nonlin_b", "gain", "readnoise", "dark_slope", "mask_dq", "inl_correction"):
        assert np.array_equal(getattr(refs, name), getattr(refs2, name))
    assert np.array_equal(refs.saturation, refs2.saturation, equal_nan=True)
    path2 = tmp_path / uncal.name
    truth2 = make_exposure(path2, refs2, nresultants=K, seed=5, cr_rate=CR_RATE, workers=1)
    with dm.open(path2) as m2, dm.open(uncal) as m1:
        assert np.array_equal(np.asarray(m2.data), data)
        assert np.array_equal(np.asarray(m2.amp33), amp33)
        d1, d2 = m1.meta.to_flat_dict(), m2.meta.to_flat_dict()
        for d in (d1, d2):
            for key in [k for k in d if k.endswith("file_date")]:
                del d[key]
        assert {k: str(v) for k, v in d1.items()} == {k: str(v) for k, v in d2.items()}
    assert np.array_equal(truth2.cosmic_rays, truth.cosmic_rays)
    other = make_exposure(tmp_path / "other_uncal.asdf", refs2, nresultants=K, seed=6)
    assert not np.array_equal(other.rate, truth.rate)


def test_truth_round_trip(demo):
    truth = demo[3]
    loaded = Truth.load(demo[2])
    for name in ("rate", "scene", "bias", "cosmic_rays", "first_saturated", "first_full_well", "full_well_deficit"):
        assert np.array_equal(getattr(loaded, name), getattr(truth, name))
    assert loaded.read_pattern == truth.read_pattern
    assert loaded.frame_time == truth.frame_time and loaded.seed == truth.seed


def test_load_references(demo):
    refs = demo[0]
    again = load_references(refs.paths)
    assert again.detector == refs.detector and again.optical_element == refs.optical_element
    assert np.array_equal(again.nonlin_b, refs.nonlin_b)
    assert np.array_equal(again.flat, refs.flat, equal_nan=True)
    assert again.dark_decay == refs.dark_decay


def test_saturation_plateau(demo):
    refs, _, _, truth, data, _ = demo
    sat = refs.saturation
    finite = np.isfinite(sat)
    assert np.all(data[:, finite] <= sat[finite])
    first = truth.first_saturated
    assert (first >= 0).sum() > 0 and (first == 0).sum() > 0
    ys, xs = np.nonzero(first >= 0)
    k = first[ys, xs]
    assert np.all(data[k, ys, xs] == sat[ys, xs])
    assert np.all(data[-1, ys, xs] == sat[ys, xs])
    before = np.arange(K)[:, None] < k[None, :]
    assert np.all(data[:, ys, xs][before] < sat[ys, xs][None, :].repeat(K, 0)[before])
    # never-saturated pixels stay below their threshold in every resultant
    never = finite & (first < 0)
    assert np.all(data[:, never] < sat[never])


def test_full_well_truth(demo):
    """A resultant at the threshold holds reads at full well; a resultant can hold some
    while its average stays below (the deficit is what the clip took off it)."""
    refs, _, _, truth, data, _ = demo
    first, full, deficit = truth.first_saturated, truth.first_full_well, truth.full_well_deficit
    sat = first >= 0
    assert np.all((full[sat] >= 0) & (full[sat] <= first[sat]))
    assert np.all(deficit[full < 0] == 0) and np.all(deficit[full >= 0] >= 0)
    inside = (full >= 0) & ((first < 0) | (full < first))  # the average stayed below there
    assert inside.any()
    ys, xs = np.nonzero(inside)
    assert np.all(data[full[ys, xs], ys, xs] < refs.saturation[ys, xs])


def test_cosmic_ray_steps(demo, linear):
    refs, _, _, truth, _, _ = demo
    lam, timing = linear
    cr = truth.cosmic_rays
    assert cr.size > 50
    assert cr["energy_e"].min() >= 20 and cr["energy_e"].max() <= 5000 and (cr["energy_e"] >= 100).any()
    assert np.all((cr["read"] >= 1) & (cr["read"] <= timing.last_read[-1]))
    # single hits on faint, unsaturated, live pixels
    key = cr["y"] * NX + cr["x"]
    single = np.isin(key, np.unique(key, return_counts=True)[0][np.unique(key, return_counts=True)[1] == 1])
    ok = single & (truth.first_saturated[cr["y"], cr["x"]] < 0) & (truth.rate[cr["y"], cr["x"]] < 20)
    ok &= (refs.mask_dq[cr["y"], cr["x"]] & PixelFlag.DEAD) == 0
    hits = cr[ok]
    assert hits.size > 20
    y, x = hits["y"], hits["x"]
    model = truth.bias[y, x][None] + truth.rate[y, x][None] * timing.tbar[:, None]
    excess = lam[:, y, x] - model  # (K, n)
    # fraction of each resultant's reads taken after the hit
    frac = np.array([[np.mean(np.asarray(reads) >= r) for r in hits["read"]] for reads in timing.read_pattern])
    expected = frac * hits["energy_e"][None] / refs.gain[y, x][None]
    resid = excess - expected
    assert np.abs(np.median(resid)) < 3.0
    assert np.percentile(np.abs(resid), 95) < 30.0
    big = hits["energy_e"] / refs.gain[y, x] > 200
    assert np.all(excess[-1, big] > 100)


def test_slope_recovery(demo, linear):
    refs, _, _, truth, _, _ = demo
    lam, timing = linear
    good = _good_pixels(refs, truth)
    # per resultant, linear DN = bias + rate * tbar on average (INL, dark decay, non-linearity)
    resid = lam[:, good] - (truth.bias[good][None] + truth.rate[good][None] * timing.tbar[:, None])
    assert np.all(np.abs(resid.mean(axis=1)) < 1.0)
    t = timing.tbar - timing.tbar.mean()
    slope = np.tensordot(t, lam, axes=(0, 0)) / np.sum(t * t)
    diff = (slope - truth.rate)[good]
    sem = diff.std() / np.sqrt(diff.size)
    assert abs(diff.mean()) < 5 * sem + 0.02
    bright = good & (truth.rate > 30)
    assert bright.sum() >= 5
    rel = (slope - truth.rate)[bright] / truth.rate[bright]
    assert abs(np.median(rel)) < 0.01


def test_geometry_and_pattern_checks(tmp_path):
    with pytest.raises(ValueError):
        make_references(tmp_path, ny=64, nx=200)
    with pytest.raises(ValueError):
        make_references(tmp_path, ny=64, nx=128)  # w = 4 < 8
    with pytest.raises(ValueError):
        make_references(tmp_path, ny=8, nx=256)
    assert default_read_pattern(8) == [
        [1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11], list(range(12, 18)), list(range(18, 24)),
        list(range(24, 30)), [30],
    ]  # fmt: skip
    for k in range(1, 11):
        pattern = default_read_pattern(k)
        assert len(pattern) == k
        read_timing(pattern, 3.04)
