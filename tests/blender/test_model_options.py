"""Model options in real Blender: LoRAs, sampler and reference image as job inputs and parameters, the
Commercial Work preference on every job, the checkpoints list as the backend's user-models file."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from PIL import Image

from contract import jobfolder

TINY_LORA = Path("loras") / "sd15-style-a.safetensors"  # written by devtools/tiny_models/lora.py


def _jobs(addon) -> list[Path]:
    return jobfolder.list_jobs(addon.addon.paths.jobs_dir())


def _texture(**values):
    settings = bpy.context.scene.scene_diffusion.texture
    base = dict(prompt="mossy stones", width=64, height=64, steps=2, random_seed=False, seed=3)
    for key, value in {**base, **values}.items():
        setattr(settings, key, value)
    return settings


@pytest.fixture
def lora_file(tiny_models: Path, tmp_path: Path) -> Path:
    """The tiny SD 1.5 LoRA, copied under an artist's file name into a temporary folder (the Blender user
    folder's file system, so a hard link works)."""
    target = tmp_path / "Style A.safetensors"
    shutil.copyfile(tiny_models / TINY_LORA, target)
    return target


@pytest.fixture
def prefs(addon):
    """The add-on preferences, with the ones these tests change put back (later tests start a plain backend)."""
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    yield prefs
    prefs.commercial_work, prefs.vram_budget = False, "auto"
    prefs.checkpoints.clear()


@pytest.mark.parametrize("name, message", [
    ("missing.safetensors", "LoRA file not found: .*missing.safetensors"),
    ("style.ckpt", r"LoRA style.ckpt is not a .safetensors file"),
    ("", "LoRA 1 has no file"),
])
def test_bad_lora_is_refused_before_any_job_folder(addon, clean_scene, tmp_path, name, message):
    if name.endswith(".ckpt"):
        (tmp_path / name).write_bytes(b"pickle")
    _texture()
    bpy.ops.scene_diffusion.add_lora(target="texture", filepath=str(tmp_path / name) if name else "")
    before = len(_jobs(addon))
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.scene_diffusion.generate_texture()
    assert len(_jobs(addon)) == before


def test_disabled_lora_rows_are_left_out(addon, clean_scene, tmp_path):
    settings = _texture()
    bpy.ops.scene_diffusion.add_lora(target="texture", filepath=str(tmp_path / "missing.safetensors"))
    settings.options.loras[0].enabled = False
    assert settings.to_params().loras == []


@pytest.mark.remote
def test_a_texture_job_with_a_lora_lands_and_the_lora_changes_it(addon, clean_scene, lora_file, backend_mode):
    _texture()
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    base = np.asarray(Image.open(_jobs(addon)[-1] / "outputs" / "texture.png"))
    bpy.ops.scene_diffusion.add_lora(target="texture", filepath=str(lora_file), weight=0.7)
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    job = _jobs(addon)[-1]
    record = jobfolder.read_job(job)
    assert record["status"] == "done"
    assert record["request"]["loras"] == [{"file": "inputs/loras/00-Style_A.safetensors", "weight": 0.7,
                                           "name": "Style A.safetensors"}]
    placed = job / "inputs" / "loras" / "00-Style_A.safetensors"
    assert placed.read_bytes() == lora_file.read_bytes()
    if placed.stat().st_dev == lora_file.stat().st_dev:  # same file system: linked, not copied
        assert placed.stat().st_ino == lora_file.stat().st_ino
    styled = np.asarray(Image.open(job / "outputs" / "texture.png"))
    assert np.abs(styled.astype(int) - base.astype(int)).max() > 4  # through the remote server too


def test_sampler_and_reference_image_reach_the_job(addon, clean_scene):
    settings = _texture()
    image = bpy.data.images.new("Painted Ref", 8, 4)  # generated, never saved: written from its pixels
    values = np.zeros((4, 8, 4), dtype=np.float32)
    values[..., 3] = 1.0
    values[0, 0, :3] = (1.0, 0.0, 0.0)  # Blender's first row is the bottom one
    values[3, 7, :3] = (0.0, 0.0, 1.0)
    image.pixels.foreach_set(values.ravel())
    settings.options.scheduler, settings.options.reference, settings.options.reference_strength = \
        "euler_a", image, 0.4
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    job = _jobs(addon)[-1]
    assert jobfolder.read_job(job)["status"] == "done"
    request = jobfolder.read_job(job)["request"]
    assert request["scheduler"] == "euler_a"
    assert request["reference"] == "inputs/reference.npy" and request["reference_strength"] == pytest.approx(0.4)
    assert request["reference_colorspace"] == "srgb"  # a byte image holds display-encoded values
    written = np.load(job / "inputs" / "reference.npy")
    assert written.shape == (4, 8, 4)
    assert tuple(written[3, 0]) == (1.0, 0.0, 0.0, 1.0) and tuple(written[0, 7]) == (0.0, 0.0, 1.0, 1.0)  # top row 0


