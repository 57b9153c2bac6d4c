"""The handshake's device warnings: the backend's check on faked facts, and the field on the wire."""

from __future__ import annotations

import json

import pytest

from backend.diffusion import gpu_check
from contract import messages

SMI = "| NVIDIA-SMI 560.94   Driver Version: 560.94   CUDA Version: 12.6 |\n|   0  NVIDIA GeForce RTX 4070  WDDM |"


def facts(**changes) -> gpu_check.GpuFacts:
    base = {"device": "cpu", "requested": "auto", "torch_version": "2.13.0+cpu", "cuda_build": None,
            "hip_build": None, "cuda_available": False, "nvidia_smi": SMI}
    return gpu_check.GpuFacts(**{**base, **changes})


def test_a_cpu_only_torch_beside_an_nvidia_gpu_is_reported():
    (line,) = gpu_check.warnings(facts())
    assert "NVIDIA GPU (driver 560.94, CUDA 12.6)" in line and "CPU-only build" in line
    assert "2.13.0+cpu" in line and "Setup Backend" in line


def test_a_cuda_torch_that_cannot_reach_the_gpu_blames_the_driver():
    (line,) = gpu_check.warnings(facts(torch_version="2.13.0+cu130", cuda_build="13.0"))
    assert "built for CUDA 13.0" in line and "Update the NVIDIA driver" in line


def test_a_rocm_torch_on_an_nvidia_machine_says_rocm():
    (line,) = gpu_check.warnings(facts(torch_version="2.13.0+rocm7.2", hip_build="7.2"))
    assert "ROCm build" in line


@pytest.mark.parametrize("changes", [
    {"device": "cuda", "cuda_build": "13.0", "cuda_available": True},  # the GPU is used
    {"requested": "cpu"},  # the artist asked for the CPU
    {"nvidia_smi": None},  # no NVIDIA driver: nothing is wasted
    {"nvidia_smi": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."},
    {"device": "mps"},
])
def test_no_warning_when_nothing_is_wasted(changes):
    assert gpu_check.warnings(facts(**changes)) == []


def test_the_real_probe_never_fails_the_start():
    assert isinstance(gpu_check.handshake_warnings("cpu", "auto"), list)
    assert gpu_check.handshake_warnings("cpu", "cpu") == []


def test_warnings_travel_in_the_handshake():
    hello = messages.Handshake(messages.PROTOCOL_VERSION, "0.1.0", "cpu", "fp32", {"torch": "2.13.0+cpu"}, 7,
                               ["an NVIDIA GPU goes unused"])
    assert messages.decode(messages.encode(hello)) == hello


def test_a_handshake_without_warnings_still_decodes():
    old = {"type": "handshake", "protocol": 2, "backend_version": "0.1.0", "device": "cpu", "dtype": "fp32",
           "versions": {}, "pid": 3}
    decoded = messages.decode(json.dumps(old))
    assert isinstance(decoded, messages.Handshake) and decoded.warnings == []


def test_ill_typed_warnings_are_a_protocol_error():
    bad = {"type": "handshake", "protocol": 2, "backend_version": "0.1.0", "device": "cpu", "dtype": "fp32",
           "warnings": "not a list"}
    with pytest.raises(messages.ProtocolError, match="warnings"):
        messages.decode(json.dumps(bad))
