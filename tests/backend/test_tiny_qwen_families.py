"""The tiny FLUX.2 klein, Qwen-Image and Z-Image pipelines and control models, through save and reload.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_tiny_qwen_families.py``.
Each family is built into a temporary folder with its devtools builder, saved with ``save_pretrained``
and loaded back with ``from_pretrained(..., local_files_only=True)`` as real weights are; control models
likewise. Weights are random, so the tests check the wiring: 64 x 64 (the smallest size every pipeline
here allows: 16-pixel multiples, and the VAE needs 8 latents for its three downsamplings), 2 denoising
steps, finite images of the right shape, and that the prompt, a control image and a control's weight
each reach the output. Call conventions:

- FLUX.2 klein: ``prompt=`` by keyword (its first parameter is ``image``, the reference image(s) to edit);
  no img2img pipeline (references condition, they do not start the denoising); inpaint takes ``image``,
  ``mask_image``, ``strength``.
- Qwen-Image: true CFG only with a ``negative_prompt`` and ``true_cfg_scale`` > 1 (off here); the
  ControlNet pipeline takes ``control_image`` (a list with a QwenImageMultiControlNetModel, which in
  diffusers 0.42 holds a single union ControlNet run once per image); the
  ControlNet inpaint pipeline takes the image to repaint as ``control_image`` and the repaint region
  (white) as ``control_mask`` and regenerates from noise (no ``strength``).
- Z-Image: ``guidance_scale=0`` turns CFG off (Turbo's setting); ZImageControlNetInpaintPipeline takes
  ``image`` + ``mask_image`` (white = repaint) + ``control_image``: the control latents, the inverted mask
  and the masked image's latents go to the ControlNet (33 channels); the denoising starts from noise
  (no ``strength``), so the unmasked region is kept only as far as the ControlNet steers it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_inputs import SIZE, init_image, mask, ramp, seeded

from devtools.tiny_models.flux2_klein import build_flux2_klein
from devtools.tiny_models.qwen_image import build_qwen_image, build_qwen_image_controlnet
from devtools.tiny_models.qwen_text import QWEN_IMAGE_SYSTEM, qwen_tokenizer
from devtools.tiny_models.z_image import build_z_image, build_z_image_controlnet

STEPS = 2
STRENGTH = 0.5  # img2img / inpaint run int(steps * strength) steps: 4 at 0.5 -> 2
PROMPT, OTHER_PROMPT = "a red cube", "a blue ball"
MAX_FOLDER_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[Path, int], Any]
    pipeline: str  # the class model_index.json names
    components: dict[str, str]  # folder -> class, as in the real checkpoint's model_index.json
    call: dict[str, Any]  # what every call of this family passes (guidance off)


SCHEDULER = "FlowMatchEulerDiscreteScheduler"
# transformers 5 names the Qwen tokenizer class Qwen2Tokenizer (Qwen2TokenizerFast is the same class).
TOKENIZER = "Qwen2Tokenizer"
FAMILIES = {
    "flux2_klein": Family("flux2_klein", build_flux2_klein, "Flux2KleinPipeline",
                          {"scheduler": SCHEDULER, "vae": "AutoencoderKLFlux2", "text_encoder": "Qwen3ForCausalLM",
                           "tokenizer": TOKENIZER, "transformer": "Flux2Transformer2DModel"},
                          {"guidance_scale": 1.0}),  # step-distilled: CFG off (the pipeline ignores > 1)
    "qwen_image": Family("qwen_image", build_qwen_image, "QwenImagePipeline",
                         {"scheduler": SCHEDULER, "vae": "AutoencoderKLQwenImage",
                          "text_encoder": "Qwen2_5_VLForConditionalGeneration", "tokenizer": TOKENIZER,
                          "transformer": "QwenImageTransformer2DModel"}, {"true_cfg_scale": 1.0}),
    "z_image": Family("z_image", build_z_image, "ZImagePipeline",
                      {"scheduler": SCHEDULER, "vae": "AutoencoderKL", "text_encoder": "Qwen3Model",
                       "tokenizer": TOKENIZER, "transformer": "ZImageTransformer2DModel"}, {"guidance_scale": 0.0}),
}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def save_and_reload(model: Any, folder: Path) -> Any:
    model.save_pretrained(str(folder), safe_serialization=True)
    loaded = type(model).from_pretrained(str(folder), local_files_only=True)
    assert folder_bytes(folder) < MAX_FOLDER_BYTES, f"{folder.name}: {folder_bytes(folder)} bytes"
    return loaded


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Any]]:
    """family name -> (its saved folder, the pipeline loaded from it); built once per module."""
    root = tmp_path_factory.mktemp("tiny-qwen-families")
    loaded: dict[str, tuple[Path, Any]] = {}

    def get(name: str) -> tuple[Path, Any]:
        if name not in loaded:
            folder = root / name
            pipe = save_and_reload(FAMILIES[name].build(root / "scratch", 0), folder)
            pipe.set_progress_bar_config(disable=True)
            loaded[name] = (folder, pipe)
        return loaded[name]

    return get


def derive(cls: type, pipe: Any, **extra: Any) -> Any:
    """``cls`` built from ``pipe``'s components (and config values) that its __init__ takes."""
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in pipe.components.items() if k in params}
    kwargs.update({k: v for k, v in pipe.config.items() if k in params and k not in kwargs})
    out = cls(**kwargs, **extra)
    out.set_progress_bar_config(disable=True)
    return out


