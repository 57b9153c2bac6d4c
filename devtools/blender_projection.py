"""Projection scenes, our projection's inputs and the reprojection measurement, for the reprojection test
and bench/bake.py (Blender's own projection machinery is in ``devtools/blender_bake.py``).

Runs inside ``bpy`` (import bpy first, after ``devtools.extension.prepare_user_dir`` where the add-on is
installed). Three things live in these two modules, shared by ``tests/blender/test_reprojection.py`` and
``bench/bake.py``:

- Scene builders (``build_case``): one UV-unwrapped object, one camera aimed at it, a render size and a
  smooth source image, for the accuracy cases of issue #4 (``CASES``).
- Blender's own way to project an image from a camera and bake it into an object's UV map, i.e. what a
  user does without this add-on (``blender_bake.blender_bake``): per view a UV Project modifier whose projector is the
  camera writes a UV map, and a Cycles EMIT bake of an emission shader that samples the view's image through
  that map bakes it into the object's own UV map. UV Project computes UVs per VERTEX (perspective divide at
  the vertices, then affine interpolation across each face), so inside a face the projection is not
  perspective-correct; with an orthographic camera the projection is affine and the modifier is exact.
- A measurement: render the object textured with a baked texture through an emission shader from the
  case's camera (``emission_render``) and compare it with the image that was projected
  (``reprojection_error``). A perfect projection + bake gives back the source image on every visible pixel.

Images are numpy float32, scene-linear, row 0 at the TOP (Blender stores rows bottom-up; the helpers flip).
Blender images made here are float buffers with the "Non-Color" colour space, so no colour transform is
applied anywhere between numpy, the bake and the render.
"""

from __future__ import annotations

import importlib
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy  # type: ignore[import-untyped]
import numpy as np
from mathutils import Vector

from backend.imaging.exr import read_exr

UV_MAP = "UVMap"  # the unwrapped UV map Blender's primitives create, which both bakes target
NON_COLOR = "Non-Color"


# --- numpy <-> Blender images ---------------------------------------------------------------------------------------


def rgba(image: np.ndarray) -> np.ndarray:
    """H x W x 3 or 4 -> H x W x 4 float32 (alpha 1 where there is none)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 or 4 image, got shape {image.shape}")
    if image.shape[2] == 4:
        return image
    return np.concatenate([image, np.ones(image.shape[:2] + (1,), np.float32)], axis=2)


def to_blender_image(name: str, image: np.ndarray, *, opaque: bool = False) -> Any:
    """A float, Non-Color Blender image holding ``image`` (row 0 at the top). Alpha is kept apart from the
    colour (``CHANNEL_PACKED``: no premultiplication when Cycles samples it); ``opaque`` sets it to 1."""
    pixels = rgba(image).copy()
    if opaque:
        pixels[:, :, 3] = 1.0
    height, width = pixels.shape[:2]
    result = bpy.data.images.new(name, width, height, alpha=True, float_buffer=True)
    result.colorspace_settings.name = NON_COLOR
    result.alpha_mode = "CHANNEL_PACKED"
    result.pixels.foreach_set(np.ascontiguousarray(pixels[::-1]).ravel())
    result.pack()  # keeps the pixels when a render or bake reloads images
    return result


def from_blender_image(image: Any) -> np.ndarray:
    """H x W x 4 float32, row 0 at the top."""
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return np.ascontiguousarray(pixels.reshape(height, width, 4)[::-1])


def new_target_image(name: str, size: int) -> Any:
    """An empty float, Non-Color size x size image to bake into."""
    image = bpy.data.images.new(name, size, size, alpha=True, float_buffer=True)
    image.colorspace_settings.name = NON_COLOR
    image.alpha_mode = "CHANNEL_PACKED"
    return image


# --- scenes -----------------------------------------------------------------------------------------------------------


def source_pattern(width: int, height: int, period: float = 14.0, seed: int = 0) -> np.ndarray:
    """A smooth, non-trivial H x W x 3 colour pattern in [0.05, 0.95]: sinusoids of ~``period`` pixels along
    different directions per channel, one of them a product (a soft checker). Row 0 at the top."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    phases = rng.uniform(0.0, 2.0 * np.pi, 4)
    k = 2.0 * np.pi / period
    red = 0.5 + 0.45 * np.sin(k * (0.8 * xs + 0.6 * ys) + phases[0])
    green = 0.5 + 0.45 * np.sin(k * 0.7 * (xs - 1.3 * ys) + phases[1])
    blue = 0.5 + 0.45 * np.sin(k * 0.9 * xs + phases[2]) * np.sin(k * 0.9 * ys + phases[3])
    return np.stack([red, green, blue], axis=2).astype(np.float32)


