"""dq_init.cu against stated values and against cpu_fallback.dq_init (algorithms.md §1)."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.dq_init import dq_init as numpy_dq_init
from gpucal.dq import PixelFlag
from tests.kernels import _drivers as drv

GW = int(PixelFlag.GW_AFFECTED_DATA)
BOX = int(PixelFlag.DO_NOT_USE | PixelFlag.GW_AFFECTED_DATA)


def test_conversion_values(runtime):
    raw = np.array([[0, 1, 65535], [100, 200, 300]], np.uint16).reshape(2, 1, 3)
    ref = np.array([[65535, 5, 1]], np.uint16)
    got = drv.dq_init(runtime, raw, ref, 7, None, None, 0)
    # float32 arithmetic: the uint16 sum does not wrap
    assert got.data[:, 0, :].tolist() == [[65528.0, -1.0, 65529.0], [65628.0, 198.0, 294.0]]
    assert got.data.dtype == np.float32
    assert not got.pixeldq.any()


def test_guide_window_flags(runtime):
    raw = np.zeros((1, 8, 10), np.uint16)
    got = drv.dq_init(runtime, raw, None, 0, None, (2, 5, 1, 3), 0)
    expected = np.zeros((8, 10), np.uint32)
    expected[:, 2:5] = GW
    expected[1:3, 2:5] |= BOX
    np.testing.assert_array_equal(got.pixeldq, expected)
    # expanded by 2, clipped at the frame
    got = drv.dq_init(runtime, raw, None, 0, None, (2, 5, 1, 3), 2)
    expected[0:5, 0:7] |= BOX
    np.testing.assert_array_equal(got.pixeldq, expected)


WINDOWS = [None, (2, 5, 1, 3), (3, -1, 2, -2), (0, 64, 0, 64), (40, 30, 5, 9), (70, 80, 1, 2), (-1, 4, 0, 2), (5, 9, 63, 70)]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("expand", [0, 3])
def test_agrees_with_numpy(runtime, window, expand):
    rng = np.random.default_rng()
    shape = (5, 64, 96)
    raw = rng.integers(0, 65536, shape, dtype=np.uint16)
    ref = rng.integers(0, 65536, shape[1:], dtype=np.uint16)
    mask = rng.integers(0, 2**32, shape[1:], dtype=np.uint32)
    mask[rng.random(shape[1:]) < 0.5] = 0
    offset = int(rng.integers(0, 4000))
    for ref_arg, mask_arg in ((ref, mask), (None, None), (ref, mask[:10])):  # the last: shape mismatch
        got = drv.dq_init(runtime, raw, ref_arg, offset, mask_arg, window, expand)
        want = numpy_dq_init(raw, ref_arg, offset, mask_arg, window, expand)
        np.testing.assert_array_equal(got.data, want.data)
        np.testing.assert_array_equal(got.pixeldq, want.pixeldq)
