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
    """(4, h, w) latents -> (h, w, 3) float32 in [0, 1] (display-referred, like the VAE's output)."""
    if latents.ndim != 3 or latents.shape[0] != 4:
        raise ValueError(f"expected latents shaped (4, h, w), got {latents.shape}")
    factors = _FACTORS.get(family, _FACTORS["sd15"])
    bias = _BIAS.get(family, _BIAS["sd15"])
    rgb = np.einsum("chw,cr->hwr", latents.astype(np.float32), factors) + bias
    return np.clip((rgb + 1.0) * 0.5, 0.0, 1.0)
