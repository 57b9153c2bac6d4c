"""Blender's own pass conventions, pinned: a tiny analytic scene (a tilted plane seen from its back, a smooth
sphere) rendered by Cycles at 1 sample into one multilayer EXR, read back with read_exr + find_passes and
compared with ray casting through ``camera_rays``. If a Blender release changes what Z or Normal mean, this fails.
"""

from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Vector

from backend.imaging.control import normals_to_camera
from backend.imaging.exr import read_exr
from backend.imaging.passes import BACKGROUND_DEPTH, background_mask, find_passes, require_passes
from backend.projection.camera import camera_rays
from contract.formats.camera import CameraInfo

WIDTH, HEIGHT = 48, 32
PLANE_SIZE = 8.0
SPHERE_CENTRE = np.array([0.6, 0.0, 0.6])
SPHERE_RADIUS = 0.8


def _camera_info(obj: bpy.types.Object, scene: bpy.types.Scene) -> CameraInfo:
    cam = obj.data
    render = scene.render
    scale = render.resolution_percentage / 100
    return CameraInfo.from_dict({
        "matrix_world": [list(row) for row in obj.matrix_world], "type": cam.type, "lens": cam.lens,
        "sensor_width": cam.sensor_width, "sensor_height": cam.sensor_height, "sensor_fit": cam.sensor_fit,
        "shift_x": cam.shift_x, "shift_y": cam.shift_y, "ortho_scale": cam.ortho_scale,
        "clip_start": cam.clip_start, "clip_end": cam.clip_end,
        "resolution_x": int(render.resolution_x * scale), "resolution_y": int(render.resolution_y * scale),
        "pixel_aspect_x": render.pixel_aspect_x, "pixel_aspect_y": render.pixel_aspect_y,
    })