def test_unreadable_reference_image_leaves_no_job_folder(addon, clean_scene, tmp_path):
    settings = _texture()
    image = bpy.data.images.new("Gone", 4, 4)
    image.source, image.filepath = "FILE", str(tmp_path / "gone.png")  # its file is missing: no pixels
    settings.options.reference = image
    before = len(_jobs(addon))
    with pytest.raises(RuntimeError, match="image 'Gone' has no pixels"):
        bpy.ops.scene_diffusion.generate_texture()
    assert len(_jobs(addon)) == before


def test_default_sampler_is_the_family_default(addon, clean_scene):
    params = _texture().to_params()
    assert params.scheduler == "" and params.reference == "" and params.loras == []


def test_a_float_reference_goes_as_scene_linear_and_the_job_lands(addon, clean_scene):
    settings = _texture()
    image = bpy.data.images.new("Linear Ref", 16, 16, float_buffer=True)
    image.pixels.foreach_set(np.full(16 * 16 * 4, 0.5, dtype=np.float32))
    settings.options.reference = image
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    record = jobfolder.read_job(_jobs(addon)[-1])
    assert record["status"] == "done" and record["request"]["reference_colorspace"] == "linear"
    assert record["models"]["ip_adapter"]["name"] == "ip-adapter-sd15-tiny"


def test_commercial_work_goes_on_every_job(addon, clean_scene, prefs):
    prefs.commercial_work = True
    _texture()
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}  # the tiny models state no licence
    record = jobfolder.read_job(_jobs(addon)[-1])
    assert record["request"]["commercial"] is True and record["status"] == "done"
    scene = bpy.context.scene.scene_diffusion
    assert scene.pbr.to_params("linear", {}).commercial is True
    scene.project.prompt = "wood"
    assert scene.project.to_texture_params(["inputs/mesh_000.npz"]).commercial is True
    prefs.commercial_work = False
    assert _texture().to_params().commercial is False


def test_render_animation_gives_every_frame_the_loras(addon, clean_scene, lora_file, tmp_path):
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_cube_add()
    bpy.ops.object.camera_add(location=(4, -4, 3), rotation=(1.1, 0, 0.8))
    scene.camera = bpy.context.object
    settings = scene.scene_diffusion.render
    settings.prompt, settings.steps, settings.random_seed = "a barn", 1, False
    settings.use_scene_resolution, settings.width, settings.height = False, 64, 64
    settings.engine, settings.animation, settings.frame_start, settings.frame_end = "BLENDER_WORKBENCH", True, 1, 2
    settings.output_dir = str(tmp_path / "frames")
    bpy.ops.scene_diffusion.add_lora(target="render", filepath=str(lora_file))
    before = len(_jobs(addon))
    assert bpy.ops.scene_diffusion.render_controlnet() == {"FINISHED"}
    jobs = _jobs(addon)[before:]
    assert len(jobs) == 2
    for job in jobs:
        assert jobfolder.read_job(job)["status"] == "done"
        assert (job / "inputs" / "loras" / "00-Style_A.safetensors").is_file()
        assert jobfolder.read_job(job)["request"]["loras"][0]["name"] == "Style A.safetensors"


def test_lora_rows_add_and_remove(addon, clean_scene):
    options = bpy.context.scene.scene_diffusion.project.options
    assert bpy.ops.scene_diffusion.add_lora(target="project", weight=-1.5) == {"FINISHED"}
    assert len(options.loras) == 1 and options.loras[0].weight == pytest.approx(-1.5)
    with pytest.raises(RuntimeError, match="no LoRA row 3"):
        bpy.ops.scene_diffusion.remove_lora(target="project", index=2)
    assert bpy.ops.scene_diffusion.remove_lora(target="project", index=0) == {"FINISHED"}
    assert len(options.loras) == 0


