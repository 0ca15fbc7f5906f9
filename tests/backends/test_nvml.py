"""NVML in ``gpucal info`` and the benchmark sampler (issue 10 §2).

NVML is a third-party library and this machine has no driver, so a stand-in module plays
the driver: two GPUs whose NVML order differs from CUDA's (CUDA device 0 is NVML device 1),
and a MIG-like device where utilisation raises pynvml's own ``NVMLError_NotSupported``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from gpucal.backends.info import describe, nvml_devices
from gpucal.backends.nvml import cuda_pci_bus_id, handle_for_bus_id, normalize_bus_id

pynvml = pytest.importorskip("pynvml")

CUDA_BUS = "0000:86:00.0"  # CUDA's spelling of CUDA device 0's bus id


class TwoGpus:
    """NVML device 0 at 3B (an A100), device 1 at 86 (an H100 in MIG mode: no utilisation)."""

    def __init__(self, accept_cuda_spelling: bool = True):
        self.accept = accept_cuda_spelling
        self.shut = False
        self.devices = [
            {"bus": "00000000:3B:00.0", "name": "NVIDIA A100", "used": 1 << 30, "mig": False},
            {"bus": "00000000:86:00.0", "name": b"NVIDIA H100", "used": 3 << 30, "mig": True},
        ]

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlSystemGetDriverVersion(self):
        return "580.1"

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        if not isinstance(bus, bytes):  # nvidia-ml-py hands it to ctypes' c_char_p
            raise TypeError("bytes or integer address expected instead of str instance")
        if not self.accept:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        for i, d in enumerate(self.devices):
            if normalize_bus_id(d["bus"]) == normalize_bus_id(bus):
                return i
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetName(self, h):
        return self.devices[h]["name"]

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self.devices[h]["bus"].encode())

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=80 << 30, used=self.devices[h]["used"])

    def nvmlDeviceGetUtilizationRates(self, h):
        if self.devices[h]["mig"]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=37)

    def nvmlDeviceGetPowerUsage(self, h):
        return 300_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def test_bus_id_spellings_agree():
    assert normalize_bus_id("00000000:3B:00.0") == normalize_bus_id(b"0000:3b:00.0") == "0000:3b:00.0"
    assert normalize_bus_id("3b:00.0") == "0000:3b:00.0"


def test_no_cuda_device_here_gives_a_reason():
    bus, why = cuda_pci_bus_id(0)
    if bus is not None:
        pytest.skip("a CUDA device is visible here")
    assert "no PCI bus id" in why


@pytest.mark.parametrize("accept", [True, False])
def test_handle_found_by_bus_id_not_ordinal(accept):
    nvml = TwoGpus(accept_cuda_spelling=accept)
    assert handle_for_bus_id(nvml, CUDA_BUS) == 1  # CUDA device 0 is NVML device 1
    with pytest.raises(LookupError, match="no device at PCI bus id"):
        handle_for_bus_id(nvml, "0000:01:00.0")


def test_info_survives_unsupported_queries_and_marks_the_cuda_device():
    nvml = TwoGpus()
    devices, driver = nvml_devices(nvml, cuda_bus_id=CUDA_BUS)
    assert driver == "driver 580.1" and nvml.shut
    a100, h100 = devices
    assert not a100["cuda_device_0"] and a100["utilization_gpu_pct"] == 37 and a100["unsupported"] == []
    assert h100["cuda_device_0"] and h100["name"] == "NVIDIA H100" and h100["pci_bus_id"] == "0000:86:00.0"
    assert h100["utilization_gpu_pct"] is None and h100["unsupported"] == ["utilization (NotSupported)"]
    assert h100["memory_used_gib"] == pytest.approx(3.0)
    text = describe(nvml, cuda_bus_id=CUDA_BUS)
    line = next(line for line in text.splitlines() if "H100" in line)
    assert "utilization n/a" in line and "<- CUDA device 0" in line and "NotSupported" in line
    assert "37% busy" in text


def test_sampler_follows_the_cuda_device_and_survives_mig():
    from bench import _nvml

    nvml = TwoGpus(accept_cuda_spelling=False)
    with _nvml.NvmlSampler(0.01, nvml=nvml, bus_id=CUDA_BUS) as sampler:
        time.sleep(0.1)
    summary = sampler.summary()
    assert summary["available"] is True and summary["device"] == "NVIDIA H100"
    assert summary["pci_bus_id"] == "0000:86:00.0" and summary["error"] is None
    assert summary["unsupported"] == {"utilization": "NotSupported"}
    assert summary["samples"] >= 3 and summary["utilization_gpu_pct"] is None
    assert summary["power_w"] == {"mean": 300.0, "max": 300.0} and summary["memory_used_mib"]["peak"] == 3072
    assert summary["energy_source"] == "power samples"


def test_sampler_without_a_cuda_device_says_which_is_unknown():
    from bench import _nvml

    if _nvml.cuda_device_bus_id()[0] is not None:
        pytest.skip("a CUDA device is visible here")
    with _nvml.NvmlSampler(0.01, nvml=TwoGpus()) as sampler:
        pass
    summary = sampler.summary()
    assert summary["available"] is False and "which NVML device CUDA uses is unknown" in summary["reason"]
