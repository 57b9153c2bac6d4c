"""Projection onto meshes inside real Blender: mesh export, project_image and project_texture through
the installed extension and a real backend (tiny models), and every refusal leaving the scene as it was."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Vector

from backend.imaging.exr import read_exr
from contract import jobfolder
from contract.formats.surface import load_bake_mesh, save_bake_mesh

COLOUR = (0.8, 0.3, 0.1)  # display-encoded (sRGB) values of the projected test image


def _srgb_to_linear(value: float) -> float:
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def _jobs(addon) -> list[Path]:
    return jobfolder.list_jobs(addon.addon.paths.jobs_dir())


def _select(*objects, active=None):
    bpy.ops.object.select_all(action="DESELECT")
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = active or (objects[0] if objects else None)


def _cube(name="Cube", location=(0.0, 0.0, 0.0)):
    bpy.ops.mesh.primitive_cube_add(location=location)
    bpy.context.object.name = bpy.context.object.data.name = name
    return bpy.context.object


def _camera(name="Camera", location=(0.0, -6.0, 0.0), target=(0.0, 0.0, 0.0), active=True):
    bpy.ops.object.camera_add(location=location)
    camera = bpy.context.object
    camera.name = name
    camera.rotation_euler = (Vector(target) - Vector(location)).to_track_quat("-Z", "Y").to_euler()
    if active:
        bpy.context.scene.camera = camera
    return camera


def _image(name="Photo", size=32, colour=COLOUR):
    image = bpy.data.images.new(name, size, size)
    pixels = np.empty((size, size, 4), np.float32)
    pixels[:] = (*colour, 1.0)
    image.pixels.foreach_set(pixels.ravel())
    return image


def _settings(**values):
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 64
    scene.render.resolution_percentage = 100
    settings = scene.scene_diffusion.project
    base = dict(texture_size=64, padding=2, blend_exponent=4.0, uv_map="", new_material=False, unwrap=False,
                prompt="weathered bricks", negative_prompt="", steps=2, width=64, height=64, random_seed=False,
                seed=3, views="ACTIVE", view_count=2, elevation=20.0, distance=0.0, depth_weight=1.0,
                normal_weight=0.0, sequential=True, model="")
    for key, value in {**base, **values}.items():
        setattr(settings, key, value)
    return settings


def _texels(image) -> np.ndarray:
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4)


def _wiring(material):
    """(image, uv map) the material's Principled BSDF reads on Base Color, through an Image Texture fed by a
    UV Map node."""
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    tex = bsdf.inputs["Base Color"].links[0].from_node
    assert tex.type == "TEX_IMAGE"
    uv = tex.inputs["Vector"].links[0].from_node
    assert uv.type == "UVMAP"
    return tex.image, uv.uv_map


def _scene_state():
    """What a refused operator must leave exactly as it was."""
    return (sorted(bpy.data.images.keys()), sorted(bpy.data.materials.keys()), sorted(bpy.data.objects.keys()),
            sorted(bpy.data.cameras.keys()), sorted(o.name for o in bpy.context.selected_objects),
            getattr(bpy.context.view_layer.objects.active, "name", None),
            {m.name: sorted(m.uv_layers.keys()) for m in bpy.data.meshes},
            {o.name: [s.material.name if s.material else None for s in o.material_slots] for o in bpy.data.objects},
            getattr(bpy.context.scene.camera, "name", None))


# -- mesh export ----------------------------------------------------------------------------


def _transformed_objects():
    """A subdivided cube (flat shaded) and a smooth sphere, both under a rotated, non-uniformly scaled empty."""
    bpy.ops.object.empty_add(location=(1.0, 2.0, 3.0), rotation=(0.3, 0.5, 0.7))
    parent = bpy.context.object
    parent.scale = (1.0, 2.0, 0.5)
    cube = _cube("Boxy", location=(0.5, 0.0, 0.0))
    cube.rotation_euler, cube.scale = (0.2, 0.0, 0.4), (1.5, 1.0, 1.0)
    cube.modifiers.new("Subdivision", "SUBSURF").levels = 1
    bpy.ops.mesh.primitive_uv_sphere_add(segments=12, ring_count=6, location=(-2.0, 0.0, 0.0))
    sphere = bpy.context.object
    sphere.data.shade_smooth()
    for child in (cube, sphere):
        child.parent = parent
    bpy.context.view_layer.update()
    return cube, sphere


def test_mesh_export_is_the_evaluated_mesh_in_world_space(addon, clean_scene, tmp_path):
    bake_export = addon.addon.scene_export.project
    cube, sphere = _transformed_objects()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj in (cube, sphere):
        arrays = bake_export.surface(obj, depsgraph, "UVMap")
        evaluated = obj.evaluated_get(depsgraph)
        world = evaluated.matrix_world.copy()
        normal_matrix = world.to_3x3().inverted().transposed()
        mesh = evaluated.to_mesh()
        try:
            expected_positions = np.array([world @ v.co for v in mesh.vertices])
            triangles = mesh.loop_triangles
            expected_triangles = np.array([tuple(t.vertices) for t in triangles])
            uv_layer = mesh.uv_layers["UVMap"].uv
            expected_uvs = np.array([[tuple(uv_layer[loop].vector) for loop in t.loops] for t in triangles])
            expected_normals = np.array([[tuple((normal_matrix @ Vector(n)).normalized()) for n in t.split_normals]
                                         for t in triangles])
            modifier_vertices = len(obj.data.vertices)
        finally:
            evaluated.to_mesh_clear()
        assert len(expected_positions) > modifier_vertices or obj is sphere  # the modifier applied
        assert arrays.positions.dtype == np.float32 and arrays.triangles.dtype == np.int32
        np.testing.assert_allclose(arrays.positions, expected_positions, atol=1e-5)
        np.testing.assert_array_equal(arrays.triangles, expected_triangles)
        assert arrays.uvs.shape == (len(expected_triangles), 3, 2)
        np.testing.assert_allclose(arrays.uvs, expected_uvs, atol=1e-6)
        lengths = np.linalg.norm(arrays.normals, axis=-1)
        np.testing.assert_allclose(lengths, 1.0, atol=1e-5)
        np.testing.assert_allclose(arrays.normals, expected_normals, atol=1e-4)
        assert arrays.name == obj.name

    # Flat shading on planar faces: each corner normal is the world-space normal of its triangle, whatever the
    # non-uniform scales do (Catmull-Clark faces are not planar, so a plain cube shows it).
    flat = _cube("Flat", location=(0.0, 3.0, 0.0))
    flat.scale, flat.parent = (0.5, 1.0, 3.0), cube.parent
    bpy.context.view_layer.update()
    arrays = bake_export.surface(flat, bpy.context.evaluated_depsgraph_get(), "UVMap")
    corners = arrays.positions[arrays.triangles].astype(np.float64)
    face = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    face /= np.linalg.norm(face, axis=-1, keepdims=True)
    np.testing.assert_allclose(arrays.normals, np.repeat(face[:, None], 3, axis=1), atol=1e-4)

    path = save_bake_mesh(tmp_path / "meshes" / "00.npz", arrays)
    loaded = load_bake_mesh(path)  # the backend's reader, with its checks
    assert loaded.name == "Flat" and len(loaded.triangles) == len(arrays.triangles)
    np.testing.assert_array_equal(loaded.uvs, arrays.uvs)


def test_meshes_are_exported_as_renders_see_them(addon, clean_scene, tmp_path):
    """Viewport and render differ: Subdivision 1 vs 2, an Array shown only in renders. The export (and so
    the bake) follows the render, which the depth passes show; the viewport settings come back afterwards."""
    bake_export = addon.addon.scene_export.project
    cube = _cube("Levels")
    subdivision = cube.modifiers.new("Subdivision", "SUBSURF")
    subdivision.levels, subdivision.render_levels = 1, 2
    array = cube.modifiers.new("Array", "ARRAY")  # render only: doubles the triangles
    array.show_viewport, array.show_render = False, True
    bpy.context.view_layer.update()
    viewport = len(cube.evaluated_get(bpy.context.evaluated_depsgraph_get()).data.loop_triangles)
    (rel,) = bake_export.export_meshes(bpy.context, [bake_export.BakeTarget(cube.name, "UVMap")], tmp_path)
    exported = load_bake_mesh(tmp_path / rel)
    # Level 2 has 4 times the triangles of level 1, and the render-only array doubles them.
    assert len(exported.triangles) == 2 * 4 * viewport
    assert (subdivision.levels, subdivision.render_levels, array.show_viewport) == (1, 2, False)
    assert len(cube.evaluated_get(bpy.context.evaluated_depsgraph_get()).data.loop_triangles) == viewport


# -- project_image --------------------------------------------------------------------------


@pytest.mark.remote
def test_project_image_bakes_a_float_image_into_a_new_material(addon, clean_scene):
    cube = _cube()
    camera = _camera()
    bpy.ops.object.empty_add(location=(3.0, 0.0, 0.0))
    empty = bpy.context.object
    _select(cube, empty, camera)
    _settings(image=_image())
    before = len(_jobs(addon))
    engine, render_aa = bpy.context.scene.render.engine, bpy.context.scene.display.render_aa

    assert bpy.ops.scene_diffusion.project_image() == {"FINISHED"}

    image = bpy.data.images["Cube Projected"]
    assert tuple(image.size) == (64, 64) and image.is_float and image.packed_file is not None
    assert image.colorspace_settings.name == "Linear Rec.709"
    material = cube.active_material
    assert material.name == "Cube Projected"
    assert _wiring(material) == (image, "UVMap")
    texels = _texels(image)
    island = texels[..., 3] > 0.5
    assert island.mean() > 0.2
    expected = [_srgb_to_linear(c) for c in COLOUR]  # the sRGB image arrives scene-linear
    np.testing.assert_allclose(np.median(texels[island][:, :3], axis=0), expected, atol=0.02)
    assert not empty.material_slots and not camera.material_slots  # not meshes: left alone
    jobs = _jobs(addon)
    assert len(jobs) == before + 1
    record = jobfolder.read_job(jobs[-1])
    assert record["status"] == "done" and record["request"]["size"] == 64
    assert record["request"]["meshes"] == ["inputs/meshes/00.npz"]
    views = json.loads((jobs[-1] / "inputs" / "views.json").read_text())["views"]
    assert [v["name"] for v in views] == ["Camera"] and views[0]["image_colorspace"] == "srgb"
    assert (views[0]["camera"]["resolution_x"], views[0]["camera"]["resolution_y"]) == (64, 64)
    assert (jobs[-1] / "inputs" / views[0]["passes"]).is_file()
    # Projecting an image reads Depth alone: Workbench renders it (no Normal layer), the scene keeps Cycles.
    layers = read_exr(jobs[-1] / "inputs" / views[0]["passes"]).layers
    assert any(name.endswith("Depth") for name in layers) and not any(name.endswith("Normal") for name in layers)
    assert bpy.context.scene.render.engine == engine and bpy.context.scene.display.render_aa == render_aa


def test_keywords_override_the_scene_settings_for_one_call(addon, clean_scene):
    """As object.bake falls back to scene.render.bake: keywords win for that call, the scene is left as it was,
    and a later plain call (a click) uses the scene again, never the script's last keywords."""
    cube = _cube()
    _camera()
    _select(cube)
    settings = _settings(image=None, texture_size=64)
    _image()  # "Photo"

    assert bpy.ops.scene_diffusion.project_image(image="Photo", texture_size=32, padding=1) == {"FINISHED"}

    from test_panels import _draw  # the Project panel shows this job

    calls = _draw(addon.panels.project.SCENE_DIFFUSION_PT_project.draw, bpy.context)
    job = addon.addon.jobs.service.supervisor().current_job()
    assert ("label", (), {"text": f"Done: job {job.id}", "icon": "CHECKMARK"}) in calls
    record = jobfolder.read_job(_jobs(addon)[-1])
    assert record["request"]["size"] == 32 and record["request"]["padding"] == 1
    assert tuple(bpy.data.images["Cube Projected"].size) == (32, 32)
    assert settings.image is None and settings.texture_size == 64 and settings.padding == 2
    settings.image = bpy.data.images["Photo"]
    assert bpy.ops.scene_diffusion.project_image() == {"FINISHED"}
    assert jobfolder.read_job(_jobs(addon)[-1])["request"]["size"] == 64  # SKIP_SAVE: nothing carried over


