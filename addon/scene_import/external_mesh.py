"""Meshes from other tools (GLB / glTF, OBJ, PLY) through Blender's own importers, with our placement on top.

The importers keep everything an image-to-3D tool wrote (UVs, base-colour and PBR textures, several materials,
vertex colours, a node hierarchy); we only move the result: scaled together so the largest side is the target
size, centred in X/Y on its base, resting on the 3D cursor, named after the file, selected and active.

A lone mesh object gets the placement in its vertices (object at the cursor, unit scale, as generated meshes
do); several objects, or a hierarchy, go under a new empty named after the file that carries it. An import that
fails, here or in the importer, leaves no datablock of its own behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, Vector

from ...contract.tasks.mesh import MESH_FORMATS
from .materials import NAME_LIMIT

GLTF_ADDON = "io_scene_gltf2"  # bundled with Blender (addons_core since 4.2), usually enabled


class ExternalMeshError(Exception):
    """Why a file could not be imported; the message names the file."""


@dataclass(frozen=True)
class ExternalMeshImported:
    object: str  # the object named after the file: the lone mesh, or the empty above the imported objects
    objects: tuple[str, ...]  # every object the import made
    vertices: int
    faces: int
    materials: int
    images: int

    def summary(self) -> str:
        parts = [f"{self.vertices} vertices", f"{self.faces} faces", f"{self.materials} materials",
                 f"{self.images} images"]
        if len(self.objects) > 1:
            parts.insert(0, f"{len(self.objects)} objects")
        return f"'{self.object}': {', '.join(parts)}"


def check_file(path: Path) -> None:
    if not path.is_file():
        raise ExternalMeshError(f"No such file: {path}")
    if path.suffix.lower() not in MESH_FORMATS:
        raise ExternalMeshError(f"{path.name}: unsupported format; use {', '.join(MESH_FORMATS)}")


def import_external_mesh(path: Path, target_size: float, location: tuple[float, float, float]
                         ) -> ExternalMeshImported:
    """``path`` through Blender's importer for its format, then normalised and placed (see the module)."""
    check_file(path)
    _ensure_object_mode()
    with _undone_on_failure() as before:
        _run_importer(path)
        return _place(path, before.created(), target_size, location)


# -- the importers --------------------------------------------------------------------------------------------

def _run_importer(path: Path) -> None:
    suffix = path.suffix.lower()
    done: Any
    try:
        if suffix in (".glb", ".gltf"):
            _ensure_gltf_addon()
            done = bpy.ops.import_scene.gltf(filepath=str(path))
        elif suffix == ".obj":
            done = bpy.ops.wm.obj_import(filepath=str(path))
        else:
            done = bpy.ops.wm.ply_import(filepath=str(path))
    except RuntimeError as exc:  # an importer's error report, or a Python error inside it
        raise ExternalMeshError(f"Cannot import {path.name}: {_reason(str(exc))}") from None
    if "FINISHED" not in (done or ()):
        raise ExternalMeshError(f"Cannot import {path.name}: Blender's importer cancelled")


def _reason(message: str) -> str:
    """The importer's own words without Blender's "Error: " prefix; for a traceback, its last line."""
    lines = [line.strip() for line in message.strip().splitlines()
             if line.strip() and not line.startswith("Location:")]  # where bpy.ops was called: not news
    if not lines:
        return "the importer failed"
    if "Traceback" in lines[0]:
        return f"the importer failed ({lines[-1]})"
    first = lines[0]
    return first.removeprefix("Error:").strip() or "the importer failed"


def _ensure_gltf_addon() -> None:
    import addon_utils  # Blender's own module: not importable outside Blender

    if not addon_utils.check(GLTF_ADDON)[1]:
        addon_utils.enable(GLTF_ADDON, default_set=False)  # for this session only: preferences untouched
    if not hasattr(bpy.types, "IMPORT_SCENE_OT_gltf"):
        raise ExternalMeshError(f"Blender's glTF importer ({GLTF_ADDON}) is not available; enable it in "
                                "Preferences > Add-ons")


def _ensure_object_mode() -> None:
    """Importers add objects; Edit or Sculpt mode on the active object would get in their way."""
    active = bpy.context.view_layer.objects.active
    if active is not None and active.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")


# -- nothing half-done ------------------------------------------------------------------------------------------

def _id_collections() -> Iterator[tuple[str, Any]]:
    """Every datablock collection of bpy.data (objects, meshes, materials, images, node groups, ...)."""
    for prop in bpy.data.bl_rna.properties:
        if prop.type == "COLLECTION":
            yield prop.identifier, getattr(bpy.data, prop.identifier)


