"""`python -m backend render` from a passes EXR, as Blender writes it, with tiny ControlNets."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
from backend_process import run_backend

from backend.imaging.exr import read_exr, write_exr
from contract import jobfolder

_run = partial(run_backend, "render")  # python -m backend render ...
CAMERA = {"matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]], "type": "PERSP", "lens": 50.0,
          "sensor_width": 36.0, "sensor_height": 24.0, "sensor_fit": "AUTO", "shift_x": 0.0, "shift_y": 0.0,
          "ortho_scale": 6.0, "clip_start": 0.1, "clip_end": 100.0, "resolution_x": 80, "resolution_y": 64}


@pytest.fixture(scope="module")
def passes_dir(tmp_path_factory):
    """A plane sloping away across the frame above an empty background, named as Blender names passes."""
    folder = tmp_path_factory.mktemp("passes")
    rows, cols = np.mgrid[0:64, 0:80]
    depth = np.where(rows > 12, 3.0 + cols / 16.0, 1e10).astype(np.float32)
    normal = np.zeros((64, 80, 3), np.float32)
    normal[rows > 12] = (0.0, 0.6, 0.8)
    combined = np.zeros((64, 80, 4), np.float32)
    combined[..., 3] = 1.0
    combined[rows > 12, :3] = (0.6, 0.3, 0.2)
    combined[(rows > 30) & (cols > 30), :3] = 0.9  # an edge for canny
    layers = {"ViewLayer.Combined": combined, "ViewLayer.Depth": depth, "ViewLayer.Normal": normal}
    names = {"ViewLayer.Depth": ("Z",), "ViewLayer.Normal": ("X", "Y", "Z"), "ViewLayer.Combined": ("R", "G", "B", "A")}
    write_exr(folder / "passes.exr", layers, channel_names=names)
    without = {k: v for k, v in layers.items() if "Normal" not in k}
    write_exr(folder / "no-normal.exr", without, channel_names={k: names[k] for k in without})
    (folder / "camera.json").write_text(json.dumps(CAMERA))
    return folder


def test_three_controls_write_png_and_layered_exr(tiny_models, passes_dir, tmp_path):
    done = _run("--passes", str(passes_dir / "passes.exr"), "--camera", str(passes_dir / "camera.json"),
                "--prompt", "a desert road", "--control", "depth=1.0", "--control", "normal=0.5:0.0:0.5",
                "--control", "canny=0.8", "--steps", "2", "--seed", "5", "--out", str(tmp_path / "job"),
                "--registry", str(tiny_models))
    assert done.returncode == 0, done.stderr
    job = tmp_path / "job"
    record = jobfolder.read_job(job)
    assert record["status"] == "done" and record["request"]["width"] == 80 and record["request"]["height"] == 64
    exr = read_exr(job / "outputs" / "render.exr")
    assert {"", "combined", "depth", "normal", "control_depth", "control_normal", "control_canny"} <= set(exr.layers)
    assert exr.layers[""].shape == (64, 80, 3)
    depth = exr.layers["control_depth"]
    assert depth[:12].max() == 0.0 and depth[20, 5] > depth[20, 75]  # sky black, near brighter than far
    assert exr.layers["control_canny"].max() == 1.0
    assert exr.attributes["controls"] == "depth=1,normal=0.5,canny=0.8"
    for name in ("render.png", "control_depth.png", "control_normal.png", "control_canny.png"):
        assert (job / "outputs" / name).is_file()


def test_img2img_on_sdxl(tiny_models, passes_dir, tmp_path):
    done = _run("--passes", str(passes_dir / "passes.exr"), "--prompt", "x", "--control", "depth=1.0",
                "--img2img", "--strength", "0.5", "--steps", "4", "--model", "sdxl-tiny",
                "--out", str(tmp_path / "job"), "--registry", str(tiny_models))
    assert done.returncode == 0, done.stderr
    record = jobfolder.read_job(tmp_path / "job")
    assert record["models"]["controlnets"][0]["name"] == "controlnet-depth-sdxl-tiny"


def test_a_missing_pass_is_named(tiny_models, passes_dir, tmp_path):
    done = _run("--passes", str(passes_dir / "no-normal.exr"), "--camera", str(passes_dir / "camera.json"),
                "--prompt", "x", "--control", "normal=1.0", "--out", str(tmp_path / "job"),
                "--registry", str(tiny_models))
    assert done.returncode == 1
    assert "normal" in done.stderr and "no-normal.exr" not in done.stderr.split("error:")[0]
    assert jobfolder.read_job(tmp_path / "job")["status"] == "failed"


def test_no_sdxl_normal_controlnet_is_a_clear_model_error(tiny_models, passes_dir, tmp_path):
    done = _run("--passes", str(passes_dir / "passes.exr"), "--camera", str(passes_dir / "camera.json"),
                "--prompt", "x", "--control", "normal=1.0", "--model", "sdxl-tiny", "--out", str(tmp_path / "job"),
                "--registry", str(tiny_models))
    assert done.returncode == 1 and "controlnet_normal_sdxl" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--control", "depth=1.0", "--canny-low", "300", "--canny-high", "100"], "canny thresholds"),
    (["--control", "depth=0"], "all control weights are zero"),
    (["--control", "depth=abc"], "KIND=WEIGHT"),
    (["--width", "4096"], "width must be a multiple of 8"),
])
def test_bad_arguments_exit_2_before_any_work(passes_dir, tmp_path, args, message):
    done = _run("--passes", str(passes_dir / "passes.exr"), "--prompt", "x", *args, "--out", str(tmp_path / "j"))
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "j").exists()
