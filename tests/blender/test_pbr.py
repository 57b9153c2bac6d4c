"""PBR maps inside real Blender: derive, wire, export as EXR, import back."""

from __future__ import annotations

import os

import bpy
import numpy as np
import pytest

from backend.imaging.exr import read_exr
from contract import jobfolder


def _pattern_image(name="Bricks", size=64, float_buffer=False):
    """A smooth tileable colour pattern as an Image datablock."""
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * x), 0.5 + 0.4 * np.cos(2 * np.pi * y),
                    0.5 + 0.2 * np.sin(2 * np.pi * (x + y))], axis=2)
    rgba = np.concatenate([rgb, np.ones((size, size, 1))], axis=2).astype(np.float32)
    image = bpy.data.images.new(name, size, size, float_buffer=float_buffer)
    image.pixels.foreach_set(rgba[::-1].ravel())
    return image


def _cube(name="Cube"):
    bpy.ops.mesh.primitive_cube_add()
    obj = bpy.context.object
    obj.name = name
    bpy.ops.object.select_all(action="DESELECT")
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    return obj


def _links_into(node, socket_name):
    sockets = [s for s in node.inputs if s.name == socket_name and s.is_linked]
    return sockets[0].links[0].from_node if sockets else None


def _pixels(image):
    buf = np.empty(image.size[0] * image.size[1] * image.channels, np.float32)
    image.pixels.foreach_get(buf)
    return buf.reshape(image.size[1], image.size[0], image.channels)[::-1]


def _last_job(addon):
    return jobfolder.list_jobs(addon.addon.paths.jobs_dir())[-1]


@pytest.mark.remote
def test_derive_pbr_builds_a_wired_principled_material(addon, clean_scene):
    cube = _cube()
    image = _pattern_image()
    bpy.context.scene.scene_diffusion.pbr.image = image
    assert bpy.ops.scene_diffusion.derive_pbr() == {"FINISHED"}

    material = cube.active_material
    assert material.name == "Bricks PBR"
    nodes = material.node_tree.nodes
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    mix = _links_into(bsdf, "Base Color")
    assert mix.type == "MIX" and mix.blend_type == "MULTIPLY"
    albedo = next(s for s in mix.inputs if s.identifier == "A_Color").links[0].from_node
    ao = next(s for s in mix.inputs if s.identifier == "B_Color").links[0].from_node
    assert albedo.image.colorspace_settings.name == "Linear Rec.709"
    assert ao.image.colorspace_settings.name == "Non-Color"
    for socket in ("Roughness", "Metallic"):
        assert _links_into(bsdf, socket).image.colorspace_settings.name == "Non-Color"
    bump = _links_into(bsdf, "Normal")
    assert bump.type == "BUMP"
    assert _links_into(bump, "Height").image.name == "Bricks height"
    normal_map = _links_into(bump, "Normal")
    assert normal_map.type == "NORMAL_MAP"
    assert _links_into(normal_map, "Color").image.colorspace_settings.name == "Non-Color"
    assert all(_links_into(bsdf, s).image.packed_file for s in ("Roughness", "Metallic"))

    job = _last_job(addon)
    record = jobfolder.read_job(job)
    assert record["status"] == "done" and record["request"]["source_colorspace"] == "srgb"
    exr = read_exr(job / record["outputs"]["maps_exr"])
    exr.require("albedo", "normal", "roughness", "metallic", "ao", "height")
    # The albedo is the source, linearised: Blender's own loader reads it back as such.
    source = _pixels(image)[:, :, :3]
    srgb = np.where(source <= 0.04045, source / 12.92, ((source + 0.055) / 1.055) ** 2.4)
    assert np.abs(_pixels(albedo.image)[:, :, :3] - srgb).max() < 2e-3


