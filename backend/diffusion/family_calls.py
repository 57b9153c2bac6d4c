"""A job's prompt and guidance as the family's pipeline takes them, and the per-step callback every family shares.

SD 1.5, SDXL, SD 3.5 and Z-Image guide with ``guidance_scale`` and a negative prompt (classifier-free guidance).
Qwen-Image guides with ``true_cfg_scale`` and needs a negative prompt for it to act (one space when the artist
gave none, as its pipeline documents). FLUX.1 [dev] takes ``guidance_scale`` as an input of its
guidance-distilled transformer (schnell and FLUX.2 klein ignore it), and these have no negative prompt: one given
is recorded as unused rather than silently doubling the cost with true CFG.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from backend.diffusion.latent_grid import grid_shape
from backend.diffusion.latent_roll import LatentRoll, chained
from backend.diffusion.steps import step_callback
from backend.models.family_traits import TRAITS
from backend.tasks.context import JobContext


@dataclass(frozen=True)
class Prompting:
    prompt: str
    negative_prompt: str
    guidance: float


def prompt_kwargs(pipe: Any, family: str, prompting: Prompting) -> dict[str, Any]:
    """prompt, negative prompt and guidance under the names ``pipe`` takes for ``family``."""
    style = TRAITS[family].guidance if family in TRAITS else "cfg"
    kwargs: dict[str, Any] = {"prompt": prompting.prompt}
    if style == "true_cfg":
        kwargs.update(true_cfg_scale=prompting.guidance, negative_prompt=prompting.negative_prompt or " ")
    elif style == "distilled":
        kwargs["guidance_scale"] = prompting.guidance
    else:
        kwargs.update(guidance_scale=prompting.guidance, negative_prompt=prompting.negative_prompt or None)
    accepted = inspect.signature(pipe.__call__).parameters
    return {key: value for key, value in kwargs.items() if key in accepted}


def negative_prompt_unused(family: str, negative_prompt: str) -> bool:
    """Whether the family's pipelines have no use for the artist's negative prompt (recorded in job.json)."""
    return bool(negative_prompt) and family in TRAITS and TRAITS[family].guidance == "distilled"


def token_grid(family: str, width: int, height: int) -> tuple[int, int] | None:
    """Rows and columns of a packing family's latent tokens (FLUX.1, FLUX.2 klein, Qwen-Image); None otherwise."""
    if family in TRAITS and TRAITS[family].packed:
        return grid_shape(height, width, TRAITS[family].size_multiple)
    return None


def step_kwargs(ctx: JobContext, family: str, total: int, preview_every: int, size: tuple[int, int],
                seamless: tuple[bool, bool] = (False, False), seed: int = 0, **progress: Any) -> dict[str, Any]:
    """callback_on_step_end and its tensor inputs: progress, previews and cancel (steps.py), and for a seamless
    texture on a transformer family the latent roll (latent_roll.py). ``size``: (width, height) in pixels."""
    grid = token_grid(family, *size)
    callback = step_callback(ctx, family, total, preview_every, grid=grid, **progress)
    if any(seamless) and family in TRAITS and TRAITS[family].denoiser == "transformer":
        callback = chained(LatentRoll(seamless[0], seamless[1], total, seed, grid), callback)
    return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["latents"]}
