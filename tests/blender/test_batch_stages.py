"""The examples' farm stages inside real Blender: --prepare writes job folders and starts nothing, a runner of job
folders (the batch command on a local Ray cluster, or the backend's runner) runs them, --apply brings them back."""

from __future__ import annotations

import importlib
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

from backend.imaging.image_io import read_image
from contract import jobfolder
from devtools.backend_python import backend_python

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MANIFESTS = "blender_stages"  # one manifest per prepare process
TEXTURE_ARGS = ["--size", "64", "--steps", "2", "--seed", "9"]


def _example(script: str, *args: str) -> int:
    old, sys.argv = sys.argv, [script, "--", *args]
    try:
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    finally:
        sys.argv = old
    return int(ended.value.code or 0)


def _api(addon):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"{addon.__name__}.addon.api")


def _cube(name: str) -> bpy.types.Object:
    bpy.ops.mesh.primitive_cube_add()
    bpy.context.object.name = name
    return bpy.context.object


def _render_scene() -> None:
    bpy.ops.mesh.primitive_plane_add(size=8)
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 1))
    bpy.ops.object.camera_add(location=(5, -5, 4))
    camera = bpy.context.object
    camera.rotation_euler = (camera.location * -1).to_track_quat("-Z", "Y").to_euler()
    bpy.context.scene.camera = camera


