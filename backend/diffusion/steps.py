"""Progress, preview PNGs and cancel at every denoising step, for every diffusers task."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from backend.diffusion.latent_grid import unpack
from backend.diffusion.preview import latents_to_rgb
from backend.imaging.image_io import write_png
from backend.tasks.context import JobContext

PREVIEW_SIZE = 128  # longest side of a preview PNG, in pixels

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


def step_callback(ctx: JobContext, family: str, total: int, preview_every: int,
                  prefix: str = "previews/step", offset: int = 0,
                  grid: tuple[int, int] | None = None) -> StepCallback:
    """For ``callback_on_step_end``: report step ``offset + done`` of ``total``, write a latent
    preview every ``preview_every`` steps, and raise JobCancelled at the next step after a cancel
    (which also skips decoding). ``grid``: the token rows and columns of a family that packs its latents
    (latent_grid.py)."""

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        done = offset + step + 1
        preview = None
        if preview_every and (done % preview_every == 0 or done == total):
            latents = tensors["latents"][:1].float()
            if latents.ndim == 3 and grid is not None:  # packed tokens: back to a (C, h, w) picture
                latents = unpack(latents, *grid)
            latents = latents[0].cpu().numpy()
            scale = max(1, PREVIEW_SIZE // max(latents.shape[1:]))
            preview = write_png(ctx.output(f"{prefix}-{done:04d}.png"), latents_to_rgb(latents, family), scale=scale)
        ctx.progress(done, max(total, done), preview)  # img2img runs about steps * strength steps
        ctx.check_cancelled()
        return tensors

    return on_step_end


@contextmanager
def forwards_reported(ctx: JobContext, module: torch.nn.Module, total: int, done: int = 0,
                      message: str = "") -> Iterator[list[int]]:
    """For pipelines without a step callback (Marigold, Shap-E): report each forward of ``module`` as a step
    ``done + n`` of ``total`` and raise JobCancelled before the next forward once the job is cancelled.
    Yields the count of steps so far (a one-item list)."""
    count = [done]

    def before_forward(_module: Any, _args: Any) -> None:
        ctx.check_cancelled()
        count[0] += 1
        ctx.progress(min(count[0], total), total, message=message)

    handle = module.register_forward_pre_hook(before_forward)
    try:
        yield count
    finally:
        handle.remove()