def run(pipe: Any, family: str, prompt: str = PROMPT, **extra: Any) -> np.ndarray:
    kwargs = {"prompt": prompt, "height": SIZE, "width": SIZE, "num_inference_steps": STEPS,
              "output_type": "np", "generator": seeded(), **FAMILIES[family].call, **extra}
    out = pipe(**kwargs).images
    assert isinstance(out, np.ndarray)
    assert out.shape == (1, SIZE, SIZE, 3)
    assert np.isfinite(out).all()
    return out


def differ(a: np.ndarray, b: np.ndarray, at_least: float = 1e-3) -> bool:
    return float(np.abs(a - b).max()) > at_least


# --- the saved folders ---------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_index_names_the_real_pipeline_and_every_component(saved: Any, family: str) -> None:
    folder, pipe = saved(family)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == FAMILIES[family].pipeline == type(pipe).__name__
    for component, cls in FAMILIES[family].components.items():
        assert index[component][1] == cls, component
        assert (folder / component).is_dir(), component
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    if family == "flux2_klein":
        assert index["is_distilled"] is True  # as FLUX.2-klein-4B


def test_tokenizer_drops_exactly_qwen_images_template() -> None:
    """Qwen-Image drops the first 34 tokens of its template; with the tiny vocabulary, as with the real
    one, that is everything before the user's prompt."""
    from diffusers import QwenImagePipeline

    tokenizer = qwen_tokenizer()
    template = "<|im_start|>system\n" + QWEN_IMAGE_SYSTEM + "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    ids = tokenizer(template.format(PROMPT))["input_ids"]
    start = 34
    assert QwenImagePipeline.__init__.__code__.co_consts.count(start)  # the pipeline still drops 34
    assert tokenizer.decode(ids[start:]).startswith(PROMPT)
    chat = [{"role": "user", "content": PROMPT}]
    no_think = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    think = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert no_think == think + "<think>\n\n</think>\n\n"


# --- text-to-image, img2img, inpaint -----------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_text_to_image_follows_the_prompt(saved: Any, family: str) -> None:
    _, pipe = saved(family)
    assert differ(run(pipe, family), run(pipe, family, OTHER_PROMPT))


@pytest.mark.parametrize(("family", "cfg"), [
    ("qwen_image", {"negative_prompt": " ", "true_cfg_scale": 4.0}),  # true CFG needs a negative prompt
    ("z_image", {"negative_prompt": "", "guidance_scale": 4.0}),  # CFG on when guidance_scale > 0
])
def test_classifier_free_guidance_reaches_the_output(saved: Any, family: str, cfg: dict[str, Any]) -> None:
    _, pipe = saved(family)
    assert differ(run(pipe, family), run(pipe, family, **cfg))


@pytest.mark.parametrize("family", ["qwen_image", "z_image"])
def test_img2img_follows_the_prompt_and_the_image(saved: Any, family: str) -> None:
    import diffusers

    _, base = saved(family)
    pipe = derive(getattr(diffusers, {"qwen_image": "QwenImageImg2ImgPipeline",
                                      "z_image": "ZImageImg2ImgPipeline"}[family]), base)
    extra = {"image": init_image(), "strength": STRENGTH, "num_inference_steps": round(STEPS / STRENGTH)}
    a = run(pipe, family, **extra)
    assert differ(a, run(pipe, family, OTHER_PROMPT, **extra))
    assert differ(a, run(pipe, family, **{**extra, "image": ramp()}))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_inpaint_follows_the_prompt(saved: Any, family: str) -> None:
    import diffusers

    _, base = saved(family)
    cls = getattr(diffusers, {"flux2_klein": "Flux2KleinInpaintPipeline", "qwen_image": "QwenImageInpaintPipeline",
                              "z_image": "ZImageInpaintPipeline"}[family])
    pipe = derive(cls, base)
    extra = {"image": init_image(), "mask_image": mask(), "strength": STRENGTH,
             "num_inference_steps": round(STEPS / STRENGTH)}
    a = run(pipe, family, **extra)
    assert differ(a, run(pipe, family, OTHER_PROMPT, **extra))


def test_klein_reference_image_conditions_the_output(saved: Any) -> None:
    """FLUX.2 klein's own image path: reference images join the sequence (editing), not an init image."""
    from PIL import Image

    _, pipe = saved("flux2_klein")
    reference = Image.fromarray((ramp()[0] * 255).astype(np.uint8))
    assert differ(run(pipe, "flux2_klein"), run(pipe, "flux2_klein", image=reference))


