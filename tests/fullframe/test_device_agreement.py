"""Device backend against the CPU backend on the full-frame demo (issue 5, item 5).

DQ flags identical except pixels within float rounding of a threshold (counted; at most
1e-5 of the pixels) and slopes within 1e-3 sigma, for both ramp-fit algorithms:

* on the emulated device (the device backend's whole code path, the exact ``.cu``
  kernels built for the CPU, device refpix through NumPy's FFT): always run;
* on the CuPy backend where a GPU is usable (skipped with the probe's reason otherwise).

The CPU products come from the shared ``gpucal_cal`` fixture (one run per algorithm).
"""

from __future__ import annotations

import gc

import pytest

from tests.backends._compare import agreement

pytestmark = pytest.mark.slow

MAX_DQ_FRACTION = 1e-5
MAX_PULL = 1e-3


@pytest.mark.parametrize("algorithm", ["ols_cas22", "likely"])
def test_emulated_device_agrees_with_cpu(full_demo, full_crds_env, gpucal_cal, algorithm, monkeypatch, tmp_path):
    from gpucal.backends.device.backend import DeviceBackend
    from gpucal.backends.emulated import EmulatedRuntime
    from gpucal.pipeline.exposure import ExposurePipeline

    cpu_cal = gpucal_cal(algorithm)
    for key, value in full_crds_env.items():
        monkeypatch.setenv(key, value)
    pipe = ExposurePipeline.from_values({"output_dir": str(tmp_path), "steps": {"rampfit": {"algorithm": algorithm}}})
    backend = DeviceBackend(EmulatedRuntime(), name="emulated")
    pipe.backend = backend
    image = pipe.run(str(full_demo.uncal))
    ag = agreement(image, cpu_cal)
    del image, pipe
    gc.collect()
    print(algorithm, ag)
    assert ag.dq_differ_fraction <= MAX_DQ_FRACTION, str(ag)
    assert ag.max_pull <= MAX_PULL, str(ag)
    ups = backend.rt.transfers.select("h2d", "ramp")
    assert ups[0].label == "ramp" and ups[0].nbytes == 8 * 4096 * 4096 * 2
    assert all(t.label.startswith("product:") for t in backend.rt.transfers.select("d2h"))


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["ols_cas22", "likely"])
def test_gpu_agrees_with_cpu(gpucal_cal, algorithm):
    from gpucal.backends.select import probe_gpu

    ok, reason = probe_gpu()
    if not ok:
        pytest.skip(f"GPU backend unavailable: {reason}")
    ag = agreement(gpucal_cal(algorithm, "--backend=gpu"), gpucal_cal(algorithm))
    print(algorithm, ag)
    assert ag.dq_differ_fraction <= MAX_DQ_FRACTION, str(ag)
    assert ag.max_pull <= MAX_PULL, str(ag)
