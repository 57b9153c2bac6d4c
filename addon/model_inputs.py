"""Model options' files into a job folder: LoRAs hard-linked (copied where links fail) and the reference image
written as an 8-bit PNG from its pixels, so packed, generated and painted images work like files on disk."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import bpy

from .jobs import service
from .model_options import REFERENCE_INPUT

if TYPE_CHECKING:
    import numpy as np

    from .model_options import OptionFiles


def write(job_dir: Path, files: OptionFiles) -> None:
    """OSError when a file cannot be placed, ValueError for a reference image without usable pixels."""
    service.place_inputs(job_dir, list(files.loras))
    if files.reference:
        image = bpy.data.images.get(files.reference)
        if image is None:
            raise ValueError(f"the reference image '{files.reference}' is gone: choose it again")
        write_image_png(image, job_dir / REFERENCE_INPUT)


def write_image_png(image: bpy.types.Image, path: Path) -> None:
    """``image`` as an sRGB PNG (RGB, or RGBA when it has alpha): float buffers are scene-linear and get the
    sRGB curve; byte buffers already hold the file's values."""
    import numpy as np

    from .scene_export import pixels

    values = pixels.pixels(image)
    alpha = values[:, :, 3:4] if values.shape[2] == 4 else None
    if values.shape[2] < 3:  # grey (and grey + alpha): the same value on R, G and B
        values = np.repeat(values[:, :, :1], 3, axis=2)
    rgb = values[:, :, :3]
    if image.is_float:
        rgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(np.maximum(rgb, 0.0031308), 1 / 2.4) - 0.055)
    channels = [rgb] if alpha is None else [rgb, alpha]
    data = np.clip(np.concatenate(channels, axis=2) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(data))


def encode_png(data: np.ndarray) -> bytes:
    """H x W x 3 or 4 uint8 (row 0 at the top) as PNG bytes: filter type 0 on every row, zlib level 6."""
    height, width, channels = data.shape
    colour_type = {3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + data[row].tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
