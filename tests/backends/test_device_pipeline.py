"""The device backend through the whole pipeline: residency, references, row blocks, agreement.

Each test runs on the emulated device (the exact ``.cu`` kernels on the CPU, NumPy arrays
that refuse to mix with host arrays, every copy logged) and, where a GPU is usable, on the
CuPy backend with the same body; the GPU case skips with the probe's reason otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gpucal.backends.device.backend import DeviceBackend, DeviceMemoryError, ReferenceCache, chain_bytes_per_pixel
from gpucal.backends.emulated import DeviceArray, EmulatedRuntime
from gpucal.backends.select import probe_gpu
from gpucal.pipeline.exposure import ExposurePipeline
from tests.backends._compare import agreement

PRODUCT_ARRAYS = ("data", "dq", "err", "var_poisson", "chisq", "dumo", "amp33", "border_ref_pix_left",
                  "border_ref_pix_right", "border_ref_pix_top", "border_ref_pix_bottom")


def _gpu_backend():
    ok, reason = probe_gpu()
    if not ok:
        pytest.skip(f"GPU backend unavailable: {reason}")
    from gpucal.backends.cupy_backend import CupyBackend

    return CupyBackend()


@pytest.fixture(params=["emulated", "gpu"])
def device(request):
    """A fresh device backend: the emulated one, or the CuPy one on a GPU."""
    if request.param == "gpu":
        return _gpu_backend()
    return DeviceBackend(EmulatedRuntime(), name="emulated")


def run_pipeline(backend, uncal: Path, out: Path, algorithm: str | None = None):
    """roman_elp on ``backend``; ``algorithm`` None: the default ramp fit (gls)."""
    out.mkdir(parents=True, exist_ok=True)
    steps = {} if algorithm is None else {"rampfit": {"algorithm": algorithm}}
    pipe = ExposurePipeline.from_values({"output_dir": str(out), "save_results": True, "steps": steps})
    pipe.backend = backend
    return pipe.run_model(str(uncal))


@pytest.mark.parametrize("algorithm", ["gls", "ols_cas22", "likely"])
def test_device_agrees_with_cpu(device, crds_env, uncal_copy, tmp_path, algorithm):
    """Issue 5 item 5 on the small demo: DQ identical, slopes within 1e-3 sigma."""
    from cpu_fallback import CpuBackend

    cpu = run_pipeline(CpuBackend(), uncal_copy, tmp_path / "cpu", algorithm)
    dev = run_pipeline(device, uncal_copy, tmp_path / "dev", algorithm)
    ag = agreement(dev, cpu)
    print(ag)
    assert not ag.violations(), str(ag)  # the GPU/CPU contract (README)
    # a 14k-pixel frame: 1e-5 of it is less than one pixel, so every pixel agrees here
    assert ag.dq_differ == 0 and ag.over == 0, str(ag)
    assert dev.meta.gpucal["backend"] == device.name
    assert dev.meta.gpucal["device"] == device.device_name
    # the products came back: host arrays only in the model that is written
    for name in PRODUCT_ARRAYS:
        assert type(dev[name]) is np.ndarray, name
    written = tmp_path / "dev" / uncal_copy.name.replace("_uncal", "_cal")
    assert agreement(written, tmp_path / "cpu" / written.name).dq_differ == 0


def test_ramp_goes_up_once_references_stay_products_come_back(device, crds_env, uncal_copy, tmp_path):
    """Issue 5 item 2: one upload of the uint16 ramp, no round trip between steps, only
    products downloaded, and references served from the device cache on the next exposure."""
    import roman_datamodels.datamodels as rdm

    log = device.rt.transfers
    log.clear()
    run_pipeline(device, uncal_copy, tmp_path / "first")
    with rdm.open(uncal_copy) as raw:
        ramp_bytes = raw.data.size * 2

    records = list(log)
    ups = [t for t in records if t.direction == "h2d"]
    downs = [t for t in records if t.direction == "d2h"]
    assert [t.nbytes for t in ups if t.label == "ramp"] == [ramp_bytes]
    assert all(t.label.startswith(("ramp", "reference:", "constants")) for t in ups), {t.label for t in ups}
    # per-exposure tables (read-pattern constants, refpix's per-sample constants, INL):
    # small against the data, even on this 64x256 frame
    assert sum(t.nbytes for t in ups if t.label == "constants") < 0.5 * ramp_bytes
    # products, and a few explicit scalars the host must know mid-chain (jump's counts, the
    # fully-saturated decision); no implicit scalar reads
    assert all(t.label.startswith(("product:", "scalar:")) for t in downs), {t.label for t in downs}
    assert sum(t.nbytes for t in downs if t.label.startswith("scalar:")) <= 64
    products = [t for t in downs if t.label.startswith("product:")]
    assert len({t.label for t in products}) == len(products), "a product came back twice"
    # no product comes back before the last step has enqueued its work
    last_up = max(i for i, t in enumerate(records) if t.direction == "h2d")
    first_down = min(i for i, t in enumerate(records) if t.label.startswith("product:"))
    assert last_up < first_down
    traffic = device.device_bytes()  # what the bench divides by device time
    assert traffic["ramp_fit"] >= 4 * ramp_bytes and traffic["dq_init"] >= 2 * ramp_bytes  # float32 ramp out
    assert set(device.device_times()) >= set(traffic)
    ref_uploads = [t for t in ups if t.label.startswith("reference:")]
    assert len(ref_uploads) >= 10  # mask, saturation x2, refpix x3, linearity x3, gain, readnoise, dark, flat...
    assert len({t.label for t in ref_uploads}) == len(ref_uploads), "a reference went up twice"

    # a second exposure in the same process: the references are already on the device
    second = tmp_path / "second" / uncal_copy.name
    second.parent.mkdir()
    shutil.copy(uncal_copy, second)
    log.clear()
    hits = device.cache.hits
    run_pipeline(device, second, tmp_path / "second")
    assert not [t for t in log if t.label.startswith("reference:")]
    assert device.cache.hits - hits >= len(ref_uploads)
    assert [t.label for t in log if t.direction == "h2d" and not t.label.startswith("constants")] == [
        "ramp", "ramp:groupdq", "ramp:amp33"
    ]


def _budget(share: float) -> int:
    """A device memory budget that holds ``share`` of the small demo's resident working set."""
    nres, ny, nx = 6, 64, 256  # tests/conftest.py small_demo
    return int(share * chain_bytes_per_pixel(nres) * ny * nx / 0.8)


