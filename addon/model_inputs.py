"""Model options' files into a job folder: LoRAs hard-linked (copied where links fail), the reference image's
pixels as Blender holds them (packed, generated and painted images work like files on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bpy

from .jobs import service
from .model_options import REFERENCE_INPUT
from .scene_export import pixels

if TYPE_CHECKING:
    from .model_options import OptionFiles


def write(job_dir: Path, files: OptionFiles) -> None:
    """OSError when a file cannot be placed, ValueError for a reference image without usable pixels."""
    service.place_inputs(job_dir, list(files.loras))
    if files.reference:
        image = bpy.data.images.get(files.reference)
        if image is None:
            raise ValueError(f"the reference image '{files.reference}' is gone: choose it again")
        (job_dir / REFERENCE_INPUT).parent.mkdir(parents=True, exist_ok=True)
        pixels.save_npy(image, job_dir / REFERENCE_INPUT, need_colour=False)
