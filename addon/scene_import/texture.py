"""Bring a generated texture into the scene: an Image datablock and a material on meshes.

Works from object names, never from stored datablock references: the result arrives on a
later timer tick, after which an undo step may have replaced every ID in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import bpy

from ...contract.tasks import TaskOutputs, TextureOutputs, TextureParams
from ..jobs.supervisor import Job
from .materials import PROVENANCE_KEY, assign, load_image, name_from_prompt, texture_material


@dataclass(frozen=True)
class TextureApplied:
    image: str
    material: str | None
    objects: list[str]
    maps: dict[str, str] = field(default_factory=dict)  # PBR map -> image name, when derived
    seed: int = 0
    job: str = ""  # the job folder's name
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        where = f" on {', '.join(self.objects)}" if self.objects else ""
        return f"Texture '{self.image}'{where} (seed {self.seed}, {self.job})"


def apply_texture(image_path: Path, prompt: str, object_names: list[str],
                  with_material: bool = True, provenance: dict[str, Any] | None = None) -> TextureApplied:
    name = name_from_prompt(prompt)
    image = load_image(image_path, name)
    if provenance:
        image[PROVENANCE_KEY] = provenance  # travels with the image into exported EXR headers
    objects = [bpy.data.objects[n] for n in object_names
               if n in bpy.data.objects and bpy.data.objects[n].type == "MESH"]
    if not (with_material and objects):
        return TextureApplied(image.name, None, [])
    material = texture_material(image.name, image)
    for obj in objects:
        assign(material, obj)
    return TextureApplied(image.name, material.name, [o.name for o in objects])


def applier(prompt: str, object_names: list[str], with_material: bool,
            height_mode: str = "BUMP") -> Callable[[Job, TaskOutputs], TextureApplied]:
    """The on_result callback of a texture job. With PBR maps among the outputs the material is a full PBR one."""

    def on_result(job: Job, outputs: TaskOutputs) -> TextureApplied:
        from . import pbr

        assert isinstance(outputs, TextureOutputs) and isinstance(job.params, TextureParams)
        provenance = {"prompt": prompt, "seed": str(outputs.seed), "model": outputs.model,
                      "steps": str(job.params.steps)}
        applied = apply_texture(job.job_dir / outputs.image, prompt, object_names,
                                with_material and not outputs.maps, provenance)
        if outputs.maps:
            targets = object_names if with_material else []
            maps = pbr.apply_maps(job.job_dir, outputs.maps, applied.image, targets, height_mode, provenance)
            applied = TextureApplied(applied.image, maps.material, maps.objects, maps.images)
        return replace(applied, seed=outputs.seed, job=job.job_dir.name)

    return on_result