def test_derive_from_the_active_materials_base_colour_with_displacement(addon, clean_scene):
    cube = _cube()
    image = _pattern_image("Painted", float_buffer=True)
    material = bpy.data.materials.new("Painted")
    if material.node_tree is None:
        material.use_nodes = True
    tex = material.node_tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    material.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    cube.data.materials.append(material)
    settings = bpy.context.scene.scene_diffusion.pbr
    settings.image, settings.height_mode = None, "DISPLACEMENT"
    bpy.ops.scene_diffusion.derive_pbr()
    new = cube.active_material
    assert new.name == "Painted PBR" and new.displacement_method == "BOTH"
    output = next(n for n in new.node_tree.nodes if n.type == "OUTPUT_MATERIAL")
    assert _links_into(output, "Displacement").type == "DISPLACEMENT"
    assert jobfolder.read_job(_last_job(addon))["request"]["source_colorspace"] == "linear"


def test_generate_texture_with_pbr_option(addon, clean_scene):
    cube = _cube()
    settings = bpy.context.scene.scene_diffusion.texture
    settings.prompt, settings.width, settings.height, settings.steps = "cobblestones", 64, 64, 2
    settings.random_seed, settings.seed, settings.pbr = False, 3, True
    bpy.ops.scene_diffusion.generate_texture()
    material = cube.active_material
    assert material.name == "cobblestones PBR"
    assert set(addon.addon.scene_import.pbr.find_maps(material)) == {"albedo", "ao", "roughness", "metallic",
                                                                 "normal", "height"}
    attrs = read_exr(_last_job(addon) / "outputs" / "maps.exr").attributes
    assert attrs["prompt"] == "cobblestones" and attrs["seed"] == "3" and attrs["steps"] == "2"
    assert "texture.exr" in os.listdir(_last_job(addon) / "outputs")
    assert bpy.data.images["cobblestones"]["scene_diffusion"]["seed"] == "3"


@pytest.fixture
def pbr_cube(addon, clean_scene):
    cube = _cube()
    bpy.context.scene.scene_diffusion.pbr.image = _pattern_image()
    bpy.ops.scene_diffusion.derive_pbr()
    return cube


@pytest.mark.remote
@pytest.mark.parametrize("half, compression", [(True, "zip"), (False, "piz"), (True, "dwaa"), (False, "none")])
def test_export_multilayer_exr_round_trips_through_import(addon, pbr_cube, tmp_path, half, compression):
    export = bpy.context.scene.scene_diffusion.export
    export.directory, export.basename, export.layout = str(tmp_path), "bricks", "multilayer"
    export.format, export.half, export.compression, export.normal_convention = "exr", half, compression, "opengl"
    assert bpy.ops.scene_diffusion.export_maps() == {"FINISHED"}
    exr = read_exr(tmp_path / "bricks.exr")
    exr.require("albedo", "normal", "roughness", "metallic", "ao", "height")
    assert {"albedo.R", "normal.X", "roughness.Y"} <= set(exr.channels)
    assert exr.attributes["material"] == "Bricks PBR" and exr.attributes["software"].startswith("Scene Diffusion")
    original = addon.addon.scene_import.pbr.find_maps(pbr_cube.active_material)

    target = _cube("Target")
    export.import_path = str(tmp_path / "bricks.exr")
    assert bpy.ops.scene_diffusion.import_maps() == {"FINISHED"}
    imported = addon.addon.scene_import.pbr.find_maps(target.active_material)
    assert set(imported) == set(original)
    tolerance = 2e-3 if half else 1e-6
    for name in ("roughness", "normal", "height"):
        assert np.abs(_pixels(imported[name])[:, :, :3] - _pixels(original[name])[:, :, :3]).max() < tolerance
    if compression != "dwaa":  # DWAA is lossy, and only ever applied to colour
        assert np.abs(_pixels(imported["albedo"]) - _pixels(original["albedo"])).max() < tolerance


