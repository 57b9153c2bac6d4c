"""The contract both processes share: each file format's writer against its reader, typed parameters and
outputs through JSON, and the task list."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract.formats import FormatError
from contract.formats.camera import CameraInfo, read_camera, write_camera
from contract.formats.mesh import MeshArrays, read_mesh_arrays, write_mesh_arrays
from contract.formats.mesh_files import mesh_file_inputs
from contract.formats.surface import BakeMesh, BakeMeshError, load_bake_mesh, save_bake_mesh
from contract.formats.views import ViewEntry, read_views, referenced_files, write_views
from contract.tasks import (
    TASKS,
    ControlParams,
    ParamError,
    ProjectImageOutputs,
    ProjectTextureOutputs,
    RenderParams,
    TextureOutputs,
    params_for,
)
from contract.tasks.project import ObjectCoverage, ViewGeneration

CAMERA = CameraInfo(matrix_world=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]], type="PERSP", lens=50.0,
                    sensor_width=36.0, sensor_height=24.0, sensor_fit="AUTO", shift_x=0.1, shift_y=0.0,
                    ortho_scale=6.0, clip_start=0.1, clip_end=100.0, resolution_x=32, resolution_y=24)


def test_camera_writer_and_reader_agree(tmp_path: Path) -> None:
    assert read_camera(write_camera(tmp_path / "camera.json", CAMERA)) == CAMERA
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FormatError, match="bad.json is missing or unreadable"):
        read_camera(tmp_path / "bad.json")
    with pytest.raises(FormatError, match="missing or unreadable"):
        read_camera(tmp_path / "none.json")


def test_views_writer_and_reader_agree(tmp_path: Path) -> None:
    (tmp_path / "views" / "00").mkdir(parents=True)
    for name in ("views/00/passes.exr", "views/00/image.npy"):
        (tmp_path / name).write_bytes(b"x")
    views = [ViewEntry("Cam", CAMERA, "views/00/passes.exr", "views/00/image.npy", "linear"),
             ViewEntry("Other", CAMERA, "views/00/passes.exr")]
    path = write_views(tmp_path / "views.json", views)
    assert read_views(path) == views
    assert referenced_files(path) == ["views/00/passes.exr", "views/00/image.npy"]
    assert [v.image for v in read_views(path, images=False)] == [None, None]
    path.write_text(json.dumps({"views": [{"name": "Cam", "camera": CAMERA.to_dict(), "passes": "../x.exr"}]}))
    with pytest.raises(FormatError, match="without '..'"):
        read_views(path)


def test_surface_writer_and_reader_agree(tmp_path: Path) -> None:
    mesh = BakeMesh(np.float32([[0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.int32([[0, 1, 2]]),
                    np.zeros((1, 3, 2), np.float32), np.tile(np.float32([0, 0, 1]), (1, 3, 1)), name="Tri")
    back = load_bake_mesh(save_bake_mesh(tmp_path / "tri.npz", mesh))
    assert back.name == "Tri" and all(np.array_equal(getattr(back, k), getattr(mesh, k))
                                      for k in ("positions", "triangles", "uvs", "normals"))
    np.savez(tmp_path / "half.npz", positions=mesh.positions)
    with pytest.raises(BakeMeshError, match="lacks the array"):
        load_bake_mesh(tmp_path / "half.npz")


@pytest.mark.parametrize("colors", [None, np.ones((4, 4), np.float32)])
def test_mesh_arrays_writer_and_reader_agree(tmp_path: Path, colors: np.ndarray | None) -> None:
    mesh = MeshArrays(np.float32([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]), np.int32([4]),
                      np.int32([0, 1, 2, 3]), colors)
    back = read_mesh_arrays(write_mesh_arrays(tmp_path / "mesh.npz", mesh))
    assert np.array_equal(back.vertices, mesh.vertices) and np.array_equal(back.face_vertices, mesh.face_vertices)
    assert (back.colors is None) == (colors is None)
    bad = MeshArrays(mesh.vertices, np.int32([4]), np.int32([0, 1, 2, 9]))
    with pytest.raises(FormatError, match="mesh.npz: a face refers to a vertex that does not exist"):
        read_mesh_arrays(write_mesh_arrays(tmp_path / "mesh.npz", bad))


def test_gltf_brings_its_buffers_and_refuses_paths_outside(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "data.bin").write_bytes(b"\0")
    gltf = tmp_path / "model.gltf"
    gltf.write_text(json.dumps({"buffers": [{"uri": "bin/data.bin"}, {"uri": "data:application/octet-stream;,"}]}))
    assert mesh_file_inputs(gltf) == [(gltf, "inputs/mesh/mesh.gltf"), (tmp_path / "bin" / "data.bin",
                                                                         "inputs/mesh/bin/data.bin")]
    gltf.write_text(json.dumps({"buffers": [{"uri": "../secret.bin"}]}))
    with pytest.raises(FormatError, match="only files beside it"):
        mesh_file_inputs(gltf)
    with pytest.raises(FormatError, match="unsupported format"):
        mesh_file_inputs(tmp_path / "model.fbx")


def test_every_task_round_trips_its_parameters_through_json() -> None:
    required = {"texture": {"prompt": "x"}, "render": {"prompt": "x", "controls": [{"kind": "depth"}]},
                "export_maps": {"maps": ["albedo"]}, "import_mesh": {"source": "inputs/mesh/mesh.glb"},
                "project_image": {"meshes": ["inputs/meshes/00.npz"]},
                "project_texture": {"prompt": "x", "meshes": ["inputs/meshes/00.npz"]}}
    for task, cls in TASKS.items():
        params = params_for(task, required.get(task, {}))
        assert type(params) is cls and cls.task == task
        assert params_for(task, json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(ParamError, match="unknown task 'bake'"):
        params_for("bake", {})


def test_nested_parameters_are_typed_and_checked() -> None:
    params = RenderParams.from_dict({"prompt": "x", "controls": [{"kind": "normal", "weight": 0.5}]})
    assert params.controls == [ControlParams("normal", 0.5)]
    with pytest.raises(ParamError, match=r"controls\[0\].weight must be float"):
        RenderParams.from_dict({"prompt": "x", "controls": [{"kind": "depth", "weight": "high"}]})
    with pytest.raises(ParamError, match="must be a path inside the job folder"):
        params_for("import_mesh", {"source": "/etc/passwd.glb"})


def test_outputs_split_into_files_and_facts_and_back() -> None:
    outputs = ProjectTextureOutputs(
        textures=["outputs/textures/A.exr"], textures_png=["outputs/textures/A.png"],
        objects=[ObjectCoverage("A", 0.5, [10, 0])], warnings=["w"], view_images=["outputs/views/view_00.png"],
        view_images_exr=["outputs/views/view_00.exr"], views=[ViewGeneration("Cam", 7, 0.0)], seed=7)
    files, info = outputs.files(), outputs.info()
    assert set(files) == {"textures", "textures_png", "view_images", "view_images_exr"}
    assert "objects" in info and "textures" not in info
    assert ProjectTextureOutputs.from_result(json.loads(json.dumps(files)), json.loads(json.dumps(info))) == outputs
    assert outputs.paths() == ["outputs/textures/A.exr", "outputs/textures/A.png", "outputs/views/view_00.png",
                               "outputs/views/view_00.exr"]
    assert isinstance(outputs, ProjectImageOutputs)
    with pytest.raises(ParamError, match="seed must be int"):
        TextureOutputs.from_result({"image": "a.png", "image_exr": "a.exr"}, {"seed": "7"})
