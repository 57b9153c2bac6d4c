"""Seamless textures for transformer families: the latents roll on a torus between denoising steps.

A UNet tiles when its convolutions pad circularly (seamless.py); a transformer has no padded convolutions: every
token attends to every other, but the positions it is told (RoPE or learnt embeddings) have two ends, and so has
the image. Rolling the latents by a random offset after every step moves those ends over the picture: each step
denoises a different cut of the torus, so no place stays an edge for long and the cut of the last steps is
blended by the steps before. The last step rolls the latents back by the sum of all offsets, so the composition a
seed gives keeps its place. The VAE still pads circularly (seamless.py) for the decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.diffusion.latent_grid import roll

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


@dataclass
class LatentRoll:
    """Rolls ``latents`` after every step; ``grid``: packed families' token rows and columns, else None."""

    wrap_x: bool
    wrap_y: bool
    total_steps: int
    seed: int
    grid: tuple[int, int] | None = None
    _offset: list[int] = field(default_factory=lambda: [0, 0])
    _rng: np.random.Generator | None = None

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        latents = tensors["latents"]
        rows, columns = self.grid if latents.ndim == 3 and self.grid else latents.shape[-2:]
        if step + 1 >= self.total_steps:  # back to where the seed put the picture, for the decode
            dy, dx = -self._offset[0], -self._offset[1]
        else:
            rng = self._rng if self._rng is not None else np.random.default_rng(self.seed)
            self._rng = rng
            dy = int(rng.integers(rows)) if self.wrap_y else 0
            dx = int(rng.integers(columns)) if self.wrap_x else 0
        self._offset = [(self._offset[0] + dy) % rows, (self._offset[1] + dx) % columns]
        if dy or dx:
            tensors["latents"] = roll(latents, dy, dx, self.grid)
        return tensors


def chained(*callbacks: StepCallback | None) -> StepCallback:
    """One ``callback_on_step_end`` running ``callbacks`` in order, each seeing the tensors the last returned."""
    active = [c for c in callbacks if c is not None]

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        for callback in active:
            tensors = callback(pipe, step, timestep, tensors)
        return tensors

    return on_step_end
