"""The benchmark suite (``bench/suite.py``, ``gpucal bench``): a smoke run's JSON and PNG, the
NVML sampler without NVML and with a stand-in, and the CLI wiring.  Structure, not speed.

romancal cannot calibrate a sub-frame, so at the smoke run's size the JSON must say why it
was left out; without a driver, NVML must be recorded as unavailable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from gpucal.cli import gpucal_main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "suite.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def nvml_module():
    sys.path.insert(0, str(ROOT))
    try:
        from bench import _nvml
    finally:
        sys.path.remove(str(ROOT))
    return _nvml


def test_suite_smoke(tmp_path, nvml_module):
    pytest.importorskip("matplotlib")
    out = tmp_path / "suite.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "64x256", "--nresultants", "6", "--seed", "7",
                           "--backends", "cpu", "--batch-sizes", "1,2", "--out", str(out),
                           "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["schema"] == "gpucal-bench/1"
    assert {"hostname", "cpu_model", "cores", "ram_gib", "os"} <= set(result["machine"])
    for name in ("python", "gpucal", "numpy", "romancal", "asdf", "cupy-cuda13x", "cuda_runtime", "nvidia-ml-py"):
        assert name in result["software"], name
    assert result["device"]["name"] == "none" or result["device"]["driver"]
    exposure = result["exposure"]
    assert exposure["shape"] == [6, 64, 256] and exposure["distinct_seeds"] == [7, 8]
    assert len(exposure["read_pattern"]) == 6
    assert result["options"]["backends"] == ["cpu"] and result["warmup"]["cpu"]["status"] == "ok"

    single = result["single"]["cpu"]["summary"]
    assert single["status"] == "ok" and single["backend"] == "cpu"
    assert {"dq_init", "saturation", "refpix", "linearity", "rampfit", "photom", "flatfield"} <= set(single["steps"])
    assert single["run_s"] > 0 and single["peak_rss_mib"] > 0 and "device_ms" in single
    nvml_here = nvml_module.NvmlSampler()
    with nvml_here:
        pass
    if not nvml_here.available:  # no driver here: recorded as unavailable, with the reason
        record = result["single"]["cpu"]["repeats"][0]["nvml"]
        assert record["available"] is False and record["reason"]
        assert single["nvml"]["available"] is False

    roman = result["romancal"]
    assert roman["available"] is False and ("4096x4096" in roman["reason"] or "not importable" in roman["reason"])
    assert "ratios" not in result

    floor = result["io_floor"]
    assert floor["status"] == "ok" and floor["output_bytes"] > 0 and floor["input_bytes"] > 0
    for key in ("read_s", "write_s", "floor_s", "read_cold_s", "write_cold_s", "floor_cold_s", "files_per_hour",
                "read_unverified_s"):
        assert floor[key] > 0, key
    # the floor's read is the verified one; the check's cost is reported beside it
    assert floor["checksum_s"] == pytest.approx(floor["read_s"] - floor["read_unverified_s"], abs=2e-3)

    batch = result["batch"]["cpu"]
    assert set(batch) == {"1", "2"}
    for n, run in batch.items():
        assert run["status"] == "ok" and run["files"] == int(n) and len(run["per_file_s"]) == int(n)
        assert run["files_per_hour"] > 0 and run["seconds_per_file"] > 0
    outputs = batch["2"]["outputs"]  # every product (cal and wcs), distinct names: none overwritten
    assert len(set(outputs)) == len(outputs) == 4 and sum(name.endswith("_cal.asdf") for name in outputs) == 2

    goals = result["goals"]
    assert goals["reported_not_asserted"] is True
    assert goals["end_to_end_over_io_floor"]["goal_max"] == 1.3
    assert goals["files_per_hour"]["goal_min"] == 3000
    cpu_rate = goals["files_per_hour"]["backends"]["cpu"]
    assert cpu_rate["applies"] is False and cpu_rate["best"] > 0 and "marginal_files_per_hour" in cpu_rate
    assert goals["end_to_end_over_io_floor"]["backends"]["cpu"]["single_file"]["ratio"] > 0

    png = out.with_suffix(".png")
    assert result["plot"] == png.name and png.read_bytes()[:8] == PNG_MAGIC
    assert "verifies ASDF block checksums" in proc.stdout
    assert "I/O floor" in proc.stdout and "files/h" in proc.stdout and "rampfit" in proc.stdout


# ---------------------------------------------------------------------------- NVML sampler
def _raiser(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_sampler_without_the_nvml_library(nvml_module):
    pynvml = pytest.importorskip("pynvml")
    missing = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)  # the NVMLError_LibraryNotFound subclass
    fake = SimpleNamespace(nvmlInit=_raiser(missing), nvmlShutdown=_raiser(missing))
    with nvml_module.NvmlSampler(0.01, nvml=fake) as sampler:
        time.sleep(0.05)
    summary = sampler.summary()
    assert summary["available"] is False and "LibraryNotFound" in summary["reason"]


def test_sampler_without_nvidia_ml_py(nvml_module, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with nvml_module.NvmlSampler(0.01) as sampler:
        pass
    summary = sampler.summary()
    assert summary == {"available": False, "reason": summary["reason"]} and "not importable" in summary["reason"]


class _FakeNvml:
    """Enough of pynvml for the sampler: memory grows 100 MiB a sample; optionally fails later."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=(1000 + 100 * self.calls) * 2**20)

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("GPU is lost")
        return SimpleNamespace(gpu=50 + self.calls % 2 * 10)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 200_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return 1_000_000.0 + 5_000.0 * self.calls  # mJ


