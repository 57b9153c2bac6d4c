"""Mesh files and arrays (backend/geometry/mesh_data.py, mesh_files.py, obj_ply.py): round trips, axes,
colour spaces, cleaning, errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from backend.geometry.mesh_data import MeshData, clean, flipped, signed_volume
from backend.geometry.mesh_files import SUPPORTED, MeshFileError, load_npz, read_mesh, save_npz, write_glb, write_ply
from backend.imaging.color import srgb_to_linear

# A square pyramid, Z up: a quad base (facing down) and four triangles, counter-clockwise from outside.
PYRAMID_VERTICES = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], np.float32)
PYRAMID_SIZES = [4, 3, 3, 3, 3]
PYRAMID_CORNERS = [0, 3, 2, 1, 0, 1, 4, 1, 2, 4, 2, 3, 4, 3, 0, 4]
PYRAMID_COLORS = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], [0.2, 0.05, 0.5, 1], [0.5, 0.5, 0.5, 0.5]],
                          np.float32)


def pyramid(colors: bool = True) -> MeshData:
    return MeshData(PYRAMID_VERTICES, PYRAMID_SIZES, PYRAMID_CORNERS, PYRAMID_COLORS if colors else None)


def glb_json(path: Path) -> dict:
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20:20 + length])


def test_triangles_fan_ngons_from_their_first_corner() -> None:
    mesh = pyramid()
    assert not mesh.triangles_only and mesh.face_count == 5 and mesh.vertex_count == 5
    assert mesh.triangles().tolist() == [[0, 3, 2], [0, 2, 1], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]
    assert MeshData.from_triangles(PYRAMID_VERTICES, [[0, 1, 4]]).triangles_only


def test_outward_faces_enclose_a_positive_volume_and_flip() -> None:
    mesh = pyramid()
    assert signed_volume(mesh) == pytest.approx(1 / 3)  # base 1 x height 1 / 3: the faces point out
    inward = flipped(mesh)
    assert signed_volume(inward) == pytest.approx(-1 / 3)
    assert inward.face_vertices[:4].tolist() == [1, 2, 3, 0] and inward.face_sizes.tolist() == PYRAMID_SIZES
    assert flipped(inward).face_vertices.tolist() == PYRAMID_CORNERS


def test_glb_round_trip_keeps_positions_and_linear_colours(tmp_path: Path) -> None:
    path = write_glb(tmp_path / "p.glb", pyramid())
    back = read_mesh(path)
    assert np.allclose(back.vertices, PYRAMID_VERTICES, atol=1e-6)
    assert back.triangles_only and back.triangles().tolist() == pyramid().triangles().tolist()
    assert back.colors is not None
    assert np.abs(back.colors - PYRAMID_COLORS).max() <= 0.5 / 255 + 1e-6  # COLOR_0: linear bytes
    # glTF is Y up: the apex (Blender Z = 1) is at glTF Y = 1
    accessor = next(a for a in glb_json(path)["accessors"] if a.get("type") == "VEC3" and "max" in a)
    assert accessor["max"][1] == pytest.approx(1.0) and accessor["min"][2] == pytest.approx(-1.0)


def test_glb_scene_nodes_and_textures_become_one_coloured_mesh(tmp_path: Path) -> None:
    import trimesh
    from PIL import Image

    textured = trimesh.creation.box()
    uv = np.full((len(textured.vertices), 2), 0.5)
    image = Image.fromarray(np.full((4, 4, 3), [188, 188, 188], np.uint8))  # sRGB 188 = linear 0.5
    textured.visual = trimesh.visual.TextureVisuals(
        uv=uv, material=trimesh.visual.material.PBRMaterial(baseColorTexture=image))
    plain = trimesh.creation.box()
    scene = trimesh.Scene()
    scene.add_geometry(textured, geom_name="textured", transform=trimesh.transformations.translation_matrix([0, 5, 0]))
    scene.add_geometry(plain, geom_name="plain")
    scene.export(tmp_path / "scene.glb")
    mesh = read_mesh(tmp_path / "scene.glb")
    assert mesh.vertex_count == 16 and mesh.face_count == 24
    centres = sorted(mesh.vertices[i:i + 8].mean(axis=0)[2] for i in (0, 8))
    assert centres == pytest.approx([0.0, 5.0], abs=1e-5)  # glTF +Y is Blender +Z
    assert mesh.colors is not None
    grey = mesh.colors[np.abs(mesh.vertices[:, 2] - 5.0) < 1.0][:, :3]
    assert np.allclose(grey, 0.5, atol=0.01)  # the sRGB texture, decoded
    assert np.allclose(mesh.colors[np.abs(mesh.vertices[:, 2]) < 1.0], 1.0)  # no colour: white


def test_ply_round_trip_keeps_ngons_and_srgb_colours(tmp_path: Path) -> None:
    path = write_ply(tmp_path / "p.ply", pyramid())
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "binary_little_endian" in header and "property uchar red" in header
    back = read_mesh(path)
    assert back.face_sizes.tolist() == PYRAMID_SIZES and back.face_vertices.tolist() == PYRAMID_CORNERS
    assert np.array_equal(back.vertices, PYRAMID_VERTICES)  # PLY is taken as Z up: unchanged
    assert back.colors is not None
    assert np.abs(back.colors - PYRAMID_COLORS).max() < 0.004  # 8-bit sRGB, decoded


def test_ascii_ply_and_other_writers(tmp_path: Path) -> None:
    import trimesh

    (tmp_path / "quad.ply").write_text(
        "ply\nformat ascii 1.0\ncomment hand written\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
        "0 0 0 255 0 0\n1 0 0 255 0 0\n1 1 0 255 0 0\n0 1 0 255 0 0\n4 0 1 2 3\n")
    quad = read_mesh(tmp_path / "quad.ply")
    assert quad.face_sizes.tolist() == [4] and quad.colors is not None
    assert np.allclose(quad.colors[0], [1, 0, 0, 1], atol=1e-6)

    box = trimesh.creation.box()
    box.export(tmp_path / "box.ply")  # trimesh's binary PLY, triangles
    mesh = read_mesh(tmp_path / "box.ply")
    assert mesh.face_count == 12 and mesh.colors is None


def test_obj_keeps_quads_decodes_colours_and_turns_y_up_into_z_up(tmp_path: Path) -> None:
    (tmp_path / "m.obj").write_text(
        "# quad + triangle, Y up\n"
        "v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 1 0 -1 0 0 1\nv 0 0 -1 0.5 0.5 0.5\nv 0.5 1 -0.5 1 1 1\n"
        "vt 0 0\nvn 0 1 0\n"
        "f 1/1/1 2/1/1 3/1/1 4/1/1\nf -5//1 -4//1 -1//1\n")
    mesh = read_mesh(tmp_path / "m.obj")
    assert mesh.face_sizes.tolist() == [4, 3]
    assert mesh.face_vertices.tolist() == [0, 1, 2, 3, 0, 1, 4]
    assert np.allclose(mesh.vertices[2], [1, 1, 0]) and np.allclose(mesh.vertices[4], [0.5, 0.5, 1])
    assert mesh.colors is not None
    assert np.allclose(mesh.colors[3, :3], srgb_to_linear(np.float32(0.5)), atol=1e-6)  # 0.214: decoded
    assert np.allclose(mesh.colors[0], [1, 0, 0, 1], atol=1e-5)


def test_obj_texture_colours_come_from_its_material(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.full((2, 2, 3), [188, 0, 0], np.uint8)).save(tmp_path / "albedo.png")
    (tmp_path / "m.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd albedo.png\n")
    (tmp_path / "m.obj").write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0.5 0.5\nusemtl skin\n"
                                    "f 1/1 2/1 3/1\n")
    mesh = read_mesh(tmp_path / "m.obj")
    assert mesh.colors is not None and np.allclose(mesh.colors[:, 0], 0.5, atol=0.01)


def test_npz_holds_exactly_the_documented_arrays(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "mesh.npz", pyramid())
    with np.load(path) as data:
        assert sorted(data.files) == ["colors", "face_sizes", "face_vertices", "vertices"]
        assert data["vertices"].dtype == np.float32 and data["vertices"].shape == (5, 3)
        assert data["face_sizes"].dtype == np.int32 and data["face_vertices"].dtype == np.int32
        assert data["colors"].dtype == np.float32 and data["colors"].shape == (5, 4)
    back = load_npz(path)
    assert np.array_equal(back.face_vertices, PYRAMID_CORNERS) and np.array_equal(back.colors, PYRAMID_COLORS)
    plain = save_npz(tmp_path / "plain.npz", pyramid(colors=False))
    with np.load(plain) as data:
        assert "colors" not in data.files
    assert load_npz(plain).colors is None
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_clean_removes_broken_parts_and_counts_them() -> None:
    vertices = np.array([
        [0, 0, 0], [1, 0, 0], [0, 1, 0],  # a good triangle
        [np.nan, 0, 0],  # non-finite, used by one face
        [2, 0, 0], [3, 0, 0],  # collinear with vertex 1: a face without area
        [9, 9, 9],  # used by nothing
        [1, 0, 0],  # the same position as vertex 1
        [0, 0, 1],
    ], np.float32)
    sizes = [3, 3, 3, 3, 4, 3]
    corners = [0, 1, 2,  # good
               0, 1, 3,  # uses the NaN vertex
               1, 4, 5,  # no area
               0, 0, 2,  # repeated corner: fewer than 3 left
               0, 1, 1, 8,  # a repeated corner dropped: stays as a triangle
               1, 7, 2]  # 7 is merged into 1: a vertex twice
    mesh, counts = clean(MeshData(vertices, sizes, corners, np.ones((9, 4), np.float32)))
    assert counts == {"nonfinite_vertices": 1, "invalid_faces": 1, "merged_vertices": 1, "degenerate_faces": 3,
                      "unreferenced_vertices": 3}
    assert mesh.face_sizes.tolist() == [3, 3]
    assert mesh.vertices.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert mesh.face_vertices.tolist() == [0, 1, 2, 0, 1, 3]
    assert mesh.colors is not None and mesh.colors.shape == (4, 4)
    again, counts = clean(mesh)
    assert set(counts.values()) == {0} and again.face_vertices.tolist() == mesh.face_vertices.tolist()


@pytest.mark.parametrize("name", ["model.stl", "notes.txt", "noextension"])
def test_unsupported_formats_name_the_supported_ones(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("solid x\n")
    with pytest.raises(MeshFileError) as info:
        read_mesh(tmp_path / name)
    message = str(info.value)
    assert "unsupported format" in message and name in message
    assert all(suffix in message for suffix in SUPPORTED)


@pytest.mark.parametrize("name,content", [("broken.ply", b"this is not a ply\x00\x01"),
                                          ("broken.glb", b"glTF but not really"),
                                          ("broken.obj", b"v 1 2\nf 1 2 3\n"),
                                          ("short.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
                                                        b"property float x\nproperty float y\nproperty float z\n"
                                                        b"end_header\n\x00\x00")])
def test_damaged_files_are_unreadable(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MeshFileError, match=f"{name} is not a readable"):
        read_mesh(tmp_path / name)


def test_points_only_has_no_faces_and_missing_file_is_named(tmp_path: Path) -> None:
    import trimesh

    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(tmp_path / "points.ply")
    with pytest.raises(MeshFileError, match="points.ply has no faces"):
        read_mesh(tmp_path / "points.ply")
    (tmp_path / "lines.obj").write_text("v 0 0 0\nv 1 0 0\nl 1 2\n")
    with pytest.raises(MeshFileError, match="lines.obj has no faces"):
        read_mesh(tmp_path / "lines.obj")
    with pytest.raises(MeshFileError, match="no such file"):
        read_mesh(tmp_path / "gone.glb")
