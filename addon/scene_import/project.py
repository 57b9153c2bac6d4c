"""Projected textures back in the scene: one float image per object ("<object> Projected", packed),
read through an Image Texture node fed by a UV Map node into the Base Color of a Principled BSDF.

An object whose active material has a Principled BSDF keeps that material and gains the nodes
(re-runs reuse them); otherwise, or when a new material is asked for, it gets "<object> Projected".
Works from object names, never from stored datablock references (see texture_result.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ...contract.tasks import ProjectImageOutputs, ProjectTextureOutputs, ProjectTextureParams, TaskOutputs
from ..jobs.supervisor import Job
from .materials import NAME_LIMIT, PROVENANCE_KEY, assign, texture_material
from .render import show_image

SUFFIX = " Projected"
LINEAR = "Linear Rec.709"  # the EXR holds scene-linear RGBA
NODE_NAME = "Scene Diffusion Projection"  # our Image Texture node, found again on re-runs
UV_NODE_NAME = "Scene Diffusion Projection UV"


@dataclass(frozen=True)
class ProjectApplied:
    objects: list[str]
    images: list[str]
    materials: list[str]
    seen: dict[str, float] = field(default_factory=dict)  # object -> fraction of its UV texels some view saw
    views: list[str] = field(default_factory=list)  # generated view images (project_texture)
    warnings: list[str] = field(default_factory=list)
    seed: int | None = None  # project_texture
    job: str = ""  # the job folder's name

    def summary(self) -> str:
        seen = ", ".join(f"{name} {100 * self.seen.get(name, 0.0):.0f}% seen" for name in self.objects)
        seed = f"seed {self.seed}, " if self.seed is not None else ""
        return f"Projected onto {seen or 'no object'} ({seed}{self.job})"


def projected_name(object_name: str) -> str:
    return object_name[:NAME_LIMIT - len(SUFFIX)] + SUFFIX


def _principled(material: bpy.types.Material | None) -> Any:
    tree: Any = material.node_tree if material is not None else None
    if tree is None:
        return None
    bsdfs = [n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"]
    linked = [n for n in bsdfs if n.outputs["BSDF"].is_linked]  # the one that reaches the output, if any
    return (linked or bsdfs or [None])[0]


def wire_projection(material: bpy.types.Material, image: bpy.types.Image, uv_map: str) -> None:
    """Image Texture (``image``) <- UV Map (``uv_map``), linked to the Base Color of the material's
    Principled BSDF; our nodes from an earlier run are reused, everything else is left as it is."""
    tree: Any = material.node_tree
    nodes, links = tree.nodes, tree.links
    bsdf = _principled(material)
    tex = nodes.get(NODE_NAME)
    if tex is None or tex.type != "TEX_IMAGE":
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = NODE_NAME
        tex.location = (bsdf.location.x - 400, bsdf.location.y)
    tex.image = image
    uv = nodes.get(UV_NODE_NAME)
    if uv is None or uv.type != "UVMAP":
        uv = nodes.new("ShaderNodeUVMap")
        uv.name = uv.label = UV_NODE_NAME
        uv.location = (tex.location.x - 250, tex.location.y - 100)
    uv.uv_map = uv_map
    links.new(uv.outputs["UV"], tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    # The active image node is what Solid view's Texture colour and Texture Paint show: the projection, not an
    # older texture still in the material (found by the GUI tier, where the cube kept showing its old one).
    nodes.active = tex


def projection_material(obj: bpy.types.Object, image: bpy.types.Image, uv_map: str, new_material: bool,
                        wired: set[str]) -> bpy.types.Material:
    """The material that shows ``image`` on ``obj`` (see the module docstring). ``wired``: materials already
    given another object's projection in this result; an object sharing one gets a copy of it instead."""
    current: Any = obj.active_material
    material: Any
    if not new_material and _principled(current) is not None:
        material = current
        if material.name in wired:  # shared with an object projected just before: each needs its own image
            material = current.copy()
            material.name = projected_name(obj.name)
    else:
        material = bpy.data.materials.get(projected_name(obj.name))
        if material is None or _principled(material) is None:
            material = texture_material(projected_name(obj.name), image)
            tex = next(n for n in material.node_tree.nodes if n.type == "TEX_IMAGE")
            tex.name = tex.label = NODE_NAME  # wire_projection adds the UV Map node to it
    wire_projection(material, image, uv_map)
    if obj.active_material != material:
        assign(material, obj)
    wired.add(material.name)
    return material


def apply_projection(job_dir: Path, outputs: ProjectImageOutputs, targets: Sequence[tuple[str, str]],
                     new_material: bool, provenance: dict[str, str] | None = None,
                     view_names: Sequence[str] = ()) -> ProjectApplied:
    """Bring the i-th texture (EXR) onto the i-th (object name, UV map) of ``targets``."""
    warnings = list(outputs.warnings)
    seen = {o.name: o.seen_fraction for o in outputs.objects}
    objects: list[str] = []
    images: list[str] = []
    materials: list[str] = []
    wired: set[str] = set()
    for index, (name, uv_map) in enumerate(targets):
        obj = bpy.data.objects.get(name)
        if index >= len(outputs.textures):
            warnings.append(f"the backend made no texture for '{name}'")
            continue
        image = show_image(job_dir / outputs.textures[index], projected_name(name), LINEAR)
        if provenance:
            image[PROVENANCE_KEY] = dict(provenance)  # travels with the image into exported EXR headers
        images.append(image.name)
        if obj is None or obj.type != "MESH":
            warnings.append(f"object '{name}' is gone: its texture is the image '{image.name}'")
            continue
        materials.append(projection_material(obj, image, uv_map, new_material, wired).name)
        objects.append(obj.name)
    generated = outputs.view_images if isinstance(outputs, ProjectTextureOutputs) else []
    views = [show_image(job_dir / rel, f"Diffusion View {view}"[:NAME_LIMIT]).name
             for view, rel in zip(view_names, generated, strict=False)]
    seed = outputs.seed if isinstance(outputs, ProjectTextureOutputs) else None
    return ProjectApplied(objects, images, materials, seen, views, warnings, seed, job_dir.name)


def applier(targets: Sequence[tuple[str, str]], new_material: bool, view_names: Sequence[str] = (),
            ) -> Callable[[Job, TaskOutputs], ProjectApplied]:
    """The on_result callback of a project_image or project_texture job."""
    targets, view_names = list(targets), list(view_names)

    def on_result(job: Job, outputs: TaskOutputs) -> ProjectApplied:
        assert isinstance(outputs, ProjectImageOutputs)
        provenance = None
        if isinstance(outputs, ProjectTextureOutputs) and isinstance(job.params, ProjectTextureParams):
            provenance = {"prompt": job.params.prompt, "seed": str(outputs.seed), "model": job.params.model,
                          "steps": str(job.params.steps)}
        applied = apply_projection(job.job_dir, outputs, targets, new_material, provenance, view_names)
        for warning in applied.warnings:
            print(f"Scene Diffusion: {warning}")
        return applied

    return on_result