def test_a_keyword_naming_a_missing_datablock_is_refused(addon, clean_scene):
    cube = _cube()
    _camera()
    _select(cube)
    _settings(image=_image())
    before = _scene_state(), len(_jobs(addon))
    with pytest.raises(RuntimeError, match="image='Nope': there is no image named 'Nope'"):
        bpy.ops.scene_diffusion.project_image(image="Nope")
    assert (_scene_state(), len(_jobs(addon))) == before


def test_existing_material_is_kept_re_runs_reuse_and_new_material_replaces(addon, clean_scene):
    cube = _cube()
    cube.data.uv_layers.new(name="Second")
    cube.data.uv_layers["Second"].active_render = True
    painted = bpy.data.materials.new("Painted")
    if painted.node_tree is None:  # Blender 4.x: a script's new material has no nodes (the UI's New button adds them)
        painted.use_nodes = True
    cube.data.materials.append(painted)
    _camera()
    _select(cube)
    _settings(image=_image())

    bpy.ops.scene_diffusion.project_image()
    assert cube.active_material == painted and "Cube Projected" not in bpy.data.materials
    image = bpy.data.images["Cube Projected"]
    assert _wiring(painted) == (image, "Second")  # the active render UV map by default
    # The active image node is what Solid view (Texture colour) and Texture Paint show.
    assert painted.node_tree.nodes.active.type == "TEX_IMAGE" and painted.node_tree.nodes.active.image == image

    images, nodes = len(bpy.data.images), len(painted.node_tree.nodes)
    _settings(image=_image("Other", colour=(0.1, 0.5, 0.9)), uv_map="UVMap")
    bpy.ops.scene_diffusion.project_image()
    assert len(bpy.data.images) == images + 1  # only "Other": the projected image datablock is reused
    assert bpy.data.images["Cube Projected"] == image and len(painted.node_tree.nodes) == nodes
    assert _wiring(painted) == (image, "UVMap")
    texels = _texels(image)
    assert np.median(texels[texels[..., 3] > 0.5][:, 2]) > 0.5  # now blue

    _settings(image=_image(), new_material=True)
    bpy.ops.scene_diffusion.project_image()
    material = cube.active_material
    assert material.name == "Cube Projected" and len(cube.material_slots) == 1
    assert _wiring(material) == (image, "Second")
    assert "Painted" in bpy.data.materials