@dataclass
class ProjectionCase:
    """One object seen by one camera; ``source`` is the image (row 0 at the top) the camera projects."""

    name: str
    obj: Any  # bpy.types.Object, UV-unwrapped (``uv_map``)
    camera: Any  # bpy.types.Object, the scene's active camera
    width: int
    height: int
    source: np.ndarray  # height x width x 3 float32 in [0, 1]
    uv_map: str = UV_MAP


def reset_scene() -> Any:
    """An empty factory scene rendering with Cycles on the CPU (the add-on stays enabled)."""
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    return scene


def add_camera(name: str, location: Sequence[float], target: Sequence[float], *, kind: str = "PERSP",
               lens: float = 50.0, ortho_scale: float = 4.0, shift: tuple[float, float] = (0.0, 0.0)) -> Any:
    """A camera at ``location`` looking at ``target`` (its +Y up as close to world +Z as it can be)."""
    data = bpy.data.cameras.new(name)
    data.type = kind
    data.lens = lens
    data.ortho_scale = ortho_scale
    data.shift_x, data.shift_y = shift
    data.clip_start, data.clip_end = 0.1, 100.0
    camera = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(camera)
    camera.location = location
    camera.rotation_euler = (Vector(target) - Vector(location)).to_track_quat("-Z", "Y").to_euler()
    return camera


