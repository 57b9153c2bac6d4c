"""Task "project_image" (`python -m backend project-image`, and through the job runner): two quads seen by
cameras, built in numpy with passes written as Blender names them; outputs, info, warnings, cancel between
objects and errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_process import run_backend as run_cli  # python -m backend ...
from backend_process import run_cancelled_at
from PIL import Image

from backend.imaging.exr import read_exr, write_exr
from backend.imaging.passes import BACKGROUND_DEPTH, find_passes
from backend.projection.camera import camera_rays
from backend.projection.objects import file_names
from contract import jobfolder, messages
from contract.formats.camera import CameraInfo
from contract.formats.surface import BakeMesh, save_bake_mesh

WIDTH, HEIGHT = 64, 48
QUADS = (("Quad A", -0.7), ("Quad B", 0.7))  # name, centre x; both 1.2 x 1.2 in the plane z = 0, facing +Z
HALF = 0.6


# --- the scene ---------------------------------------------------------------------------------------------------


def look_at(eye: tuple[float, float, float], forward_sign: float = 1.0) -> list[list[float]]:
    """matrix_world of a camera at ``eye`` looking at the origin (``forward_sign`` -1: looking straight away)."""
    eye_v = np.asarray(eye, dtype=np.float64)
    back = eye_v / np.linalg.norm(eye_v) * forward_sign
    right = np.cross((0.0, 1.0, 0.0), back)
    right /= np.linalg.norm(right)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2], matrix[:3, 3] = right, np.cross(back, right), back, eye_v
    return matrix.tolist()


def camera(eye: tuple[float, float, float] = (0.0, 0.0, 5.0), away: bool = False) -> dict[str, Any]:
    return {"matrix_world": look_at(eye, -1.0 if away else 1.0), "type": "PERSP", "lens": 50.0,
            "sensor_width": 36.0, "sensor_height": 24.0, "sensor_fit": "AUTO", "shift_x": 0.0, "shift_y": 0.0,
            "ortho_scale": 6.0, "clip_start": 0.1, "clip_end": 100.0, "resolution_x": WIDTH, "resolution_y": HEIGHT}


def quad(name: str, centre_x: float) -> BakeMesh:
    """A square of two triangles, UV (0, 0) at its (-x, -y) corner, normals +Z."""
    positions = np.float32([[centre_x - HALF, -HALF, 0], [centre_x + HALF, -HALF, 0],
                            [centre_x + HALF, HALF, 0], [centre_x - HALF, HALF, 0]])
    triangles = np.int32([[0, 1, 2], [0, 2, 3]])
    corners = np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])
    return BakeMesh(positions, triangles, corners[triangles], np.tile(np.float32([0, 0, 1]), (2, 3, 1)), name)


def scene_depth(cam: dict[str, Any]) -> np.ndarray:
    """Blender's planar Z of the two quads (1e10 where a pixel sees neither)."""
    origins, directions = camera_rays(CameraInfo.from_dict(cam))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -origins[..., 2] / directions[..., 2]
    point = origins + z[..., None] * directions
    inside = np.zeros(z.shape, bool)
    for _, centre in QUADS:
        inside |= (np.abs(point[..., 0] - centre) <= HALF) & (np.abs(point[..., 1]) <= HALF)
    return np.where(inside & (z > 0), z, BACKGROUND_DEPTH).astype(np.float32)


def write_passes(path: Path, cam: dict[str, Any], normal: bool = True) -> Path:
    """Depth (and Normal) as Blender's multilayer EXR holds them: "ViewLayer.Depth" (Z), "ViewLayer.Normal"."""
    depth = scene_depth(cam)
    layers = {"ViewLayer.Depth": depth}
    names = {"ViewLayer.Depth": ("Z",)}
    if normal:
        layers["ViewLayer.Normal"] = np.where(depth[..., None] < 1e9, np.float32([0, 0, 1]), 0).astype(np.float32)
        names["ViewLayer.Normal"] = ("X", "Y", "Z")
    path = write_exr(path, layers, channel_names=names)
    passes = find_passes(read_exr(path))  # the way the task reads them
    assert passes.depth is not None and (passes.normal is not None) == normal
    return path


