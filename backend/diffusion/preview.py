"""Cheap step previews: a linear map from the 4 latent channels to RGB.

Decoding with the VAE at every few steps would cost as much as a denoising step; a 4x3
matrix fitted to the VAE's decoder (published approximations for each family) gives a
recognisable picture for nothing. Tiny random models reuse the SD 1.5 map: the picture is
meaningless but the path is the same.
"""

from __future__ import annotations

import numpy as np

# Rows: latent channels; columns: R, G, B. Figures as commonly used for latent previews.
_FACTORS = {
    "sd15": np.array([
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ], dtype=np.float32),
    "sdxl": np.array([
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ], dtype=np.float32),
}
_BIAS = {"sd15": np.zeros(3, np.float32), "sdxl": np.array([0.1084, -0.0175, -0.0011], np.float32)}


def latents_to_rgb(latents: np.ndarray, family: str) -> np.ndarray:
    """(C, h, w) latents -> (h, w, 3) float32 in [0, 1] (display-referred, like the VAE's output).

    4-channel latents (SD 1.5, SDXL) go through the family's fitted map. The transformer families' 16-, 32- and
    64-channel latents have no map here: their first three channels, each stretched over its own range, show the
    layout forming (not its colours)."""
    if latents.ndim != 3 or latents.shape[0] < 3:
        raise ValueError(f"expected latents shaped (C, h, w) with C >= 3, got {latents.shape}")
    if latents.shape[0] != 4:
        rgb = latents[:3].astype(np.float32).transpose(1, 2, 0)
        low, high = rgb.min(axis=(0, 1)), rgb.max(axis=(0, 1))
        return np.clip((rgb - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)
    factors = _FACTORS.get(family, _FACTORS["sd15"])
    bias = _BIAS.get(family, _BIAS["sd15"])
    rgb = np.einsum("chw,cr->hwr", latents.astype(np.float32), factors) + bias
    return np.clip((rgb + 1.0) * 0.5, 0.0, 1.0)
