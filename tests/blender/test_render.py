"""render_controlnet inside real Blender: the scene's passes through tiny ControlNets."""

from __future__ import annotations

import time
from pathlib import Path

import bpy
import numpy as np
import pytest

from backend.imaging.exr import read_exr
from contract import jobfolder


def _scene(size=64):
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=8)
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 1))
    bpy.ops.object.camera_add(location=(5, -5, 4))
    camera = bpy.context.object
    camera.rotation_euler = (camera.location * -1).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    settings = scene.scene_diffusion.render
    settings.prompt, settings.steps, settings.random_seed, settings.seed = "a red barn", 2, False, 7
    settings.use_scene_resolution, settings.width, settings.height = False, size, size
    settings.use_depth, settings.use_normal, settings.use_canny = True, False, False
    settings.animation, settings.img2img = False, False
    return scene, settings


def _jobs(addon):
    return jobfolder.list_jobs(addon.addon.paths.jobs_dir())


def _render_state(scene):
    r, s = scene.render, scene.render.image_settings
    return (r.engine, r.resolution_x, r.resolution_y, r.resolution_percentage, r.filepath, s.file_format,
            s.color_depth, r.use_compositing, bpy.context.view_layer.use_pass_z,
            bpy.context.view_layer.use_pass_normal, scene.frame_current, scene.cycles.samples)


@pytest.mark.remote
def test_depth_render_lands_as_diffusion_render_and_restores_settings(addon, clean_scene):
    scene, _ = _scene()
    scene.render.engine, scene.render.filepath, scene.render.resolution_x = "BLENDER_WORKBENCH", "//mine_", 1280
    before = _render_state(scene)
    assert bpy.ops.scene_diffusion.render_controlnet() == {"FINISHED"}
    assert _render_state(scene) == before
    image = bpy.data.images["Diffusion Render"]
    assert tuple(image.size) == (64, 64) and image.packed_file is not None
    assert "Diffusion Control depth" in bpy.data.images
    job = _jobs(addon)[-1]
    record = jobfolder.read_job(job)
    assert record["status"] == "done" and record["seed"] == 7
    assert record["models"]["controlnets"][0]["name"] == "controlnet-depth-sd15-tiny"
    exr = read_exr(job / "outputs" / "render.exr")
    assert {"", "combined", "depth", "normal", "control_depth"} <= set(exr.layers)
    assert exr.attributes["prompt"] == "a red barn" and exr.attributes["controls"] == "depth=1"
    depth = exr.layers["control_depth"]
    assert depth.max() > 0.5 and depth.min() == 0.0  # geometry bright, sky black
    assert (job / "inputs" / "passes.exr").is_file() and (job / "inputs" / "camera.json").is_file()


def test_multi_control_and_img2img(addon, clean_scene):
    _, settings = _scene()
    settings.use_normal = settings.use_canny = True
    settings.normal.weight, settings.canny.weight = 0.5, 0.7
    settings.normal.start, settings.normal.end = 0.1, 0.9
    settings.img2img, settings.strength = True, 0.6
    bpy.ops.scene_diffusion.render_controlnet()
    record = jobfolder.read_job(_jobs(addon)[-1])
    assert record["status"] == "done"
    assert [c["name"] for c in record["models"]["controlnets"]] == [
        "controlnet-depth-sd15-tiny", "controlnet-normal-sd15-tiny", "controlnet-canny-sd15-tiny"]
    controls = {"Diffusion Control depth", "Diffusion Control normal", "Diffusion Control canny"}
    assert controls <= set(bpy.data.images.keys())
    assert record["request"]["img2img"] and record["request"]["strength"] == pytest.approx(0.6)


@pytest.mark.remote
def test_animation_resumes_and_keeps_one_seed(addon, clean_scene, tmp_path):
    scene, settings = _scene()
    settings.animation, settings.frame_start, settings.frame_end = True, 1, 3
    settings.output_dir = str(tmp_path / "frames")
    scene.frame_set(2)
    before = len(_jobs(addon))
    assert bpy.ops.scene_diffusion.render_controlnet() == {"FINISHED"}
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == [f"render_000{f}.{ext}" for f in (1, 2, 3) for ext in ("exr", "png")]
    jobs = _jobs(addon)[before:]
    assert len(jobs) == 3 and {jobfolder.read_job(j)["seed"] for j in jobs} == {7}
    assert scene.frame_current == 2  # the artist's frame is back

    (tmp_path / "frames" / "render_0002.png").unlink()  # as if interrupted during frame 2
    before = len(_jobs(addon))
    bpy.ops.scene_diffusion.render_controlnet()
    assert len(_jobs(addon)) == before + 1  # only the missing frame ran again
    assert (tmp_path / "frames" / "render_0002.png").is_file()

    settings.seed_per_frame, settings.output_dir = True, str(tmp_path / "seeded")
    before = len(_jobs(addon))
    bpy.ops.scene_diffusion.render_controlnet()
    assert [jobfolder.read_job(j)["seed"] for j in _jobs(addon)[before:]] == [8, 9, 10]


