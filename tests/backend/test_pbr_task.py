"""`python -m backend pbr`: the PBR task through the command line, with its bad inputs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from backend_process import run_backend
from PIL import Image

from backend.imaging.exr import read_exr
from contract import jobfolder

_run = partial(run_backend, "pbr")  # python -m backend pbr ...


def _png(path: Path, mode: str = "RGB", size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    data = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(data).convert(mode).save(path)
    return path


def test_png_to_a_full_map_set(tmp_path):
    done = _run("--image", str(_png(tmp_path / "wall.png")), "--out", str(tmp_path / "job"))
    assert done.returncode == 0, done.stderr
    job = tmp_path / "job"
    record = jobfolder.read_job(job)
    assert record["status"] == "done" and record["request"]["source_colorspace"] == "srgb"
    exr = read_exr(job / "outputs" / "maps.exr")
    exr.require("albedo", "normal", "roughness", "metallic", "ao", "height")
    assert exr.layers["albedo"].shape == (48, 48, 3)
    assert exr.attributes["method"] == "filters" and exr.attributes["software"].startswith("Scene Diffusion")
    for name in ("albedo", "normal", "roughness", "metallic", "ao", "height"):
        assert (job / "outputs" / "maps" / f"{name}.exr").is_file()
    assert (job / "inputs" / "wall.png").is_file()  # the job can be re-run from its folder


def test_exr_input_is_taken_as_linear(tmp_path):
    from backend.imaging.exr import write_exr

    source = write_exr(tmp_path / "lin.exr", {"": np.full((16, 16, 3), 0.25, np.float32)})
    done = _run("--image", str(source), "--out", str(tmp_path / "job"))
    assert done.returncode == 0, done.stderr
    albedo = read_exr(tmp_path / "job" / "outputs" / "maps.exr").layers["albedo"]
    assert np.allclose(albedo, 0.25, atol=1e-3)  # half precision, no sRGB decoding applied


def test_bad_inputs_are_clear_errors(tmp_path):
    grey = _png(tmp_path / "grey.png", mode="L")
    done = _run("--image", str(grey), "--out", str(tmp_path / "g"))
    assert done.returncode == 1 and "single (grey) channel" in done.stderr
    assert jobfolder.read_job(tmp_path / "g")["status"] == "failed"

    text = tmp_path / "notes.png"
    text.write_text("hello")
    done = _run("--image", str(text), "--out", str(tmp_path / "t"))
    assert done.returncode == 1 and "not a readable image" in done.stderr
    assert not list((tmp_path / "t" / "outputs").iterdir())  # nothing half-written

    done = _run("--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "m"))
    assert done.returncode == 2 and "no such image" in done.stderr


def test_marigold_method_with_tiny_models(tiny_models, tmp_path):
    done = _run("--image", str(_png(tmp_path / "wall.png", size=64)), "--method", "marigold", "--steps", "2",
                "--out", str(tmp_path / "job"), "--registry", str(tiny_models))
    assert done.returncode == 0, done.stderr
    record = jobfolder.read_job(tmp_path / "job")
    assert record["models"]["intrinsics"]["name"] == "marigold-intrinsics-tiny"
    assert record["models"]["normals"]["name"] == "marigold-normals-tiny"
    exr = read_exr(tmp_path / "job" / "outputs" / "maps.exr")
    normal = exr.layers["normal"] * 2 - 1
    assert np.allclose(np.linalg.norm(normal, axis=2), 1.0, atol=0.02)  # unit vectors (half precision)
    assert exr.layers["metallic"].shape == (64, 64)
    assert "4/4" in done.stderr  # 2 intrinsics steps + 2 normals steps reported
