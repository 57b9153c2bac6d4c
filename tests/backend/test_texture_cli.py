"""`python -m backend texture` and `models` from a shell, as a pipeline TD would run them."""

from __future__ import annotations

import json

from backend_process import run_backend

from backend.imaging.image_io import read_image
from contract import jobfolder


def test_texture_command_writes_a_job_folder_like_the_addon(tiny_models, tmp_path):
    out = tmp_path / "wall"
    done = run_backend("texture", "--prompt", "red brick wall", "--seamless", "--width", "64", "--height", "96",
                "--steps", "3", "--seed", "11", "--out", str(out), "--registry", str(tiny_models))
    assert done.returncode == 0, done.stderr
    image_path = out / "outputs" / "texture.png"
    assert f"image: {image_path}" in done.stdout
    assert read_image(image_path).shape == (96, 64, 3)
    record = jobfolder.read_job(out)
    assert record["status"] == "done" and record["seed"] == 11
    assert record["request"]["seamless_x"] and record["request"]["seamless_y"]
    assert "3/3" in done.stderr  # the progress bar


def test_texture_command_refuses_bad_sizes_before_loading_anything(tmp_path):
    done = run_backend("texture", "--prompt", "x", "--width", "4096", "--out", str(tmp_path / "j"))
    assert done.returncode == 2
    assert "width must be a multiple of 8 between 64 and 2048" in done.stderr
    assert not (tmp_path / "j").exists()


def test_texture_command_names_a_missing_model(tiny_models, tmp_path):
    done = run_backend("texture", "--prompt", "x", "--model", "sd99", "--width", "64", "--height", "64",
                "--out", str(tmp_path / "j"), "--registry", str(tiny_models))
    assert done.returncode == 1
    assert "sd99" in done.stderr
    assert jobfolder.read_job(tmp_path / "j")["status"] == "failed"


def test_models_list_and_check(tiny_models):
    listed = run_backend("models", "list", "--registry", str(tiny_models), "--json")
    assert listed.returncode == 0, listed.stderr
    names = {row["name"] for row in json.loads(listed.stdout)}
    assert {"sd15-tiny", "sdxl-tiny"} <= names
    checked = run_backend("models", "check", "--registry", str(tiny_models))
    assert checked.returncode == 0, checked.stdout + checked.stderr