def test_small_device_memory_runs_row_blocks_with_identical_results(crds_env, uncal_copy, tmp_path):
    """Issue 5 item 3: the chain does not fit, so it runs over blocks of rows; same cal file."""
    resident = run_pipeline(DeviceBackend(EmulatedRuntime(), name="emulated"), uncal_copy, tmp_path / "resident")
    rt = EmulatedRuntime(memory_budget=_budget(0.75))  # refpix (whole channels) still fits
    streamed_backend = DeviceBackend(rt, name="emulated")
    streamed = run_pipeline(streamed_backend, uncal_copy, tmp_path / "streamed")
    assert streamed_backend.streamed
    blocks = {}
    for t in rt.transfers.select("h2d", "block:"):
        blocks[t.label] = blocks.get(t.label, 0) + 1
    # >= 2 blocks of each step's arrays (dq_init: ramp and mask; saturation: 5; linearity: 6; jump: 4)
    for step, narrays in (("dq_init", 2), ("saturation", 5), ("linearity", 6), ("jump", 4)):
        assert blocks.get(f"block:{step}", 0) >= 2 * narrays, (step, blocks)
    assert not rt.transfers.select("h2d", "ramp")  # no whole-frame upload
    for name in ("data", "dq", "err", "var_poisson", "chisq", "dumo", "amp33"):
        np.testing.assert_array_equal(np.asarray(streamed[name]), np.asarray(resident[name]), err_msg=name)


def test_tiny_device_memory_falls_back_to_host_refpix_and_still_agrees(crds_env, uncal_copy, tmp_path):
    """Below even refpix's need, refpix runs on the host: same flags, slopes within 1e-3 sigma."""
    from cpu_fallback import CpuBackend

    cpu = run_pipeline(CpuBackend(), uncal_copy, tmp_path / "cpu")
    rt = EmulatedRuntime(memory_budget=_budget(0.1))
    backend = DeviceBackend(rt, name="emulated")
    dev = run_pipeline(backend, uncal_copy, tmp_path / "dev")
    assert backend.streamed
    ag = agreement(dev, cpu)
    assert ag.dq_differ == 0 and ag.max_pull <= 1e-3, str(ag)