def add_uv_sphere(name: str, *, segments: int = 32, rings: int = 16, radius: float = 1.0,
                  location: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
    """A smooth-shaded UV sphere with its ``UVMap`` (the primitive's unwrap: no overlaps)."""
    bpy.ops.mesh.primitive_uv_sphere_add(segments=segments, ring_count=rings, radius=radius, location=location,
                                         calc_uvs=True)
    obj = bpy.context.object
    obj.name = obj.data.name = name
    bpy.ops.object.shade_smooth()
    return obj


def add_subdivision(obj: Any, levels: int) -> None:
    """A Subdivision Surface modifier, the same level in the viewport and the render (the exported evaluated
    mesh and the rendered one must be the same surface)."""
    modifier = obj.modifiers.new("Subdivision", "SUBSURF")
    modifier.levels = modifier.render_levels = levels


def _case_subdivided() -> tuple[Any, Any, int, int]:
    """(a) A cube with a Subdivision Surface modifier (level 3): a rounded blob of large curved faces."""
    bpy.ops.mesh.primitive_cube_add(size=2.0, calc_uvs=True)
    obj = bpy.context.object
    obj.name = obj.data.name = "subdivided_cube"
    obj.rotation_euler = (math.radians(15.0), math.radians(-10.0), math.radians(35.0))
    add_subdivision(obj, 3)
    bpy.ops.object.shade_smooth()
    camera = add_camera("camera", (1.5, -2.0, 1.2), (0.0, 0.0, 0.0), lens=28.0)
    return obj, camera, 128, 128


def _parented_sphere(subdivide: int) -> Any:
    """A sphere non-uniformly scaled, parented to a rotated, non-uniformly scaled empty."""
    empty = bpy.data.objects.new("parent", None)
    bpy.context.scene.collection.objects.link(empty)
    empty.location = (0.2, -0.1, 0.1)
    empty.rotation_euler = (math.radians(25.0), math.radians(-15.0), math.radians(40.0))
    empty.scale = (1.3, 0.8, 1.1)
    obj = add_uv_sphere("parented_sphere", segments=16, rings=8)
    if subdivide:
        add_subdivision(obj, subdivide)
    obj.parent = empty
    obj.location = (0.1, 0.2, -0.1)
    obj.rotation_euler = (0.0, math.radians(30.0), 0.0)
    obj.scale = (1.0, 0.7, 1.25)
    return obj


def _case_parented() -> tuple[Any, Any, int, int]:
    """(b) The parented, non-uniformly scaled sphere seen by a plain perspective camera."""
    obj = _parented_sphere(subdivide=0)
    camera = add_camera("camera", (0.6, -3.0, 0.9), (0.2, 0.0, 0.1), lens=30.0)
    return obj, camera, 128, 128


def _case_shifted() -> tuple[Any, Any, int, int]:
    """(c) The parented sphere, subdivided, seen by a perspective camera with lens shift (160 x 120)."""
    obj = _parented_sphere(subdivide=1)
    camera = add_camera("camera", (-0.7, -2.3, 1.1), (-0.2, 0.0, 0.45), lens=22.0, shift=(0.15, -0.1))
    return obj, camera, 160, 120


def _case_ortho() -> tuple[Any, Any, int, int]:
    """(d) A sphere under an orthographic camera."""
    obj = add_uv_sphere("sphere", segments=32, rings=16)
    obj.rotation_euler = (math.radians(20.0), 0.0, math.radians(30.0))
    obj.scale = (1.2, 1.0, 0.9)
    camera = add_camera("camera", (2.5, -3.5, 2.0), (0.0, 0.0, 0.0), kind="ORTHO", ortho_scale=3.0)
    return obj, camera, 128, 128


CASES: dict[str, Callable[[], tuple[Any, Any, int, int]]] = {
    "subdivided": _case_subdivided,
    "parented": _case_parented,
    "shifted": _case_shifted,
    "ortho": _case_ortho,
}


def build_case(name: str, seed: int = 0) -> ProjectionCase:
    """Reset the scene and build case ``name`` (one of ``CASES``); the camera is the scene's camera."""
    scene = reset_scene()
    obj, camera, width, height = CASES[name]()
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    bpy.context.view_layer.update()
    return ProjectionCase(name, obj, camera, width, height, source_pattern(width, height, seed=seed))


# --- materials --------------------------------------------------------------------------------------------------------


def emission_material(name: str, image: Any, uv_map: str) -> tuple[Any, Any]:
    """Material: Emission (strength 1) <- Image Texture(``image``, linear) <- UV Map(``uv_map``).
    Returns (material, its node tree's nodes)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; from 5.0 every material has its node tree (use_nodes deprecated)
        material.use_nodes = True
    tree = material.node_tree
    nodes = tree.nodes
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Linear"
    texture.extension = "EXTEND"
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map = uv_map
    tree.links.new(uv.outputs["UV"], texture.inputs["Vector"])
    tree.links.new(texture.outputs["Color"], emission.inputs["Color"])
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material, nodes


def set_material(obj: Any, material: Any) -> None:
    """``material`` in the object's only slot (linked to the object, so a shared mesh is left alone)."""
    if not obj.material_slots:
        obj.data.materials.append(None)
    obj.material_slots[0].link = "OBJECT"
    obj.material_slots[0].material = material


# --- our projection: the add-on's export + backend.projection.bake ---------------------------------------------------


@dataclass
class OurInputs:
    mesh: Any  # contract.formats.surface.BakeMesh
    views: list[Any]  # backend.projection.bake.BakeView, one per camera
    export_seconds: float  # the evaluated mesh through the add-on's exporter
    depth_seconds: float  # the pass renders, all views (``engine``, 1 sample)


def our_inputs(addon: ModuleType | str, obj: Any, cameras: Sequence[Any], sources: Sequence[np.ndarray], *,
               resolution: tuple[int, int], uv_map: str = UV_MAP, folder: Path | None = None,
               engine: str = "CYCLES") -> OurInputs:
    """What the add-on hands the backend for a projection: the object's evaluated mesh in world space
    (``addon/scene_export/project.surface``), and per camera its ``camera_info`` and a depth pass rendered by
    ``addon/passes.render_passes`` at ``resolution`` with ``engine``; ``sources[i]`` is the image projected
    from ``cameras[i]``. ``addon``: the installed add-on's module (or its name)."""
    from backend.projection.bake import BakeView

    name = addon if isinstance(addon, str) else addon.__name__
    bake_export = importlib.import_module(f"{name}.addon.scene_export.project")
    start = time.perf_counter()
    with bake_export.render_evaluation(bpy.context, [obj]) as depsgraph:
        mesh = bake_export.surface(obj, depsgraph, uv_map)
    export_seconds = time.perf_counter() - start
    depths, depth_seconds, infos = depth_passes(addon, cameras, resolution=resolution, folder=folder, engine=engine)
    views = [BakeView(camera=info, image=np.asarray(source, np.float32), depth=depth, name=camera.name)
             for camera, source, depth, info in zip(cameras, sources, depths, infos, strict=True)]
    return OurInputs(mesh, views, export_seconds, depth_seconds)


def depth_passes(addon: ModuleType | str, cameras: Sequence[Any], *, resolution: tuple[int, int],
                 folder: Path | None = None, engine: str = "CYCLES") -> tuple[list[np.ndarray], float, list[Any]]:
    """Per camera the depth pass ``addon/passes.render_passes`` renders with ``engine`` (1 sample: Cycles'
    samples, Workbench without anti-aliasing) at ``resolution``: (depths, seconds of the renders alone,
    camera infos). The scene's camera is restored."""
    from backend.imaging.passes import find_passes, require_passes

    name = addon if isinstance(addon, str) else addon.__name__
    passes = importlib.import_module(f"{name}.addon.scene_export.passes")
    scene = bpy.context.scene
    width, height = resolution
    depths, infos = [], []
    original_camera = scene.camera
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="projection_passes_", dir=folder) as tmp:
        try:
            for index, camera in enumerate(cameras):
                inputs = Path(tmp) / f"view{index}"
                inputs.mkdir()
                scene.camera = camera
                start = time.perf_counter()
                # Workbench as the add-on renders depth-only views: one sample per pixel.
                path = passes.render_passes(scene, inputs, width, height, engine=engine,
                                            antialias=engine != "BLENDER_WORKBENCH")
                seconds += time.perf_counter() - start
                found = find_passes(read_exr(path))
                require_passes(found, {"depth"}, str(path))
                assert found.depth is not None  # require_passes checked it
                depths.append(found.depth)
                infos.append(passes.camera_info(scene, camera, width, height))
        finally:
            scene.camera = original_camera
    return depths, seconds, infos