# --- ControlNets ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def control_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny control models (two Qwen-Image ones, its inpainting one, one Z-Image), saved and reloaded."""
    from diffusers import QwenImageControlNetModel, ZImageControlNetModel

    root = tmp_path_factory.mktemp("tiny-qwen-controls")
    built = {
        "qwen_depth": build_qwen_image_controlnet(root, 0, salt=0),
        "qwen_canny": build_qwen_image_controlnet(root, 0, salt=1),
        "qwen_inpaint": build_qwen_image_controlnet(root, 0, salt=2, inpaint=True),
        "z_union": build_z_image_controlnet(root, 0, salt=0),
    }
    loaded = {name: save_and_reload(model, root / name) for name, model in built.items()}
    for name, model in loaded.items():
        index = json.loads((root / name / "config.json").read_text(encoding="utf-8"))
        expected = ZImageControlNetModel if name.startswith("z_") else QwenImageControlNetModel
        assert index["_class_name"] == expected.__name__ == type(model).__name__
    return loaded


def check_control(pipe: Any, family: str, control: Callable[[bool], Any], **extra: Any) -> None:
    """The control image and its weight both reach the output; the prompt still does."""
    a = run(pipe, family, control_image=control(False), **extra)
    assert differ(a, run(pipe, family, control_image=control(True), **extra)), "control image ignored"
    assert differ(a, run(pipe, family, control_image=control(False), controlnet_conditioning_scale=0.0, **extra)), \
        "control weight ignored"
    assert differ(a, run(pipe, family, OTHER_PROMPT, control_image=control(False), **extra))


def test_qwen_image_controlnet(saved: Any, control_models: dict[str, Any]) -> None:
    from diffusers import QwenImageControlNetPipeline

    _, base = saved("qwen_image")
    pipe = derive(QwenImageControlNetPipeline, base, controlnet=control_models["qwen_depth"])
    check_control(pipe, "qwen_image", lambda flip: ramp(flip))


def test_qwen_image_multi_controlnet(saved: Any, control_models: dict[str, Any]) -> None:
    """diffusers 0.42's QwenImageMultiControlNetModel holds ONE (union) ControlNet and runs it once per
    control image, each with its own weight; two ControlNets in it are refused."""
    from diffusers import QwenImageControlNetPipeline, QwenImageMultiControlNetModel

    _, base = saved("qwen_image")
    one = QwenImageMultiControlNetModel([control_models["qwen_depth"]])
    pipe = derive(QwenImageControlNetPipeline, base, controlnet=one)
    a = run(pipe, "qwen_image", control_image=[ramp(), ramp(True)], controlnet_conditioning_scale=[1.0, 1.0])
    assert differ(a, run(pipe, "qwen_image", control_image=[ramp(), ramp()], controlnet_conditioning_scale=[1.0, 1.0]))
    assert differ(a, run(pipe, "qwen_image", control_image=[ramp(), ramp(True)],
                         controlnet_conditioning_scale=[1.0, 0.0]))
    two = derive(QwenImageControlNetPipeline, base, controlnet=QwenImageMultiControlNetModel(
        [control_models["qwen_depth"], control_models["qwen_canny"]]))
    with pytest.raises(ValueError, match="single controlnet-union"):
        run(two, "qwen_image", control_image=[ramp(), ramp(True)], controlnet_conditioning_scale=[1.0, 1.0])


def test_qwen_image_controlnet_inpaint(saved: Any, control_models: dict[str, Any]) -> None:
    from diffusers import QwenImageControlNetInpaintPipeline

    _, base = saved("qwen_image")
    pipe = derive(QwenImageControlNetInpaintPipeline, base, controlnet=control_models["qwen_inpaint"])
    check_control(pipe, "qwen_image", lambda flip: ramp(flip), control_mask=mask())


def test_z_image_controlnet(saved: Any, control_models: dict[str, Any]) -> None:
    from diffusers import ZImageControlNetPipeline

    _, base = saved("z_image")
    pipe = derive(ZImageControlNetPipeline, base, controlnet=control_models["z_union"])
    check_control(pipe, "z_image", lambda flip: ramp(flip))


def test_z_image_controlnet_inpaint(saved: Any, control_models: dict[str, Any]) -> None:
    from diffusers import ZImageControlNetInpaintPipeline

    _, base = saved("z_image")
    pipe = derive(ZImageControlNetInpaintPipeline, base, controlnet=control_models["z_union"])
    check_control(pipe, "z_image", lambda flip: ramp(flip), image=init_image(), mask_image=mask())
    # the masked image reaches the ControlNet too
    a = run(pipe, "z_image", control_image=ramp(), image=init_image(), mask_image=mask())
    assert differ(a, run(pipe, "z_image", control_image=ramp(), image=ramp(True), mask_image=mask()))
