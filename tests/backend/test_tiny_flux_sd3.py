"""The tiny FLUX.1 and SD 3.5 pipelines and ControlNets, saved and reloaded like real weights, on the CPU.

Run: ``.venv/bin/python -m pytest tests/backend/test_tiny_flux_sd3.py``. Each family is built into a temporary
folder with ``save_pretrained`` and loaded back with ``from_pretrained(folder, local_files_only=True)``; the
image-to-image, inpainting and ControlNet pipelines are made from the reloaded components. Every call is 64 x 64
(the smallest size both families allow comfortably: a multiple of 16 = VAE factor 8 x 2 x 2 patches), 2 denoising
steps, float output. Weights are random, so the tests check the wiring: shapes, finite values, that the prompt,
the guidance, the control image, its weight and (FLUX union) its mode reach the image.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from tiny_inputs import SIZE, init_image, mask, ramp, seeded

from devtools.tiny_models.flux import build_flux, build_flux_controlnet
from devtools.tiny_models.sd3 import build_sd3, build_sd3_controlnet

STEPS = 2
STRENGTH = 0.5  # image-to-image / inpainting run int(steps * strength) steps: 4 at 0.5 -> 2
MAX_FOLDER_BYTES = 5 * 2**20
# Smallest mean absolute difference (images in [0, 1]) counted as "changed": what the tests vary moves the tiny
# models' images by 3e-3 (FLUX, a mirrored control image) to 0.1 (SD 3.5, another prompt). The FLUX union mode,
# one extra token among the ControlNet's 513 text tokens, moves them by 2e-3 to 4e-3 (see UNION_KEY_GAIN in
# devtools/tiny_models/flux.py): it gets a threshold of its own, with a margin of 4x.
CHANGED = 1e-3
MODE_CHANGED = 5e-4


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., Any]
    build_controlnet: Callable[..., Any]
    pipeline: str  # the text-to-image class model_index.json must name
    img2img: str
    inpaint: str
    controlnet: str  # the control model class
    multi_controlnet: str
    control_pipelines: tuple[str, ...]  # text-to-image first
    control_extra: dict[str, Any] = field(default_factory=dict)  # what every ControlNet call passes
    components: tuple[str, ...] = ()  # model_index.json entries that must be real components


FAMILIES = {
    "flux": Family(
        "flux", build_flux, build_flux_controlnet, "FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline",
        "FluxControlNetModel", "FluxMultiControlNetModel",
        ("FluxControlNetPipeline", "FluxControlNetImg2ImgPipeline", "FluxControlNetInpaintPipeline"),
        {"control_mode": 2},  # InstantX union: 2 = depth
        ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "transformer"),
    ),
    "sd3": Family(
        "sd3", build_sd3, build_sd3_controlnet, "StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
        "StableDiffusion3InpaintPipeline", "SD3ControlNetModel", "SD3MultiControlNetModel",
        ("StableDiffusion3ControlNetPipeline",), {},
        ("transformer", "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
         "text_encoder_3", "tokenizer_3"),
    ),
}


@dataclass
class Saved:
    family: Family
    folder: Path
    pipe: Any
    controlnets: list[Any]  # two, reloaded (salts 0 and 1: e.g. depth and canny)


def _reloaded(tmp: Path, family: Family) -> Saved:
    folder = tmp / f"{family.name}-tiny"
    family.build(tmp, 0).save_pretrained(str(folder), safe_serialization=True)
    cls = getattr(diffusers, family.pipeline)
    pipe = cls.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    control_cls = getattr(diffusers, family.controlnet)
    controlnets = []
    for salt in (0, 1):
        control_folder = tmp / f"{family.name}-controlnet-{salt}"
        family.build_controlnet(tmp, 0, salt).save_pretrained(str(control_folder), safe_serialization=True)
        controlnets.append(control_cls.from_pretrained(str(control_folder), local_files_only=True))
    return Saved(family, folder, pipe, controlnets)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Saved]:
    """Family name -> its saved and reloaded pipeline and ControlNets, each built once per module."""
    done: dict[str, Saved] = {}

    def get(name: str) -> Saved:
        if name not in done:
            done[name] = _reloaded(tmp_path_factory.mktemp(name), FAMILIES[name])
        return done[name]

    return get


@pytest.fixture(params=sorted(FAMILIES))
def saved(request: pytest.FixtureRequest, built: Callable[[str], Saved]) -> Saved:
    return built(request.param)


def derive(saved: Saved, name: str, **extra: Any) -> Any:
    """Pipeline class ``name`` from the reloaded pipeline's components (those its __init__ takes)."""
    cls = getattr(diffusers, name)
    accepted = inspect.signature(cls.__init__).parameters
    pipe = cls(**{k: v for k, v in saved.pipe.components.items() if k in accepted}, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe: Any, prompt: str = "a red cube", **kwargs: Any) -> np.ndarray:
    """One 64 x 64 call; image-to-image and inpainting variants get the init image, mask and strength."""
    name = type(pipe).__name__
    steps = STEPS
    if "Img2Img" in name or "Inpaint" in name:
        kwargs = {"image": init_image(), "strength": STRENGTH, **kwargs}
        steps = round(STEPS / STRENGTH)
    if "Inpaint" in name:
        kwargs.setdefault("mask_image", mask())
    kwargs.setdefault("generator", seeded())
    # StableDiffusion3ControlNetPipeline samples the control image's VAE latent from torch's global generator,
    # not from ``generator``: seed that too, or two calls with the same arguments differ.
    torch.manual_seed(0)
    out = pipe(prompt, height=SIZE, width=SIZE, num_inference_steps=steps, output_type="np", **kwargs).images
    assert isinstance(out, np.ndarray)
    assert out.shape == (1, SIZE, SIZE, 3)
    assert np.isfinite(out).all()
    return out


