"""Import Generated Mesh with Blender's own importers: what the importer makes is kept (compared with the same
importer run alone on the same file), our placement is added, and a failed import leaves nothing behind.

The files are written at test time: a two-material textured GLB by trimesh, an OBJ + MTL + PNG by hand, a PLY
with vertex colours by trimesh.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import bpy
import numpy as np
import pytest

IMPORTERS = {".glb": lambda p: bpy.ops.import_scene.gltf(filepath=p),
             ".obj": lambda p: bpy.ops.wm.obj_import(filepath=p),
             ".ply": lambda p: bpy.ops.wm.ply_import(filepath=p)}


def _checker(colour, size=8):
    from PIL import Image

    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[:] = colour
    pixels[::2, ::2] = 255 - np.array(colour, np.uint8)
    return Image.fromarray(pixels)


def _planar_uv(vertices):
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    return (vertices[:, :2] - low[:2]) / (high[:2] - low[:2])


def _textured_glb(path: Path) -> Path:
    """A crate and a ball (a child of the crate's node, turned and moved), each with UVs and its own base-colour
    texture; the ball also normal and metallic-roughness maps."""
    import trimesh
    from PIL import Image

    crate = trimesh.creation.box(extents=(4.0, 2.0, 1.0))
    ball = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    flat_normal = Image.fromarray(np.full((8, 8, 3), (128, 128, 255), np.uint8))
    for mesh, colour, maps in ((crate, (200, 30, 30), {}),
                               (ball, (30, 200, 30), {"normalTexture": flat_normal,
                                                      "metallicRoughnessTexture": _checker((0, 128, 255))})):
        material = trimesh.visual.material.PBRMaterial(name=f"paint{colour[0]}", baseColorTexture=_checker(colour),
                                                       **maps)
        mesh.visual = trimesh.visual.TextureVisuals(uv=_planar_uv(mesh.vertices), material=material)
    scene = trimesh.Scene()
    scene.add_geometry(crate, node_name="crate", geom_name="crate")
    turned = trimesh.transformations.rotation_matrix(0.6, (1.0, 0.0, 0.0))
    turned[:3, 3] = (0.5, 2.0, 0.0)  # glTF's Y up: above the crate once in Blender
    scene.add_geometry(ball, node_name="ball", geom_name="ball", parent_node_name="crate", transform=turned)
    scene.export(path)
    return path


def _textured_obj(folder: Path) -> Path:
    """A 2 x 1 x 1 box: the top textured (map_Kd), the other sides a plain colour."""
    _checker((40, 90, 220)).save(folder / "wood.png")
    (folder / "box.mtl").write_text("newmtl Painted\nKd 1 1 1\nmap_Kd wood.png\n\nnewmtl Plain\nKd 0.2 0.6 0.2\n")
    corners = [(x, y, z) for x in (-1, 1) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
    quads = {"top": (2, 6, 8, 4), "bottom": (1, 3, 7, 5), "x-": (1, 2, 4, 3), "x+": (5, 7, 8, 6),
             "y-": (1, 5, 6, 2), "y+": (3, 4, 8, 7)}
    lines = ["mtllib box.mtl", *(f"v {x} {y} {z}" for x, y, z in corners),
             "vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "usemtl Painted"]
    lines.append("f " + " ".join(f"{v}/{t}" for v, t in zip(quads.pop("top"), (1, 2, 3, 4), strict=True)))
    lines.append("usemtl Plain")
    lines += ["f " + " ".join(f"{v}/{t}" for v, t in zip(q, (1, 2, 3, 4), strict=True)) for q in quads.values()]
    path = folder / "box.obj"
    path.write_text("\n".join(lines) + "\n")
    return path


def _coloured_ply(path: Path) -> Path:
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=2, radius=3.0)
    ball.apply_translation((5.0, 5.0, 5.0))
    rgb = (np.clip(ball.vertices[:, :3] - 2.0, 0, 6) / 6 * 255).astype(np.uint8)
    ball.visual.vertex_colors = np.column_stack([rgb, np.full(len(rgb), 255, np.uint8)])
    ball.export(path)
    return path


def _fresh_scene():
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)


def _meshes():
    return [o for o in bpy.data.objects if o.type == "MESH"]


def _census():
    """What the file became, in a form two imports of it can be compared by (meshes sorted by size)."""
    meshes = []
    for obj in sorted(_meshes(), key=lambda o: (len(o.data.vertices), len(o.data.polygons))):
        mesh = obj.data
        uvs = []
        for layer in mesh.uv_layers:
            values = np.empty(len(mesh.loops) * 2, np.float32)
            layer.data.foreach_get("uv", values)
            uvs.append(values.round(5).tolist())
        colours = []
        for attribute in mesh.color_attributes:
            values = np.empty(len(attribute.data) * 4, np.float32)
            attribute.data.foreach_get("color", values)
            colours.append((attribute.domain, values.round(4).tolist()))
        meshes.append({"vertices": len(mesh.vertices), "faces": len(mesh.polygons), "loops": len(mesh.loops),
                       "uvs": uvs, "colours": colours, "materials": [m.name for m in mesh.materials]})
    images = sorted((i.name, tuple(i.size)) for i in bpy.data.images if i.type == "IMAGE")
    return {"meshes": meshes, "materials": sorted(m.name for m in bpy.data.materials), "images": images}


def _reference(path: Path):
    """Blender's own importer alone, in a fresh scene: what it made, and where (world space, as placed)."""
    _fresh_scene()
    assert IMPORTERS[path.suffix](str(path)) == {"FINISHED"}
    census = _census()
    points = _world_points()
    _fresh_scene()
    return census, points


def _world_points():
    """World-space vertices of every mesh object (sorted as in _census)."""
    bpy.context.view_layer.update()
    points = []
    for obj in sorted(_meshes(), key=lambda o: (len(o.data.vertices), len(o.data.polygons))):
        co = np.empty(len(obj.data.vertices) * 3, np.float64)
        obj.data.vertices.foreach_get("co", co)
        matrix = np.array(obj.matrix_world)
        points.append(co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3])
    return points


