"""linearity (NumPy backend): Appendix A.2, coefficient preparation, INL, clip; parity with stcal."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.linearity import linearity
from gpucal.backends.protocol import InlTable
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import read_timing

SAT = int(GroupFlag.SATURATED)
DNU = int(GroupFlag.DO_NOT_USE)
NLC = int(PixelFlag.NO_LIN_CORR)

PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15, 16], [17]]
TIMING = read_timing(PATTERN, 3.04)


def _coeffs(values, n):
    return np.broadcast_to(np.asarray(values, np.float32)[:, None, None], (len(values), 1, n)).copy()


LIN = [0, 1, 2e-6]
ILIN = [0, 1, -2e-6, 8e-12]


def _cube(columns):
    return np.asarray(columns, dtype=np.float32).T[:, None, :].copy()


def _run(data, gdq=None, lin=LIN, ilin=ILIN, lin_dq=None, inl=None, timing=TIMING, pdq=None):
    n = data.shape[2]
    lin_c = _coeffs(lin, n) if not isinstance(lin, np.ndarray) else lin
    ilin_c = None if ilin is None else (_coeffs(ilin, n) if not isinstance(ilin, np.ndarray) else ilin)
    gdq = np.zeros(data.shape, np.uint8) if gdq is None else gdq
    lin_dq = np.zeros((1, n), np.uint32) if lin_dq is None else lin_dq
    pdq = np.zeros((1, n), np.uint32) if pdq is None else pdq
    res = linearity(data, gdq, pdq, lin_c, ilin_c, lin_dq, inl, timing)
    assert res.data.dtype == np.float32 and res.groupdq.dtype == np.uint8 and res.pixeldq.dtype == np.uint32
    return res


def test_appendix_a2_read_level():
    data = _cube(
        [
            [1000, 2500, 5500, 8000, 10500, 14000, 17000],
            [500, 600, 800, 950, 1100, 1400, 1600],
            [3000, 9000, 21000, 30000, 38000, 52000, 60000],
        ]
    )
    gdq = np.zeros(data.shape, np.uint8)
    gdq[5:, 0, 2] = SAT
    res = _run(data, gdq)
    expected = [
        [1002.0, 2513.0198, 5563.0381, 8128.0, 10721.808, 14395.81, 17578.0],
        [500.5, 600.72241, 801.29199, 951.80499, 1102.4264, 1403.9391, 1605.12],
        [3018.0, 9169.877, 21918.189, 31800.0, 40905.395, 52000.0, 60000.0],
    ]
    np.testing.assert_allclose(res.data[:, 0, :].T, expected, rtol=2e-7, atol=0)
    assert not res.pixeldq.any() and not (res.groupdq & DNU).any()


def test_appendix_a2_classic():
    data = _cube([[1000, 2500, 5500, 8000, 10500, 14000, 17000]])
    res = _run(data, ilin=None)
    np.testing.assert_allclose(
        res.data[:, 0, 0], [1002.0, 2512.5, 5560.5, 8128.0005, 10720.5, 14392.0, 17578.0], rtol=1e-7
    )


def test_saturated_resultants_unchanged():
    data = _cube([[1000, 2500, 5500, 8000, 60000.5, 61000.25, 62000.125]])
    gdq = np.zeros(data.shape, np.uint8)
    gdq[4:] = SAT
    for ilin in (ILIN, None):
        res = _run(data.copy(), gdq.copy(), ilin=ilin)
        np.testing.assert_array_equal(res.data[4:, 0, 0], [60000.5, 61000.25, 62000.125])
        assert res.data[0, 0, 0] == np.float32(1002.0)


def test_all_saturated_pixel_unchanged():
    data = _cube([[60000, 61000, 62000, 63000, 64000, 65000, 65535]])
    res = _run(data.copy(), np.full(data.shape, SAT, np.uint8))
    np.testing.assert_array_equal(res.data, data)


@pytest.mark.parametrize("ilin", [ILIN, None])
def test_bad_coefficients_become_identity(ilin):
    n = 4
    col = [1000, 2500, 5500, 8000, 10500, 14000, 17000]
    data = _cube([col] * n)
    lin = _coeffs(LIN, n)
    lin[2, 0, 0] = np.nan  # NaN coefficient
    lin[1, 0, 1] = 0  # zero linear term
    lin_dq = np.array([[0, 0, NLC, int(PixelFlag.HOT)]], np.uint32)  # ref NO_LIN_CORR on pixel 2
    lin[0, 0, 2] = 100.0  # would shift everything if applied
    res = _run(data, lin=lin, ilin=ilin, lin_dq=lin_dq)
    for p in range(3):
        np.testing.assert_allclose(res.data[:, 0, p], col, rtol=1e-7)
    assert res.data[6, 0, 3] == np.float32(17578.0)
    np.testing.assert_array_equal(res.pixeldq[0], [NLC, NLC, NLC, int(PixelFlag.HOT)])
    assert np.isnan(lin[2, 0, 0]) and lin[0, 0, 2] == 100.0  # reference not modified


def test_bad_inverse_coefficients_flag_no_lin_corr():
    data = _cube([[1000, 2500, 5500, 8000, 10500, 14000, 17000]] * 2)
    ilin = _coeffs(ILIN, 2)
    ilin[3, 0, 0] = np.nan
    ilin[1, 0, 1] = 0
    res = _run(data, ilin=ilin)
    np.testing.assert_array_equal(res.pixeldq[0], [NLC, NLC])
    assert np.all(np.isfinite(res.data))


def test_pixeldq_keeps_existing_bits():
    data = _cube([[1000, 2500, 5500, 8000, 10500, 14000, 17000]])
    pdq = np.array([[int(PixelFlag.DEAD)]], np.uint32)
    lin_dq = np.array([[int(PixelFlag.NONLINEAR)]], np.uint32)
    res = _run(data, lin_dq=lin_dq, pdq=pdq)
    assert res.pixeldq[0, 0] == int(PixelFlag.DEAD | PixelFlag.NONLINEAR)


def test_last_used_resultant_is_before_last_unsaturated():
    # with saturation from resultant 5, the rate comes from resultants 0 and 3, so a wild
    # resultant 4 must not change the corrected resultant 1
    a = _cube([[1000, 2500, 5500, 8000, 10500, 60000, 60000]])
    b = _cube([[1000, 2500, 5500, 8000, 30000, 60000, 60000]])
    gdq = np.zeros(a.shape, np.uint8)
    gdq[5:] = SAT
    ra, rb = _run(a, gdq.copy()), _run(b, gdq.copy())
    assert ra.data[1, 0, 0] == rb.data[1, 0, 0]


def test_clip_beyond_1e6():
    data = _cube([[1000, 2500, 5500, 8000, 10500, 14000, 17000]])
    res = _run(data, lin=[0, 1, 1.0], ilin=None)  # D + D^2 exceeds 1e6 from D ~ 1000
    assert res.data.max() == 1e6
    np.testing.assert_array_equal(res.groupdq[:, 0, 0], [DNU] * 7)
    data = _cube([[-2000, 2500, 5500, 8000, 10500, 14000, 17000]])
    res = _run(data, lin=[0, 1, 0, 1.0], ilin=None)
    assert res.data[0, 0, 0] == -1e6 and res.groupdq[0, 0, 0] == DNU


def test_inl_channels_are_frame_columns():
    # 4 columns, channel width 2: columns 0-1 get +10, 2-3 get a ramp, on identity polynomials
    grid = np.array([0, 100000], np.float32)
    corr = np.array([[10.0, 10.0], [0.0, 100.0]])
    inl = InlTable(grid, corr, 2)
    data = _cube([[1000, 2000, 3000, 4000, 5000, 6000, 7000]] * 4)
    res = _run(data.copy(), lin=[0, 1], ilin=[0, 1], inl=inl)
    np.testing.assert_allclose(res.data[:, 0, 0], data[:, 0, 0] + 10, rtol=1e-7)
    np.testing.assert_allclose(res.data[:, 0, 3], data[:, 0, 3] * 1.001, rtol=1e-6)
    # a NaN row means no correction
    inl = InlTable(grid, np.array([[np.nan, np.nan], [0.0, 100.0]]), 2)
    res = _run(data.copy(), lin=[0, 1], ilin=[0, 1], inl=inl)
    np.testing.assert_allclose(res.data[:, 0, 0], data[:, 0, 0], rtol=1e-7)


def test_inl_table_too_small_raises():
    inl = InlTable(np.array([0, 1], np.float32), np.zeros((1, 2)), 2)
    with pytest.raises(ValueError, match="channels"):
        _run(_cube([[1, 2, 3, 4, 5, 6, 7]] * 4), inl=inl)


def test_row_blocks_do_not_change_results(monkeypatch):
    import cpu_fallback.linearity as mod

    rng = np.random.default_rng(3)
    data = (rng.random((7, 9, 5)) * 30000).astype(np.float32)
    lin = np.stack([np.zeros((9, 5)), np.ones((9, 5)), rng.random((9, 5)) * 1e-6]).astype(np.float32)
    ilin = np.stack([np.zeros((9, 5)), np.ones((9, 5)), -lin[2]]).astype(np.float32)
    args = (np.zeros((9, 5), np.uint32), lin, ilin, np.zeros((9, 5), np.uint32), None, TIMING)
    whole = linearity(data.copy(), np.zeros(data.shape, np.uint8), *args)
    monkeypatch.setattr(mod, "_BLOCK_PIXELS", 10)  # two rows per block
    blocked = linearity(data.copy(), np.zeros(data.shape, np.uint8), *args)
    np.testing.assert_array_equal(whole.data, blocked.data)


# ----------------------------------------------------------------------------- oracle

ORACLE_PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19], [20, 21], [22]]


def _realistic(seed, ny=64, nx=4096):
    rng = np.random.default_rng(seed)
    timing = read_timing(ORACLE_PATTERN, 3.04)
    k = timing.nresultants
    rate = rng.lognormal(np.log(40), 2.0, (ny, nx))
    data = rng.normal(5000, 300, (ny, nx)) + rate * timing.tbar[:, None, None] + rng.normal(0, 8, (k, ny, nx))
    data = np.clip(data, 0, 65535).astype(np.float32)
    thr = rng.normal(55000, 2000, (ny, nx))
    gdq = np.zeros(data.shape, np.uint8)
    gdq[np.maximum.accumulate(data >= thr, axis=0)] = SAT
    gdq[rng.random(data.shape) < 1e-3] |= int(GroupFlag.JUMP_DET)
    c2 = rng.normal(1.5e-6, 3e-7, (ny, nx))
    c3 = rng.normal(1e-11, 3e-12, (ny, nx))
    lin = np.stack([rng.normal(0, 2, (ny, nx)), rng.normal(1, 0.01, (ny, nx)), c2, c3]).astype(np.float32)
    ilin = np.stack([np.zeros((ny, nx)), np.ones((ny, nx)), -c2, 2 * c2**2 - c3, rng.normal(0, 1e-16, (ny, nx))])
    ilin = ilin.astype(np.float32)
    lin[2][rng.random((ny, nx)) < 0.002] = np.nan
    lin[1][rng.random((ny, nx)) < 0.002] = 0
    ilin[3][rng.random((ny, nx)) < 0.002] = np.nan
    ilin[1][rng.random((ny, nx)) < 0.002] = 0
    lin[2][rng.random((ny, nx)) < 0.001] = 1e-3  # wild pixels beyond 1e6
    lin_dq = np.where(rng.random((ny, nx)) < 0.003, NLC, 0).astype(np.uint32)
    lin_dq |= np.where(rng.random((ny, nx)) < 0.01, int(PixelFlag.NONLINEAR), 0).astype(np.uint32)
    pdq = np.where(rng.random((ny, nx)) < 0.01, int(PixelFlag.DEAD), 0).astype(np.uint32)
    grid = np.linspace(0, 65535, 257).astype(np.uint16)
    corrections = rng.normal(0, 3, (nx // 128, grid.size))
    return data, gdq, pdq, lin, ilin, lin_dq, grid, corrections, timing


def _upstream(data, gdq, pdq, lin, ilin, lin_dq, grid, corrections):
    from types import SimpleNamespace as NS

    from roman_datamodels.dqflags import group, pixel
    from romancal.linearity.linearity_step import make_inl_correction
    from stcal.linearity.linearity import linearity_correction

    inl = None
    if corrections is not None:
        table = NS(**{f"science_channel_{c + 1:02d}": NS(correction=corrections[c]) for c in range(len(corrections))})
        inl = make_inl_correction(NS(value=grid, inl_table=table), data.shape[-1])
    gdq = gdq.copy()
    out, new_pdq, _ = linearity_correction(
        data[None].copy(),
        gdq[None],
        pdq.copy(),
        lin.copy(),
        lin_dq.copy(),
        pixel,
        ilin_coeffs=None if ilin is None else ilin.copy(),
        additional_correction=inl,
        read_pattern=ORACLE_PATTERN,
    )
    out = out[0]
    wild = np.abs(out) > 1e6  # romancal's LinearityStep clip
    out[wild] = np.clip(out[wild], -1e6, 1e6)
    gdq[wild] |= group.DO_NOT_USE
    return out, gdq, new_pdq


@pytest.mark.oracle
@pytest.mark.parametrize("mode", ["inl", "read_level", "classic"])
def test_matches_stcal(mode):
    pytest.importorskip("stcal")
    pytest.importorskip("romancal")
    data, gdq, pdq, lin, ilin, lin_dq, grid, corrections, timing = _realistic(
        {"inl": 1, "read_level": 2, "classic": 3}[mode]
    )
    if mode != "inl":
        corrections = None
    if mode == "classic":
        ilin = None
    up_data, up_gdq, up_pdq = _upstream(data, gdq, pdq, lin, ilin, lin_dq, grid, corrections)
    inl = None if corrections is None else InlTable(grid.astype(np.float32), corrections, 128)
    res = linearity(data.copy(), gdq.copy(), pdq.copy(), lin, ilin, lin_dq, inl, timing)
    assert (res.groupdq & DNU).any() and (res.pixeldq & NLC).any()
    np.testing.assert_array_equal(res.groupdq, up_gdq)
    np.testing.assert_array_equal(res.pixeldq, up_pdq)
    np.testing.assert_array_equal(res.data, up_data)


def _interp_reference(values, inl):
    grid = np.asarray(inl.grid, np.float32)
    out = np.zeros_like(values)
    for c, start in enumerate(range(0, values.shape[-1], inl.channel_width)):
        if not np.isnan(inl.corrections[c]).all():
            cols = slice(start, start + inl.channel_width)
            out[..., cols] = np.interp(values[..., cols], grid, inl.corrections[c])
    return out


def _inl_probe_values(grid, rng, shape):
    grid = np.asarray(grid, np.float32).astype(np.float64)
    lo, hi = grid[0], grid[-1]
    span = hi - lo
    special = np.concatenate(
        [
            grid,
            np.nextafter(grid, -np.inf),
            np.nextafter(grid, np.inf),
            [np.nan, np.inf, -np.inf, 0.0, -0.0, lo - span, hi + span, 1e300, -1e300],
        ]
    )
    values = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, shape)
    flat = values.reshape(-1)
    flat[: special.size] = special
    return values


@pytest.mark.parametrize(
    "grid",
    [
        np.arange(256, dtype=np.float32) * 256,  # exact index (origin 0, power-of-two step)
        100 + 3 * np.arange(40, dtype=np.float32),  # uniform, index corrected by comparisons
        np.float32(-7.25) + np.float32(0.5) * np.arange(30, dtype=np.float32),
        np.array([0, 10, 11, 50, 200], np.float32),  # not uniform: np.interp fallback
    ],
)
def test_inl_lookup_bit_identical_to_interp(grid):
    from cpu_fallback.linearity import _inl_lookup, _uniform_inl

    rng = np.random.default_rng(11)
    nchan, width = 5, 8
    corr = rng.normal(0, 2, (nchan, grid.size))
    corr[1] = np.nan  # all-NaN row: no correction
    corr[2, :3] = 0.0
    corr[3, 1:4] = corr[3, 1]  # flat stretch
    inl = InlTable(grid, corr, width)
    values = _inl_probe_values(grid, rng, (40, nchan * width - 3))
    uniform = bool((np.diff(grid.astype(np.float64)) == float(grid[1]) - float(grid[0])).all())
    assert (_uniform_inl(inl, values.shape[-1]) is not None) == uniform
    got = _inl_lookup(values, inl)
    want = _interp_reference(values, inl)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_inl_lookup_negative_zero_table_falls_back():
    from cpu_fallback.linearity import _inl_lookup, _uniform_inl

    grid = np.arange(8, dtype=np.float32) * 4
    corr = np.array([[1.0, -0.0, 2.0, 3.0, 0.0, -1.0, 5.0, 6.0]])
    inl = InlTable(grid, corr, 4)
    assert _uniform_inl(inl, 4) is None
    values = _inl_probe_values(grid, np.random.default_rng(3), (9, 4))
    got = _inl_lookup(values, inl)
    np.testing.assert_array_equal(got.view(np.uint64), _interp_reference(values, inl).view(np.uint64))