def test_reference_cache_is_bounded_least_recently_used_first(tmp_path):
    from gpucal.refs import Resolved, check_array

    rt = EmulatedRuntime()
    arrays = []
    for i in range(3):
        path = tmp_path / f"ref{i}.asdf"
        path.write_bytes(b"x" * (i + 1))
        arrays.append(check_array("flat", "data", np.full((10, 10), i, np.float32), (10, 10), np.float32,
                                  source=Resolved("flat", str(path), str(path))))
    cache = ReferenceCache(rt, limit=2 * 400)
    for a in arrays[:2]:
        cache.get(a, "x")
    cache.get(arrays[0], "x")  # refresh 0: 1 is now the least recently used
    cache.get(arrays[2], "x")  # evicts 1
    assert cache.nbytes <= cache.limit and len(cache) == 2
    before = len(rt.transfers)
    cache.get(arrays[0], "x")
    cache.get(arrays[2], "x")
    assert len(rt.transfers) == before  # both still on the device
    cache.get(arrays[1], "x")
    assert len(rt.transfers) == before + 1  # 1 had been evicted
    untagged = np.ones((10, 10), np.float32)
    cache.get(untagged, "x")
    cache.get(untagged, "x")
    assert len(rt.transfers) == before + 3  # arrays of unknown origin are never cached
    # a view of a reference keeps an identity of its own: the trimmed dark of dark_current
    assert cache.get(arrays[0][1:-1, 1:-1], "x").shape == (8, 8)


def test_device_out_of_memory_is_one_clear_error(crds_env, uncal_copy, tmp_path):
    class Exhausted(EmulatedRuntime):
        def upload(self, host, label, dtype=None):
            if label == "ramp":
                raise MemoryError("cudaErrorMemoryAllocation: out of memory")
            return super().upload(host, label, dtype)

    with pytest.raises(DeviceMemoryError) as info:
        run_pipeline(DeviceBackend(Exhausted(), name="emulated"), uncal_copy, tmp_path / "out")
    message = str(info.value)
    assert "out of device memory in dq_init" in message and "\n" not in message
    assert not list((tmp_path / "out").glob("*.asdf"))


def test_emulated_device_refuses_host_arrays_in_kernels():
    """The check that gives the residency tests their teeth."""
    from gpucal.backends.emulated import HostDeviceMixError

    rt = EmulatedRuntime()
    k = rt.function("uniform_slope", "uniform_slope")
    dev = rt.upload(np.ones((2, 8), np.float32), "x")
    with pytest.raises(HostDeviceMixError):
        k((1,), (256,), (dev, np.ones(2), np.int32(2), np.int32(8), rt.empty((8,), np.float64)))
    with rt.active(), pytest.raises(HostDeviceMixError):
        _ = dev + np.ones((2, 8), np.float32)
    with rt.active():
        assert isinstance(dev * 2, DeviceArray)


def test_contract_check_catches_nan_slopes_value_drift_and_too_few_pixels(crds_env, uncal_copy, tmp_path):
    """The agreement check has teeth: a device NaN where the CPU has a slope, an err off by
    more than 2 float16 ulps, and a product with too few comparable pixels each break it."""
    from cpu_fallback import CpuBackend
    from gpucal.dq import PixelFlag

    class Product(dict):
        __getattr__ = dict.__getitem__

    model = run_pipeline(CpuBackend(), uncal_copy, tmp_path / "cpu")
    names = ("data", "dq", "err", "var_poisson", "var_rnoise", "chisq", "dumo")
    cpu = Product({k: np.array(model[k]) for k in names if k in model})

    def altered():
        return Product({k: v.copy() for k, v in cpu.items()})

    assert not agreement(cpu, cpu).violations()
    good = np.argwhere((np.asarray(cpu.dq) & PixelFlag.DO_NOT_USE) == 0)
    y, x = (int(v) for v in good[len(good) // 2])

    nan_slope = altered()
    nan_slope.data[y, x] = np.nan
    ag = agreement(nan_slope, cpu)
    assert ag.nan_differ == 1 and ag.classes["nan:data"] == [(y, x)]
    assert any("NaN pattern" in v for v in ag.violations())

    drift = altered()
    drift.err[...] = (np.asarray(drift.err, np.float32) * np.float32(1.01)).astype(np.float16)
    assert any(v.startswith("err") for v in agreement(drift, cpu).violations())

    few = altered()
    few.dq[: few.dq.shape[0] // 5] |= np.uint32(PixelFlag.DO_NOT_USE)
    violations = agreement(few, cpu).violations()
    assert any("pixels compared" in v for v in violations) and any("DQ differs" in v for v in violations)
