"""Generated meshes into the scene through Blender's fast path (foreach_set), normalised:
centred on its base, scaled to a target size, placed at the 3D cursor, smooth shaded, with a
material showing its vertex colours, optionally baked into a texture on an automatic UV map.

The backend hands over ``mesh.npz`` (see backend/geometry/mesh_io.py): ``vertices`` float32
N x 3 in Blender's axes (Z up), ``face_sizes`` and ``face_vertices`` int32, optional ``colors``
float32 N x 4 scene-linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ...contract.formats.mesh import MeshArrays, read_mesh_arrays
from ..scene_export.passes import overridden
from .materials import NAME_LIMIT

COLOR_ATTRIBUTE = "Col"


@dataclass(frozen=True)
class MeshImported:
    object: str
    vertices: int
    faces: int
    texture: str | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"'{self.object}': {self.vertices} vertices, {self.faces} faces"


def normalised(vertices: np.ndarray, target_size: float) -> np.ndarray:
    """Scaled so the largest side is ``target_size``, centred in X/Y, resting on Z = 0."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    extent = float((high - low).max())
    scale = target_size / extent if extent > 0 else 1.0
    centre = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]], dtype=np.float32)
    return ((vertices - centre) * np.float32(scale)).astype(np.float32)


def _set(mesh: Any, attribute: str, key: str, legacy: Any, legacy_key: str, values: np.ndarray) -> None:
    """Through the generic attribute when this Blender has it (about 100x faster for corners
    than MeshLoop.vertex_index), else through the legacy property."""
    target = mesh.attributes.get(attribute)
    if target is not None:
        target.data.foreach_set(key, values)
    else:
        legacy.foreach_set(legacy_key, values)


def loop_starts(face_sizes: np.ndarray) -> np.ndarray:
    """First corner of each face, as unsigned 32-bit: Blender 5.0 copies such a buffer into
    ``loop_start`` in one go (1 ms for 1M faces) but walks an int32 one face by face (70-95 ms).
    Same values either way: the starts are below the int32 corner count."""
    starts = np.zeros(len(face_sizes), dtype=np.int32)
    np.cumsum(face_sizes[:-1], out=starts[1:])
    return starts.view(np.uint32)


def build_mesh(name: str, vertices: np.ndarray, face_sizes: np.ndarray, face_vertices: np.ndarray,
               colors: np.ndarray | None) -> bpy.types.Mesh:
    """A new mesh datablock from arrays, checked first (``MeshArrays.check``: foreach_set takes indices on trust)."""
    arrays = MeshArrays(vertices, face_sizes, face_vertices, colors)
    arrays.check()
    vertices, face_sizes, face_vertices = arrays.vertices, arrays.face_sizes, arrays.face_vertices
    mesh: Any = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    _set(mesh, "position", "vector", mesh.vertices, "co", vertices.ravel())
    mesh.loops.add(len(face_vertices))
    _set(mesh, ".corner_vert", "value", mesh.loops, "vertex_index", face_vertices)
    mesh.polygons.add(len(face_sizes))
    mesh.polygons.foreach_set("loop_start", loop_starts(face_sizes))  # sizes follow from consecutive starts
    if colors is not None:
        attribute: Any = mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
        attribute.data.foreach_set("color", np.ascontiguousarray(colors, dtype=np.float32).ravel())
        mesh.color_attributes.active_color = attribute
    mesh.update(calc_edges=True)
    mesh.shade_smooth()
    return mesh  # type: ignore[no-any-return]


def vertex_color_material(name: str) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x
        material.use_nodes = True
    tree: Any = material.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    colour = tree.nodes.new("ShaderNodeVertexColor")
    colour.layer_name = COLOR_ATTRIBUTE
    colour.location = (bsdf.location.x - 300, bsdf.location.y)
    tree.links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def bake_vertex_colors(obj: bpy.types.Object, size: int) -> bpy.types.Image:
    """Vertex colours -> an image on a Smart UV Project map, baked by Cycles (diffuse colour),
    then wired to Base Color in place of the attribute, for engines that ignore vertex colours."""
    scene: Any = bpy.context.scene
    view_layer: Any = bpy.context.view_layer
    for other in view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="SELECT")
    bpy.ops.uv.smart_project(island_margin=0.02)
    bpy.ops.object.mode_set(mode="OBJECT")
    image = bpy.data.images.new(f"{obj.name[:NAME_LIMIT - 6]} color", size, size)
    material: Any = obj.active_material
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    target = tree.nodes.new("ShaderNodeTexImage")
    target.image = image
    target.location = (bsdf.location.x - 300, bsdf.location.y - 300)
    tree.nodes.active = target  # Cycles bakes into the active image node
    with overridden((scene.render, "engine", "CYCLES"), (scene.cycles, "samples", 1),
                    (scene.render.bake, "use_pass_direct", False), (scene.render.bake, "use_pass_indirect", False),
                    (scene.render.bake, "use_pass_color", True), (scene.render.bake, "margin", 4)):
        bpy.ops.object.bake(type="DIFFUSE")
    image.pack()
    tree.links.new(target.outputs["Color"], bsdf.inputs["Base Color"])
    return image


def import_mesh(npz_path: Path, name: str, target_size: float, location: tuple[float, float, float],
                with_material: bool = True, bake_size: int = 0) -> MeshImported:
    arrays = read_mesh_arrays(npz_path)
    colors = arrays.colors
    mesh = build_mesh(name[:NAME_LIMIT], normalised(arrays.vertices, target_size), arrays.face_sizes,
                      arrays.face_vertices, colors)
    obj = bpy.data.objects.new(mesh.name, mesh)
    obj.location = location
    collection: Any = bpy.context.collection or bpy.context.scene.collection
    collection.objects.link(obj)
    texture = None
    if with_material and colors is not None:
        obj.data.materials.append(vertex_color_material(mesh.name))
        if bake_size:
            texture = bake_vertex_colors(obj, bake_size).name
    # The new object is what the artist works on next, as after Add > Mesh (the GUI tier showed it unselected).
    view_layer: Any = bpy.context.view_layer
    for other in view_layer.objects:
        other.select_set(False)
    obj.select_set(True)  # after the loop: a just-linked object may not be in view_layer.objects yet (bpy 5.0)
    view_layer.objects.active = obj
    return MeshImported(obj.name, len(mesh.vertices), len(mesh.polygons), texture)
