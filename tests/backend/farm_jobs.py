"""Job folders for farm tests and bench/farm.py: tiny texture, render and PBR jobs, as the add-on writes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from contract import jobfolder

CAMERA = {"matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]], "type": "PERSP", "lens": 50.0,
          "sensor_width": 36.0, "sensor_height": 24.0, "sensor_fit": "AUTO", "shift_x": 0.0, "shift_y": 0.0,
          "ortho_scale": 6.0, "clip_start": 0.1, "clip_end": 100.0, "resolution_x": 64, "resolution_y": 64}


def _passes(path: Path) -> None:
    from backend.imaging.exr import write_exr

    rows, cols = np.mgrid[0:64, 0:64]
    depth = np.where(rows > 12, 3.0 + cols / 16.0, 1e10).astype(np.float32)
    combined = np.zeros((64, 64, 4), np.float32)
    combined[..., 3] = 1.0
    combined[rows > 12, :3] = (0.6, 0.3, 0.2)
    write_exr(path, {"ViewLayer.Combined": combined, "ViewLayer.Depth": depth},
              channel_names={"ViewLayer.Depth": ("Z",), "ViewLayer.Combined": ("R", "G", "B", "A")})


def texture_job(root: Path, seed: int, steps: int = 2, size: int = 64) -> Path:
    return jobfolder.create_job(root, "texture", {"prompt": f"mossy stone {seed}", "width": size, "height": size,
                                                  "steps": steps, "seed": seed, "seamless_x": True,
                                                  "seamless_y": True})


def render_job(root: Path, seed: int) -> Path:
    job = jobfolder.create_job(root, "render", {"prompt": "a desert road", "width": 64, "height": 64, "steps": 2,
                                                "seed": seed, "passes": "inputs/passes.exr",
                                                "camera": "inputs/camera.json",
                                                "controls": [{"kind": "depth", "weight": 1.0}]})
    _passes(job / "inputs" / "passes.exr")
    (job / "inputs" / "camera.json").write_text(json.dumps(CAMERA))
    return job


def pbr_job(root: Path, seed: int) -> Path:
    job = jobfolder.create_job(root, "pbr", {"source": "inputs/wall.png", "source_colorspace": "srgb",
                                             "seamless": True})
    data = (np.random.default_rng(seed).random((48, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(data).save(job / "inputs" / "wall.png")
    return job


def mixed_jobs(root: Path) -> list[Path]:
    """Eight jobs: four textures, two renders, two PBR map sets."""
    return [texture_job(root, 1), render_job(root, 2), pbr_job(root, 3), texture_job(root, 4),
            render_job(root, 5), texture_job(root, 6), pbr_job(root, 7), texture_job(root, 8)]


def copy_jobs(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def output_pixels(job_dir: Path) -> dict[str, np.ndarray]:
    """Every PNG and EXR layer a job wrote (previews aside), decoded: comparable across runs (files carry times)."""
    from backend.imaging.exr import read_exr

    pixels: dict[str, np.ndarray] = {}
    for path in sorted((job_dir / jobfolder.OUTPUTS).rglob("*")):
        if "previews" in path.parts:  # step previews: pictures for the panel, not results
            continue
        name = path.relative_to(job_dir).as_posix()
        if path.suffix == ".png":
            pixels[name] = np.asarray(Image.open(path))
        elif path.suffix == ".exr":
            pixels.update({f"{name}:{layer}": data for layer, data in read_exr(path).layers.items()})
    return pixels
