"""Applying a VRAM plan to the tiny SD 1.5 on CPU: tiling and slicing are set and the pipeline still
generates; offload modes need an accelerator, so on CPU no plan asks for them.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_memory_apply.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

from backend import models
from backend.diffusion.memory import VRAM_BUDGETS, apply_memory_plan, plan_memory
from backend.models import PipelineCache


def generate(pipe: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pipe("a stone wall", num_inference_steps=4, width=64, height=64,
                      generator=torch.Generator("cpu").manual_seed(3), output_type="np")
    return np.asarray(result.images[0], dtype=np.float32)


def sliced(pipe: Any) -> bool:
    from diffusers.models.attention_processor import SlicedAttnProcessor

    processors = pipe.unet.attn_processors.values()
    return bool(processors) and all(isinstance(p, SlicedAttnProcessor) for p in processors)


@pytest.fixture()
def sd15(tiny_models: Any) -> Any:
    # Its own cache: the plan changes the pipeline, which must not leak into other tests' cached one.
    return PipelineCache("cpu", torch.float32).text_to_image(models.load_registry(tiny_models).resolve("text_to_image"))


def test_tiling_and_slicing_on_cpu_still_generate(sd15: Any) -> None:
    plain = generate(sd15)
    assert not sd15.vae.use_tiling and not sliced(sd15)
    plan = plan_memory("6gb", "cpu", None)
    assert plan.vae_tiling and plan.attention_slicing and not plan.offloads
    pipe = apply_memory_plan(sd15, plan, "cpu")
    assert pipe is sd15 and pipe.device.type == "cpu"
    assert pipe.vae.use_tiling and sliced(pipe)
    image = generate(pipe)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    # 64 px is below the VAE's tile size and slicing computes the same attention: the same picture.
    np.testing.assert_allclose(image, plain, atol=1e-4)


def test_high_plan_changes_nothing(sd15: Any) -> None:
    pipe = apply_memory_plan(sd15, plan_memory("high", "cpu", None), "cpu")
    assert not pipe.vae.use_tiling and not sliced(pipe) and not getattr(pipe, "_all_hooks", None)


@pytest.mark.parametrize("budget", VRAM_BUDGETS)
def test_no_plan_on_cpu_asks_for_offload(sd15: Any, budget: str) -> None:
    plan = plan_memory(budget, "cpu", 4 * 1024**3)
    assert not plan.cpu_offload and not plan.sequential_offload


def test_offload_plan_given_cpu_is_placed_with_to(sd15: Any) -> None:
    """A GPU plan handed a CPU device (a misconfiguration) must not install offload hooks."""
    plan = plan_memory("8gb", "cuda", None)
    assert plan.cpu_offload
    pipe = apply_memory_plan(sd15, plan, "cpu")
    assert pipe.device.type == "cpu" and not getattr(pipe, "_all_hooks", None)
    assert pipe.vae.use_tiling


def test_a_bare_controlnet_is_moved_with_to(tiny_models: Any) -> None:
    from diffusers import ControlNetModel

    spec = models.load_registry(tiny_models).resolve("controlnet_depth")
    controlnet: Any = ControlNetModel.from_pretrained(models.locate(spec), local_files_only=True)
    moved: list[str] = []
    real_to = controlnet.to

    def recording_to(device: str) -> Any:
        moved.append(device)
        return real_to(device)

    controlnet.to = recording_to
    placed: Any = apply_memory_plan(controlnet, plan_memory("6gb", "cpu", None), "cpu")
    assert placed is controlnet and moved == ["cpu"]
    assert placed.device.type == "cpu"