def test_checkpoints_become_the_user_models_file_and_launch_flags(addon, prefs, lora_file):
    service = addon.addon.jobs.service
    with pytest.raises(RuntimeError, match="choose a checkpoint file"):
        bpy.ops.scene_diffusion.add_checkpoint(filepath=str(lora_file.with_suffix(".bin")))
    assert service.launch_config().user_models is None  # no list: no file, no flag
    assert bpy.ops.scene_diffusion.add_checkpoint(filepath=str(lora_file), name="my-ckpt", family="sd15") \
        == {"FINISHED"}
    bpy.ops.scene_diffusion.add_checkpoint(filepath=str(lora_file))  # named after the file
    prefs.vram_budget = "8gb"
    config = service.launch_config()
    document = json.loads(Path(config.user_models).read_text(encoding="utf-8"))
    assert document == {"format": 1, "models": {
        "my-ckpt": {"source": str(lora_file.resolve()), "family": "sd15", "kind": "text_to_image"},
        "Style A": {"source": str(lora_file.resolve()), "family": "auto", "kind": "text_to_image"}}}
    command = config.command()
    assert command[command.index("--user-models") + 1] == config.user_models
    assert command[command.index("--vram-budget") + 1] == "8gb"
    prefs.checkpoints[0].family = "sdxl"
    changed = service.launch_config()
    assert changed != config  # the supervisor restarts the backend for a changed list
    assert json.loads(Path(changed.user_models).read_text())["models"]["my-ckpt"]["family"] == "sdxl"
    assert bpy.ops.scene_diffusion.remove_checkpoint(index=1) == {"FINISHED"}
    assert [c.name for c in prefs.checkpoints] == ["my-ckpt"]


def test_model_search_lists_builtin_registry_and_checkpoint_names(addon, prefs, lora_file):
    model_options = importlib.import_module(f"{addon.__name__}.addon.model_options")
    bpy.ops.scene_diffusion.add_checkpoint(filepath=str(lora_file), name="my-ckpt")
    names = model_options.model_search(None, bpy.context, "")
    assert {"sd15", "sdxl", "sd15-tiny", "sdxl-tiny", "my-ckpt"} <= set(names)
    assert not any("controlnet" in name for name in names)  # only text-to-image models
    assert model_options.model_search(None, bpy.context, "CKPT") == ["my-ckpt"]


def test_panels_draw_the_model_options_and_memory_mode(addon, clean_scene, monkeypatch):
    from test_panels import RecordingLayout  # the UILayout-checking recorder (tests/blender is on sys.path)

    scene = bpy.context.scene.scene_diffusion
    for group, panel in (("texture", "texture"), ("render", "render"), ("project", "project")):
        getattr(scene, group).options.show = True
        bpy.ops.scene_diffusion.add_lora(target=group)
        calls: list = []
        module = importlib.import_module(f"{addon.__name__}.panels.{panel}")
        cls = next(c for c in module.classes)
        cls.draw(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
        operators = [c[1][0] for c in calls if c[0] == "operator"]
        assert "scene_diffusion.add_lora" in operators and "scene_diffusion.remove_lora" in operators
        assert any(c[0] == "prop" and c[1][1] == "scheduler" for c in calls)
    messages = importlib.import_module(f"{addon.__name__}.contract.messages")
    hello = messages.Handshake(messages.PROTOCOL_VERSION, "0.1.0", "cuda", "fp16", {}, 1, [],
                               memory="8 GB: model offload + VAE tiling")
    sup = addon.addon.jobs.service.supervisor()
    monkeypatch.setattr(type(sup), "handshake", property(lambda self: hello))
    calls = []
    addon.panels.backend.SCENE_DIFFUSION_PT_backend.draw(SimpleNamespace(layout=RecordingLayout(calls)),
                                                         bpy.context)
    assert "Memory: 8 GB: model offload + VAE tiling" in [c[2].get("text") for c in calls if c[0] == "label"]


def test_the_script_api_takes_lora_files_and_a_reference_image(addon, clean_scene, lora_file, tmp_path):
    api = importlib.import_module(f"{addon.__name__}.addon.api")
    reference = tmp_path / "swatch.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(reference)
    job = api.generate_texture("mossy stones", width=64, height=64, steps=2, seed=3, scheduler="unipc",
                               loras=[(str(lora_file), 0.5)], reference=str(reference))
    record = jobfolder.read_job(job.job_dir)
    assert record["status"] == "done", record.get("error")
    assert record["request"]["loras"] == [{"file": "inputs/loras/00-Style_A.safetensors", "weight": 0.5,
                                           "name": "Style A.safetensors"}]
    assert record["request"]["reference"] == "inputs/reference.png"
    assert (job.job_dir / "inputs" / "reference.png").read_bytes() == reference.read_bytes()
    assert record["options"]["scheduler"] == "unipc"
    before = len(_jobs(addon))
    with pytest.raises(ValueError, match="no such file"):
        api.generate_texture("x", loras=[(str(tmp_path / "gone.safetensors"), 1.0)])
    assert len(_jobs(addon)) == before  # refused before any job folder
