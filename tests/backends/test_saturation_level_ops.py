"""DeviceBackend.saturation_headroom / linearity_threshold against CpuBackend's, on the
emulated device: resident (device arrays in, a device array out, nothing downloaded),
from host arrays uploaded whole, and streamed in row blocks; always the same float32 bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.backend import CpuBackend
from gpucal.backends.device.backend import DeviceBackend
from gpucal.backends.emulated import DeviceArray, EmulatedRuntime
from tests.kernels.test_saturation_level_kernel import random_level_inputs

SHAPE = (40, 64)


def _inputs(ncoeff: int = 4) -> tuple[int, dict]:
    seed = int(np.random.default_rng().integers(2**31))  # fresh data every run
    return seed, random_level_inputs(np.random.default_rng(seed), SHAPE, ncoeff)


def _sat_args(x):
    return x["data"], x["groupdq"], x["pixeldq"], x["threshold"], x["threshold_dq"]


def _cpu(x, with_lin=True):
    cpu = CpuBackend()
    h = cpu.saturation_headroom(*_sat_args(x))
    lin = x["lin"] if with_lin else None
    return h, cpu.linearity_threshold(x["lin_data"], x["groupdq"], h, lin, x["lin_dq"] if with_lin else None)


@pytest.mark.parametrize("with_lin", [True, False], ids=["polynomial", "no_polynomial"])
def test_resident_results_stay_on_the_device_and_match_the_cpu(with_lin):
    seed, x = _inputs()
    want_h, want_l = _cpu(x, with_lin)
    rt = EmulatedRuntime()
    backend = DeviceBackend(rt, name="emulated")
    ramp = {k: rt.upload(x[k], "input") for k in ("data", "groupdq", "pixeldq", "lin_data")}
    rt.transfers.clear()
    h = backend.saturation_headroom(ramp["data"], ramp["groupdq"], ramp["pixeldq"], x["threshold"],
                                    x["threshold_dq"])  # fmt: skip
    lin = x["lin"] if with_lin else None
    level = backend.linearity_threshold(ramp["lin_data"], ramp["groupdq"], h, lin, x["lin_dq"] if with_lin else None)
    assert isinstance(h, DeviceArray) and isinstance(level, DeviceArray)
    assert rt.transfers.select("d2h") == [] and rt.transfers.select(prefix="implicit") == []
    # only the references go up (once each, through the cache)
    labels = sorted(t.label for t in rt.transfers.select("h2d"))
    expected = ["reference:saturation", "reference:saturation_dq"]
    if with_lin:
        expected += ["reference:linearity", "reference:linearity_dq"]
    assert labels == sorted(expected)
    np.testing.assert_array_equal(rt.download(h, "result"), want_h, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(rt.download(level, "result"), want_l, err_msg=f"seed {seed}")
    assert {"saturation_headroom", "linearity_threshold"} <= set(backend.device_times())


def test_host_inputs_uploaded_whole_match_the_cpu():
    seed, x = _inputs(ncoeff=6)
    want_h, want_l = _cpu(x)
    rt = EmulatedRuntime()
    backend = DeviceBackend(rt, name="emulated")
    h = backend.saturation_headroom(*_sat_args(x))
    level = backend.linearity_threshold(x["lin_data"], x["groupdq"], h, x["lin"], x["lin_dq"])
    assert not rt.transfers.select("h2d", prefix="block:")
    np.testing.assert_array_equal(rt.download(h, "result"), want_h, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(rt.download(level, "result"), want_l, err_msg=f"seed {seed}")


@pytest.mark.parametrize("with_lin", [True, False], ids=["polynomial", "no_polynomial"])
def test_row_blocks_match_the_cpu(with_lin):
    """A device too small for the frame: both operations stream row blocks and give the CPU's bits."""
    seed, x = _inputs()
    want_h, want_l = _cpu(x, with_lin)
    rt = EmulatedRuntime(memory_budget=96 * 1024)
    backend = DeviceBackend(rt, name="emulated")
    h = backend.saturation_headroom(*_sat_args(x))
    assert isinstance(h, np.ndarray)
    lin = x["lin"] if with_lin else None
    level = backend.linearity_threshold(x["lin_data"], x["groupdq"], h, lin, x["lin_dq"] if with_lin else None)
    assert isinstance(level, np.ndarray)
    for label in ("block:saturation_headroom", "block:linearity_threshold"):
        ups = [t for t in rt.transfers.select("h2d") if t.label == label]
        assert len(ups) >= 3 * 4, f"{label}: several blocks of 4-5 arrays expected, got {len(ups)} uploads"
    np.testing.assert_array_equal(h, want_h, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(level, want_l, err_msg=f"seed {seed}")


def test_streamed_exposure_uses_row_blocks_even_when_the_frame_fits():
    """Host arrays of a streamed exposure go through the row-block path (here one block)."""
    seed, x = _inputs()
    want_h, want_l = _cpu(x)
    rt = EmulatedRuntime()
    backend = DeviceBackend(rt, name="emulated")
    backend.streamed = True  # as dq_init decides for an exposure too big for the device
    h = backend.saturation_headroom(*_sat_args(x))
    level = backend.linearity_threshold(x["lin_data"], x["groupdq"], h, x["lin"], x["lin_dq"])
    assert rt.transfers.select("h2d", prefix="block:")
    np.testing.assert_array_equal(h, want_h, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(level, want_l, err_msg=f"seed {seed}")


def test_wrong_inputs_are_refused_as_on_the_cpu():
    _, x = _inputs()
    backend = DeviceBackend(EmulatedRuntime(), name="emulated")
    h = CpuBackend().saturation_headroom(*_sat_args(x))
    with pytest.raises(ValueError, match="at least 2 coefficients"):
        backend.linearity_threshold(x["lin_data"], x["groupdq"], h, x["lin"][:1], x["lin_dq"])
    with pytest.raises(ValueError, match="shape"):
        backend.saturation_headroom(x["data"], x["groupdq"], x["pixeldq"], x["threshold"][:-1], x["threshold_dq"])
