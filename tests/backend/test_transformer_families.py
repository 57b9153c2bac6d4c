"""FLUX.1, FLUX.2 klein, Qwen-Image, Z-Image and SD 3.5 through the real tasks, on their tiny pipelines.

Each family runs text-to-texture (plain and seamless), a render from Blender's passes (its ControlNet where it has
one, img2img from the Combined pass without one) and a projection onto meshes, through the same engine and job
folders as SD 1.5; what a family cannot do is refused before anything loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_project_texture_task import scene, submit  # noqa: F401  (scene: a fixture)
from test_render_task import passes_dir  # noqa: F401  (a fixture)

from backend.diffusion.family_calls import Prompting, prompt_kwargs, token_grid
from backend.diffusion.latent_grid import roll
from backend.diffusion.latent_roll import LatentRoll
from backend.diffusion.seamless import pipeline_modules
from backend.diffusion.seamless import seamless as seamless_networks
from backend.runner import run_job
from contract import jobfolder, messages

FAMILY_MODELS = {"flux": "flux-tiny", "flux2_klein": "flux2-klein-tiny", "qwen_image": "qwen-image-tiny",
                 "z_image": "z-image-tiny", "sd3": "sd3-tiny"}
SIZE = 64
STEPS = 3


def _run(engine: Any, root: Path, task: str, request: dict[str, Any], inputs: dict[str, Path] | None = None
         ) -> tuple[messages.Message, Path]:
    job_dir = jobfolder.create_job(root, task, request)
    for relative, source in (inputs or {}).items():
        shutil.copy(source, job_dir / relative)
    job = messages.Submit(jobfolder.read_job(job_dir)["id"], task, str(job_dir), request)
    return run_job(engine, job, lambda message: None), job_dir


def _texture(engine: Any, root: Path, family: str, seamless: bool) -> messages.Result:
    request = {"prompt": "mossy stone wall", "model": FAMILY_MODELS[family], "width": SIZE, "height": SIZE,
               "steps": STEPS, "seed": 7, "seamless_x": seamless, "seamless_y": seamless, "guidance": 2.0}
    final, _ = _run(engine, root / ("seamless" if seamless else "plain"), "texture", request)
    assert isinstance(final, messages.Result), final
    return final


@pytest.mark.parametrize("family", list(FAMILY_MODELS))
def test_seamless_texture_per_family(engine, tmp_path: Path, family: str) -> None:  # type: ignore[no-untyped-def]
    plain = _texture(engine, tmp_path, family, seamless=False)
    tiled = _texture(engine, tmp_path, family, seamless=True)
    record = jobfolder.read_job(next((tmp_path / "seamless").iterdir()))
    assert record["models"]["text_to_image"]["family"] == family
    assert record["options"]["scheduler"] == "model"  # flow matching: the model's own scheduler
    # The edge-continuity figures the README quotes (run with -s); random weights make them say little.
    print(f"seam ratio {family}: plain {plain.info['seam_ratio_x']:.2f} / {plain.info['seam_ratio_y']:.2f}, "
          f"seamless {tiled.info['seam_ratio_x']:.2f} / {tiled.info['seam_ratio_y']:.2f}")


def _start_latents(pipe: Any, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Start latents as the family's pipeline takes them, and the same rolled by one token (16 pixels) each way."""
    generator = torch.Generator().manual_seed(1)
    grid = token_grid(family, SIZE, SIZE)
    channels = pipe.transformer.config.in_channels
    if family == "flux2_klein":  # patchified but not yet packed: (B, C * 4, rows, columns)
        latents = torch.randn(1, channels, *grid, generator=generator)
        return latents, torch.roll(latents, (1, 1), (2, 3))
    if grid is not None:  # packed tokens
        latents = torch.randn(1, grid[0] * grid[1], channels, generator=generator)
        return latents, roll(latents, 1, 1, grid)
    channels = pipe.vae.config.get("z_dim", channels)  # plain (B, C, h, w); Qwen-Image's VAE names them z_dim
    latents = torch.randn(1, channels, SIZE // 8, SIZE // 8, generator=generator)
    return latents, torch.roll(latents, (2, 2), (2, 3))


@pytest.mark.parametrize("family", list(FAMILY_MODELS))
def test_rolling_the_start_latents_rolls_the_seamless_image(tiny_models, family: str) -> None:  # type: ignore[no-untyped-def]
    """The SD figure: on a torus, shifting the start noise shifts the image. The latent roll between steps and the
    circular VAE make it hold for transformers too (up to the attention's own sense of position); without them it
    does not."""
    from backend.models import PipelineCache, load_registry

    pipe = PipelineCache("cpu", torch.float32).text_to_image(load_registry(tiny_models).resolve(
        "text_to_image", FAMILY_MODELS[family]))
    steps = 6

    def generate(latents: torch.Tensor, wrap: bool) -> np.ndarray:
        callback = {"callback_on_step_end": LatentRoll(True, True, steps, 3, token_grid(family, SIZE, SIZE)),
                    "callback_on_step_end_tensor_inputs": ["latents"]} if wrap else {}
        with seamless_networks(pipeline_modules(pipe), wrap, wrap):
            return pipe(**prompt_kwargs(pipe, family, Prompting("moss", "", 2.0)), num_inference_steps=steps,
                        width=SIZE, height=SIZE, latents=latents.clone(), output_type="np",
                        generator=torch.Generator().manual_seed(0), **callback).images[0]

    start, shifted = _start_latents(pipe, family)
    errors = {}
    for wrap in (False, True):
        errors[wrap] = float(np.abs(np.roll(generate(start, wrap), (16, 16), (0, 1)) - generate(shifted, wrap)).mean())
    print(f"shift error {family}: plain {errors[False]:.4f}, seamless {errors[True]:.4f}")  # the README's figures
    assert errors[True] < 0.1 * errors[False], errors
    # The cached VAE is plain again afterwards (Qwen-Image's causal 3D convolutions too).
    assert not any(vars(m).get("forward") or vars(m).get("_conv_forward")
                   for network in pipeline_modules(pipe) for m in network.modules())


def _render(engine: Any, root: Path, passes_dir: Path, family: str, **request: Any) -> tuple[Any, Path]:  # noqa: F811
    request = {"prompt": "a desert road", "model": FAMILY_MODELS[family], "width": 80, "height": 64,
               "steps": STEPS, "seed": 3, "guidance": 2.0, **request}
    return _run(engine, root, "render", request,
                {"inputs/passes.exr": passes_dir / "passes.exr", "inputs/camera.json": passes_dir / "camera.json"})


@pytest.mark.parametrize("family", ["flux", "qwen_image", "z_image", "sd3"])
def test_controlnet_render_per_family(engine, passes_dir, tmp_path: Path, family: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    images = {}
    for run, weight in enumerate((1.0, 0.0001, 1.0)):
        final, job_dir = _render(engine, tmp_path / str(run), passes_dir, family,
                                 controls=[{"kind": "depth", "weight": weight}])
        assert isinstance(final, messages.Result), final
        images[run] = np.asarray(_png(job_dir / final.outputs["image"]), np.float32)
        record = jobfolder.read_job(job_dir)
        assert record["models"]["controlnets"][0]["family"] == family
    assert images[0].shape == (64, 80, 3)
    assert np.abs(images[0] - images[1]).mean() > 0.5  # the control's weight shows
    assert np.array_equal(images[0], images[2])  # one seed, one image (SD 3.5 draws from torch's own generator)


def test_flux_renders_with_union_and_normal_controls_from_the_render(engine, passes_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    final, job_dir = _render(engine, tmp_path, passes_dir, "flux", img2img=True, strength=0.7,
                             controls=[{"kind": "depth", "weight": 1.0}, {"kind": "canny", "weight": 0.5},
                                       {"kind": "normal", "weight": 0.5}])
    assert isinstance(final, messages.Result), final
    record = jobfolder.read_job(job_dir)
    assert [c["name"] for c in record["models"]["controlnets"]] == ["controlnet-union-flux-tiny"] * 2 + [
        "controlnet-normal-flux-tiny"]  # the union model twice (modes depth and canny), the normal one without a mode
    assert sorted(p.name for p in (job_dir / "outputs" / "previews").iterdir())[-1] == "step-0002.png"


@pytest.mark.parametrize("family", list(FAMILY_MODELS))
def test_img2img_from_the_render_per_family(engine, passes_dir, tmp_path: Path, family: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    results = {}
    for strength in (0.3, 1.0):
        final, job_dir = _render(engine, tmp_path / str(strength), passes_dir, family, img2img=True,
                                 strength=strength, steps=4, controls=[])
        assert isinstance(final, messages.Result), final
        results[strength] = np.asarray(_png(job_dir / final.outputs["image"]), np.float32)
    combined = np.asarray(_png(job_dir / "outputs" / "render.png"), np.float32)
    assert combined.shape == (64, 80, 3)
    assert not np.array_equal(results[0.3], results[1.0])


def _png(path: Path) -> Any:
    from PIL import Image

    return Image.open(path).convert("RGB")


@pytest.mark.parametrize("family, sequential", [("flux", True), ("z_image", True), ("qwen_image", False),
                                                ("sd3", False)])
def test_project_texture_per_family(engine, scene, tmp_path: Path, family: str,  # type: ignore[no-untyped-def]  # noqa: F811
                                    sequential: bool) -> None:
    job = submit(tmp_path, scene, model=FAMILY_MODELS[family], sequential=sequential, steps=2, guidance=2.0)
    final = run_job(engine, job, lambda message: None)
    assert isinstance(final, messages.Result), final
    kept = [view["kept_fraction"] for view in final.info["views"]]
    assert kept[0] == 0.0 and (kept[1] > 0.0) == sequential
    assert len(final.outputs["textures"]) == 2


@pytest.mark.parametrize("family, request_, code, words", [
    ("flux2_klein", {"controls": [{"kind": "depth", "weight": 1.0}]}, messages.MODEL_FAMILY, "no ControlNets"),
    ("qwen_image", {"controls": [{"kind": "normal", "weight": 1.0}]}, messages.MODEL_MISSING, "no normal control"),
    ("qwen_image", {"controls": [{"kind": "depth", "weight": 1.0}], "img2img": True}, messages.INVALID_PARAMS,
     "no controlnet img2img"),
    ("z_image", {"controls": [{"kind": "depth", "weight": 1.0}, {"kind": "canny", "weight": 1.0}]},
     messages.INVALID_PARAMS, "one control at a time"),
    ("flux", {"controls": [{"kind": "depth", "weight": 1.0}], "width": 72}, messages.INVALID_PARAMS,
     "multiples of 16"),
    ("sd3", {"controls": [{"kind": "depth", "weight": 1.0}], "scheduler": "euler"}, messages.INVALID_PARAMS,
     "flow-matching"),
])
def test_what_a_family_cannot_do_is_refused_before_loading(tiny_models, passes_dir, tmp_path: Path,  # type: ignore[no-untyped-def]  # noqa: F811
                                                           family: str, request_: dict[str, Any], code: str,
                                                           words: str) -> None:
    from backend.runner import make_engine

    fresh = make_engine("cpu", "fp32", str(tiny_models))
    final, _ = _render(fresh, tmp_path, passes_dir, family, **request_)
    assert isinstance(final, messages.Error) and final.code == code and words in final.message, final
    assert fresh.models.loaded() == []


def test_sequential_projection_on_a_family_without_a_controlled_inpaint(engine, scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    final = run_job(engine, submit(tmp_path, scene, model="sd3-tiny", sequential=True, steps=2), lambda m: None)
    assert isinstance(final, messages.Error) and "turn Sequential off" in final.hint, final


def test_a_gguf_transformer_through_the_registry_and_a_texture_job(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A registry entry with "quantization": "gguf" loads its transformer from the GGUF file (quantized layers), and
    the texture comes out close to the unquantized one's."""
    from diffusers import FluxTransformer2DModel

    from backend.runner import make_engine
    from devtools.tiny_models.gguf_file import write_gguf_transformer

    folder = Path(tiny_models) / "flux-tiny"
    gguf = tmp_path / "flux-tiny-Q8_0.gguf"
    write_gguf_transformer(FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer"), gguf, "Q8_0")
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"format": 1, "models": {
        "flux-q8": {"source": str(folder), "family": "flux", "quantization": "gguf", "transformer_file": gguf.name},
        "flux-tiny": {"source": str(folder), "family": "flux"}}, "roles": {"text_to_image": "flux-q8"}}))
    engine = make_engine("cpu", "fp32", str(registry))
    images = {}
    for model in ("flux-q8", "flux-tiny"):
        final, job_dir = _run(engine, tmp_path / model, "texture", {"prompt": "moss", "model": model, "width": SIZE,
                                                                    "height": SIZE, "steps": 2, "seed": 1})
        assert isinstance(final, messages.Result), final
        images[model] = np.asarray(_png(job_dir / final.outputs["image"]), np.float32) / 255
        if model == "flux-q8":
            pipe = engine.models.text_to_image(engine.registry.resolve("text_to_image"))
            assert any("GGUF" in type(m).__name__ for m in pipe.transformer.modules())
    assert 0 < np.abs(images["flux-q8"] - images["flux-tiny"]).mean() < 0.02