def test_interactive_animation_advances_on_timer_ticks_and_cancel_stops_it(addon, clean_scene, tmp_path):
    service = addon.addon.jobs.service
    _, settings = _scene()
    settings.animation, settings.frame_start, settings.frame_end = True, 1, 3
    settings.output_dir, settings.steps = str(tmp_path / "frames"), 60
    service.blocking = False
    try:
        assert bpy.ops.scene_diffusion.render_controlnet() == {"FINISHED"}
        sequence = addon.addon.render_animation.current()
        assert sequence.frame == 1 and not sequence.finished
        deadline = time.monotonic() + 120
        while sequence.job.step == 0 and time.monotonic() < deadline:
            service._tick()
            time.sleep(0.05)
        assert bpy.ops.scene_diffusion.cancel_job() == {"FINISHED"}
        while not sequence.job.finished and time.monotonic() < deadline:
            service._tick()
            time.sleep(0.05)
        assert sequence.cancelled and sequence.done == []
        assert not (tmp_path / "frames").exists() or not list((tmp_path / "frames").iterdir())
    finally:
        service.blocking = None


@pytest.mark.parametrize("configure, message", [
    (lambda s, r: setattr(s, "camera", None), "no active camera"),
    (lambda s, r: setattr(r, "use_depth", False), "all control weights are zero"),
    (lambda s, r: setattr(r.depth, "weight", 0.0), "all control weights are zero"),
    (lambda s, r: (setattr(r, "use_scene_resolution", True), setattr(s.render, "resolution_x", 4096),
                   setattr(s.render, "resolution_percentage", 100)), "width must be a multiple of 8 between"),
    (lambda s, r: (setattr(r, "use_canny", True), setattr(r, "canny_low", 300)), "canny thresholds"),
    (lambda s, r: (setattr(r, "use_normal", True), setattr(r, "engine", "BLENDER_WORKBENCH")), "Workbench"),
])
def test_refusals_change_nothing(addon, clean_scene, configure, message):
    scene, settings = _scene()
    configure(scene, settings)
    before, images, state = len(_jobs(addon)), len(bpy.data.images), _render_state(scene)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.scene_diffusion.render_controlnet()
    assert len(_jobs(addon)) == before and len(bpy.data.images) == images
    assert _render_state(scene) == state


def test_settings_are_restored_when_the_render_fails(addon, clean_scene):
    scene, _ = _scene()
    passes = addon.addon.scene_export.passes
    state = _render_state(scene)
    changes = passes.pass_render_settings(scene, Path("/tmp/x"), 96, 80, "CYCLES", 3)
    with pytest.raises(ZeroDivisionError), passes.overridden(*changes):
        assert scene.render.resolution_x == 96 and scene.render.image_settings.file_format == "OPEN_EXR_MULTILAYER"
        raise ZeroDivisionError("a render that fails half-way")
    assert _render_state(scene) == state


def test_headless_batch_example(addon, clean_scene, tmp_path):
    import runpy
    import sys

    _scene()
    script = Path(__file__).resolve().parents[2] / "examples" / "batch_render.py"
    argv = ["batch_render.py", "--", "--prompt", "a farm", "--frames", "1-2", "--size", "64x64", "--steps", "2",
            "--out", str(tmp_path)]
    old, sys.argv = sys.argv, argv
    try:
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old
    assert ended.value.code == 0
    frames = sorted(p.name for p in (tmp_path / bpy.context.scene.name).iterdir())
    assert frames == ["render_0001.exr", "render_0001.png", "render_0002.exr", "render_0002.png"]
    png = bpy.data.images.load(str(tmp_path / bpy.context.scene.name / "render_0001.png"))
    assert tuple(png.size) == (64, 64) and np.isfinite(np.array(png.pixels[:])).all()
