"""Scene export for projection baking: evaluated meshes (``inputs/meshes/NN.npz``), the views
(``inputs/views.json`` with one pass render per camera), UV maps made where asked, and the
temporary cameras of automatic views.

Meshes and views are written with the contract's writers (``contract/formats/surface.py``,
``contract/formats/views.py``), so the backend reads them with the matching readers. numpy is
imported when used, not at register().
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy

from ...contract.tasks.project import MAX_VIEWS, mesh_inputs
from . import passes

if TYPE_CHECKING:
    import numpy

    from ...contract.formats.surface import BakeMesh

VIEWS_FILE = "views.json"  # in inputs/; the paths it holds are relative to inputs/
AUTO_VIEW_NAME = "Projection View"
DEPTH_ONLY_ENGINE = "BLENDER_WORKBENCH"  # views whose Normal pass no task reads
FIT_MARGIN = 1.1  # automatic views: the bounding sphere fills the narrower side of the frame, less 10 %


class BakeExportError(ValueError):
    """An object or view that cannot be exported for baking; the message names it and says what to do."""


@dataclass(frozen=True)
class BakeTarget:
    """One mesh object to bake onto, with the UV map it bakes into (made by unwrapping when ``unwrap``)."""

    name: str
    uv_map: str
    unwrap: bool = False


def plan_targets(objects: Sequence[bpy.types.Object], uv_map: str = "", unwrap: bool = False) -> list[BakeTarget]:
    """The UV map each mesh object bakes into: ``uv_map``, or (empty) its active render UV map.

    Changes nothing; raises BakeExportError naming the first object that cannot be baked onto.
    Objects without any UV map are unwrapped later (``unwrap_targets``) when ``unwrap`` is on.
    """
    targets = []
    for obj in objects:
        mesh: Any = obj.data
        if not len(mesh.polygons):
            raise BakeExportError(f"object '{obj.name}' has no faces to project onto")
        layers = mesh.uv_layers
        if not len(layers):
            if not unwrap:
                raise BakeExportError(f"object '{obj.name}' has no UV map: unwrap it, or enable "
                                      "\"Unwrap objects without UVs\" (option unwrap)")
            targets.append(BakeTarget(obj.name, uv_map or "UVMap", unwrap=True))
            continue
        if uv_map:
            if layers.get(uv_map) is None:
                raise BakeExportError(f"object '{obj.name}' has no UV map '{uv_map}' "
                                      f"(it has {', '.join(layers.keys())}); leave UV Map empty for each "
                                      "object's active render UV map")
            targets.append(BakeTarget(obj.name, uv_map))
        else:
            render = next((layer for layer in layers if layer.active_render), layers[0])
            targets.append(BakeTarget(obj.name, render.name))
    return targets


def unwrap_targets(context: bpy.types.Context, targets: Sequence[BakeTarget], island_margin: float = 0.02) -> None:
    """Smart UV Project each target marked ``unwrap`` into a new UV map of its name, one object at a
    time (in multi-object edit mode the islands of all objects would share one UV square). The
    selection, the active object and its mode are restored afterwards, whatever happens."""
    todo = [(bpy.data.objects[t.name], t.uv_map) for t in targets if t.unwrap]
    if not todo:
        return
    view_layer: Any = context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    mode: Any = active.mode if active is not None else "OBJECT"
    try:
        if mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        done: set[str] = set()
        for obj, uv_map in todo:
            mesh: Any = obj.data
            if mesh.name in done:  # linked duplicates share their mesh: one unwrap serves them all
                continue
            done.add(mesh.name)
            layer = mesh.uv_layers.get(uv_map) or mesh.uv_layers.new(name=uv_map)
            mesh.uv_layers.active = layer
            layer.active_render = True
            for other in view_layer.objects:
                other.select_set(False)
            obj.select_set(True)
            view_layer.objects.active = obj
            bpy.ops.object.mode_set(mode="EDIT")
            try:
                bpy.ops.mesh.select_all(action="SELECT")
                bpy.ops.uv.smart_project(island_margin=island_margin)
            finally:
                bpy.ops.object.mode_set(mode="OBJECT")
    finally:
        for other in view_layer.objects:
            other.select_set(other in selected)
        view_layer.objects.active = active
        if active is not None and mode != "OBJECT" and active.mode != mode:
            bpy.ops.object.mode_set(mode=mode)


def _foreach(collection: Any, key: str, count: int, width: int, dtype: Any) -> numpy.ndarray:
    import numpy as np

    buffer = np.empty(count * width, dtype=dtype)
    collection.foreach_get(key, buffer)
    return buffer.reshape(count, width) if width > 1 else buffer


def surface(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph, uv_map: str) -> BakeMesh:
    """The evaluated surface of ``obj`` (modifiers applied) in world space, as ``contract/formats/surface.py``
    describes it: positions, loop triangles, corner UVs from ``uv_map`` and world-space unit corner normals.
    Raises BakeExportError when the evaluated mesh has no faces or lacks the UV map (a modifier may drop it)."""
    import numpy as np

    from ...contract.formats.surface import BakeMesh

    evaluated: Any = obj.evaluated_get(depsgraph)
    matrix = np.array(evaluated.matrix_world, dtype=np.float64)
    # Normals transform by the inverse transpose; the safe inverse keeps a flattened object finite.
    normal_matrix = np.array(evaluated.matrix_world.to_3x3().inverted_safe().transposed(), dtype=np.float64)
    mesh: Any = evaluated.to_mesh()
    try:
        count = len(mesh.loop_triangles)
        if count == 0:
            raise BakeExportError(f"object '{obj.name}' has no faces to project onto once its modifiers apply")
        if mesh.uv_layers.get(uv_map) is None:
            raise BakeExportError(f"object '{obj.name}' has no UV map '{uv_map}' once its modifiers apply "
                                  "(a modifier removes it): choose another UV map or change the modifiers")
        positions = _foreach(mesh.vertices, "co", len(mesh.vertices), 3, np.float32)
        triangles = _foreach(mesh.loop_triangles, "vertices", count, 3, np.int32)
        loops = _foreach(mesh.loop_triangles, "loops", count, 3, np.int32)
        uvs = _foreach(mesh.attributes[uv_map].data, "vector", len(mesh.loops), 2, np.float32)
        normals = _foreach(mesh.corner_normals, "vector", len(mesh.loops), 3, np.float32)
    finally:
        evaluated.to_mesh_clear()
    world = positions.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    corner = normals[loops].astype(np.float64) @ normal_matrix.T
    length = np.linalg.norm(corner, axis=-1, keepdims=True)
    corner = np.divide(corner, length, out=np.zeros_like(corner), where=length > 1e-12)
    return BakeMesh(world, triangles, uvs[loops], corner, obj.name)


@contextmanager
def render_evaluation(context: bpy.types.Context, objects: Sequence[bpy.types.Object]) -> Iterator[Any]:
    """A depsgraph in which ``objects`` are evaluated as a render sees them, so the exported surface is the
    one the depth passes show: modifiers enabled for render (not for the viewport), and Subdivision Surface
    and Multiresolution at their render levels (a new Subdivision modifier has 1 in the viewport and 2 in
    renders). Python cannot build Blender's render depsgraph, so the viewport one is given those settings
    and they are restored afterwards, whatever happens. Geometry Nodes' "Is Viewport" is not covered."""
    changes: list[tuple[Any, str, Any]] = []
    for obj in objects:
        modifier: Any  # SubsurfModifier and MultiresModifier have levels / render_levels
        for modifier in obj.modifiers:
            changes.append((modifier, "show_viewport", modifier.show_render))
            if modifier.type in ("SUBSURF", "MULTIRES"):
                changes.append((modifier, "levels", modifier.render_levels))
    view_layer: Any = context.view_layer
    try:
        with passes.overridden(*changes):
            if changes:
                view_layer.update()
            yield context.evaluated_depsgraph_get()
    finally:
        if changes:
            view_layer.update()


