"""Per-job schedulers on the tiny SD 1.5 and SDXL pipelines (CPU, float32, 64 px, 4 steps).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_schedulers.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

from backend import models
from backend.diffusion.schedulers import job_scheduler, make_scheduler
from backend.models import ModelError, PipelineCache
from contract import messages
from contract.tasks.options import SCHEDULER_DEFAULTS, SCHEDULERS

# torchsde warns about float rounding at the ends of its Brownian interval; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Should have")


@pytest.fixture(scope="module")
def sd15(tiny_models: Any, cache: PipelineCache) -> Any:
    return cache.text_to_image(models.load_registry(tiny_models).resolve("text_to_image"))


def generate(pipe: Any, seed: int = 7, **kwargs: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pipe("a wooden crate", num_inference_steps=4, width=64, height=64, generator=generator,
                      output_type="np", **kwargs)
    return np.asarray(result.images[0], dtype=np.float32)


def run_with(pipe: Any, name: str, family: str = "sd15", seed: int = 7) -> tuple[np.ndarray, Any]:
    with job_scheduler([pipe], name, family, seed=seed) as (scheduler,):
        assert pipe.scheduler is scheduler
        return generate(pipe, seed), scheduler


def test_every_scheduler_runs_and_they_differ(sd15: Any) -> None:
    images = {}
    for name in SCHEDULERS:
        image, scheduler = run_with(sd15, name)
        assert image.shape == (64, 64, 3) and np.isfinite(image).all(), name
        images[name] = image
        if name == "model":
            assert type(scheduler) is type(sd15.scheduler) and scheduler is not sd15.scheduler
    # "model" is the tiny model's own Euler: the same sampler as "euler"; every other pair differs.
    assert np.array_equal(images["model"], images["euler"])
    names = [n for n in SCHEDULERS if n != "model"]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(images[a] - images[b]).max() > 1e-6, f"{a} and {b} gave the same image"


@pytest.mark.parametrize("name", ["euler_a", "dpmpp_sde_karras", "dpmpp_2m_karras"])
def test_same_scheduler_and_seed_is_deterministic(sd15: Any, name: str) -> None:
    first, _ = run_with(sd15, name, seed=11)
    torch.manual_seed(12345)  # the global generator must not matter (the SDE's noise tree is seeded)
    second, _ = run_with(sd15, name, seed=11)
    third, _ = run_with(sd15, name, seed=12)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, third)


def test_empty_name_is_the_family_default(sd15: Any) -> None:
    with job_scheduler([sd15], "", "sd15") as (scheduler,):
        assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
        assert SCHEDULER_DEFAULTS["sd15"] == "dpmpp_2m_karras"
        assert scheduler.config.use_karras_sigmas and scheduler.config.algorithm_type == "dpmsolver++"
        assert scheduler.config.solver_order == 2


def test_cached_pipeline_gets_its_own_scheduler_back(sd15: Any) -> None:
    original, config, entry = sd15.scheduler, dict(sd15.scheduler.config), sd15.config["scheduler"]
    with job_scheduler([sd15, sd15], "unipc", "sd15") as (a, b):
        assert a is b  # one pipeline listed twice: swapped once
        assert type(sd15.scheduler).__name__ == "UniPCMultistepScheduler"
    assert sd15.scheduler is original and dict(sd15.scheduler.config) == config
    assert sd15.config["scheduler"] == entry
    with pytest.raises(RuntimeError, match="cancelled inside"):
        with job_scheduler([sd15], "ddim", "sd15"):
            assert type(sd15.scheduler).__name__ == "DDIMScheduler"
            raise RuntimeError("cancelled inside the job")
    assert sd15.scheduler is original and dict(sd15.scheduler.config) == config
    assert sd15.config["scheduler"] == entry


def test_two_pipelines_get_separate_fresh_schedulers(sd15: Any) -> None:
    from diffusers import StableDiffusionPipeline

    other: Any = StableDiffusionPipeline(**sd15.components)  # shares the models and the scheduler object
    original = sd15.scheduler
    with job_scheduler([sd15, other], "euler_a", "sd15") as (a, b):
        assert a is not b and sd15.scheduler is a and other.scheduler is b
    assert sd15.scheduler is original and other.scheduler is original


def test_unknown_scheduler_is_invalid_params_and_changes_nothing(sd15: Any) -> None:
    original = sd15.scheduler
    with pytest.raises(ModelError) as caught:
        with job_scheduler([sd15], "karras_magic", "sd15"):
            pytest.fail("the block must not run")
    assert caught.value.code == messages.INVALID_PARAMS
    assert "karras_magic" in caught.value.message
    for name in SCHEDULERS:
        assert name in caught.value.hint
    assert sd15.scheduler is original


def test_training_schedule_is_kept() -> None:
    config = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.001,
              "beta_end": 0.02, "beta_schedule": "scaled_linear", "prediction_type": "v_prediction",
              "timestep_spacing": "trailing", "steps_offset": 1, "use_karras_sigmas": True}
    for name in SCHEDULERS:
        scheduler = make_scheduler(name, "sd15", config)
        for key in ("beta_start", "beta_end", "beta_schedule", "prediction_type", "timestep_spacing"):
            if key in scheduler.config:
                assert scheduler.config[key] == config[key], (name, key)
        assert scheduler.config.prediction_type == "v_prediction", name
    assert not make_scheduler("euler", "sd15", config).config.use_karras_sigmas  # plain Euler is asked for
    assert make_scheduler("model", "sd15", config).config.use_karras_sigmas  # as the model ships
    ddim = make_scheduler("ddim", "sd15", config)
    assert not ddim.config.clip_sample and not ddim.config.set_alpha_to_one  # latents are never clipped
    assert make_scheduler("ddim", "sd15", {**config, "clip_sample": True}).config.clip_sample  # the model's own
    assert make_scheduler("pndm", "sd15", config).config.skip_prk_steps
    assert make_scheduler("", "marigold", config).config.use_karras_sigmas  # no family default: the model's


def test_sdxl_with_a_scheduler(tiny_models: Any) -> None:
    cache = PipelineCache("cpu", torch.float32)  # its own: loading SDXL would drop the module's SD 1.5
    pipe = cache.text_to_image(models.load_registry(tiny_models).models["sdxl-tiny"])
    original = pipe.scheduler
    image, scheduler = run_with(pipe, "dpmpp_2m_karras", "sdxl")
    plain = generate(pipe)
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert np.isfinite(image).all() and not np.array_equal(image, plain)
    assert pipe.scheduler is original