def test_export_separate_files_directx_and_png16(addon, pbr_cube, tmp_path):
    export = bpy.context.scene.scene_diffusion.export
    export.directory, export.basename, export.layout, export.format = str(tmp_path), "m", "separate", "exr"
    export.normal_convention, export.half = "directx", False
    bpy.ops.scene_diffusion.export_maps()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m_albedo.exr", "m_ao.exr", "m_height.exr", "m_metallic.exr", "m_normal.exr", "m_roughness.exr"]
    normal = read_exr(tmp_path / "m_normal.exr").layers["normal"]
    original = _pixels(addon.addon.scene_import.pbr.find_maps(pbr_cube.active_material)["normal"])
    assert np.abs(normal[:, :, 1] - (1.0 - original[:, :, 1])).max() < 1e-6  # green flipped
    assert np.abs(normal[:, :, 0] - original[:, :, 0]).max() < 1e-6

    export.format, export.directory = "png16", str(tmp_path / "png")
    bpy.ops.scene_diffusion.export_maps()
    assert len(list((tmp_path / "png").glob("m_*.png"))) == 6


def test_derive_without_any_image_is_a_clear_error(addon, clean_scene):
    _cube()
    bpy.context.scene.scene_diffusion.pbr.image = None
    before = len(jobfolder.list_jobs(addon.addon.paths.jobs_dir()))
    with pytest.raises(RuntimeError, match="No colour image"):
        bpy.ops.scene_diffusion.derive_pbr()
    assert len(jobfolder.list_jobs(addon.addon.paths.jobs_dir())) == before


def test_derive_from_an_image_whose_file_is_missing(addon, clean_scene, tmp_path):
    _cube()
    image = bpy.data.images.new("Gone", 8, 8)
    image.source, image.filepath = "FILE", str(tmp_path / "gone.png")
    bpy.context.scene.scene_diffusion.pbr.image = image
    jobs = len(jobfolder.list_jobs(addon.addon.paths.jobs_dir()))
    with pytest.raises(RuntimeError, match="has no pixels"):
        bpy.ops.scene_diffusion.derive_pbr()
    assert len(jobfolder.list_jobs(addon.addon.paths.jobs_dir())) == jobs  # its folder was discarded
    assert not _cube("Other").material_slots


def test_export_refusals(addon, pbr_cube, tmp_path):
    export = bpy.context.scene.scene_diffusion.export
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    export.directory = str(blocker / "maps")  # a folder cannot be made inside a file
    with pytest.raises(RuntimeError, match="not writable"):
        bpy.ops.scene_diffusion.export_maps()
    assert not list(tmp_path.glob("**/*.exr"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: then only the case above applies
            export.directory = str(locked / "sub")
            with pytest.raises(RuntimeError, match="not writable"):
                bpy.ops.scene_diffusion.export_maps()
    finally:
        locked.chmod(0o700)
    bare = _cube("Bare")
    assert bare.active_material is None
    with pytest.raises(RuntimeError, match="no image maps"):
        bpy.ops.scene_diffusion.export_maps()


def test_import_refuses_non_exr_and_names_missing_layers(addon, clean_scene, tmp_path):
    _cube()
    export = bpy.context.scene.scene_diffusion.export
    text = tmp_path / "notes.exr"
    text.write_text("not an image")
    export.import_path = str(text)
    with pytest.raises(RuntimeError, match="not an OpenEXR file"):
        bpy.ops.scene_diffusion.import_maps()
    from backend.imaging.exr import write_exr

    other = write_exr(tmp_path / "beauty.exr", {"diffuse": np.zeros((4, 4, 3), np.float32)})
    export.import_path = str(other)
    with pytest.raises(RuntimeError, match=r"none of the layers albedo.*it has: diffuse"):
        bpy.ops.scene_diffusion.import_maps()
    assert not bpy.context.object.material_slots


def test_derive_with_marigold_tiny_models(addon, clean_scene):
    cube = _cube()
    settings = bpy.context.scene.scene_diffusion.pbr
    settings.image, settings.method, settings.steps, settings.height_mode = _pattern_image(), "marigold", 2, "BUMP"
    try:
        bpy.ops.scene_diffusion.derive_pbr()
    finally:
        settings.method = "filters"
    assert set(addon.addon.scene_import.pbr.find_maps(cube.active_material)) == {
        "albedo", "ao", "roughness", "metallic", "normal", "height"}
    record = jobfolder.read_job(_last_job(addon))
    assert record["models"]["normals"]["name"] == "marigold-normals-tiny"
