"""Blender's own way to project an image from a camera and bake it into an object's UV map: what a user does
without this add-on, measured against ours by ``tests/blender/test_reprojection.py`` and ``bench/bake.py``.
See ``devtools/blender_projection.py`` for the scenes and the measurement. Runs inside ``bpy``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bpy  # type: ignore[import-untyped]
import numpy as np

from devtools.blender_projection import (
    UV_MAP,
    emission_material,
    from_blender_image,
    new_target_image,
    set_material,
    to_blender_image,
)


@dataclass
class BlenderBake:
    textures: list[np.ndarray]  # per view: size x size x 4 float32, row 0 at the top (alpha: what the bake wrote)
    seconds: float  # the bakes alone, modifier evaluation included, setup excluded


def blender_bake(obj: Any, cameras: Sequence[Any], sources: Sequence[np.ndarray], size: int, *,
                 resolution: tuple[int, int], uv_map: str = UV_MAP, samples: int = 1, margin: int = 8,
                 cleanup: bool = True) -> BlenderBake:
    """Project ``sources[i]`` from ``cameras[i]`` onto ``obj`` and bake each into its own size x size image
    in the object's ``uv_map``, the way a user would with Blender alone:

    - per view a UV Project modifier (projector: the camera; aspect_x / aspect_y: the render's
      ``resolution`` (width, height), scale 1) writing a UV map of its own, after the object's other
      modifiers, so it projects the evaluated (e.g. subdivided) vertices;
    - per view a Cycles EMIT bake (``samples`` samples, ``margin`` px of padding) of Emission <- Image
      Texture(source) <- UV Map(projected), into an Image Texture node holding the target image, active
      in the material, through ``uv_map``.

    One bake per view, no blending (the work Blender does for a multi-view projection). Timed: the depsgraph
    update that evaluates the modifiers and the bakes. The modifiers, UV maps and materials are removed
    afterwards unless ``cleanup`` is False; the object's own modifiers are kept.
    """
    if len(cameras) != len(sources):
        raise ValueError("one source image per camera")
    scene = bpy.context.scene
    view_layer = bpy.context.view_layer
    mesh = obj.data
    mesh.uv_layers.active = mesh.uv_layers[uv_map]
    width, height = resolution

    added_modifiers, added_maps, materials, images = [], [], [], []
    targets: list[Any] = []
    for index, (camera, source) in enumerate(zip(cameras, sources, strict=True)):
        map_name = f"Projected.{index:03d}"
        mesh.uv_layers.new(name=map_name, do_init=False)
        added_maps.append(map_name)
        modifier = obj.modifiers.new(f"UVProject.{index:03d}", "UV_PROJECT")
        modifier.uv_layer = map_name
        modifier.projector_count = 1
        modifier.projectors[0].object = camera
        modifier.aspect_x, modifier.aspect_y = float(width), float(height)
        modifier.scale_x = modifier.scale_y = 1.0
        added_modifiers.append(modifier.name)
        source_image = to_blender_image(f"source.{index:03d}", source, opaque=True)
        target = new_target_image(f"blender_bake.{index:03d}", size)
        material, nodes = emission_material(f"project.{index:03d}", source_image, map_name)
        target_node = nodes.new("ShaderNodeTexImage")
        target_node.image = target
        for node in nodes:
            node.select = False
        target_node.select = True
        nodes.active = target_node
        materials.append(material)
        images += [source_image, target]
        targets.append(target)
    mesh.uv_layers.active = mesh.uv_layers[uv_map]
    mesh.uv_layers[uv_map].active_render = True

    cycles = scene.cycles
    cycles.samples = samples
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    cycles.bake_type = "EMIT"
    bake = scene.render.bake
    bake.target = "IMAGE_TEXTURES"
    bake.margin = margin
    bake.use_clear = True
    for other in view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    set_material(obj, materials[0])

    start = time.perf_counter()
    view_layer.update()  # evaluates the UV Project modifiers
    for material in materials:
        obj.material_slots[0].material = material
        bpy.ops.object.bake(type="EMIT", margin=margin, use_clear=True, target="IMAGE_TEXTURES", uv_layer=uv_map)
    seconds = time.perf_counter() - start

    textures = [from_blender_image(target) for target in targets]
    if cleanup:
        obj.material_slots[0].material = None
        for name in added_modifiers:
            obj.modifiers.remove(obj.modifiers[name])
        for name in added_maps:
            mesh.uv_layers.remove(mesh.uv_layers[name])
        mesh.uv_layers.active = mesh.uv_layers[uv_map]
        for material in materials:
            bpy.data.materials.remove(material)
        for image in images:
            bpy.data.images.remove(image)
        view_layer.update()
    return BlenderBake(textures, seconds)