def test_unwrap_option_makes_uvs_and_keeps_the_selection(addon, clean_scene):
    cube, other = _cube(), _cube("Other", location=(0.0, 0.0, 2.2))
    cube.data.uv_layers.remove(cube.data.uv_layers[0])
    _camera()
    _select(cube, other, active=other)
    _settings(image=_image(), unwrap=True)
    assert bpy.ops.scene_diffusion.project_image() == {"FINISHED"}
    assert cube.data.uv_layers.keys() == ["UVMap"]
    uvs = np.empty(len(cube.data.loops) * 2, np.float32)
    cube.data.uv_layers["UVMap"].uv.foreach_get("vector", uvs)
    assert uvs.min() >= 0.0 and uvs.max() <= 1.0 and np.ptp(uvs) > 0.5  # a real unwrap, not all zeros
    assert _wiring(cube.active_material)[1] == "UVMap"
    assert {o.name for o in bpy.context.selected_objects} == {"Cube", "Other"}
    assert bpy.context.view_layer.objects.active == other and cube.mode == "OBJECT"


def test_a_view_that_sees_none_of_an_object_is_a_warning(addon, clean_scene):
    seen, hidden = _cube("Seen"), _cube("Behind", location=(0.0, -12.0, 0.0))  # behind the camera
    _camera()
    _select(seen, hidden)
    _settings(image=_image())
    assert bpy.ops.scene_diffusion.project_image() == {"FINISHED"}
    job = addon.addon.jobs.service.supervisor().current_job()
    assert any("Behind" in w and "sees none" in w for w in job.applied.warnings), job.applied.warnings
    assert job.applied.seen["Seen"] > 0.1 and job.applied.seen["Behind"] == 0.0


