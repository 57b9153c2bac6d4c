"""Warnings for the handshake: a GPU is in the machine but the backend runs on the CPU.

The check lives in the backend because only it knows its torch build (``torch.version.cuda``,
``torch.version.hip``, ``torch.cuda.is_available()``), and it also covers remote servers, whose GPU the
add-on cannot see. The facts come in as a :class:`GpuFacts` so tests fake each case; :func:`probe`
gathers the real ones (torch is imported inside it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_DRIVER = re.compile(r"Driver Version:\s*([0-9][0-9.]*)")
_CUDA = re.compile(r"CUDA Version:\s*([0-9]+\.[0-9]+)")
SETUP_HINT = "run Setup Backend in the add-on preferences (Torch Build: Automatic or a CUDA build)"


@dataclass(frozen=True)
class GpuFacts:
    device: str  # the device the engine picked: "cuda", "mps", "cpu"
    requested: str  # the device preference: "auto" or an explicit one
    torch_version: str  # "2.13.0+cpu"
    cuda_build: str | None  # torch.version.cuda: None for a CPU or ROCm build
    hip_build: str | None  # torch.version.hip: set for a ROCm build
    cuda_available: bool
    nvidia_smi: str | None  # nvidia-smi's output, None when it is absent or failed


def warnings(facts: GpuFacts) -> list[str]:
    """What the artist should be told; empty when the backend uses the GPU or was asked for the CPU."""
    if facts.device != "cpu" or facts.requested == "cpu":
        return []
    driver = _DRIVER.search(facts.nvidia_smi) if facts.nvidia_smi else None
    if driver is None:
        return []
    limit = _CUDA.search(facts.nvidia_smi or "")
    gpu = f"an NVIDIA GPU (driver {driver.group(1)}" + (f", CUDA {limit.group(1)})" if limit else ")")
    if facts.cuda_build is None:
        kind = "a ROCm" if facts.hip_build else "a CPU-only"
        return [f"This machine has {gpu} but the backend's torch {facts.torch_version} is {kind} build: jobs run "
                f"on the CPU, many times slower; {SETUP_HINT}"]
    return [f"This machine has {gpu} but torch {facts.torch_version} (built for CUDA {facts.cuda_build}) cannot "
            f"use it: jobs run on the CPU. Update the NVIDIA driver, or {SETUP_HINT}"]


def _nvidia_smi(timeout: float = 5.0) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        run = subprocess.run([exe], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout if run.returncode == 0 else None


def probe(device: str, requested: str) -> GpuFacts:
    import torch

    nvidia = _nvidia_smi() if device == "cpu" and requested != "cpu" else None  # only asked when it matters
    return GpuFacts(device, requested, torch.__version__, torch.version.cuda, getattr(torch.version, "hip", None),
                    torch.cuda.is_available(), nvidia)


def handshake_warnings(device: str, requested: str) -> list[str]:
    """The real check for ``serve``: never fails the start (a probe that breaks is no warning)."""
    try:
        return warnings(probe(device, requested))
    except Exception:  # noqa: BLE001 - a warning is a courtesy; the backend starts regardless
        return []