def _render_scene(kind: str, path: Path) -> tuple[CameraInfo, bpy.types.Object, bpy.types.Object]:
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = WIDTH, HEIGHT, 100
    layer = scene.view_layers[0]
    layer.use_pass_z = True
    layer.use_pass_normal = True
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5.0: choose multilayer before the format
        settings.media_type = "MULTI_LAYER_IMAGE"
    settings.file_format = "OPEN_EXR_MULTILAYER"
    settings.color_depth = "32"
    scene.render.filepath = str(path)

    data = bpy.data.cameras.new("camera")
    data.type = kind
    data.lens = 35.0
    data.ortho_scale = 7.0
    data.shift_x, data.shift_y = 0.1, -0.05
    camera = bpy.data.objects.new("camera", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.location = (0.5, -7.0, 3.0)
    forward = Vector((0.0, 0.0, 0.3)) - camera.location
    camera.rotation_euler = forward.to_track_quat("-Z", "Y").to_euler()

    # The plane's mesh normal points down and away from the camera: the pass shows the face it sees.
    bpy.ops.mesh.primitive_plane_add(size=PLANE_SIZE, location=(0.0, 1.0, -0.5),
                                     rotation=(math.radians(180 + 20), 0.0, 0.0))
    plane = bpy.context.object
    bpy.ops.mesh.primitive_uv_sphere_add(radius=SPHERE_RADIUS, location=tuple(SPHERE_CENTRE), segments=64,
                                         ring_count=32)
    bpy.ops.object.shade_smooth()
    bpy.context.view_layer.update()
    bpy.ops.render.render(write_still=True)
    return _camera_info(camera, scene), camera, plane


def _analytic(camera: CameraInfo, plane: bpy.types.Object):
    """Planar Z, world normal facing the camera, and what each pixel centre sees (-1 nothing, 0 plane, 1 sphere),
    plus the cosine between the ray and the surface (small = grazing)."""
    origins, directions = camera_rays(camera)
    unit = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    to_world = np.array(plane.matrix_world)
    normal = to_world[:3, :3] @ [0.0, 0.0, 1.0]
    normal /= np.linalg.norm(normal)
    point = to_world[:3, 3]
    depth = np.full((HEIGHT, WIDTH), np.inf)
    normals = np.zeros((HEIGHT, WIDTH, 3))
    seen = np.full((HEIGHT, WIDTH), -1)
    cosine = np.zeros((HEIGHT, WIDTH))

    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((point - origins) @ normal) / (directions @ normal)
    local = (origins + t[..., None] * directions - point) @ to_world[:3, :3]  # plane axes (unscaled object)
    hit = (t > 0) & (np.abs(local[..., 0]) < PLANE_SIZE / 2) & (np.abs(local[..., 1]) < PLANE_SIZE / 2)
    depth[hit], seen[hit] = t[hit], 0
    facing = np.where(((directions @ normal) < 0)[..., None], normal, -normal)
    normals[hit] = facing[hit]
    cosine[hit] = np.abs(unit @ normal)[hit]

    oc = origins - SPHERE_CENTRE
    a = np.einsum("...i,...i", directions, directions)
    b = 2 * np.einsum("...i,...i", directions, oc)
    c = np.einsum("...i,...i", oc, oc) - SPHERE_RADIUS**2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    hit = (disc >= 0) & (t > 0) & (t < depth)
    points = origins + t[..., None] * directions
    sphere_normals = (points - SPHERE_CENTRE) / SPHERE_RADIUS
    depth[hit], seen[hit], normals[hit] = t[hit], 1, sphere_normals[hit]
    cosine[hit] = np.abs(np.einsum("...i,...i", unit, sphere_normals))[hit]
    return depth, normals, seen, cosine, origins, unit


@pytest.mark.parametrize("kind", ["PERSP", "ORTHO"])
def test_cycles_z_is_planar_and_normal_is_world_space_facing_the_camera(kind, tmp_path):
    path = tmp_path / "passes.exr"
    camera, camera_object, plane = _render_scene(kind, path)
    exr = read_exr(path)
    assert set(exr.layers) == {"ViewLayer.Combined", "ViewLayer.Depth", "ViewLayer.Normal"}
    assert "ViewLayer.Depth.Z" in exr.channels and "ViewLayer.Normal.X" in exr.channels
    passes = find_passes(exr)
    require_passes(passes, {"combined", "depth", "normal"}, str(path))
    assert passes.depth is not None and passes.normal is not None and passes.combined is not None
    assert passes.depth.shape == (HEIGHT, WIDTH)

    depth, normals, seen, cosine, origins, unit = _analytic(camera, plane)
    background = background_mask(passes.depth)
    agree = (seen == -1) == background
    assert agree.mean() > 0.97  # only silhouette pixels may differ
    assert (seen == 0).sum() > 200 and (seen == 1).sum() > 40 and (seen == -1).sum() > 20

    # Background: Z = 1e10, normal 0, alpha 1 (film not transparent).
    none = (seen == -1) & background
    assert np.all(passes.depth[none] == BACKGROUND_DEPTH)
    assert np.all(passes.normal[none] == 0.0)
    assert np.all(passes.combined[..., 3] == 1.0)

    # The plane: Z is the distance along the view axis (planar), to 1e-3 relative; radial would be far off.
    on_plane = (seen == 0) & ~background & (cosine > 0.2)
    assert on_plane.sum() > 150
    got, expected = passes.depth[on_plane], depth[on_plane]
    assert np.abs(got - expected).max() <= 1e-3 * expected.max()
    if kind == "PERSP":
        radial = depth * np.linalg.norm(camera_rays(camera)[1], axis=-1)
        assert np.abs(radial[on_plane] - expected).max() > 0.05 * expected.max()  # the test tells them apart
    # World-space normal, turned toward the camera although the mesh's own normal points away.
    mesh_normal = np.array(plane.matrix_world.to_3x3() @ Vector((0.0, 0.0, 1.0)))
    assert float(np.mean(unit[on_plane] @ mesh_normal)) > 0.1  # the camera sees the back face
    assert np.abs(passes.normal[on_plane] - normals[on_plane]).max() < 1e-4
    # normals_to_camera agrees with Blender's own inverse of the camera matrix.
    to_camera = camera_object.matrix_world.to_3x3().inverted()
    expected_camera = np.array((to_camera @ Vector(-mesh_normal)).normalized())
    assert np.abs(normals_to_camera(passes.normal[on_plane], camera) - expected_camera).max() < 1e-4

    # The smooth sphere (a 64 x 32 UV mesh, so within its faceting): Z to 1 cm, normals to 1.5 degrees.
    on_sphere = (seen == 1) & ~background & (cosine > 0.3)
    assert on_sphere.sum() > 20
    assert np.abs(passes.depth[on_sphere] - depth[on_sphere]).max() < 0.01
    dots = np.einsum("ij,ij->i", passes.normal[on_sphere], normals[on_sphere])
    assert dots.min() > math.cos(math.radians(1.5))


@pytest.mark.parametrize("kind", ["PERSP", "ORTHO"])
def test_workbench_without_antialiasing_writes_the_same_z_as_cycles(kind, tmp_path):
    """The projection's depth-only passes render with Workbench at one sample per pixel
    (addon/scene_export/project.export_views): its Z must be Cycles' Z - planar, the pixel centre's, 1e10
    for the background - and it writes no Normal pass."""
    _render_scene(kind, tmp_path / "cycles.exr")
    cycles = find_passes(read_exr(tmp_path / "cycles.exr")).depth
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.render_aa = "OFF"
    scene.render.filepath = str(tmp_path / "workbench.exr")
    bpy.ops.render.render(write_still=True)
    exr = read_exr(tmp_path / "workbench.exr")
    assert "ViewLayer.Normal" not in exr.layers
    workbench = find_passes(exr).depth
    assert cycles is not None and workbench is not None
    both = ~background_mask(cycles) & ~background_mask(workbench)
    assert (background_mask(cycles) != background_mask(workbench)).mean() < 0.01  # silhouette pixels at most
    assert np.all(workbench[background_mask(cycles) & background_mask(workbench)] == BACKGROUND_DEPTH)
    relative = np.abs(workbench[both] - cycles[both]) / cycles[both]
    assert both.sum() > 1000 and np.quantile(relative, 0.99) < 1e-4
