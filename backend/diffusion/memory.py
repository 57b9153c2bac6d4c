"""VRAM budget modes: how pipelines are placed on the device so a job fits the card.

One plan per backend (chosen at start from ``--vram-budget`` / the add-on's VRAM Budget preference):

- ``high``: everything on the GPU, nothing traded for memory (cards of 16 GB and more).
- ``12gb``: VAE tiling, so decoding a large image does not spike memory; attention stays on PyTorch's
  memory-efficient SDPA (slicing it would only slow it down).
- ``8gb``: diffusers' model CPU offload (one whole model on the GPU at a time) + VAE tiling.
- ``6gb``: sequential CPU offload (layer by layer: slowest, least memory) + VAE tiling + attention slicing.
- ``auto``: by the card's size: >= 16 GB high, >= 10 GB 12gb, >= 7 GB 8gb, else 6gb.

On CPU and MPS there is no offload (the models already sit in the memory the device computes from), so a
plan there keeps only the mode's VAE tiling and attention slicing, which lower peak memory anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from backend.errors import TaskError
from contract import messages

log = logging.getLogger(__name__)

VRAM_BUDGETS = ("auto", "high", "12gb", "8gb", "6gb")
BUDGET_LABELS = {"high": "High", "12gb": "12 GB", "8gb": "8 GB", "6gb": "6 GB"}
GIB = 1024**3
# auto: the smallest card (GiB) each mode is chosen for, largest first.
AUTO_THRESHOLDS = (("high", 16), ("12gb", 10), ("8gb", 7))
_LOWER = {"high": "12gb", "12gb": "8gb", "8gb": "6gb"}
# (cpu_offload, sequential_offload, vae_tiling, attention_slicing) per mode on a GPU.
_MODES = {
    "high": (False, False, False, False),
    "12gb": (False, False, True, False),
    "8gb": (True, False, True, False),
    "6gb": (False, True, True, True),
}
_WHAT = {"high": "all on the GPU", "12gb": "VAE tiling", "8gb": "model offload, VAE tiling",
         "6gb": "sequential offload, VAE tiling, attention slicing"}


@dataclass(frozen=True)
class MemoryPlan:
    budget: str  # the mode in effect: one of VRAM_BUDGETS other than "auto" (auto is resolved)
    mode_label: str  # for the handshake and the add-on, e.g. "8 GB (model offload, VAE tiling)"
    cpu_offload: bool  # enable_model_cpu_offload
    sequential_offload: bool  # enable_sequential_cpu_offload
    vae_tiling: bool
    attention_slicing: bool
    reason: str  # why this mode: asked for, or what auto saw
    device: str = ""  # the device it was planned for ("cuda", "mps", "cpu")

    @property
    def offloads(self) -> bool:
        return self.cpu_offload or self.sequential_offload


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GB"


def plan_memory(budget: str, device: str, total_vram_bytes: int | None) -> MemoryPlan:
    """The plan for ``budget`` on ``device`` (``total_vram_bytes``: the card's memory, for auto)."""
    if budget not in VRAM_BUDGETS:
        raise TaskError(messages.INVALID_PARAMS, f"Unknown VRAM budget '{budget}'.",
                        f"Choose one of: {', '.join(VRAM_BUDGETS)}.")
    kind = device.split(":")[0]
    gpu = kind not in ("cpu", "mps")
    if budget != "auto":
        mode, reason = budget, f"VRAM Budget set to {BUDGET_LABELS[budget]}"
    elif not gpu:
        mode, reason = "high", f"auto on {kind.upper()}: no card memory to plan for"
    elif total_vram_bytes is None:
        mode, reason = "high", "auto: the card's memory is unknown; planning for a large card"
    else:
        mode = next((m for m, gib in AUTO_THRESHOLDS if total_vram_bytes >= gib * GIB), "6gb")
        reason = f"auto: the card has {_gib(total_vram_bytes)}"
    cpu_offload, sequential, tiling, slicing = _MODES[mode]
    if gpu:
        label = f"{BUDGET_LABELS[mode]} ({_WHAT[mode]})"
    else:
        cpu_offload = sequential = False
        kept = [what for what, on in (("VAE tiling", tiling), ("attention slicing", slicing)) if on]
        label = f"{BUDGET_LABELS[mode]} on {kind.upper()} (no offload{''.join(', ' + k for k in kept)})"
    if budget == "auto":
        label = f"Auto: {label}"
    return MemoryPlan(mode, label, cpu_offload, sequential, tiling, slicing, reason, kind)


def total_vram(device: str) -> int | None:
    """The accelerator's total memory in bytes (CUDA only; None for CPU, MPS's shared memory, or unknown)."""
    if not device.startswith("cuda"):
        return None
    import torch

    try:
        index = torch.device(device).index
        return int(torch.cuda.get_device_properties(index if index is not None else 0).total_memory)
    except (RuntimeError, AssertionError, ValueError):  # no driver, a bad index
        return None


def apply_memory_plan(pipeline: Any, plan: MemoryPlan, device: str) -> Any:
    """Place ``pipeline`` on ``device`` the way ``plan`` says (use instead of ``pipeline.to(device)``).

    Offload hooks move each model to the device when it runs (diffusers + accelerate), so an offloaded
    pipeline stays on the CPU here. A bare model (a ControlNetModel) has no offload of its own: it is moved
    with ``.to``; a ControlNet pipeline built from offloaded parts should get this plan again. On CUDA the speed
    settings (backend/diffusion/speedups.py) are applied first.
    """
    offload = plan.offloads and device.split(":")[0] not in ("cpu", "mps")
    _speed_up(pipeline, plan, device, offload)
    if offload and plan.sequential_offload and hasattr(pipeline, "enable_sequential_cpu_offload"):
        pipeline.enable_sequential_cpu_offload(device=device)
    elif offload and hasattr(pipeline, "enable_model_cpu_offload"):
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline = pipeline.to(device)
    vae = getattr(pipeline, "vae", None)
    if plan.vae_tiling and vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    # Sliced attention is the UNet pipelines' (diffusers' sliced processors); transformer families keep theirs.
    if plan.attention_slicing and getattr(pipeline, "unet", None) is not None and hasattr(
            pipeline, "enable_attention_slicing"):
        pipeline.enable_attention_slicing()
    return pipeline


def _speed_up(pipeline: Any, plan: MemoryPlan, device: str, offload: bool) -> None:
    """The CUDA speed settings (backend/diffusion/speedups.py; nothing off CUDA), before placing: offload hooks
    keep copies of the weights as they are then. What was applied is logged and kept on the pipeline."""
    from backend.diffusion.speedups import APPLIED_ATTR, Speedups, applied_speedups, apply_speedups

    applied = apply_speedups(pipeline, device, getattr(pipeline, "dtype", None), Speedups.from_env(),
                             sequential_offload=offload and plan.sequential_offload,
                             memory_saving=plan.offloads or plan.vae_tiling or plan.attention_slicing)
    if applied:
        log.info("speedups on %s for %s: %s", device, type(pipeline).__name__, ", ".join(applied))
        setattr(pipeline, APPLIED_ATTR, [*applied_speedups(pipeline), *applied])


def oom_hint(plan: MemoryPlan) -> str:
    """What to lower after running out of memory in ``plan`` (no final full stop: callers append to it)."""
    pixels = "lower the width and height, or generate fewer images at once"
    if plan.budget == "6gb":
        return f"{pixels} (VRAM Budget is already at its lowest, 6 GB)"
    if plan.device in ("cpu", "mps"):
        # Offload does nothing here; the 6 GB mode's tiling and slicing are what lower peak memory.
        return (f"{pixels}, or set VRAM Budget to 6 GB in the add-on preferences (--vram-budget 6gb) for VAE "
                f"tiling and attention slicing; close other programs to free {plan.device.upper()} memory")
    lower = _LOWER[plan.budget]
    return (f"set VRAM Budget to {BUDGET_LABELS[lower]} in the add-on preferences (--vram-budget {lower}), "
            f"or {pixels}")
