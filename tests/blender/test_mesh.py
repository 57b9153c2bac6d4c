"""Image to mesh inside real Blender, with a tiny Shap-E pipeline, and the simplest mesh import (the rest in
test_mesh_external.py)."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from contract import jobfolder


def _disc_image(name="Concept", size=64, transparent=False):
    """A red disc on a plain grey background (or on transparency)."""
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3) ** 2
    rgba = np.empty((size, size, 4), np.float32)
    rgba[:] = (0.5, 0.5, 0.5, 0.0 if transparent else 1.0)
    rgba[inside] = (0.8, 0.1, 0.1, 1.0)
    image = bpy.data.images.new(name, size, size, alpha=True)
    image.pixels.foreach_set(rgba[::-1].ravel())
    return image


def _settings(**values):
    settings = bpy.context.scene.scene_diffusion.mesh
    base = dict(source="IMAGE", steps=2, random_seed=False, seed=1, frame_size=32, target_size=2.0,
                bake_texture=False, background="auto")
    for key, value in {**base, **values}.items():
        setattr(settings, key, value)
    return settings


def _new_objects(before):
    return [o for o in bpy.data.objects if o.name not in before]


@pytest.mark.remote
def test_image_to_mesh_creates_a_valid_coloured_object_at_the_cursor(addon, clean_scene):
    _settings(image=_disc_image())
    bpy.context.scene.cursor.location = (3.0, -1.0, 0.5)
    before = set(bpy.data.objects.keys())
    assert bpy.ops.scene_diffusion.image_to_mesh() == {"FINISHED"}
    (obj,) = _new_objects(before)
    mesh = obj.data
    assert len(mesh.vertices) > 100 and len(mesh.polygons) > 100
    assert mesh.validate() is False  # nothing to fix
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    assert np.isfinite(co).all()
    assert co[:, 2].min() == pytest.approx(0.0, abs=1e-5)  # resting on its base
    assert (co.max(axis=0) - co.min(axis=0)).max() == pytest.approx(2.0, rel=1e-4)  # target size
    assert tuple(obj.location) == pytest.approx((3.0, -1.0, 0.5))
    view_layer = bpy.context.view_layer
    assert view_layer.objects.active == obj and [o for o in view_layer.objects if o.select_get()] == [obj]
    assert all(p.use_smooth for p in mesh.polygons[:10])
    colors = mesh.color_attributes["Col"]
    assert colors.domain == "POINT" and len(colors.data) == len(mesh.vertices)
    node = next(n for n in obj.active_material.node_tree.nodes if n.type == "VERTEX_COLOR")
    assert node.layer_name == "Col" and node.outputs["Color"].is_linked
    record = jobfolder.read_job(jobfolder.list_jobs(addon.addon.paths.jobs_dir())[-1])
    assert record["status"] == "done" and record["info"]["vertices"] > 100


def test_baked_texture_option(addon, clean_scene):
    _settings(image=_disc_image(), bake_texture=True, texture_size=64)
    before = set(bpy.data.objects.keys())
    bpy.ops.scene_diffusion.image_to_mesh()
    (obj,) = _new_objects(before)
    assert obj.data.uv_layers
    bsdf = next(n for n in obj.active_material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    texture = bsdf.inputs["Base Color"].links[0].from_node
    assert texture.type == "TEX_IMAGE" and texture.image.packed_file is not None
    pixels = np.empty(64 * 64 * 4, np.float32)
    texture.image.pixels.foreach_get(pixels)
    assert pixels.reshape(-1, 4)[:, :3].max() > 0.0  # the bake wrote colour


def test_import_generated_mesh_normalises_like_generated_ones(addon, clean_scene, tmp_path):
    """No backend job: Blender's glTF importer, then the same size and base as a generated mesh (more in
    test_mesh_external.py)."""
    import trimesh

    box = trimesh.creation.box(extents=(4.0, 2.0, 1.0))
    box.visual.vertex_colors = np.tile(np.array([[255, 0, 0, 255]], np.uint8), (len(box.vertices), 1))
    path = tmp_path / "crate.glb"
    box.export(path)
    bpy.context.scene.scene_diffusion.mesh.import_path = str(path)
    _settings(target_size=1.0)
    before = set(bpy.data.objects.keys())
    jobs = len(jobfolder.list_jobs(addon.addon.paths.jobs_dir()))
    assert bpy.ops.scene_diffusion.import_mesh() == {"FINISHED"}
    (obj,) = _new_objects(before)
    assert obj.name == "crate" and len(obj.data.polygons) == 12
    dims = sorted(obj.dimensions)
    assert dims[-1] == pytest.approx(1.0, rel=1e-4) and dims[0] == pytest.approx(0.25, rel=1e-3)
    assert obj.data.color_attributes  # the importer's vertex colours stay
    assert len(jobfolder.list_jobs(addon.addon.paths.jobs_dir())) == jobs


def test_image_refusals(addon, clean_scene, tmp_path):
    _settings(image=_disc_image(transparent=True, name="Ghost"))
    bpy.data.images["Ghost"].pixels.foreach_set(np.zeros(64 * 64 * 4, np.float32))  # fully transparent
    before = set(bpy.data.objects.keys())
    with pytest.raises(RuntimeError, match="transparent"):
        bpy.ops.scene_diffusion.image_to_mesh()
    _settings(source="FILE", filepath=str(tmp_path / "missing.png"))
    with pytest.raises(RuntimeError, match="No such image file"):
        bpy.ops.scene_diffusion.image_to_mesh()
    _settings(source="IMAGE", image=None)
    with pytest.raises(RuntimeError, match="Choose an image"):
        bpy.ops.scene_diffusion.image_to_mesh()
    assert set(bpy.data.objects.keys()) == before