# -- the interactive path (fixture `interactive`, tests/blender/conftest.py) --------------------


def test_interactive_project_image_lands_on_a_timer_tick(addon, clean_scene, interactive):
    cube = _cube()
    _camera()
    _select(cube)
    _settings(image=_image())
    assert bpy.ops.scene_diffusion.project_image() == {"FINISHED"}
    job = interactive.supervisor().current_job()
    assert job.task == "project_image" and "Cube Projected" not in bpy.data.images
    deadline = time.monotonic() + 120
    while not job.finished and time.monotonic() < deadline:
        interactive._tick()
        time.sleep(0.05)
    assert job.state == "done", job.error
    assert cube.active_material.name == "Cube Projected"
    assert job.applied.objects == ["Cube"]


# -- project_texture ------------------------------------------------------------------------


def _cameras():
    return (sorted(o.name for o in bpy.data.objects if o.type == "CAMERA"), sorted(bpy.data.cameras.keys()))


@pytest.mark.remote
def test_project_texture_from_the_active_camera(addon, clean_scene):
    cube = _cube()
    _camera()
    _select(cube)
    _settings()
    assert bpy.ops.scene_diffusion.project_texture() == {"FINISHED"}
    image = bpy.data.images["Cube Projected"]
    assert tuple(image.size) == (64, 64) and image.is_float
    assert image["scene_diffusion"]["prompt"] == "weathered bricks"
    assert _wiring(cube.active_material) == (image, "UVMap")
    assert "Diffusion View Camera" in bpy.data.images
    record = jobfolder.read_job(_jobs(addon)[-1])
    assert record["status"] == "done" and record["seed"] == 3
    assert record["request"]["sequential"] is True and record["request"]["width"] == 64
    views = json.loads((_jobs(addon)[-1] / "inputs" / "views.json").read_text())["views"]
    layers = read_exr(_jobs(addon)[-1] / "inputs" / views[0]["passes"]).layers
    # Depth control alone: the passes render depth-only (Workbench), no Normal layer
    assert any(name.endswith("Depth") for name in layers) and not any(name.endswith("Normal") for name in layers)


