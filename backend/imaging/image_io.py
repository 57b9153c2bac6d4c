"""Image files at the edges of the backend: 8-bit sRGB PNG in and out, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from contract.jobfolder import temp_path_for


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with rounding (not truncation, which darkens by half a step)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike[str], image: np.ndarray, scale: int = 1) -> Path:
    """Write an H x W x C float image in [0, 1] (already display-encoded) as PNG, atomically.
    ``scale`` enlarges with nearest neighbour (previews are latent-sized)."""
    path = Path(path)
    pixels = to_uint8(image)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        Image.fromarray(pixels).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def is_greyscale(path: str | os.PathLike[str]) -> bool:
    """True for single-channel files (Pillow's grey modes), which read_image would widen to RGB."""
    with Image.open(path) as img:
        return img.mode in GREY_MODES


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Any Pillow-readable file -> H x W x C float32 in [0, 1]."""
    with Image.open(path) as img:
        img.load()
        mode = "RGBA" if "A" in img.getbands() else "RGB"
        return np.asarray(img.convert(mode), dtype=np.float32) / 255.0
