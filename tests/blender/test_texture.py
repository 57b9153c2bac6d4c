"""generate_texture inside real Blender, through the installed extension and a real backend."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import bpy
import pytest

from contract import jobfolder


def _settings(**values):
    settings = bpy.context.scene.scene_diffusion.texture
    base = dict(prompt="green ceramic tiles", width=64, height=64, steps=3, random_seed=False, seed=4)
    for key, value in {**base, **values}.items():
        setattr(settings, key, value)
    return settings


def _select(*objects):
    bpy.ops.object.select_all(action="DESELECT")
    for obj in objects:
        obj.select_set(True)
    if objects:
        bpy.context.view_layer.objects.active = objects[0]


def _cube(name="Cube"):
    bpy.ops.mesh.primitive_cube_add()
    bpy.context.object.name = name
    return bpy.context.object


def _jobs(addon) -> list[Path]:
    return jobfolder.list_jobs(addon.addon.paths.jobs_dir())


@pytest.mark.remote
def test_texture_lands_as_image_and_material_on_selected_meshes(addon, clean_scene):
    cube, other = _cube("Crate"), _cube("Barrel")
    bpy.ops.object.camera_add()
    camera = bpy.context.object
    _select(cube, other, camera)
    _settings()
    before = len(_jobs(addon))

    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}

    image = bpy.data.images["green ceramic tiles"]
    assert tuple(image.size) == (64, 64)
    assert image.packed_file is not None  # survives pruning of old job folders
    assert image.colorspace_settings.name == "sRGB"
    material = cube.active_material
    assert material is other.active_material and material.name == "green ceramic tiles"
    tex = next(n for n in material.node_tree.nodes if n.type == "TEX_IMAGE")
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert tex.image == image
    assert bsdf.inputs["Base Color"].links[0].from_node == tex
    assert not camera.material_slots  # not a mesh: left alone
    jobs = _jobs(addon)
    assert len(jobs) == before + 1
    record = jobfolder.read_job(jobs[-1])
    assert record["status"] == "done" and record["seed"] == 4
    assert record["request"]["seamless_x"] and record["request"]["seamless_y"]


def test_keywords_override_the_texture_settings_for_one_call(addon, clean_scene):
    _select()
    settings = _settings()
    assert bpy.ops.scene_diffusion.generate_texture(prompt="red bricks", seamless_y=False, steps=1) == {"FINISHED"}
    record = jobfolder.read_job(_jobs(addon)[-1])
    assert record["request"]["prompt"] == "red bricks" and record["request"]["steps"] == 1
    assert record["request"]["seamless_x"] and not record["request"]["seamless_y"]
    assert "red bricks" in bpy.data.images
    assert settings.prompt == "green ceramic tiles" and settings.seamless_y and settings.steps != 1


def test_existing_slots_keep_their_other_materials(addon, clean_scene):
    cube = _cube()
    keep = bpy.data.materials.new("Keep")
    cube.data.materials.append(keep)
    cube.data.materials.append(bpy.data.materials.new("Replace"))
    cube.active_material_index = 1
    _select(cube)
    _settings(prompt="rusty metal")
    bpy.ops.scene_diffusion.generate_texture()
    assert [s.material.name for s in cube.material_slots] == ["Keep", "rusty metal"]


def test_without_selection_only_the_image_is_made(addon, clean_scene):
    _select()
    _settings(prompt="sand dunes", seamless_y=False)
    bpy.ops.scene_diffusion.generate_texture()
    assert "sand dunes" in bpy.data.images
    assert "sand dunes" not in bpy.data.materials
    assert jobfolder.read_job(_jobs(addon)[-1])["request"]["seamless_y"] is False


@pytest.mark.parametrize("values, message", [
    ({"width": 100}, "width must be a multiple of 8"),
    ({"height": 4096}, "height must be a multiple of 8 between 64 and 2048"),
    ({"prompt": "   "}, "prompt is empty"),
])
def test_bad_settings_are_refused_before_any_job(addon, clean_scene, values, message):
    cube = _cube()
    _select(cube)
    _settings(**values)
    before, images = len(_jobs(addon)), len(bpy.data.images)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.scene_diffusion.generate_texture()
    assert len(_jobs(addon)) == before and len(bpy.data.images) == images
    assert not cube.material_slots


def test_missing_model_is_a_clear_error_and_changes_nothing(addon, clean_scene):
    cube = _cube()
    _select(cube)
    _settings(model="sd99-real")
    images = len(bpy.data.images)
    with pytest.raises(RuntimeError, match="sd99-real"):
        bpy.ops.scene_diffusion.generate_texture()
    assert len(bpy.data.images) == images and not cube.material_slots
    assert jobfolder.read_job(_jobs(addon)[-1])["status"] == "failed"


def test_sdxl_model_by_name(addon, clean_scene):
    _settings(prompt="marble", model="sdxl-tiny")
    bpy.ops.scene_diffusion.generate_texture()
    assert jobfolder.read_job(_jobs(addon)[-1])["models"]["text_to_image"]["family"] == "sdxl"


@pytest.mark.parametrize("model, family", [("flux-tiny", "flux"), ("qwen-image-tiny", "qwen_image")])
def test_transformer_family_models_by_name(addon, clean_scene, model, family):
    """The current families go through the same operator, backend and image import as SD 1.5."""
    cube = _cube()
    _select(cube)
    _settings(prompt="marble", model=model, width=64, height=64, steps=2)
    bpy.ops.scene_diffusion.generate_texture()
    record = jobfolder.read_job(_jobs(addon)[-1])
    assert record["status"] == "done" and record["models"]["text_to_image"]["family"] == family
    assert cube.material_slots and cube.material_slots[0].material is not None


# -- the interactive path: the timer drives the job, Blender never waits (fixture `interactive`) ----


def _drive(service, job, limit=120.0):
    deadline = time.monotonic() + limit
    while not job.finished and time.monotonic() < deadline:
        service._tick()
        time.sleep(0.1)
    return job


@pytest.mark.remote
def test_interactive_generate_returns_at_once_and_lands_on_a_timer_tick(addon, clean_scene, interactive):
    cube = _cube()
    _select(cube)
    _settings(prompt="birch bark", steps=4)
    started = time.monotonic()
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    assert time.monotonic() - started < 1.0  # nothing blocked on the backend
    assert bpy.app.timers.is_registered(interactive._tick)
    job = interactive.supervisor().current_job()
    assert not job.finished and "birch bark" not in bpy.data.images
    _drive(interactive, job)
    assert job.state == "done", job.error
    assert job.total == 4
    assert cube.active_material.name == "birch bark"


def test_interactive_cancel_applies_nothing(addon, clean_scene, interactive):
    cube = _cube()
    _select(cube)
    _settings(prompt="cancelled cobbles", steps=200, width=128, height=128)
    bpy.ops.scene_diffusion.generate_texture()
    job = interactive.supervisor().current_job()
    deadline = time.monotonic() + 120
    while job.step == 0 and time.monotonic() < deadline:
        interactive._tick()
        time.sleep(0.05)
    assert bpy.ops.scene_diffusion.cancel_job() == {"FINISHED"}
    _drive(interactive, job)
    assert job.state == "cancelled" and job.step < 200
    assert "cancelled cobbles" not in bpy.data.images and not cube.material_slots
    assert jobfolder.read_job(job.job_dir)["status"] == "cancelled"


def test_backend_death_is_shown_within_two_seconds_and_next_job_recovers(addon, clean_scene, interactive):
    _settings(prompt="doomed", steps=200, width=128, height=128)
    bpy.ops.scene_diffusion.generate_texture()
    sup = interactive.supervisor()
    job = sup.current_job()
    deadline = time.monotonic() + 120
    while job.step == 0 and time.monotonic() < deadline:
        interactive._tick()
        time.sleep(0.05)
    os.kill(sup.client.pid, signal.SIGKILL)
    killed = time.monotonic()
    while not job.finished and time.monotonic() - killed < 5:
        interactive._tick()
        time.sleep(0.1)
    assert time.monotonic() - killed < 2.0
    assert job.state == "failed" and "exited with code -9" in sup.last_error.message
    assert sup.last_error.log_tail
    assert jobfolder.read_job(job.job_dir)["status"] == "failed"
    assert "doomed" not in bpy.data.images

    interactive.blocking = None  # the next submit starts a fresh backend
    _settings(prompt="recovered")
    bpy.ops.scene_diffusion.generate_texture()
    assert "recovered" in bpy.data.images


def test_result_of_a_job_never_lands_in_another_file(addon, clean_scene, interactive):
    _settings(prompt="lost in another file", steps=6)
    bpy.ops.scene_diffusion.generate_texture()
    job = interactive.supervisor().current_job()
    bpy.ops.wm.read_homefile(use_empty=True)  # the artist opens another file meanwhile
    _drive(interactive, job)
    assert job.state == "failed" and "another .blend file" in job.error.message
    assert "lost in another file" not in bpy.data.images
    assert (job.job_dir / "outputs" / "texture.png").is_file()  # nothing lost: still on disk


def test_setup_backend_refuses_without_online_access(addon):
    if bpy.app.online_access:
        pytest.skip("online access is on in this Blender")
    with pytest.raises(RuntimeError, match="online access is off"):
        bpy.ops.scene_diffusion.setup_backend()


@pytest.mark.remote
def test_headless_batch_example_script(addon, clean_scene, tmp_path):
    import runpy
    import sys

    _cube("Wall")
    _cube("Floor")
    script = Path(__file__).resolve().parents[2] / "examples" / "texture_batch.py"
    argv = ["texture_batch.py", "--", "--prompt", "brick", "--objects", "Wall", "--prompt", "parquet",
            "--objects", "Floor", "--size", "64", "--steps", "2", "--seed", "9",
            "--save", str(tmp_path / "batch.blend")]
    old, sys.argv = sys.argv, argv
    try:
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old
    assert ended.value.code == 0
    assert bpy.data.objects["Wall"].active_material.name == "brick"
    assert bpy.data.objects["Floor"].active_material.name == "parquet"
    assert (tmp_path / "batch.blend").is_file()