def _placed(points, size=1.5, cursor=(2.0, -1.0, 0.5)):
    """The reference's points as the import should place them: scaled to ``size``, base centre on the cursor."""
    every = np.concatenate(points)
    low, high = every.min(axis=0), every.max(axis=0)
    base = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    scale = size / (high - low).max()
    return [(p - base) * scale + np.array(cursor) for p in points]




def _import(path: Path, size=1.5, cursor=(2.0, -1.0, 0.5)):
    bpy.context.scene.scene_diffusion.mesh.target_size = size
    bpy.context.scene.cursor.location = cursor
    assert bpy.ops.scene_diffusion.import_mesh(filepath=str(path)) == {"FINISHED"}


def _assert_placed(reference_points, size=1.5, cursor=(2.0, -1.0, 0.5)):
    points = _world_points()
    every = np.concatenate(points)
    low, high = every.min(axis=0), every.max(axis=0)
    assert (high - low).max() == pytest.approx(size, rel=1e-5)
    assert low[2] == pytest.approx(cursor[2], abs=1e-5)  # resting on the cursor's Z
    assert (low[:2] + high[:2]) / 2 == pytest.approx(cursor[:2], abs=1e-5)
    for ours, expected in zip(points, _placed(reference_points, size, cursor), strict=True):
        np.testing.assert_allclose(ours, expected, atol=1e-5)  # the importer's shape, only moved and scaled


def _base_colour_image(material):
    """The image of the Image Texture node feeding the Principled BSDF's Base Color (directly or through nodes)."""
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    pending = [link.from_node for link in bsdf.inputs["Base Color"].links]
    while pending:
        node = pending.pop()
        if node.type == "TEX_IMAGE":
            return node.image
        pending += [link.from_node for socket in node.inputs for link in socket.links]
    return None


