"""Per-job samplers: the artist's scheduler name -> a diffusers scheduler built on the model's training schedule.

Every scheduler is built ``from_config`` of the model's own scheduler config, so what the model was trained
with (betas, prediction type, timestep spacing, steps offset) is kept and only the sampling method changes.
A job gets fresh scheduler objects (they hold per-run state such as step counters and the SDE's noise
tree) and the cached pipelines get their own objects back afterwards, also when the job fails or is cancelled.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from backend.models.errors import ModelError
from contract import messages
from contract.tasks.options import SCHEDULER_DEFAULTS, SCHEDULERS

# name -> (diffusers class, settings that define the sampler: always applied).
_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpmpp_sde_karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
    "ddim": ("DDIMScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}
# Settings used only when the model's config does not state them: what SD pipelines ship these classes with.
# (DDIM and PNDM default to clipping samples to [-1, 1] and to the PRK warm-up, both wrong for latents.)
_FALLBACKS: dict[str, dict[str, Any]] = {
    "ddim": {"clip_sample": False, "set_alpha_to_one": False},
    "pndm": {"skip_prk_steps": True, "set_alpha_to_one": False},
    "lcm": {"clip_sample": False},
}
# Sigma spacings are exclusive in diffusers: one named sampler turns the others off.
_OTHER_SIGMAS = {"use_exponential_sigmas": False, "use_beta_sigmas": False}


def resolve_name(name: str, family: str) -> str:
    """The scheduler a job runs: ``name``, or for "" the family's default ("model" for families without one)."""
    if not name:
        return SCHEDULER_DEFAULTS.get(family, "model")
    if name not in SCHEDULERS:
        raise ModelError(messages.INVALID_PARAMS, f"Unknown scheduler '{name}'.",
                         f"Choose one of: {', '.join(SCHEDULERS)} (or leave it empty for the model's default).")
    return name


def make_scheduler(name: str, family: str, model_config: Any, seed: int | None = None) -> Any:
    """A new scheduler ``name`` (see contract SCHEDULERS) on the training schedule of ``model_config``.

    ``model_config`` is the model's scheduler config (``pipe.scheduler.config``) or the scheduler itself.
    ``seed`` fixes the Brownian noise of the SDE sampler (dpmpp_sde_karras), which otherwise draws its seed
    from torch's global generator, not from the job's generator.
    """
    import diffusers

    source = getattr(model_config, "config", model_config)
    if not isinstance(source, Mapping):
        raise TypeError(f"expected a scheduler or its config, got {type(model_config).__name__}")
    config = dict(source)
    resolved = resolve_name(name, family)
    settings: dict[str, Any]
    if resolved == "model":
        cls_name, settings = str(config.get("_class_name", "")), {}
    else:
        cls_name, settings = _SAMPLERS[resolved]
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise ModelError(messages.MODEL_MISSING, f"The model's scheduler class '{cls_name}' is not in diffusers "
                         f"{diffusers.__version__}.", "Choose a named scheduler instead of 'As the model ships'.")
    accepted = inspect.signature(cls.__init__).parameters
    changes = {k: v for k, v in _FALLBACKS.get(resolved, {}).items() if k not in config and k in accepted}
    if settings.get("use_karras_sigmas"):
        settings = {**settings, **_OTHER_SIGMAS}
    changes.update({k: v for k, v in settings.items() if k in accepted})
    if seed is not None and "noise_sampler_seed" in accepted:
        changes["noise_sampler_seed"] = seed
    # Keys of other classes (steps_offset on a DPM solver ...) are ignored by from_config, as intended.
    return cls.from_config(config, **changes)


@contextmanager
def job_scheduler(pipes: list[Any], name: str, family: str, seed: int | None = None) -> Iterator[list[Any]]:
    """Give every pipeline in ``pipes`` a fresh scheduler ``name`` for the block; yields them in order.

    The original scheduler objects (and the pipelines' configs naming their class) are put back afterwards,
    whatever happens in the block: a cached pipeline never keeps a job's sampler.
    """
    unique = list({id(pipe): pipe for pipe in pipes}.values())  # one pipeline listed twice: one swap
    originals = [pipe.scheduler for pipe in unique]
    fresh = [make_scheduler(name, family, original.config, seed) for original in originals]  # all or none
    swapped: list[tuple[Any, Any]] = []
    try:
        for pipe, original, scheduler in zip(unique, originals, fresh, strict=True):
            pipe.scheduler = scheduler
            swapped.append((pipe, original))
        by_pipe = {id(pipe): scheduler for pipe, scheduler in zip(unique, fresh, strict=True)}
        yield [by_pipe[id(pipe)] for pipe in pipes]
    finally:
        for pipe, original in reversed(swapped):
            pipe.scheduler = original