# --- measuring ------------------------------------------------------------------------------------------------------


def emission_render(obj: Any, camera: Any, texture: np.ndarray, width: int, height: int, *,
                    uv_map: str = UV_MAP, folder: Path | None = None) -> np.ndarray:
    """Render ``obj`` textured with ``texture`` (row 0 at the top, through ``uv_map``) as pure emission from
    ``camera``: H x W x 4 float32 scene-linear, row 0 at the top; alpha 1 where the object covers the pixel
    centre, 0 elsewhere (transparent film).

    Cycles, 1 sample, box pixel filter 0.01 px wide: each pixel is the texture as seen at its centre, no
    anti-aliasing, no noise (emission needs no light paths). Colour management 'Standard', no look,
    exposure 0, gamma 1 (the EXR is scene-linear anyway). The object's material slot is restored after.
    """
    scene = bpy.context.scene
    render = scene.render
    render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = 1
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    cycles.pixel_filter_type = "BOX"
    cycles.filter_width = 0.01
    cycles.max_bounces = 0
    render.film_transparent = True
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.use_border = False
    render.use_compositing = False
    render.use_sequencer = False
    view = scene.view_settings
    view.view_transform = "Standard"
    view.look = "None"
    view.exposure = 0.0
    view.gamma = 1.0
    settings = render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = "OPEN_EXR"
    settings.color_mode = "RGBA"
    settings.color_depth = "32"
    settings.exr_codec = "ZIP"
    scene.camera = camera

    image = to_blender_image("baked_texture", texture, opaque=True)
    material, _ = emission_material("baked_emission", image, uv_map)
    previous = obj.material_slots[0].material if obj.material_slots else None
    set_material(obj, material)
    try:
        with tempfile.TemporaryDirectory(prefix="projection_render_", dir=folder) as tmp:
            render.filepath = str(Path(tmp) / "render")
            render.use_file_extension = True
            bpy.ops.render.render(write_still=True, scene=scene.name)
            exr = read_exr(Path(tmp) / "render.exr")
        pixels = exr.layers[""]
    finally:
        obj.material_slots[0].material = previous
        bpy.data.materials.remove(material)
        bpy.data.images.remove(image)
    return np.ascontiguousarray(rgba(pixels))


def visible_mask(rendered: np.ndarray) -> np.ndarray:
    """H x W bool: pixels the object covers (alpha == 1) that are not on its silhouette: the coverage eroded
    by one pixel (4-neighbourhood), since a silhouette pixel's centre may lie on a face seen nearly edge-on,
    where any texture lookup is ill-conditioned."""
    covered = np.asarray(rendered)[:, :, 3] >= 1.0
    inner = covered.copy()
    inner[1:, :] &= covered[:-1, :]
    inner[:-1, :] &= covered[1:, :]
    inner[:, 1:] &= covered[:, :-1]
    inner[:, :-1] &= covered[:, 1:]
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    return inner


def reprojection_error(rendered: np.ndarray, source: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference over R, G, B between ``rendered`` (an ``emission_render``) and the ``source``
    image projected from the same camera, over ``mask`` (default: ``visible_mask(rendered)``, the object's
    pixels less its silhouette). In fractions of full scale: 0.01 is 1 % of the [0, 1] range."""
    rendered = np.asarray(rendered, dtype=np.float64)
    source = np.asarray(source, dtype=np.float64)
    if rendered.shape[:2] != source.shape[:2]:
        raise ValueError(f"rendered {rendered.shape[:2]} and source {source.shape[:2]} differ in size")
    if mask is None:
        mask = visible_mask(rendered)
    if not mask.any():
        raise ValueError("no visible pixels to compare")
    return float(np.abs(rendered[:, :, :3][mask] - source[:, :, :3][mask]).mean())

