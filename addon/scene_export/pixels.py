"""Image datablocks <-> numpy arrays for job inputs (Blender's fast foreach_get path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ...contract.tasks import MAX_MAP_SIZE


class ImageDataError(ValueError):
    """An image that cannot be used; the message says why and what to do."""


def colorspace_of(image: bpy.types.Image) -> str:
    """How the values from ``image.pixels`` are encoded: float buffers hold scene-linear
    values; byte buffers hold the file's values, display-encoded when the image is sRGB."""
    if image.is_float:
        return "linear"
    return "srgb" if image.colorspace_settings.name == "sRGB" else "linear"


def pixels(image: bpy.types.Image, need_colour: bool = False) -> np.ndarray:
    """H x W x C float32 with row 0 at the top (Blender stores the bottom row first)."""
    width, height = image.size
    if width == 0 or height == 0:
        where = f" ({bpy.path.abspath(image.filepath)})" if image.filepath else ""
        raise ImageDataError(f"image '{image.name}' has no pixels: its file is missing or unreadable{where}")
    if max(width, height) > MAX_MAP_SIZE:
        raise ImageDataError(f"image '{image.name}' is {width}x{height}; the limit is {MAX_MAP_SIZE} pixels a side")
    channels = image.channels
    if need_colour and channels < 3:
        raise ImageDataError(f"image '{image.name}' has {channels} channel(s); a colour (RGB) image is needed")
    buffer = np.empty(width * height * channels, dtype=np.float32)
    stored: Any = image.pixels  # a bpy_prop_array, typed as float by the stubs
    stored.foreach_get(buffer)
    return buffer.reshape(height, width, channels)[::-1]


def save_npy(image: bpy.types.Image, path: Path, need_colour: bool = False) -> str:
    """Write the pixels for the backend; returns their colour encoding ("srgb" or "linear")."""
    np.save(path, np.ascontiguousarray(pixels(image, need_colour)))
    return colorspace_of(image)
