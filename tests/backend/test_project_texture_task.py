"""Task "project_texture" on tiny models: one generated image per view, sequential (inpainting around what the
earlier views painted) or independent, baked onto the objects; its errors and cancel; and the ControlNet
inpaint pipeline it uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from backend_process import run_backend as run_cli  # python -m backend ...
from backend_process import run_cancelled_at
from PIL import Image
from test_project_image_task import camera, write_scene

from backend import models
from backend.imaging.color import linear_to_srgb
from backend.imaging.exr import read_exr, write_exr
from backend.imaging.image_io import to_uint8
from backend.models import PipelineCache
from backend.projection.bake import BakeSettings, bake, render_into_view
from backend.projection.views import load_meshes, load_views
from contract import jobfolder, messages

SIZE = 64  # generation width and height, and texture size
STEPS = 2
CAMERAS = (("Top", camera(), True), ("Side", camera((1.5, 0.0, 5.0)), True))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    return write_scene(tmp_path_factory.mktemp("scene"), images=False, cameras=CAMERAS)


def submit(root: Path, scene: tuple[list[Path], Path], **request: Any) -> messages.Submit:
    """A project_texture job folder holding the scene as the add-on lays it out."""
    meshes, views = scene
    request = {"prompt": "weathered bronze", "meshes": ["inputs/meshes/00.npz", "inputs/meshes/01.npz"],
               "steps": STEPS, "width": SIZE, "height": SIZE, "size": SIZE, "seed": 5, **request}
    job_dir = jobfolder.create_job(root, "project_texture", request)
    shutil.copytree(views.parent / "views", job_dir / "inputs" / "views")
    shutil.copy(views, job_dir / "inputs" / "views.json")
    for index, mesh in enumerate(meshes):
        (job_dir / "inputs" / "meshes").mkdir(exist_ok=True)
        shutil.copy(mesh, job_dir / "inputs" / "meshes" / f"{index:02d}.npz")
    return messages.Submit(jobfolder.read_job(job_dir)["id"], "project_texture", str(job_dir), request)


def test_sequential_views_keep_the_pixels_earlier_views_painted(tiny_models: Path, scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    meshes, views_file = scene
    job = tmp_path / "job"
    done = run_cli("project-texture", "--mesh", str(meshes[0]), "--mesh", str(meshes[1]), "--views", str(views_file),
                   "--prompt", "weathered bronze", "--steps", str(STEPS), "--width", str(SIZE), "--height", str(SIZE),
                   "--size", str(SIZE), "--seed", "11", "--out", str(job), "--registry", str(tiny_models))
    assert done.returncode == 0, done.stderr
    record = jobfolder.read_job(job)
    assert record["status"] == "done" and record["seed"] == 11 and record["request"]["sequential"] is True
    assert [c["name"] for c in record["models"]["controlnets"]] == ["controlnet-depth-sd15-tiny"]
    assert {"load_s", "generate_s", "bake_s", "write_s"} <= set(record["timings"])
    outputs = record["outputs"]
    assert {"textures", "textures_png", "view_images", "view_images_exr"} == set(outputs)
    assert len(outputs["textures"]) == len(outputs["textures_png"]) == 2
    assert len(outputs["view_images"]) == len(outputs["view_images_exr"]) == 2
    info = record["info"]
    assert [v["seed"] for v in info["views"]] == [11, 12] and info["views"][0]["kept_fraction"] == 0.0
    assert 0.2 < info["views"][1]["kept_fraction"] < 1.0
    assert [o["name"] for o in info["objects"]] == ["Quad A", "Quad B"]
    assert all(o["seen_fraction"] > 0.95 and min(o["view_texels"]) > 0 for o in info["objects"])
    assert read_exr(job / outputs["view_images_exr"][1]).attributes["seed"] == "12"

    # Bake view 0's image (as it was baked: the EXR holds it) and render it into view 1: the kept pixels of
    # view 1's image are exactly that rendering.
    views = load_views(job / "inputs" / "views.json", need_image=False, need_depth=True)
    first = views[0].bake_view(read_exr(job / outputs["view_images_exr"][0]).layers[""])
    target = views[1].bake_view(np.zeros((SIZE, SIZE, 3), np.float32))
    rendering = np.zeros((SIZE, SIZE, 3), np.float32)
    known = np.zeros((SIZE, SIZE), bool)
    for mesh in load_meshes(job, record["request"]["meshes"]):
        result = bake(mesh, [first], BakeSettings(size=SIZE))
        image, seen = render_into_view(mesh, result, target, SIZE, SIZE, 0.01)
        rendering[seen & ~known] = image[seen & ~known]
        known |= seen
    assert round(float(known.mean()), 4) == info["views"][1]["kept_fraction"]
    expected = to_uint8(np.clip(linear_to_srgb(rendering), 0.0, 1.0))
    second = np.asarray(Image.open(job / outputs["view_images"][1]).convert("RGB"))
    assert second.shape == (SIZE, SIZE, 3)
    assert np.array_equal(second[known], expected[known])
    assert not np.array_equal(second[~known], expected[~known])  # the rest was generated


def test_independent_views_with_a_normal_control(engine, scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from backend.runner import run_job

    results = {}
    for sequential in (False, True):
        job = submit(tmp_path / str(sequential), scene, sequential=sequential, normal_weight=0.5, preview_every=1)
        sent: list[messages.Message] = []
        final = run_job(engine, job, sent.append)
        assert isinstance(final, messages.Result), final
        progress = [(m.step, m.total) for m in sent if isinstance(m, messages.Progress)]
        total = 2 * STEPS + 2  # the steps of both views, then one per object
        assert progress[-1] == (total, total) and all(t == total for _, t in progress)
        results[sequential] = (Path(job.job_dir), final)
    folder, final = results[False]
    assert [v["kept_fraction"] for v in final.info["views"]] == [0.0, 0.0]
    assert (folder / "outputs" / "previews" / "view01-step-0004.png").is_file()
    record = jobfolder.read_job(folder)
    assert [c["name"] for c in record["models"]["controlnets"]] == ["controlnet-depth-sd15-tiny",
                                                                     "controlnet-normal-sd15-tiny"]
    assert record["request"]["sequential"] is False
    # View 0 is generated the same way in both modes; view 1 is not.
    views = {mode: [np.asarray(Image.open(path / result.outputs["view_images"][k])) for k in (0, 1)]
             for mode, (path, result) in results.items()}
    assert np.array_equal(views[False][0], views[True][0])
    assert not np.array_equal(views[False][1], views[True][1])


def test_cancel_stops_at_the_next_denoising_step(engine, scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = submit(tmp_path, scene, steps=4)
    final, steps = run_cancelled_at(engine, job, 1)
    assert isinstance(final, messages.Cancelled)
    assert steps == [1]
    assert jobfolder.read_job(job.job_dir)["status"] == "cancelled"
    assert not (Path(job.job_dir) / "outputs" / "textures").exists()


@pytest.mark.parametrize("breakage, code, message", [
    ("no depth", messages.INVALID_PARAMS, "view 'Side' (views.json): views/01/passes.exr lacks the depth pass"),
    ("no normal", messages.INVALID_PARAMS, "view 'Top' (views.json): views/00/passes.exr lacks the normal pass"),
    ("no passes", messages.INVALID_PARAMS, "view 'Top' (views.json) has no \"passes\""),
    ("sdxl normal", messages.MODEL_MISSING, "controlnet_normal_sdxl"),
])
def test_input_errors(engine, scene, tmp_path: Path, breakage: str, code: str,  # type: ignore[no-untyped-def]
                      message: str) -> None:
    from backend.runner import run_job

    request = {"normal_weight": 1.0} if breakage in ("no normal", "sdxl normal") else {}
    if breakage == "sdxl normal":
        request["model"] = "sdxl-tiny"
    job = submit(tmp_path, scene, **request)
    views = Path(job.job_dir) / "inputs" / "views"
    if breakage == "no depth":
        write_exr(views / "01" / "passes.exr", {"ViewLayer.Combined": np.ones((48, 64, 4), np.float32)})
    elif breakage == "no normal":
        write_exr(views / "00" / "passes.exr", {"ViewLayer.Depth": np.ones((48, 64), np.float32)},
                  channel_names={"ViewLayer.Depth": ("Z",)})
    elif breakage == "no passes":
        path = Path(job.job_dir) / "inputs" / "views.json"
        data = json.loads(path.read_text())
        del data["views"][0]["passes"]
        path.write_text(json.dumps(data))
    final = run_job(engine, job, lambda m: None)
    assert isinstance(final, messages.Error) and final.code == code, final
    assert message in final.message, final.message


def test_a_controlnet_of_another_family_is_refused_before_any_work(tiny_models: Path, scene,  # type: ignore[no-untyped-def]
                                                                  tmp_path: Path) -> None:
    from backend.runner import make_engine, run_job

    data = json.loads((tiny_models / "registry.json").read_text())
    for entry in data["models"].values():
        entry["source"] = str(tiny_models / entry["source"])
    data["roles"]["controlnet_depth"] = "controlnet-depth-sdxl-tiny"
    (tmp_path / "registry.json").write_text(json.dumps(data))
    engine = make_engine("cpu", "fp32", str(tmp_path / "registry.json"))
    job = submit(tmp_path / "jobs", scene)
    progress: list[int] = []
    final = run_job(engine, job, lambda m: progress.append(1) if isinstance(m, messages.Progress) else None)
    assert isinstance(final, messages.Error) and final.code == messages.MODEL_FAMILY, final
    assert "controlnet-depth-sdxl-tiny" in final.message and "sd15-tiny" in final.message
    assert progress == [] and engine.models.loaded() == []


# --- the ControlNet inpaint pipeline ------------------------------------------------------------------------------


def test_inpaint_pipeline_keeps_the_start_image_outside_the_mask(tiny_models: Path) -> None:
    """The tiny UNet has 4 input channels: diffusers then blends the start image's latents (re-noised to each
    step's level) back in outside the mask after every step, ending on them. So the final latents there do not
    depend on the prompt or the control, and are the start image's encoding."""
    registry = models.load_registry(tiny_models)
    cache = PipelineCache("cpu", torch.float32)
    base = registry.resolve("text_to_image")
    pipe = cache.controlnet_pipeline(base, [registry.resolve("controlnet_depth")], inpaint=True)
    assert type(pipe).__name__ == "StableDiffusionControlNetInpaintPipeline" and pipe.unet.config.in_channels == 4
    assert pipe.unet is cache.text_to_image(base).unet  # shared, not loaded again
    start = np.zeros((1, SIZE, SIZE, 3), np.float32)
    start[:, :, : SIZE // 2] = (0.8, 0.2, 0.1)
    start[:, :, SIZE // 2:] = (0.1, 0.3, 0.9)
    mask = np.zeros((1, SIZE, SIZE, 1), np.float32)
    mask[:, :, SIZE // 2:] = 1.0  # repaint the right half
    ramp = np.broadcast_to(np.linspace(0, 1, SIZE, dtype=np.float32)[None, None, :, None], (1, SIZE, SIZE, 3))
    latents = []
    for prompt, control, scale in (("a", ramp, 1.0), ("something else entirely", ramp[:, :, ::-1], 0.3)):
        latents.append(pipe(prompt=prompt, image=start, mask_image=mask, control_image=control.copy(),
                            controlnet_conditioning_scale=scale, strength=1.0, num_inference_steps=3, width=SIZE,
                            height=SIZE, output_type="latent", generator=torch.Generator().manual_seed(3)).images)
    kept = slice(0, SIZE // 16)  # latent columns well inside the kept half
    assert torch.equal(latents[0][..., kept], latents[1][..., kept])
    assert not torch.allclose(latents[0][..., SIZE // 16:], latents[1][..., SIZE // 16:])
    with torch.no_grad():
        posterior = pipe.vae.encode(torch.from_numpy(start).permute(0, 3, 1, 2) * 2 - 1).latent_dist
    scale_factor = pipe.vae.config.scaling_factor
    distance = (latents[0] - posterior.mean * scale_factor).abs()[..., kept]
    assert torch.all(distance <= 5 * posterior.std[..., kept] * scale_factor)  # a sample of the start's encoding


def test_sequential_on_sdxl(engine, scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from backend.runner import run_job

    job = submit(tmp_path, scene, model="sdxl-tiny")
    final = run_job(engine, job, lambda m: None)
    assert isinstance(final, messages.Result), final
    assert final.info["views"][1]["kept_fraction"] > 0.2
    assert jobfolder.read_job(job.job_dir)["models"]["controlnets"][0]["name"] == "controlnet-depth-sdxl-tiny"


# --- model options: the same reference (and LoRA, and sampler) for every view ---------------------------------------


def test_a_reference_image_and_a_lora_guide_every_view_of_a_sequential_projection(engine, scene, tiny_models: Path,  # type: ignore[no-untyped-def]
                                                                               tmp_path: Path) -> None:
    from backend.imaging.image_io import read_image, write_png
    from backend.runner import run_job

    def views(**options: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
        job = submit(tmp_path / "jobs", scene, **options)
        reference = np.zeros((32, 32, 3), np.float32)
        reference[:, :16] = (0.9, 0.1, 0.1)
        write_png(Path(job.job_dir) / "inputs" / "reference.png", reference)
        lora = Path(job.job_dir) / "inputs" / "loras" / "00-style.safetensors"
        lora.parent.mkdir(parents=True)
        shutil.copy(tiny_models / "loras" / "sd15-style-b.safetensors", lora)
        final = run_job(engine, job, lambda m: None)
        assert isinstance(final, messages.Result), final
        record = jobfolder.read_job(job.job_dir)
        return [read_image(Path(job.job_dir) / p) for p in final.outputs["view_images"]], record

    plain, _ = views()
    guided, record = views(reference="inputs/reference.png", reference_strength=1.0, scheduler="unipc",
                           loras=[{"file": "inputs/loras/00-style.safetensors", "weight": 0.8}])
    assert len(guided) == len(plain) >= 2
    assert all(np.abs(a - b).max() > 0.01 for a, b in zip(guided, plain, strict=True))  # every view, inpainted ones too
    assert record["models"]["ip_adapter"]["name"] == "ip-adapter-sd15-tiny"
    assert record["models"]["loras"][0]["sha256"] and record["options"]["scheduler"] == "unipc"
    again, _ = views()
    assert all(np.array_equal(a, b) for a, b in zip(again, plain, strict=True))  # nothing stayed on the pipelines
