"""ControlNet renders back in Blender: "Diffusion Render" and the conditioning images, shown
in the Image Editor; animation frames copied out as numbered files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy

from ...contract.tasks import RenderOutputs

RESULT_NAME = "Diffusion Render"


@dataclass(frozen=True)
class RenderApplied:
    image: str
    controls: list[str]
    files: list[str]
    seed: int = 0
    job: str = ""  # the job folder's name
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"'{self.image}' (seed {self.seed}, {self.job})"


def show_image(path: Path, name: str, colorspace: str = "sRGB") -> bpy.types.Image:
    """Load ``path`` into the image called ``name``, reusing the datablock so an Image Editor
    showing it keeps showing it; packed, so pruning job folders loses nothing."""
    image = bpy.data.images.get(name)
    if image is None:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = name
    else:
        if image.packed_file is not None:
            image.unpack(method="REMOVE")
        image.source = "FILE"
        image.filepath = str(path)
        image.reload()
    image.colorspace_settings.name = colorspace
    image.pack()
    return image


def display(image: bpy.types.Image) -> None:
    """Show ``image`` in the Image Editors that are not pinned to another image."""
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                space = area.spaces.active
                if not space.use_image_pin:
                    space.image = image


def apply_render(job_dir: Path, outputs: RenderOutputs) -> RenderApplied:
    image = show_image(job_dir / outputs.image, RESULT_NAME)
    controls = [show_image(job_dir / rel, f"Diffusion Control {kind}", "Non-Color").name
                for kind, rel in outputs.control_images.items()]
    display(image)
    return RenderApplied(image.name, controls, [], outputs.seed, job_dir.name)


def frame_files(folder: Path, frame: int) -> tuple[Path, Path]:
    return folder / f"render_{frame:04d}.png", folder / f"render_{frame:04d}.exr"