def test_project_texture_automatic_views_remove_their_cameras(addon, clean_scene):
    cube = _cube()
    cube.location = (1.0, 1.0, 0.5)
    _select(cube)
    _settings(views="AUTO", view_count=2, elevation=30.0, normal_weight=0.5)
    before = _cameras()
    assert bpy.ops.scene_diffusion.project_texture() == {"FINISHED"}
    assert _cameras() == before
    job = _jobs(addon)[-1]
    assert jobfolder.read_job(job)["status"] == "done"
    views = json.loads((job / "inputs" / "views.json").read_text())["views"]
    assert [v["name"] for v in views] == ["Projection View 1", "Projection View 2"]
    layers = read_exr(job / "inputs" / views[0]["passes"]).layers
    assert any(name.endswith("Normal") for name in layers)  # the normal control reads Cycles' Normal pass
    centre, radius = Vector((1.0, 1.0, 0.5)), math.sqrt(3.0)
    for view in views:
        matrix = np.array(view["camera"]["matrix_world"])
        location, looking = Vector(matrix[:3, 3]), -Vector(matrix[:3, 2])
        offset = location - centre
        assert math.degrees(math.asin(offset.z / offset.length)) == pytest.approx(30.0, abs=1e-3)
        assert looking.angle(-offset) < 1e-4  # aimed at the centre
        assert offset.length * math.sin(math.atan(18 / 50)) > radius  # the bounding sphere is in frame
    first = np.array(views[0]["camera"]["matrix_world"])[:3, 3]
    assert first[1] < centre.y and abs(first[0] - centre.x) < 1e-4  # the first view from the front
    assert cube.active_material.name == "Cube Projected"