def export_meshes(context: bpy.types.Context, targets: Sequence[BakeTarget], job_dir: Path) -> list[str]:
    """One npz per target in ``job_dir/inputs/meshes``, evaluated as renders see them; returns their
    job-relative paths (ProjectImageParams.meshes)."""
    from ...contract.formats.surface import save_bake_mesh

    objects = [bpy.data.objects[target.name] for target in targets]
    relative = mesh_inputs(len(targets))
    with render_evaluation(context, objects) as depsgraph:
        for obj, target, rel in zip(objects, targets, relative, strict=True):
            save_bake_mesh(job_dir / rel, surface(obj, depsgraph, target.uv_map))
    return relative


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The scene's output size in pixels, resolution percentage applied (as Blender renders it)."""
    render = scene.render
    percentage = render.resolution_percentage
    return max(1, render.resolution_x * percentage // 100), max(1, render.resolution_y * percentage // 100)


def export_views(scene: bpy.types.Scene, inputs: Path, cameras: Sequence[bpy.types.Object], width: int,
                 height: int, image: bpy.types.Image | None = None, normal: bool | None = None) -> Path:
    """Render the passes from every camera into ``inputs/views/NN/passes.exr`` and write
    ``inputs/views.json``. With ``image`` (project_image) it is saved once, before anything renders, and
    every view projects it. The scene's camera is restored afterwards, whatever happens.

    ``normal``: whether the job reads the Normal pass (the normal control); None: not with ``image``
    (projecting an image reads Depth alone), yes otherwise. Without it the passes render with Workbench
    at one sample per pixel (``DEPTH_ONLY_ENGINE``): the same planar Z as Cycles (pinned by
    tests/blender/test_passes_blender.py), 2.5-4x faster here, but no Normal pass."""
    with_normal = image is None if normal is None else normal
    engine = "CYCLES" if with_normal else DEPTH_ONLY_ENGINE
    from ...contract.formats.views import ViewEntry, write_views
    from . import pixels

    image_path = colorspace = None
    if image is not None:
        image_path = "views/00/image.npy"
        (inputs / "views" / "00").mkdir(parents=True, exist_ok=True)
        colorspace = pixels.save_npy(image, inputs / image_path, need_colour=True)
    views = []
    original = scene.camera
    try:
        for index, camera in enumerate(cameras):
            folder = f"views/{index:02d}"
            (inputs / folder).mkdir(parents=True, exist_ok=True)
            scene.camera = camera
            passes.render_passes(scene, inputs / folder, width, height, engine=engine, antialias=with_normal)
            views.append(ViewEntry(camera.name, passes.camera_info(scene, camera, width, height),
                                   f"{folder}/{passes.PASSES_FILE}", image_path, colorspace))
    finally:
        scene.camera = original
    return write_views(inputs / VIEWS_FILE, views)


def bounding_sphere(objects: Sequence[bpy.types.Object], depsgraph: bpy.types.Depsgraph) -> tuple[Any, float]:
    """Centre (mathutils.Vector) and radius of a sphere around the objects' evaluated bounding boxes."""
    from mathutils import Vector

    corners = [evaluated.matrix_world @ Vector(corner)
               for evaluated in (o.evaluated_get(depsgraph) for o in objects) for corner in evaluated.bound_box]
    low = Vector(tuple(min(c[axis] for c in corners) for axis in range(3)))
    high = Vector(tuple(max(c[axis] for c in corners) for axis in range(3)))
    centre = (low + high) / 2
    return centre, max((c - centre).length for c in corners)


@contextmanager
def auto_cameras(scene: bpy.types.Scene, objects: Sequence[bpy.types.Object], count: int, elevation: float,
                 distance: float, width: int, height: int) -> Iterator[list[bpy.types.Object]]:
    """``count`` temporary cameras evenly around the objects (the first in front, looking along +Y),
    ``elevation`` degrees above their centre, at ``distance`` (0: the bounding sphere fits the frame).
    Cameras and camera data are removed afterwards, whatever happens."""
    from mathutils import Vector

    centre, radius = bounding_sphere(objects, bpy.context.evaluated_depsgraph_get())
    radius = radius or 1.0
    created: list[bpy.types.Object] = []
    datas: list[bpy.types.Camera] = []
    try:
        for index in range(count):
            data: Any = bpy.data.cameras.new(f"{AUTO_VIEW_NAME} {index + 1}")
            datas.append(data)
            camera = bpy.data.objects.new(data.name, data)
            created.append(camera)
            if not distance:  # the sphere fills the narrower side of the frame (sensor fit AUTO)
                tan_half = data.sensor_width / 2 / data.lens * min(width, height) / max(width, height)
                distance_k = FIT_MARGIN * radius / math.sin(math.atan(tan_half))
            else:
                distance_k = distance
            azimuth = math.radians(-90.0 + 360.0 * index / count)
            up = math.radians(elevation)
            offset = Vector((math.cos(up) * math.cos(azimuth), math.cos(up) * math.sin(azimuth), math.sin(up)))
            camera.location = centre + offset * distance_k
            camera.rotation_euler = (-offset).to_track_quat("-Z", "Y").to_euler()
            data.clip_start = max(1e-4, min(0.1, (distance_k - radius) / 2))
            data.clip_end = max(1000.0, 4 * (distance_k + radius))
            scene.collection.objects.link(camera)
        bpy.context.view_layer.update()  # matrix_world of the new cameras
        yield created
    finally:
        for camera in created:
            bpy.data.objects.remove(camera, do_unlink=True)
        for data in datas:
            if data.users == 0:
                bpy.data.cameras.remove(data)


def island_margin(padding: int, texture_size: int) -> float:
    """Smart UV Project's margin (UV units) leaving room for the seam padding on both sides of a seam."""
    return min(0.1, max(0.005, 2.0 * padding / max(texture_size, 1)))


def export_inputs(context: bpy.types.Context, job_dir: Path, targets: Sequence[BakeTarget], padding: int,
                  texture_size: int, render_views: Callable[[], object]) -> None:
    """A projection job's inputs, in the order that keeps a refusal from changing the scene: views first (they
    do not need UVs), then the unwrap (the first change to the scene), then the meshes."""
    render_views()
    unwrap_targets(context, targets, island_margin(padding, texture_size))
    export_meshes(context, targets, job_dir)


def selected_meshes(context: bpy.types.Context, also_fine: tuple[str, ...] = ()) -> tuple[list[Any], list[str]]:
    """Selected mesh objects, in selection order, and the names of the other selected objects, skipped
    (``also_fine``: object types used otherwise, not worth a note). BakeExportError when there is no mesh."""
    selected = list(context.selected_objects)
    meshes = [o for o in selected if o.type == "MESH"]
    skipped = [o.name for o in selected if o.type != "MESH" and o.type not in also_fine]
    if not meshes:
        raise BakeExportError("Select one or more mesh objects to project onto"
                              + (f" ({', '.join(skipped)}: not meshes)" if skipped else ""))
    return meshes, skipped


def view_cameras(context: bpy.types.Context, views: str, view_count: int) -> list[Any]:
    """The cameras of ``views`` ("ACTIVE", "SELECTED"; "AUTO" has none yet: they are made at export time),
    checked against the view limit. BakeExportError says what is missing."""
    scene: Any = context.scene
    if views == "ACTIVE":
        if scene.camera is None:
            raise BakeExportError("The scene has no active camera: add one and make it active (Ctrl+Numpad 0), "
                                  "or choose Selected Cameras or Automatic views")
        return [scene.camera]
    count = view_count
    cameras: list[Any] = []
    if views == "SELECTED":
        cameras = sorted((o for o in context.selected_objects if o.type == "CAMERA"), key=lambda o: o.name)
        if not cameras:
            raise BakeExportError("No camera is selected: select the cameras to project from along with the meshes")
        count = len(cameras)
    if count > MAX_VIEWS:
        raise BakeExportError(f"{count} views is too many: at most {MAX_VIEWS}")
    return cameras
