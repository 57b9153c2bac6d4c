"""The per-step callback every diffusers task shares: progress, preview PNGs and cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend.imaging.image_io import write_png
from backend.preview import latents_to_rgb
from backend.tasks.context import JobContext

PREVIEW_SIZE = 128  # longest side of a preview PNG, in pixels

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


def step_callback(ctx: JobContext, family: str, total: int, preview_every: int,
                  prefix: str = "previews/step", offset: int = 0) -> StepCallback:
    """For ``callback_on_step_end``: report step ``offset + done`` of ``total``, write a latent
    preview every ``preview_every`` steps, and raise JobCancelled at the next step after a cancel
    (which also skips decoding)."""

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        done = offset + step + 1
        preview = None
        if preview_every and (done % preview_every == 0 or done == total):
            latents = tensors["latents"][0].float().cpu().numpy()
            scale = max(1, PREVIEW_SIZE // max(latents.shape[1:]))
            preview = write_png(ctx.output(f"{prefix}-{done:04d}.png"), latents_to_rgb(latents, family), scale=scale)
        ctx.progress(done, max(total, done), preview)  # img2img runs about steps * strength steps
        ctx.check_cancelled()
        return tensors

    return on_step_end