RENDER_ARGS = ["--prompt", "a red barn", "--frames", "1-2", "--size", "64x64", "--steps", "2", "--seed", "7",
               "--engine", "BLENDER_WORKBENCH"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _batch(jobs: Path, tiny_models: Path) -> str:
    """The batch command on a local Ray cluster of one worker, as a farm would run it."""
    proc = subprocess.run([backend_python(), "-m", "backend", "batch", "--jobs", str(jobs), "--local", "1",
                           "--no-progress", "--device", "cpu", "--registry", str(tiny_models)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


RUNNER = """
import sys
from backend.runner import make_engine, run_job
from contract import jobfolder, messages
engine = make_engine(device="cpu", registry=sys.argv[1])
for folder in sys.argv[2:]:
    record = jobfolder.read_job(folder)
    run_job(engine, messages.Submit(id=record["id"], task=record["task"], job_dir=folder,
                                    params=record["request"]), send=lambda m: None)
"""


def _run_in_place(tiny_models: Path, *job_dirs: Path) -> None:
    """The backend's runner on some of the job folders, in a process of its own (the add-on never imports it)."""
    proc = subprocess.run([backend_python(), "-c", RUNNER, str(tiny_models), *map(str, job_dirs)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _manifest(jobs: Path) -> dict:
    entries: dict = {}
    for path in sorted((jobs / MANIFESTS).glob("*.json")):
        entries.update(json.loads(path.read_text())["jobs"])
    return entries


def _pixels(path: Path) -> np.ndarray:
    return read_image(path)


def _absolute_paths(value: object) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _absolute_paths(v)]
    return [value] if isinstance(value, str) and Path(value).is_absolute() else []


def test_prepare_writes_job_folders_and_starts_no_backend(addon, clean_scene, tmp_path, monkeypatch):
    service = addon.addon.jobs.service
    service.shutdown()
    _cube("Wall")
    _render_scene()
    jobs = tmp_path / "jobs"

    assert _example("texture_batch.py", "--prompt", "brick", "--objects", "Wall", *TEXTURE_ARGS,
                    "--prepare", str(jobs)) == 0
    # The second prepare as another process would run it (a render manager runs prepares in parallel).
    stages = importlib.import_module(f"{addon.__name__}.addon.batch_stages")
    monkeypatch.setattr(stages, "_THIS_PREPARE", "another-prepare.json")
    assert _example("batch_render.py", *RENDER_ARGS, "--out", str(tmp_path / "frames"), "--prepare", str(jobs)) == 0
    assert len(list((jobs / MANIFESTS).glob("*.json"))) == 2  # each its own manifest: neither overwrites the other

    assert service._supervisor is None or service._supervisor.client is None  # nothing started
    folders = jobfolder.list_jobs(jobs)
    assert len(folders) == 3
    records = [jobfolder.read_job(f) for f in folders]
    assert {r["status"] for r in records} == {"queued"}
    assert sorted(r["task"] for r in records) == ["render", "render", "texture"]
    assert all(not _absolute_paths(r["request"]) for r in records)
    for folder, record in zip(folders, records, strict=True):
        if record["task"] == "render":
            assert (folder / "inputs" / "passes.exr").is_file() and (folder / "inputs" / "camera.json").is_file()
    manifest = _manifest(jobs)
    assert set(manifest) == {r["id"] for r in records}
    frames = sorted((e["frame"], e["output"]) for e in manifest.values() if e["kind"] == "frame")
    scene_out = str(tmp_path / "frames" / bpy.context.scene.name)
    assert frames == [(1, scene_out), (2, scene_out)]
    texture = next(e for e in manifest.values() if e["kind"] == "texture")
    assert texture["objects"] == ["Wall"] and texture["prompt"] == "brick"
    assert not (tmp_path / "frames").exists()  # no frame landed: nothing ran


def test_three_stages_match_the_single_machine_path(addon, clean_scene, tiny_models, tmp_path, monkeypatch):
    # The single-machine path first, on one thread as the batch's one-CPU actor runs.
    service = addon.addon.jobs.service
    service.shutdown()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _cube("Wall")
    _render_scene()
    try:
        assert _example("texture_batch.py", "--prompt", "brick", "--objects", "Wall", *TEXTURE_ARGS) == 0
        assert _example("batch_render.py", *RENDER_ARGS, "--out", str(tmp_path / "single")) == 0
    finally:
        service.shutdown()
        monkeypatch.delenv("OMP_NUM_THREADS")
    single_texture = jobfolder.list_jobs(addon.addon.paths.jobs_dir())
    single_texture = next(j for j in reversed(single_texture) if jobfolder.read_job(j)["task"] == "texture")
    bpy.data.objects["Wall"].data.materials.clear()
    for image in list(bpy.data.images):
        bpy.data.images.remove(image)
    for material in list(bpy.data.materials):
        bpy.data.materials.remove(material)

    jobs = tmp_path / "jobs"
    assert _example("texture_batch.py", "--prompt", "brick", "--objects", "Wall", *TEXTURE_ARGS,
                    "--prepare", str(jobs)) == 0
    assert _example("batch_render.py", *RENDER_ARGS, "--out", str(tmp_path / "farm"), "--prepare", str(jobs)) == 0
    log = _batch(jobs, tiny_models)
    assert "3 done" in log, log
    assert _example("texture_batch.py", "--apply", str(jobs), "--save", str(tmp_path / "out.blend")) == 0
    assert _example("batch_render.py", "--apply", str(jobs)) == 0

    wall = bpy.data.objects["Wall"]
    assert wall.active_material.name == "brick"
    image = bpy.data.images["brick"]
    tex = next(n for n in wall.active_material.node_tree.nodes if n.type == "TEX_IMAGE")
    assert tex.image == image and image.packed_file is not None and tuple(image.size) == (64, 64)
    assert (tmp_path / "out.blend").is_file()
    name = bpy.context.scene.name
    frames = sorted(p.name for p in (tmp_path / "farm" / name).iterdir())
    assert frames == ["render_0001.exr", "render_0001.png", "render_0002.exr", "render_0002.png"]
    # Same seeds, same pixels as the single-machine path.
    farm_texture = next(j for j in jobfolder.list_jobs(jobs) if jobfolder.read_job(j)["task"] == "texture")
    assert jobfolder.read_job(farm_texture)["seed"] == jobfolder.read_job(single_texture)["seed"] == 9
    assert np.array_equal(_pixels(farm_texture / "outputs" / "texture.png"),
                          _pixels(single_texture / "outputs" / "texture.png"))
    for frame in ("render_0001.png", "render_0002.png"):
        assert np.array_equal(_pixels(tmp_path / "farm" / name / frame), _pixels(tmp_path / "single" / name / frame))

    # Apply again: one image and one material per job, frames left as they are.
    images, materials = len(bpy.data.images), len(bpy.data.materials)
    report = _api(addon).apply_jobs(jobs)
    assert report.ok and report.applied == [] and len(report.kept) == 3
    assert (len(bpy.data.images), len(bpy.data.materials)) == (images, materials)
    assert _example("batch_render.py", "--apply", str(jobs), "--out", str(tmp_path / "farm")) == 0


def test_apply_reports_jobs_not_done_and_applies_the_rest(addon, clean_scene, tiny_models, tmp_path):
    api = _api(addon)
    for name in ("Done", "Failed", "Queued", "Gone"):
        _cube(name)
    jobs = tmp_path / "jobs"
    common = dict(width=64, height=64, steps=2, seed=3)
    done = api.prepare_texture(jobs, "slate", objects=["Done"], **common)
    failed = api.prepare_texture(jobs, "velvet", objects=["Failed"], model="sd99-real", **common)
    queued = api.prepare_texture(jobs, "moss", objects=["Queued"], **common)
    gone = api.prepare_texture(jobs, "cork", objects=["Gone"], **common)
    _run_in_place(tiny_models, done, failed)
    shutil.rmtree(gone)  # as if lost on the way back from the farm

    assert _example("texture_batch.py", "--apply", str(jobs)) == 1  # not everything finished
    assert bpy.data.objects["Done"].active_material.name == "slate"
    assert all(not bpy.data.objects[n].material_slots for n in ("Failed", "Queued", "Gone"))
    report = api.apply_jobs(jobs)
    assert report.kept == [done.name] and report.applied == []
    assert set(report.not_done) == {failed.name, queued.name, gone.name}
    assert report.not_done[failed.name].startswith("failed: ") and "sd99-real" in report.not_done[failed.name]
    assert report.not_done[queued.name] == "queued"
    assert report.not_done[gone.name] == "missing: no job folder"
    assert f"  {queued.name}: queued" in report.lines()
    assert len([i for i in bpy.data.images if i.get("scene_diffusion_job")]) == 1


def test_render_stages_over_several_scenes(addon, clean_scene, tiny_models, tmp_path):
    blends = []
    for name, height in (("barn", 4), ("silo", 6)):
        bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
        _render_scene()
        bpy.context.scene.camera.location.z = height  # a different view per scene
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / f"{name}.blend"))
        blends.append(str(tmp_path / f"{name}.blend"))
    jobs, out = tmp_path / "jobs", tmp_path / "renders"

    assert _example("batch_render.py", *RENDER_ARGS, "--scenes", *blends, "--out", str(out), "--prepare",
                    str(jobs)) == 0
    entries = _manifest(jobs).values()
    assert sorted((Path(e["blend"]).name, e["frame"], Path(e["output"]).name) for e in entries) == [
        ("barn.blend", 1, "barn"), ("barn.blend", 2, "barn"), ("silo.blend", 1, "silo"), ("silo.blend", 2, "silo")]
    _run_in_place(tiny_models, *jobfolder.list_jobs(jobs))
    elsewhere = tmp_path / "elsewhere"
    assert _example("batch_render.py", "--apply", str(jobs), "--out", str(elsewhere)) == 0
    for scene in ("barn", "silo"):
        assert sorted(p.name for p in (elsewhere / scene).iterdir()) == [
            "render_0001.exr", "render_0001.png", "render_0002.exr", "render_0002.png"]
    assert not out.exists()  # --out at apply replaces the folder given at prepare
