"""Bring a generated texture into the scene: an Image datablock and a material on meshes.

Works from object names, never from stored datablock references: the result arrives on a
later timer tick, after which an undo step may have replaced every ID in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..backend import protocol
from .supervisor import Job

NAME_LIMIT = 60  # Blender names hold 63 bytes; leave room for ".001"
PROVENANCE_KEY = "scene_diffusion"  # custom property on images: prompt, seed, model, steps


@dataclass(frozen=True)
class TextureApplied:
    image: str
    material: str | None
    objects: list[str]
    maps: dict[str, str] = field(default_factory=dict)  # PBR map -> image name, when derived


def name_from_prompt(prompt: str) -> str:
    words = " ".join(prompt.split())
    return (words[:NAME_LIMIT].rstrip() or "Texture")


def load_image(path: Path, name: str) -> bpy.types.Image:
    """Load and pack the PNG, so the .blend keeps it when old job folders are pruned."""
    image = bpy.data.images.load(str(path), check_existing=False)
    image.name = name
    image.colorspace_settings.name = "sRGB"
    image.pack()
    return image


def texture_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """Principled BSDF with the image on Base Color (the default new material already has
    the BSDF wired to the output)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; 5.x materials always have node trees
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.location = (bsdf.location.x - 400, bsdf.location.y)
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def assign(material: bpy.types.Material, obj: bpy.types.Object) -> None:
    """Into the active slot, or a new slot when the object has none."""
    if obj.material_slots:
        obj.active_material = material
    else:
        obj.data.materials.append(material)


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
            height_mode: str = "BUMP") -> Callable[[Job, protocol.Result], None]:
    """The on_result callback of a texture job: records what it brought in on the job.
    With PBR maps among the outputs the material is a full PBR one instead."""

    def on_result(job: Job, result: protocol.Result) -> None:
        from . import pbr_material

        provenance = {"prompt": prompt, "seed": str(result.info.get("seed", "")),
                      "model": str(result.info.get("model", "")), "steps": str(job.params.get("steps", ""))}
        has_maps = "albedo" in result.outputs
        applied = apply_texture(job.job_dir / result.outputs["image"], prompt, object_names,
                                with_material and not has_maps, provenance)
        if has_maps:
            targets = object_names if with_material else []
            pbr = pbr_material.apply_maps(job.job_dir, result.outputs, applied.image, targets, height_mode, provenance)
            applied = TextureApplied(applied.image, pbr.material, pbr.objects, pbr.images)
        job.applied = applied

    return on_result