def test_automatic_cameras_are_removed_when_rendering_fails(addon, clean_scene, monkeypatch):
    passes = addon.addon.scene_export.passes
    cube = _cube()
    _select(cube)
    _settings(views="AUTO", view_count=3)

    def fail(*_args, **_kwargs):
        raise passes.PassRenderError("the renderer crashed")

    monkeypatch.setattr(passes, "render_passes", fail)
    state, jobs = _scene_state(), len(_jobs(addon))
    with pytest.raises(RuntimeError, match="the renderer crashed"):
        bpy.ops.scene_diffusion.project_texture()
    assert _scene_state() == state and len(_jobs(addon)) == jobs


def test_project_panel_draws(addon, clean_scene):
    from test_panels import _draw

    for views in ("ACTIVE", "SELECTED", "AUTO"):
        bpy.context.scene.scene_diffusion.project.views = views
        calls = _draw(addon.panels.project.SCENE_DIFFUSION_PT_project.draw, bpy.context)
        operators = {c[1][0] for c in calls if c[0] == "operator"}
        assert operators == {"scene_diffusion.project_image", "scene_diffusion.project_texture"}
        shown = {c[1][1] for c in calls if c[0] == "prop"}
        assert ("view_count" in shown) == (views == "AUTO") and {"texture_size", "unwrap", "new_material"} <= shown


# -- refusals: a clear message, and nothing in the scene changes ----------------------------


def _no_uvs(cube, camera, settings):
    cube.data.uv_layers.remove(cube.data.uv_layers[0])


def _image_without_pixels(cube, camera, settings):
    ghost = bpy.data.images.new("Ghost", 8, 8)
    ghost.source, ghost.filepath = "FILE", "/nonexistent/ghost.png"
    settings.image = ghost


@pytest.mark.parametrize("operator, configure, message", [
    ("project_image", _no_uvs, "object 'Cube' has no UV map.*Unwrap objects without UVs"),
    ("project_texture", _no_uvs, "object 'Cube' has no UV map.*Unwrap objects without UVs"),
    ("project_image", lambda c, cam, s: _select(cam), "Select one or more mesh objects"),
    ("project_image", lambda c, cam, s: (setattr(bpy.context.scene, "camera", None)), "No camera to project from"),
    ("project_texture", lambda c, cam, s: setattr(bpy.context.scene, "camera", None), "no active camera"),
    ("project_texture", lambda c, cam, s: setattr(s, "views", "SELECTED"), "No camera is selected"),
    ("project_texture", lambda c, cam, s: (setattr(s, "views", "AUTO"), setattr(s, "view_count", 40)),
     "at most 32"),
    ("project_image", lambda c, cam, s: setattr(s, "texture_size", 8192), "texture size must be between 16 and 4096"),
    ("project_texture", lambda c, cam, s: setattr(s, "padding", 100), "seam padding must be between 0 and 64"),
    ("project_texture", lambda c, cam, s: setattr(s, "prompt", "  "), "prompt is empty"),
    ("project_texture", lambda c, cam, s: setattr(s, "depth_weight", 0.0), "give the depth or the normal control"),
    ("project_image", lambda c, cam, s: setattr(s, "image", None), "Choose an image"),
    ("project_image", _image_without_pixels, "image 'Ghost' has no pixels"),
    ("project_image", lambda c, cam, s: setattr(s, "uv_map", "Nope"), "object 'Cube' has no UV map 'Nope'"),
])
def test_refusals_change_nothing(addon, clean_scene, operator, configure, message):
    cube = _cube()
    camera = _camera()
    bpy.ops.object.light_add()
    light = bpy.context.object
    _select(cube, light)
    settings = _settings(image=_image())
    configure(cube, camera, settings)
    state, jobs = _scene_state(), len(_jobs(addon))
    with pytest.raises(RuntimeError, match=message):
        getattr(bpy.ops.scene_diffusion, operator)()
    assert _scene_state() == state
    assert len(_jobs(addon)) == jobs