def red_blue_png(path: Path) -> Path:
    """Left half red, right half blue: seen from above, quad A is red and quad B blue."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[:, : WIDTH // 2] = (220, 40, 30)
    pixels[:, WIDTH // 2:] = (30, 40, 220)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_scene(folder: Path, images: bool = True, normal: bool = True,
                cameras: tuple[tuple[str, dict[str, Any], bool], ...] | None = None) -> tuple[list[Path], Path]:
    """Mesh files and a views file in ``folder``: views "Top" (above), and "Away" (looking away, no passes)."""
    meshes = [save_bake_mesh(folder / f"mesh{index}.npz", quad(name, x)) for index, (name, x) in enumerate(QUADS)]
    cameras = cameras or (("Top", camera(), True), ("Away", camera(away=True), False))
    views = []
    for index, (name, cam, with_passes) in enumerate(cameras):
        entry: dict[str, Any] = {"name": name, "camera": cam}
        if with_passes:
            write_passes(folder / f"views/{index:02d}/passes.exr", cam, normal)
            entry["passes"] = f"views/{index:02d}/passes.exr"
        if images:
            red_blue_png(folder / f"views/{index:02d}/image.png")
            entry["image"] = f"views/{index:02d}/image.png"
        views.append(entry)
    (folder / "views.json").write_text(json.dumps({"views": views}))
    return meshes, folder / "views.json"


# --- the command line ----------------------------------------------------------------------------------------------


def test_project_image_from_the_command_line(tmp_path: Path) -> None:
    meshes, views = write_scene(tmp_path / "scene")
    job = tmp_path / "job"
    done = run_cli("project-image", "--mesh", str(meshes[0]), "--mesh", str(meshes[1]), "--views", str(views),
                   "--size", "64", "--padding", "4", "--blend-exponent", "2", "--out", str(job))
    assert done.returncode == 0, done.stderr
    record = jobfolder.read_job(job)
    assert record["status"] == "done"
    assert record["request"]["meshes"] == ["inputs/meshes/00.npz", "inputs/meshes/01.npz"]
    assert record["request"]["size"] == 64 and record["request"]["padding"] == 4
    for copied in ("meshes/00.npz", "meshes/01.npz", "views.json", "views/00/passes.exr", "views/00/image.png",
                   "views/01/image.png"):
        assert (job / "inputs" / copied).is_file(), copied
    assert {"load_s", "bake_s", "write_s", "run_s"} <= set(record["timings"])

    outputs = record["outputs"]
    assert outputs == {"textures": ["outputs/textures/Quad_A.exr", "outputs/textures/Quad_B.exr"],
                       "textures_png": ["outputs/textures/Quad_A.png", "outputs/textures/Quad_B.png"]}
    for name, paths in outputs.items():
        assert all(f"{name}: {job / rel}" in done.stdout for rel in paths)

    info = record["info"]
    assert [o["name"] for o in info["objects"]] == ["Quad A", "Quad B"]
    for obj in info["objects"]:
        assert obj["seen_fraction"] > 0.95 and obj["view_texels"][0] > 1000 and obj["view_texels"][1] == 0
    assert "view 'Away' sees none of object 'Quad A'; it was ignored" in info["warnings"]
    assert "view 'Away' sees none of object 'Quad B'; it was ignored" in info["warnings"]
    assert any(w.startswith("view 'Away' has no passes") for w in info["warnings"])
    assert record["objects"] == info["objects"] and record["warnings"] == info["warnings"]

    exr = read_exr(job / outputs["textures"][0])
    texture = exr.layers[""]
    assert texture.shape == (64, 64, 4) and texture.dtype == np.float32
    assert exr.attributes["object"] == "Quad A" and exr.attributes["views"] == "Top,Away"
    assert exr.attributes["software"].startswith("Scene Diffusion")
    centre = texture[24:40, 24:40]
    assert np.all(centre[..., 3] == 1.0) and np.all(centre[..., 0] > 5 * centre[..., 2])  # red, scene-linear
    blue = read_exr(job / outputs["textures"][1]).layers[""][24:40, 24:40]
    assert np.all(blue[..., 2] > 5 * blue[..., 0])
    png = Image.open(job / outputs["textures_png"][0])
    assert png.mode == "RGBA" and png.size == (64, 64)
    assert abs(int(np.asarray(png)[32, 32, 0]) - 220) <= 3  # back to the image's sRGB value


def test_command_line_errors_exit_2_before_creating_the_job(tmp_path: Path) -> None:
    meshes, views = write_scene(tmp_path / "scene")
    done = run_cli("bake", "--mesh", str(tmp_path / "none.npz"), "--views", str(views), "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "no such file" in done.stderr and "none.npz" in done.stderr
    (tmp_path / "scene" / "views" / "01" / "image.png").unlink()
    done = run_cli("bake", "--mesh", str(meshes[0]), "--views", str(views), "--out", str(tmp_path / "b"))
    assert done.returncode == 2
    assert "view 'Away' (views.json): image file views/01/image.png does not exist" in done.stderr
    done = run_cli("bake", "--mesh", str(meshes[0]), "--views", str(views), "--size", "8", "--out", str(tmp_path / "c"))
    assert done.returncode == 2 and "texture size must be between" in done.stderr
    assert not any((tmp_path / name).exists() for name in "abc")


# --- in process, through the job runner ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    from backend.runner import make_engine

    return make_engine("cpu", "fp32")  # the built-in registry: baking loads no model


def submit_bake(root: Path, scene: Path, **request: Any) -> messages.Submit:
    """A job folder holding the scene's meshes and views the way the add-on writes them."""
    request = {"meshes": ["inputs/meshes/00.npz", "inputs/meshes/01.npz"], "size": 48, **request}
    job_dir = jobfolder.create_job(root, "project_image", request)
    shutil.copytree(scene, job_dir / "inputs", dirs_exist_ok=True)
    (job_dir / "inputs" / "meshes").mkdir()
    for index in range(2):
        os.replace(job_dir / "inputs" / f"mesh{index}.npz", job_dir / "inputs" / "meshes" / f"{index:02d}.npz")
    return messages.Submit(jobfolder.read_job(job_dir)["id"], "project_image", str(job_dir), request)


