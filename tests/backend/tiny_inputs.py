"""Inputs the tiny-pipeline tests of the transformer families share: a generator, a control image, a start image
and an inpaint mask, all at the tiny models' 64 x 64."""

from __future__ import annotations

import numpy as np
import torch

SIZE = 64


def seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def ramp(flip: bool = False) -> np.ndarray:
    """A control image: a horizontal ramp (or its mirror) with a little noise, 1 x H x W x 3 in [0, 1]."""
    x = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)[::-1 if flip else 1]
    noise = np.random.default_rng(0).random((SIZE, SIZE, 3), dtype=np.float32) * 0.1
    return np.clip(np.broadcast_to(x[None, :, None], (SIZE, SIZE, 3)) * 0.9 + noise, 0.0, 1.0)[None]


def init_image() -> np.ndarray:
    return np.random.default_rng(42).random((1, SIZE, SIZE, 3), dtype=np.float32)


def mask() -> np.ndarray:
    """Inpaint the right half: 1 x H x W x 1, 1 = repaint."""
    m = np.zeros((1, SIZE, SIZE, 1), dtype=np.float32)
    m[:, :, SIZE // 2:] = 1.0
    return m
