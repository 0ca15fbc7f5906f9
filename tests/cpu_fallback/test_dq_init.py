"""dq_init (NumPy backend): DN conversion, guide window, mask; parity with romancal."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.dq_init import dq_init
from gpucal.dq import PixelFlag

GW = int(PixelFlag.GW_AFFECTED_DATA)
BOX = int(PixelFlag.DO_NOT_USE | PixelFlag.GW_AFFECTED_DATA)


def _raw(k=3, ny=16, nx=16, value=1000):
    return np.full((k, ny, nx), value, dtype=np.uint16)


def test_encoding_offset_and_reference_read_add_back():
    raw = _raw(value=60000)
    ref = np.full((16, 16), 9000, dtype=np.uint16)  # sum exceeds uint16: must not wrap
    ref[3, 4] = 0
    res = dq_init(raw, ref, 4096, None, None, 0)
    assert res.data.dtype == np.float32 and res.data.shape == raw.shape
    assert res.pixeldq.dtype == np.uint32 and not res.pixeldq.any()
    assert np.all(res.data[:, 0, 0] == 60000 + 9000 - 4096)
    assert np.all(res.data[:, 3, 4] == 60000 - 4096)


def test_no_reference_read_no_offset():
    raw = _raw()
    raw[1, 2, 3] = 0
    res = dq_init(raw, None, 0, None, None, 0)
    assert res.data[1, 2, 3] == 0 and res.data[0, 0, 0] == 1000


def test_offset_can_make_negative_values():
    res = dq_init(_raw(value=10), None, 4096, None, None, 0)
    assert np.all(res.data == 10 - 4096)


def test_mask_is_ored():
    mask = np.zeros((16, 16), dtype=np.uint32)
    mask[2, 2] = PixelFlag.DEAD | PixelFlag.REFERENCE_PIXEL
    res = dq_init(_raw(), None, 0, mask, (5, 7, 0, 2), 0)
    assert res.pixeldq[2, 2] == mask[2, 2]
    assert res.pixeldq[2, 5] == GW  # column flag kept alongside the mask


def test_mask_with_wrong_shape_is_ignored():
    res = dq_init(_raw(), None, 0, np.ones((8, 8), np.uint32), None, 0)
    assert not res.pixeldq.any()


def test_guide_window_columns_and_box():
    res = dq_init(_raw(), None, 0, None, (4, 7, 10, 12), 0)
    expected = np.zeros((16, 16), np.uint32)
    expected[:, 4:7] = GW
    expected[10:12, 4:7] |= BOX
    np.testing.assert_array_equal(res.pixeldq, expected)


def test_guide_window_expand_is_clipped_to_frame():
    res = dq_init(_raw(), None, 0, None, (1, 3, 13, 15), 2)
    expected = np.zeros((16, 16), np.uint32)
    expected[:, 1:3] = GW  # columns flagged before expansion
    expected[11:16, 0:5] |= BOX  # ys-2=11, ye+2=17->16, xs-2=-1->0, xe+2=5
    np.testing.assert_array_equal(res.pixeldq, expected)


@pytest.mark.parametrize("window", [(-999999, -999999, -999999, -999999), (16, 20, 0, 4), (0, 4, 16, 20)])
def test_guide_window_outside_frame_is_ignored(window):
    res = dq_init(_raw(), None, 0, None, window, 3)
    assert not res.pixeldq.any()


def test_guide_window_negative_stop_uses_slice_semantics():
    # romancal slices without clipping when expand_gw_flagging is 0
    res = dq_init(_raw(), None, 0, None, (10, -2, 0, 1), 0)
    assert np.all(res.pixeldq[:, 10:14] & GW) and not res.pixeldq[:, 14:].any()
    assert np.all(res.pixeldq[0, 10:14] == BOX)


@pytest.mark.oracle
@pytest.mark.parametrize("expand", [0, 3])
def test_matches_romancal(expand):
    pytest.importorskip("romancal")
    from types import SimpleNamespace

    from roman_datamodels import datamodels as rdm
    from romancal.dq_init.dq_initialization import do_dqinit

    rng = np.random.default_rng(11 + expand)
    k, ny, nx = 6, 64, 64
    raw = rng.integers(0, 60000, (k, ny, nx), dtype=np.uint16)
    ref = rng.integers(0, 9000, (ny, nx), dtype=np.uint16)
    mask = np.where(rng.random((ny, nx)) < 0.1, rng.integers(0, 2**32, (ny, nx), dtype=np.uint64), 0).astype(np.uint32)
    window = (10, 20, 55, 62)

    model = rdm.ScienceRawModel.create_fake_data(shape=(k, ny, nx))
    model.data = raw.copy()
    model.amp33 = np.zeros((k, ny, 128), np.uint16)
    model.reference_read = ref.copy()
    model.reference_amp33 = np.zeros((k, ny, 128), np.uint16)
    model.meta.instrument.data_encoding_offset = 4096
    gs = model.meta.guide_star
    gs.window_xstart, gs.window_xstop, gs.window_ystart, gs.window_ystop = window
    upstream = do_dqinit(model, SimpleNamespace(dq=mask), expand_gw_flagging=expand)

    res = dq_init(raw.copy(), ref, 4096, mask, window, expand)
    assert res.data.dtype == upstream.data.dtype
    np.testing.assert_array_equal(res.data, upstream.data)
    np.testing.assert_array_equal(res.pixeldq, upstream.pixeldq)