def changed(a: np.ndarray, b: np.ndarray, threshold: float = CHANGED) -> bool:
    return float(np.abs(a - b).mean()) > threshold


def test_model_index_names_the_real_classes(saved: Saved) -> None:
    index = json.loads((saved.folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == saved.family.pipeline
    for name in saved.family.components:
        library, cls = index[name]
        assert library in ("diffusers", "transformers") and cls
        assert (saved.folder / name).is_dir(), name
    # the T5 tokenizer is transformers' T5 class (T5TokenizerFast is an alias of it in transformers 5)
    t5 = "tokenizer_2" if saved.family.name == "flux" else "tokenizer_3"
    assert index[t5] == ["transformers", "T5Tokenizer"]
    assert index[t5.replace("tokenizer", "text_encoder")] == ["transformers", "T5EncoderModel"]
    size = sum(f.stat().st_size for f in saved.folder.rglob("*") if f.is_file())
    assert size < MAX_FOLDER_BYTES


def test_tiny_shapes_follow_the_real_model(saved: Saved) -> None:
    pipe = saved.pipe
    assert pipe.vae.config.latent_channels == 16 and pipe.vae_scale_factor == 8
    assert pipe.transformer.proj_out.weight.abs().sum() > 0  # the prompt can reach the image
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.scheduler.config.shift == 3.0
    if saved.family.name == "flux":
        assert pipe.vae.config.scaling_factor == 0.3611 and pipe.vae.config.shift_factor == 0.1159
        assert pipe.transformer.config.guidance_embeds and pipe.scheduler.config.use_dynamic_shifting
        assert all(c.config.num_mode == 10 for c in saved.controlnets)
    else:
        assert pipe.vae.config.scaling_factor == 1.5305 and pipe.vae.config.shift_factor == 0.0609
        assert not pipe.scheduler.config.use_dynamic_shifting
    for controlnet in saved.controlnets:  # not diffusers' zero init: a control changes the image
        assert all(block.weight.abs().sum() > 0 for block in controlnet.controlnet_blocks)


def test_text_to_image(saved: Saved) -> None:
    pipe = saved.pipe
    base = run(pipe)
    assert changed(base, run(pipe, "a blue sphere"))
    if saved.family.name == "flux":  # distilled guidance: an embedding of guidance_scale
        assert changed(base, run(pipe, guidance_scale=1.0))
    else:  # true classifier-free guidance with a negative prompt
        assert changed(base, run(pipe, negative_prompt="blurry"))


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
def test_image_to_image_and_inpaint(saved: Saved, kind: str) -> None:
    pipe = derive(saved, getattr(saved.family, kind))
    base = run(pipe)
    assert changed(base, run(pipe, "a blue sphere"))
    assert changed(base, run(pipe, image=init_image()[:, ::-1].copy()))  # the init image reaches the output


# Every ControlNet pipeline diffusers has for the family: (family, index in control_pipelines).
CONTROL_VARIANTS = [(name, i) for name in sorted(FAMILIES) for i in range(len(FAMILIES[name].control_pipelines))]


@pytest.mark.parametrize(("family", "variant"), CONTROL_VARIANTS,
                         ids=[FAMILIES[n].control_pipelines[i] for n, i in CONTROL_VARIANTS])
def test_controlnet(built: Callable[[str], Saved], family: str, variant: int) -> None:
    saved = built(family)
    pipe = derive(saved, saved.family.control_pipelines[variant], controlnet=saved.controlnets[0])
    extra = saved.family.control_extra
    base = run(pipe, control_image=ramp(), **extra)
    assert changed(base, run(pipe, "a blue sphere", control_image=ramp(), **extra))
    assert changed(base, run(pipe, control_image=ramp(flip=True), **extra))
    assert changed(base, run(pipe, control_image=ramp(), controlnet_conditioning_scale=0.0, **extra))
    if "control_mode" in extra:  # the union ControlNet's mode embedding takes part
        assert changed(base, run(pipe, control_image=ramp(), **{**extra, "control_mode": 4}), MODE_CHANGED)


def test_multi_controlnet(saved: Saved) -> None:
    multi = getattr(diffusers, saved.family.multi_controlnet)(saved.controlnets)
    pipe = derive(saved, saved.family.control_pipelines[0], controlnet=multi)
    extra = {k: [v, 4] for k, v in saved.family.control_extra.items()}  # one mode per control
    controls = [ramp(), ramp(flip=True)]
    both = run(pipe, control_image=controls, controlnet_conditioning_scale=[1.0, 1.0], **extra)
    first = run(pipe, control_image=controls, controlnet_conditioning_scale=[1.0, 0.0], **extra)
    assert changed(both, first)  # the second control reaches the image
    # At weight 0 the second control changes nothing, whatever its image. (Compared with another two-control
    # call, not a one-control one: FLUX samples each control image's VAE latent from the generator.)
    other = run(pipe, control_image=[ramp(), init_image()], controlnet_conditioning_scale=[1.0, 0.0], **extra)
    np.testing.assert_allclose(first, other, atol=1e-5)
