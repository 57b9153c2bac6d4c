"""The image families' table and what it decides before anything loads: detection, components, sizes, controls,
the pipeline a render runs, call arguments, and the latent roll of seamless transformer textures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend import models
from backend.diffusion.family_calls import Prompting, prompt_kwargs, token_grid
from backend.diffusion.guided_call import guided_call
from backend.diffusion.latent_grid import roll, unpack
from backend.diffusion.latent_roll import LatentRoll
from backend.errors import TaskError
from backend.models import ModelError, ModelSpec, PipelineCache
from backend.models.family_traits import TRAITS, pipeline_family
from contract import messages
from contract.tasks import ControlParams


@pytest.mark.parametrize("cls, family", [
    ("FluxPipeline", "flux"), ("FluxControlNetPipeline", "flux"), ("Flux2KleinPipeline", "flux2_klein"),
    ("Flux2Pipeline", None), ("FluxKontextPipeline", None), ("QwenImagePipeline", "qwen_image"),
    ("QwenImageEditPipeline", None), ("ZImagePipeline", "z_image"), ("StableDiffusion3Pipeline", "sd3"),
    ("StableDiffusionXLPipeline", "sdxl"), ("StableDiffusionPipeline", "sd15"), ("HunyuanDiTPipeline", None),
])
def test_pipeline_families_from_model_index(tmp_path: Path, cls: str, family: str | None) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": cls}))
    assert models.detect_family(tmp_path) == (family, cls)
    assert pipeline_family(cls) == family


def test_every_traits_class_is_in_diffusers() -> None:
    import diffusers

    for traits in TRAITS.values():
        for cls in (*traits.pipelines.values(), traits.control_model, traits.multi_control):
            assert not cls or hasattr(diffusers, cls), cls


def _flux_folder(tmp_path: Path, **override: object) -> Path:
    index = {"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer_2": ["transformers", "T5TokenizerFast"]}
    index.update(override)
    for part, entry in index.items():
        if isinstance(entry, list) and entry[1] is not None:
            (tmp_path / part).mkdir(exist_ok=True)
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    return tmp_path


def test_a_flux_model_without_its_t5_encoder_is_refused_before_loading(tmp_path: Path) -> None:
    spec = ModelSpec("flux-mine", str(tmp_path), "flux", "text_to_image")
    models.check_components(spec, _flux_folder(tmp_path))  # complete: fine
    _flux_folder(tmp_path, text_encoder_2=[None, None])
    with pytest.raises(ModelError) as info:
        models.check_components(spec, tmp_path)
    assert info.value.code == messages.MODEL_MISSING
    assert "text_encoder_2 (the T5 text encoder)" in info.value.message and "flux-mine" in info.value.message
    (tmp_path / "model_index.json").unlink()
    _flux_folder(tmp_path)
    (tmp_path / "text_encoder_2").rmdir()
    with pytest.raises(ModelError, match="text_encoder_2/ is missing"):
        models.check_components(spec, tmp_path)
    # Through the cache: refused with no weights read (there are none in these folders).
    cache = PipelineCache("cpu", torch.float32)
    with pytest.raises(ModelError, match="T5 text encoder"):
        cache.text_to_image(spec)


def test_sizes_a_family_cannot_make_name_the_nearest_ones() -> None:
    models.check_size("flux", 1024, 768)
    models.check_size("sd15", 520, 512)  # stride 8 is enough for a UNet
    with pytest.raises(ModelError) as info:
        models.check_size("flux", 1000, 1024)
    assert info.value.code == messages.INVALID_PARAMS
    assert "multiples of 16" in info.value.message and "992 or 1008" in info.value.hint
    with pytest.raises(ModelError, match="multiples of 16"):
        models.check_size("qwen_image", 512, 520)


def test_control_models_per_family() -> None:
    registry = models.default_registry()
    flux = registry.control("depth", "flux")
    assert flux.family == "flux" and flux is registry.control("canny", "flux")  # one union model, loaded once
    assert flux.control_modes == "canny=0,depth=2"
    assert registry.control("normal", "flux").name == "controlnet-normal-flux"  # a ControlNet of its own
    with pytest.raises(ModelError) as info:
        registry.control("normal", "qwen_image")
    assert info.value.code == messages.MODEL_MISSING and "depth" in info.value.hint
    assert "controlnet_normal_qwen_image" in info.value.message
    with pytest.raises(ModelError) as info:
        registry.control("depth", "flux2_klein")
    assert info.value.code == messages.MODEL_FAMILY and "FLUX.2 klein" in info.value.message


def test_a_control_model_of_another_family_is_refused_before_anything_loads() -> None:
    cache = PipelineCache("cpu", torch.float32)
    base = ModelSpec("flux-x", "/nonexistent/flux", "flux", "text_to_image")
    control = ModelSpec("cn-sd", "/nonexistent/cn", "sd15", "controlnet")
    with pytest.raises(ModelError) as info:
        cache.controlnet_pipeline(base, [control])
    assert info.value.code == messages.MODEL_FAMILY and "FLUX.1" in info.value.message
    assert cache.loaded() == []


def _control(kind: str, **kw: float) -> ControlParams:
    return ControlParams(kind, 1.0, **kw)


def _spec(family: str, modes: str = "") -> ModelSpec:
    return ModelSpec(f"cn-{family}", "x", family, "controlnet", control_modes=modes)


def test_guided_calls_per_family() -> None:
    assert guided_call("sd15", [_control("depth")], [_spec("sd15")], img2img=True).variant == "controlnet_img2img"
    assert guided_call("flux", [_control("depth")], [_spec("flux")], img2img=True).variant == "controlnet_img2img"
    assert guided_call("qwen_image", [], [], img2img=True).variant == "img2img"
    assert guided_call("flux2_klein", [], [], img2img=True).variant == "inpaint"  # the whole frame repainted
    assert guided_call("z_image", [_control("depth")], [_spec("z_image")], False, inpaint=True).variant == \
        "controlnet_inpaint"
    cases = [
        (("qwen_image", [_control("depth")], [_spec("qwen_image")], True), "no controlnet img2img"),
        (("sd3", [_control("depth")], [_spec("sd3")], False, True), "no controlnet inpaint"),
        (("z_image", [_control("depth"), _control("canny")], [_spec("z_image")] * 2, False), "one control at a time"),
        (("qwen_image", [_control("depth"), _control("canny")], [_spec("qwen_image")] * 2, False),
         "one control at a time"),
        (("z_image", [_control("depth", start=0.2)], [_spec("z_image")], False), "start and end"),
        (("flux", [_control("normal")], [_spec("flux", "canny=0,depth=2")], False), "has no normal mode"),
    ]
    for args, words in cases:
        with pytest.raises((ModelError, TaskError), match=words):
            guided_call(*args)


def test_control_arguments_take_each_pipelines_names() -> None:
    flux = guided_call("flux", [_control("depth"), _control("canny")], [_spec("flux", "canny=0,depth=2")] * 2, False)
    kwargs = flux.control_kwargs([_control("depth"), _control("canny")], [_spec("flux", "canny=0,depth=2")] * 2,
                                 ["d", "c"])
    assert kwargs["control_image"] == ["d", "c"] and kwargs["control_mode"] == [2, 0]
    sd = guided_call("sd15", [_control("depth")], [_spec("sd15")], False)
    kwargs = sd.control_kwargs([_control("depth")], [_spec("sd15")], ["d"])
    assert kwargs["image"] == "d" and "control_mode" not in kwargs and kwargs["control_guidance_end"] == 1.0
    z = guided_call("z_image", [_control("depth")], [_spec("z_image")], False)
    assert "control_guidance_start" not in z.control_kwargs([_control("depth")], [_spec("z_image")], ["d"])


class _Pipe:
    def __init__(self, *names: str) -> None:
        import inspect

        params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
        self.__call__ = lambda **kw: kw  # type: ignore[method-assign]
        self.__call__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]


def test_prompt_and_guidance_per_family() -> None:
    ask = Prompting("moss", "", 4.0)
    flux = prompt_kwargs(_Pipe("prompt", "negative_prompt", "true_cfg_scale", "guidance_scale"), "flux",
                         Prompting("moss", "blurry", 3.5))
    assert flux == {"prompt": "moss", "guidance_scale": 3.5}  # distilled: no true CFG behind the artist's back
    qwen = prompt_kwargs(_Pipe("prompt", "negative_prompt", "true_cfg_scale", "guidance_scale"), "qwen_image", ask)
    assert qwen == {"prompt": "moss", "true_cfg_scale": 4.0, "negative_prompt": " "}
    klein = prompt_kwargs(_Pipe("prompt", "guidance_scale"), "flux2_klein", Prompting("moss", "blurry", 1.0))
    assert klein == {"prompt": "moss", "guidance_scale": 1.0}
    sd3 = prompt_kwargs(_Pipe("prompt", "negative_prompt", "guidance_scale"), "sd3", ask)
    assert sd3 == {"prompt": "moss", "guidance_scale": 4.0, "negative_prompt": None}


def _pack(latents: torch.Tensor) -> torch.Tensor:
    """FLUX.1's packing (its pipeline's _pack_latents), written out: 2 x 2 patches, row-major tokens."""
    b, c, h, w = latents.shape
    grid = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(b, (h // 2) * (w // 2), c * 4)


def test_packed_latents_unpack_and_roll_by_whole_patches() -> None:
    latents = torch.randn(1, 16, 8, 12)
    packed = _pack(latents)
    assert torch.equal(unpack(packed, 4, 6), latents)
    rolled = roll(packed, 1, 2, (4, 6))  # tokens: one row, two columns
    assert torch.equal(unpack(rolled, 4, 6), torch.roll(latents, (2, 4), (2, 3)))
    assert token_grid("flux", 96, 64) == (4, 6) and token_grid("sd3", 96, 64) is None
    with pytest.raises(ValueError, match="token grid"):
        unpack(packed, 5, 6)


@pytest.mark.parametrize("packed", [False, True])
def test_the_latent_roll_ends_where_it_started(packed: bool) -> None:
    latents = torch.randn(1, 16, 8, 12)
    tensors = {"latents": _pack(latents) if packed else latents}
    steps = 7
    rolling = LatentRoll(True, True, steps, seed=3, grid=(4, 6) if packed else None)
    moved = []
    for step in range(steps):
        tensors = rolling(None, step, None, tensors)
        moved.append(not torch.equal(tensors["latents"], _pack(latents) if packed else latents))
    assert any(moved[:-1])  # it rolls between steps...
    assert torch.equal(tensors["latents"], _pack(latents) if packed else latents)  # ...and back at the end
    only_x = LatentRoll(True, False, 3, seed=3)
    out = only_x(None, 0, None, {"latents": latents})["latents"]
    assert any(torch.equal(out, torch.roll(latents, dx, 3)) for dx in range(12))  # X only
