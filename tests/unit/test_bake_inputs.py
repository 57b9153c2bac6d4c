"""The views file of the projection tasks (contract/formats/views.py): what it reads and every error it names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from backend.errors import TaskError
from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import write_exr
from backend.projection.views import bake_views, load_meshes, load_views
from contract import messages
from contract.formats.surface import BakeMesh, save_bake_mesh
from contract.formats.views import referenced_files

WIDTH, HEIGHT = 32, 24
CAMERA: dict[str, Any] = {
    "matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]], "type": "PERSP", "lens": 50.0,
    "sensor_width": 36.0, "sensor_height": 24.0, "sensor_fit": "AUTO", "shift_x": 0.0, "shift_y": 0.0,
    "ortho_scale": 6.0, "clip_start": 0.1, "clip_end": 100.0, "resolution_x": WIDTH, "resolution_y": HEIGHT}
PASS_CHANNELS = {"ViewLayer.Depth": ("Z",), "ViewLayer.Normal": ("X", "Y", "Z")}


def write_passes(path: Path, width: int = WIDTH, height: int = HEIGHT, normal: bool = True,
                 depth: bool = True) -> Path:
    """Passes as Blender writes them: "ViewLayer.Depth" (Z), "ViewLayer.Normal" (X, Y, Z), "ViewLayer.Combined"."""
    layers = {"ViewLayer.Combined": np.ones((height, width, 4), np.float32)}
    if depth:
        layers["ViewLayer.Depth"] = np.full((height, width), 5.0, np.float32)
    if normal:
        layers["ViewLayer.Normal"] = np.broadcast_to(np.float32([0, 0, 1]), (height, width, 3)).copy()
    names = {k: v for k, v in {**PASS_CHANNELS, "ViewLayer.Combined": ("R", "G", "B", "A")}.items() if k in layers}
    return write_exr(path, layers, channel_names=names)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """views/00: passes + PNG image; views/01: passes + linear .npy; shared.exr: an RGBA EXR image."""
    for index in ("00", "01"):
        write_passes(tmp_path / "views" / index / "passes.exr")
    pixels = np.zeros((12, 16, 3), np.uint8)
    pixels[:, :8] = (255, 128, 0)
    Image.fromarray(pixels).save(tmp_path / "views" / "00" / "image.png")
    np.save(tmp_path / "views" / "01" / "image.npy", np.full((6, 8, 4), 0.25, np.float32))
    write_exr(tmp_path / "shared.exr", {"": np.full((6, 8, 4), 2.0, np.float32)})
    return tmp_path


def write_views(folder: Path, *views: dict[str, Any]) -> Path:
    path = folder / "views.json"
    path.write_text(json.dumps({"views": list(views)}))
    return path


def view(index: str = "00", **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"Cam{index}", "camera": CAMERA, "passes": f"views/{index}/passes.exr",
                             "image": f"views/{index}/image.png"}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def test_views_are_read_with_images_in_scene_linear(folder: Path) -> None:
    path = write_views(folder, view("00"),
                       view("01", image="views/01/image.npy", image_colorspace="linear"),
                       view("02", name=None, passes=None, image="shared.exr"))
    views = load_views(path, need_image=True, need_depth=False)
    assert [v.name for v in views] == ["Cam00", "Cam01", "view 3"]
    first = views[0]
    assert first.camera.resolution_x == WIDTH and first.depth is not None and first.depth.shape == (HEIGHT, WIDTH)
    assert first.normal is None  # not asked for
    assert first.image is not None and first.image.shape == (12, 16, 3) and first.image.dtype == np.float32
    assert np.allclose(first.image[0, 0], srgb_to_linear(np.float32([1.0, 128 / 255, 0.0])))
    assert views[1].image is not None and views[1].image.shape == (6, 8, 4)
    assert np.all(views[1].image == 0.25)  # linear: as stored
    assert views[2].depth is None and views[2].image is not None and np.all(views[2].image == 2.0)  # EXR: linear

    baked, warnings = bake_views(views)
    assert [b.name for b in baked] == ["Cam00", "Cam01", "view 3"]
    assert baked[0].depth is first.depth and baked[0].image is first.image and baked[0].camera == first.camera
    assert warnings == ["view 'view 3' has no passes: without its depth there is no occlusion test, so it also "
                        "paints surfaces hidden behind other geometry"]


def test_normals_and_no_images_for_project_texture(folder: Path) -> None:
    path = write_views(folder, view("00", image="not/there.png"), view("01"))
    views = load_views(path, need_image=False, need_depth=True, need_normal=True)
    assert all(v.image is None and v.normal is not None and v.normal.shape == (HEIGHT, WIDTH, 3) for v in views)
    assert np.allclose(views[0].normal[0, 0], (0, 0, 1))  # type: ignore[index]
    with pytest.raises(ValueError, match="no image"):
        views[0].bake_view()
    replaced = views[0].bake_view(np.zeros((8, 8, 3), np.float32))
    assert replaced.image.shape == (8, 8, 3) and replaced.depth is views[0].depth


def test_exr_images_take_their_first_rgb_layer_and_npy_defaults_to_srgb(folder: Path) -> None:
    write_exr(folder / "layered.exr", {"ViewLayer.Depth": np.ones((4, 4), np.float32),
                                       "ViewLayer.Combined": np.full((4, 4, 4), 0.5, np.float32)},
              channel_names={"ViewLayer.Depth": ("Z",), "ViewLayer.Combined": ("R", "G", "B", "A")})
    np.save(folder / "srgb.npy", np.full((4, 4, 3), 0.5, np.float32))
    path = write_views(folder, view("00", image="layered.exr"), view("01", image="srgb.npy"))
    layered, npy = load_views(path, need_image=True, need_depth=False)
    assert layered.image is not None and layered.image.shape == (4, 4, 4) and np.all(layered.image == 0.5)
    assert npy.image is not None and np.allclose(npy.image, srgb_to_linear(np.float32(0.5)))


def test_referenced_files_are_listed_once_relative_to_the_views_file(folder: Path) -> None:
    path = write_views(folder, view("00"), view("01", passes="views/00/passes.exr", image="views/00/image.png"),
                       view("02", passes=None, image="shared.exr"))
    assert referenced_files(path) == ["views/00/passes.exr", "views/00/image.png", "shared.exr"]
    assert referenced_files(path, images=False) == ["views/00/passes.exr"]


def _error(path: Path, **need: bool) -> TaskError:
    with pytest.raises(TaskError) as caught:
        load_views(path, **{"need_image": True, "need_depth": False, **need})
    assert caught.value.code == messages.INVALID_PARAMS and caught.value.hint
    return caught.value


def test_views_file_problems(folder: Path) -> None:
    assert "does not exist" in _error(folder / "none.json").message
    (folder / "bad.json").write_text("{views: ")
    assert "bad.json is not valid JSON" in _error(folder / "bad.json").message
    (folder / "bad.json").write_text('{"cameras": []}')
    assert "must be a JSON object with a \"views\" list" in _error(folder / "bad.json").message
    assert "lists no views" in _error(write_views(folder)).message
    (folder / "views.json").write_text(json.dumps({"views": [view(), "Camera"]}))
    assert "view 2 must be a JSON object" in _error(folder / "views.json").message
    assert "at most 32" in _error(write_views(folder, *[view()] * 33)).message


@pytest.mark.parametrize("changes, need, message", [
    ({"camera": None}, {}, "view 'Cam00' (views.json) has no \"camera\""),
    ({"camera": {**CAMERA, "lens": -1}}, {}, "view 'Cam00' (views.json): camera 'lens' must be greater than 0"),
    ({"camera": {**CAMERA, "resolution_x": 0}}, {}, "camera 'resolution_x' must be a whole number"),
    ({"camera": [1, 2]}, {}, "a camera must be a JSON object"),
    ({"passes": "views/00/missing.exr"}, {}, "view 'Cam00' (views.json): passes file views/00/missing.exr does not"),
    ({"passes": "views/00/image.png"}, {}, "is not an OpenEXR file"),
    ({"passes": "/abs/passes.exr"}, {}, "must be a path relative to the views file's folder"),
    ({"passes": "../passes.exr"}, {}, "without '..'"),
    ({"passes": None}, {"need_depth": True}, "view 'Cam00' (views.json) has no \"passes\""),
    ({"image": None}, {}, "view 'Cam00' (views.json) has no \"image\""),
    ({"image": "views/00/gone.png"}, {}, "image file views/00/gone.png does not exist"),
    ({"image": 3}, {}, "\"image\" must be a file path"),
    ({"image": "views/00/passes.exr", "image_colorspace": "acescg"}, {}, "image_colorspace must be one of srgb"),
])
def test_view_problems_name_the_view_and_the_file(folder: Path, changes: dict[str, Any], need: dict[str, bool],
                                                  message: str) -> None:
    error = _error(write_views(folder, view("00", **changes)), **need)
    assert message in error.message, error.message


def test_passes_must_match_the_camera_and_hold_the_layers_asked_for(folder: Path) -> None:
    write_passes(folder / "small.exr", width=16, height=12)
    error = _error(write_views(folder, view("00", passes="small.exr")))
    assert "view 'Cam00' (views.json): passes small.exr are 16 x 12 pixels but the camera renders 32 x 24" \
        in error.message
    assert "resolution" in error.hint

    write_passes(folder / "no-depth.exr", depth=False)
    error = _error(write_views(folder, view("00", passes="no-depth.exr")))
    assert "no-depth.exr lacks the depth pass" in error.message and "Cam00" in error.message

    write_passes(folder / "no-normal.exr", normal=False)
    path = write_views(folder, view("00", passes="no-normal.exr"))
    assert load_views(path, need_image=False, need_depth=True)[0].depth is not None  # fine without the normal control
    error = _error(path, need_image=False, need_depth=True, need_normal=True)
    assert "no-normal.exr lacks the normal pass" in error.message


def test_image_problems(folder: Path) -> None:
    (folder / "image.tif").write_bytes(b"II*\x00")
    assert "unsupported format (.tif)" in _error(write_views(folder, view("00", image="image.tif"))).message
    np.save(folder / "grey.npy", np.zeros((4, 4), np.float32))
    error = _error(write_views(folder, view("00", image="grey.npy")))
    assert "must be an H x W x 3 or H x W x 4 array" in error.message
    np.save(folder / "bytes.npy", np.zeros((4, 4, 3), np.uint8))
    assert "must hold floats" in _error(write_views(folder, view("00", image="bytes.npy"))).message
    np.save(folder / "nan.npy", np.full((4, 4, 3), np.nan, np.float32))
    assert "NaN or infinite" in _error(write_views(folder, view("00", image="nan.npy"))).message
    write_exr(folder / "depth.exr", {"ViewLayer.Depth": np.ones((4, 4), np.float32)},
              channel_names={"ViewLayer.Depth": ("Z",)})
    error = _error(write_views(folder, view("00", image="depth.exr")))
    assert "image depth.exr is unreadable: depth.exr has no R, G, B layer (layers present: 'ViewLayer.Depth')" \
        in error.message
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    assert "image broken.png is unreadable" in _error(write_views(folder, view("00", image="broken.png"))).message


def test_meshes_load_in_order_and_problems_name_the_file(tmp_path: Path) -> None:
    triangle = BakeMesh(np.float32([[0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.int32([[0, 1, 2]]),
                        np.float32([[[0, 0], [1, 0], [0, 1]]]), np.tile(np.float32([0, 0, 1]), (1, 3, 1)), "Tri")
    save_bake_mesh(tmp_path / "inputs" / "meshes" / "00.npz", triangle)
    (tmp_path / "inputs" / "meshes" / "01.npz").write_bytes(b"not a zip")
    meshes = load_meshes(tmp_path, ["inputs/meshes/00.npz"])
    assert [m.name for m in meshes] == ["Tri"]
    with pytest.raises(TaskError, match=r"mesh file inputs/meshes/02.npz \(object 2\) does not exist"):
        load_meshes(tmp_path, ["inputs/meshes/00.npz", "inputs/meshes/02.npz"])
    with pytest.raises(TaskError, match="mesh file inputs/meshes/01.npz: 01.npz is not a readable mesh file"):
        load_meshes(tmp_path, ["inputs/meshes/01.npz"])
