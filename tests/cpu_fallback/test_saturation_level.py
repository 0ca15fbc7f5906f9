"""cpu_fallback's saturation_headroom and linearity_threshold: what they mean.

The headroom is read at the resultant the gls fit ends on (``initial_usable``'s ``last``),
and linearity_threshold is the classic correction of the value that resultant would have
at full well, so a read that reaches the threshold in raw DN reaches the level in the
linearized DN the fit sees.
"""

from __future__ import annotations

import numpy as np
import pytest

import cpu_fallback.linearity as host_linearity
from cpu_fallback.linearity import linearity, linearity_threshold
from cpu_fallback.ramp_fit.gls import initial_usable
from cpu_fallback.saturation import saturation_headroom
from gpucal.dq import GroupFlag, PixelFlag
from gpucal.readpattern import read_timing
from tests.kernels.test_saturation_level_kernel import random_level_inputs

SAT, DNU, JUMP = int(GroupFlag.SATURATED), int(GroupFlag.DO_NOT_USE), int(GroupFlag.JUMP_DET)


def _fresh_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


def test_headroom_is_read_at_the_fits_last_resultant():
    """k* is gls's ``last``; the headroom is threshold - data there, +inf where gls has none."""
    seed = _fresh_seed()
    x = random_level_inputs(np.random.default_rng(seed), (40, 64))
    data, gdq = x["data"], x["groupdq"]
    headroom = saturation_headroom(data, gdq, x["pixeldq"], x["threshold"], x["threshold_dq"])
    nres = data.shape[0]
    _, last = initial_usable(gdq.reshape(nres, -1), 0)
    last = last.reshape(data.shape[1:])
    no_check = np.isnan(x["threshold"]) | ((x["threshold_dq"] | x["pixeldq"]) & PixelFlag.NO_SAT_CHECK) != 0
    has = last >= 0
    assert (~has).any() and has.mean() > 0.9, f"seed {seed}"
    np.testing.assert_array_equal(np.isposinf(headroom), ~has | no_check, err_msg=f"seed {seed}")
    sel = has & ~no_check
    at_last = np.take_along_axis(data, np.maximum(last, 0)[None], axis=0)[0]
    expected = x["threshold"][sel] - at_last[sel]  # float32 - float32
    np.testing.assert_array_equal(headroom[sel], expected, err_msg=f"seed {seed}")


def test_inputs_are_not_modified():
    x = random_level_inputs(np.random.default_rng(_fresh_seed()), (16, 32))
    before = {k: v.copy() for k, v in x.items()}
    h = saturation_headroom(x["data"], x["groupdq"], x["pixeldq"], x["threshold"], x["threshold_dq"])
    h_before = h.copy()
    linearity_threshold(x["lin_data"], x["groupdq"], h, x["lin"], x["lin_dq"])
    for k, v in x.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    np.testing.assert_array_equal(h, h_before)


@pytest.mark.parametrize("ncoeff", [2, 3, 5])
def test_level_is_the_linearity_correction_of_the_full_well_value(ncoeff):
    """Put data[k*] + headroom into resultant k* and run the classic linearity step: it gives
    exactly the level (same float32 Horner, same identity pixels)."""
    seed = _fresh_seed()
    x = random_level_inputs(np.random.default_rng(seed), (32, 64), ncoeff)
    data, gdq = x["lin_data"], x["groupdq"]
    h = saturation_headroom(x["data"], gdq, x["pixeldq"], x["threshold"], x["threshold_dq"])
    level = linearity_threshold(data, gdq, h, x["lin"], x["lin_dq"])

    nres = data.shape[0]
    _, last = initial_usable(gdq.reshape(nres, -1), 0)
    last = last.reshape(data.shape[1:])
    ok = (last >= 0) & np.isfinite(h)
    at_full = data.copy()
    rows, cols = np.nonzero(ok)
    at_full[last[ok], rows, cols] = data[last[ok], rows, cols] + h[ok]
    # the classic step leaves SATURATED resultants alone: clear the flags for the comparison
    corrected = linearity(at_full, np.zeros_like(gdq), np.zeros_like(x["pixeldq"]), x["lin"], None, x["lin_dq"],
                          None, read_timing([[k + 1] for k in range(nres)], 3.04)).data  # fmt: skip
    np.testing.assert_array_equal(level[ok], corrected[last[ok], rows, cols], err_msg=f"seed {seed}")
    assert np.isposinf(level[~ok]).all()
    assert (level[ok] > 50000).mean() > 0.95, f"levels near full well (seed {seed})"


def test_refpix_offset_carries_into_the_level():
    """The level is anchored at the pixel's own resultant: a ramp shifted by -120 DN between
    saturation and linearity (refpix) gets the polynomial at threshold - 120 DN."""
    raw = np.array([10000, 20000, 30000, 40000], np.float32).reshape(4, 1, 1)
    gdq = np.zeros((4, 1, 1), np.uint8)
    thr = np.full((1, 1), 50000, np.float32)
    h = saturation_headroom(raw, gdq, np.zeros((1, 1), np.uint32), thr, np.zeros((1, 1), np.uint32))
    assert h[0, 0] == 10000
    lin = np.array([0, 1, 2e-6], np.float32).reshape(3, 1, 1)
    shifted = raw - np.float32(120)
    level = linearity_threshold(shifted, gdq, h, lin, np.zeros((1, 1), np.uint32))
    v = np.float32(49880)
    assert level[0, 0] == (np.float32(2e-6) * v + np.float32(1)) * v
    assert linearity_threshold(shifted, gdq, h, None, None)[0, 0] == v


def test_row_blocks_do_not_change_the_level(monkeypatch):
    """The twin prepares coefficients in row blocks; tiny blocks give the same level."""
    x = random_level_inputs(np.random.default_rng(_fresh_seed()), (24, 32))
    h = saturation_headroom(x["data"], x["groupdq"], x["pixeldq"], x["threshold"], x["threshold_dq"])
    whole = linearity_threshold(x["lin_data"], x["groupdq"], h, x["lin"], x["lin_dq"])
    monkeypatch.setattr(host_linearity, "_BLOCK_PIXELS", 70)  # 2 rows of 32, last block partial
    blocked = linearity_threshold(x["lin_data"], x["groupdq"], h, x["lin"], x["lin_dq"])
    np.testing.assert_array_equal(blocked, whole)


def test_bad_coefficients_are_refused():
    data = np.zeros((2, 1, 1), np.float32)
    gdq = np.zeros((2, 1, 1), np.uint8)
    h = np.zeros((1, 1), np.float32)
    with pytest.raises(ValueError, match="at least 2 coefficients"):
        linearity_threshold(data, gdq, h, np.ones((1, 1, 1), np.float32), np.zeros((1, 1), np.uint32))
    with pytest.raises(ValueError, match="lin_dq"):
        linearity_threshold(data, gdq, h, np.ones((2, 1, 1), np.float32), None)