def test_textured_glb_keeps_materials_uvs_and_textures(addon, clean_scene, tmp_path):
    path = _textured_glb(tmp_path / "robot.glb")
    reference, points = _reference(path)
    assert len(reference["meshes"]) == 2 and len(reference["images"]) == 4  # the file is what the test needs
    _import(path)
    assert _census() == reference
    active = bpy.context.view_layer.objects.active
    assert active.name == "robot" and active.type == "EMPTY"  # two objects: grouped under one named empty
    assert tuple(active.location) == pytest.approx((2.0, -1.0, 0.5))
    crate, ball = sorted(_meshes(), key=lambda o: len(o.data.vertices))
    assert crate.parent == active and ball.parent == crate  # the file's hierarchy kept, under the empty
    assert all(o.select_get() for o in (active, *_meshes()))
    _assert_placed(points)
    for obj in _meshes():
        image = _base_colour_image(obj.active_material)
        assert image is not None and tuple(image.size) == (8, 8) and image.packed_file is not None
    bsdf = next(n for n in ball.active_material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Normal"].is_linked and bsdf.inputs["Roughness"].is_linked


def test_obj_with_mtl_keeps_its_texture(addon, clean_scene, tmp_path):
    path = _textured_obj(tmp_path)
    reference, points = _reference(path)
    assert reference["materials"] == ["Painted", "Plain"] and len(reference["images"]) == 1
    bpy.ops.mesh.primitive_cube_add(location=(9.0, 9.0, 9.0))  # something already there stays as it is
    cube = bpy.context.object
    _import(path)
    assert bpy.data.objects["Cube"] == cube and not cube.select_get()
    cube_data = bpy.data.meshes[cube.data.name]
    bpy.data.objects.remove(cube)
    bpy.data.meshes.remove(cube_data)
    assert _census() == reference
    (obj,) = _meshes()
    assert obj.name == "box" and bpy.context.view_layer.objects.active == obj and obj.select_get()
    assert tuple(obj.location) == pytest.approx((2.0, -1.0, 0.5)) and tuple(obj.scale) == pytest.approx((1, 1, 1))
    _assert_placed(points)
    painted = bpy.data.materials["Painted"]
    image = _base_colour_image(painted)
    assert image is not None and Path(image.filepath).name == "wood.png" and tuple(image.size) == (8, 8)
    assert _base_colour_image(bpy.data.materials["Plain"]) is None


def test_ply_keeps_its_vertex_colours(addon, clean_scene, tmp_path):
    path = _coloured_ply(tmp_path / "scan.ply")
    reference, points = _reference(path)
    (mesh,) = reference["meshes"]
    assert mesh["colours"] and len(set(mesh["colours"][0][1])) > 10  # the colours vary
    _import(path, size=2.0, cursor=(0.0, 0.0, 0.0))
    assert _census() == reference
    (obj,) = _meshes()
    assert obj.name == "scan" and tuple(obj.location) == pytest.approx((0, 0, 0))
    _assert_placed(points, size=2.0, cursor=(0.0, 0.0, 0.0))


def test_gltf_importer_is_enabled_when_it_is_off(addon, clean_scene, tmp_path):
    import addon_utils

    path = _textured_glb(tmp_path / "robot.glb")
    addon_utils.disable("io_scene_gltf2")
    try:
        assert not hasattr(bpy.types, "IMPORT_SCENE_OT_gltf")
        _import(path)
    finally:
        addon_utils.enable("io_scene_gltf2", default_set=False)
    assert len(_meshes()) == 2


def _half_broken_glb(source: Path, path: Path) -> Path:
    """A well-formed GLB whose second mesh points at an accessor that does not exist: the importer fails after
    it has made the first mesh, its material and image."""
    data = source.read_bytes()
    (json_length,) = struct.unpack_from("<I", data, 12)
    document = json.loads(data[20:20 + json_length])
    document["meshes"][-1]["primitives"][0]["indices"] = len(document["accessors"]) + 5
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    binary = data[20 + json_length:]
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 20 + len(text) + len(binary))
                     + struct.pack("<I", len(text)) + b"JSON" + text + binary)
    return path


def _datablocks():
    return {kind: set(getattr(bpy.data, kind).keys())
            for kind in ("objects", "meshes", "materials", "images", "textures", "node_groups", "collections")}


def test_a_failed_import_leaves_nothing_behind(addon, clean_scene, tmp_path):
    path = _half_broken_glb(_textured_glb(tmp_path / "good.glb"), tmp_path / "broken.glb")
    bpy.ops.mesh.primitive_cube_add()
    before = _datablocks()
    with pytest.raises(RuntimeError):
        IMPORTERS[".glb"](str(path))
    half = _datablocks()
    assert half["meshes"] != before["meshes"] and half["images"] != before["images"], \
        "Blender's importer alone should leave a half import here, or this test checks no clean-up"
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.mesh.primitive_cube_add()
    before = _datablocks()
    with pytest.raises(RuntimeError, match=r"Cannot import broken\.glb: the importer failed \(\w+Error"):
        bpy.ops.scene_diffusion.import_mesh(filepath=str(path))
    assert _datablocks() == before
    assert bpy.context.view_layer.objects.active.name == "Cube" and bpy.data.objects["Cube"].select_get()


@pytest.mark.parametrize("name, content, message", [
    ("corrupt.glb", b"glTF\x02\x00\x00\x00" + b"garbage" * 4, r"Cannot import corrupt\.glb: Bad GLB"),
    ("mesh.stl", b"solid x", r"mesh\.stl: unsupported format"),
    ("mesh.ply", b"ply\ngarbage", r"Cannot import mesh\.ply: \S"),
    ("points.obj", b"v 0 0 0\nv 1 0 0\n", r"points\.obj: no faces"),
])
def test_refusals_name_the_file(addon, clean_scene, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    before = _datablocks()
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.scene_diffusion.import_mesh(filepath=str(path))
    assert _datablocks() == before
    with pytest.raises(RuntimeError, match="No such file"):
        bpy.ops.scene_diffusion.import_mesh(filepath=str(tmp_path / "missing.glb"))