@dataclass(frozen=True)
class _Snapshot:
    pointers: dict[str, frozenset[int]]  # every datablock there was, by bpy.data collection

    @classmethod
    def take(cls) -> _Snapshot:
        return cls({name: frozenset(i.as_pointer() for i in c) for name, c in _id_collections()})

    def created(self) -> list[Any]:
        """The datablocks made since."""
        return [i for name, collection in _id_collections() for i in collection
                if i.as_pointer() not in self.pointers.get(name, frozenset())]


@contextmanager
def _undone_on_failure() -> Iterator[_Snapshot]:
    """On any error: every datablock made inside removed, the selection as it was."""
    view_layer: Any = bpy.context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    before = _Snapshot.take()
    try:
        yield before
    except BaseException:
        bpy.data.batch_remove(before.created())
        for obj in view_layer.objects:
            obj.select_set(obj in selected)
        view_layer.objects.active = active
        raise


# -- placement ------------------------------------------------------------------------------------------------

def _world_vertices(obj: Any) -> np.ndarray:
    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    return co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Placement:
    """World space -> placed: T(cursor) S(scale) T(-base), the base being the centre of the bounds' bottom."""

    location: Vector
    scale: float
    base: Vector
    extent: float  # the largest side before scaling

    @classmethod
    def of(cls, meshes: list[Any], target_size: float, location: tuple[float, float, float]) -> _Placement:
        points = np.concatenate([_world_vertices(o) for o in meshes])
        low, high = points.min(axis=0), points.max(axis=0)
        extent = float((high - low).max())
        base = Vector(((low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]))
        return cls(Vector(location), target_size / extent if extent > 0 else 1.0, base, extent)

    def around_cursor(self) -> Matrix:
        """S(scale) T(-base): the placement seen from an object sitting at the cursor."""
        return Matrix.Scale(self.scale, 4) @ Matrix.Translation(-self.base)


def _place(path: Path, created: list[Any], target_size: float, location: tuple[float, float, float]
           ) -> ExternalMeshImported:
    objects: list[Any] = [i for i in created if isinstance(i, bpy.types.Object)]
    meshes = [o for o in objects if o.type == "MESH"]
    faces = sum(len(o.data.polygons) for o in meshes)
    if not faces:
        raise ExternalMeshError(f"{path.name}: no faces in the file (nothing to import as a mesh)")
    view_layer: Any = bpy.context.view_layer
    view_layer.update()  # world matrices of parented objects
    placement = _Placement.of(meshes, target_size, location)
    name = path.stem[:NAME_LIMIT] or "Mesh"
    roots = [o for o in objects if o.parent is None or o.parent not in objects]
    lone = roots[0] if len(objects) == 1 else None
    if (lone is not None and lone.type == "MESH" and lone.data.users == 1
            and not lone.matrix_world.is_negative):  # a mirroring matrix in the vertices would turn faces inside out
        # Into the vertices: the object ends at the cursor with unit scale, like a generated mesh.
        lone.data.transform(placement.around_cursor() @ lone.matrix_world, shape_keys=True)
        lone.matrix_world = Matrix.Translation(placement.location)
        lone.name = name
        handle = lone
    else:
        handle = _group_under_empty(name, roots, placement)
        objects.append(handle)
    for obj in view_layer.objects:
        obj.select_set(False)
    for obj in objects:
        obj.select_set(True)
    view_layer.objects.active = handle
    materials = {m.as_pointer() for o in meshes for m in o.data.materials if m is not None}
    images = [i for i in created if isinstance(i, bpy.types.Image)]
    return ExternalMeshImported(handle.name, tuple(o.name for o in objects),
                                sum(len(o.data.vertices) for o in meshes), faces, len(materials), len(images))


def _group_under_empty(name: str, roots: list[Any], placement: _Placement) -> Any:
    """A new empty at the cursor carrying the scale; each root keeps its own transform, shifted onto the base."""
    empty: Any = bpy.data.objects.new(name, None)
    collection = roots[0].users_collection[0] if roots[0].users_collection else bpy.context.scene.collection
    collection.objects.link(empty)
    empty.location = placement.location
    empty.scale = (placement.scale,) * 3
    empty.empty_display_size = max(placement.extent / 2, 1e-3)  # half the placed size, once scaled
    for root in roots:
        world = root.matrix_world.copy()
        root.parent = empty
        root.matrix_parent_inverse = Matrix.Identity(4)
        root.matrix_basis = Matrix.Translation(-placement.base) @ world
    return empty