def test_sampler_with_a_stand_in(nvml_module):
    fake = _FakeNvml()
    with nvml_module.NvmlSampler(0.01, index=0, nvml=fake) as sampler:
        time.sleep(0.2)
    summary = sampler.summary()
    assert summary["available"] is True and summary["device"] == "Fake GPU" and summary["error"] is None
    assert summary["samples"] >= 3 and fake.shut
    assert 50 <= summary["utilization_gpu_pct"]["mean"] <= 60 and summary["utilization_gpu_pct"]["max"] <= 60
    assert summary["memory_used_mib"]["baseline"] == 1000
    assert summary["memory_peak_above_baseline_mib"] == pytest.approx(100 * summary["samples"], abs=1)
    assert summary["power_w"] == {"mean": 200.0, "max": 200.0}
    assert summary["energy_source"] == "counter" and summary["energy_j"] > 0
    assert len(summary["series"]["t_s"]) == summary["samples"]


def test_sampler_survives_a_failing_device(nvml_module):
    with nvml_module.NvmlSampler(0.01, index=0, nvml=_FakeNvml(fail_after=2)) as sampler:
        time.sleep(0.1)
    summary = sampler.summary()
    assert summary["available"] is True and summary["samples"] == 2 and "GPU is lost" in summary["error"]


# ---------------------------------------------------------------------------- CLI
def test_gpucal_bench_help_lists_the_suite_options():
    result = CliRunner().invoke(gpucal_main, ["bench", "-h"])
    assert result.exit_code == 0, result.output
    for option in ("--size", "--backends", "--batch-sizes", "--romancal", "--no-romancal", "--repeat", "--out",
                   "--no-plot", "--workdir"):
        assert option in result.output, option
    assert "gpucal bench" in result.output


def test_gpucal_bench_without_a_source_checkout(monkeypatch, tmp_path):
    import gpucal.cli

    monkeypatch.setattr(gpucal.cli, "__file__", str(tmp_path / "site-packages" / "gpucal" / "cli.py"))
    result = CliRunner().invoke(gpucal_main, ["bench", "--no-plot"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "source checkout" in lines[0]


def test_device_bandwidth_share_of_the_copy_bandwidth():
    from bench._suite_report import GOAL_CHAIN_FRACTION, device_bandwidth

    summary = {"device_ms": {"linearity": 10.0, "ramp_fit": 30.0}, "device_bytes": {"linearity": 2e9, "ramp_fit": 4e9},
               "copy_bandwidth_gbs": {"d2d_gbs": 300.0}}
    out = device_bandwidth(summary)
    assert out["steps_gbs"] == {"linearity": 200.0, "ramp_fit": pytest.approx(133.33, abs=0.01)}
    assert out["chain_gbs"] == 150.0 and out["chain_fraction_of_copy"] == 0.5
    assert out["goal_min_fraction"] == GOAL_CHAIN_FRACTION
    assert device_bandwidth({"device_ms": None}) is None