def test_progress_per_object_and_no_fill(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from backend.runner import run_job

    write_scene(tmp_path / "scene", cameras=(("Top", camera(), True),))
    submit = submit_bake(tmp_path / "jobs", tmp_path / "scene", fill_unseen=False, padding=0)
    progress: list[tuple[int, int]] = []
    final = run_job(engine, submit, lambda m: progress.append((m.step, m.total))
                    if isinstance(m, messages.Progress) else None)
    assert isinstance(final, messages.Result), final
    assert progress == [(0, 2), (1, 2), (2, 2)]
    assert final.info["warnings"] == []
    texture = read_exr(Path(submit.job_dir) / final.outputs["textures"][0]).layers[""]
    assert texture.shape == (48, 48, 4) and set(np.unique(texture[..., 3])) <= {0.0, 1.0}


def test_cancel_stops_between_objects(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_scene(tmp_path / "scene")
    submit = submit_bake(tmp_path / "jobs", tmp_path / "scene")
    final, steps = run_cancelled_at(engine, submit, 1)
    assert isinstance(final, messages.Cancelled)
    assert steps == [0, 1]  # the second object was never baked
    assert jobfolder.read_job(submit.job_dir)["status"] == "cancelled"
    assert not (Path(submit.job_dir) / "outputs" / "textures").exists()


@pytest.mark.parametrize("breakage, message", [
    ("image", "view 'Top' (views.json): image file views/00/image.png does not exist"),
    ("mesh", "mesh file inputs/meshes/01.npz (object 2) does not exist"),
    ("size", "passes views/00/passes.exr are 32 x 48 pixels but the camera renders 64 x 48"),
])
def test_input_errors_are_invalid_params(engine, tmp_path: Path, breakage: str,  # type: ignore[no-untyped-def]
                                         message: str) -> None:
    from backend.runner import run_job

    write_scene(tmp_path / "scene")
    submit = submit_bake(tmp_path / "jobs", tmp_path / "scene")
    inputs = Path(submit.job_dir) / "inputs"
    if breakage == "image":
        (inputs / "views" / "00" / "image.png").unlink()
    elif breakage == "mesh":
        (inputs / "meshes" / "01.npz").unlink()
    else:
        write_exr(inputs / "views" / "00" / "passes.exr", {"ViewLayer.Depth": np.ones((48, 32), np.float32)},
                  channel_names={"ViewLayer.Depth": ("Z",)})
    final = run_job(engine, submit, lambda m: None)
    assert isinstance(final, messages.Error) and final.code == messages.INVALID_PARAMS
    assert message in final.message, final.message
    assert jobfolder.read_job(submit.job_dir)["status"] == "failed"


def test_texture_file_names_are_safe_and_distinct() -> None:
    assert file_names(["Quad A", "quad_a", "../etc/passwd", "", "Cube.001", "Ünïcode"]) == \
        ["Quad_A", "quad_a-2", "etc_passwd", "object", "Cube.001", "n_code"]
