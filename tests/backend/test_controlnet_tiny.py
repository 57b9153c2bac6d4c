"""ControlNets and the ControlNet pipelines through the registry and the pipeline cache, on tiny models.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_controlnet_tiny.py``.
The tiny pipelines and ControlNets come from the session fixture ``tiny_models`` (make-tiny into
.cache/); their weights are random, so the tests check the wiring: shapes, determinism, that a
control's image and weight reach the output, the family rules and the sharing of the warm base
pipeline. The call conventions used here are the ones the render task uses:

- text-to-image: ``image`` = the control image(s); img2img: ``image`` = the init image,
  ``control_image`` = the control image(s), ``strength``;
- one control: one image (a float array 1 x H x W x 3 in [0, 1], or a PIL image) and float
  ``controlnet_conditioning_scale`` / ``control_guidance_start`` / ``control_guidance_end``;
  several: lists of those, one entry per control, in the order the controls were given.
"""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend import models
from backend.models import ModelError, ModelSpec, PipelineCache
from contract import messages

SD15, SDXL = "sd15-tiny", "sdxl-tiny"
# family -> (base model, the two control roles the multi-control tests use)
FAMILIES = {"sd15": (SD15, ("controlnet_depth", "controlnet_normal")),
            "sdxl": (SDXL, ("controlnet_depth_sdxl", "controlnet_canny_sdxl"))}
VARIANTS = [("sd15", False), ("sd15", True), ("sdxl", False), ("sdxl", True)]
IDS = ["sd15", "sd15-img2img", "sdxl", "sdxl-img2img"]
PIPELINES = {("sd15", False): "StableDiffusionControlNetPipeline",
             ("sd15", True): "StableDiffusionControlNetImg2ImgPipeline",
             ("sdxl", False): "StableDiffusionXLControlNetPipeline",
             ("sdxl", True): "StableDiffusionXLControlNetImg2ImgPipeline"}
STEPS = 2
STRENGTH = 0.5  # img2img runs int(steps * strength) steps: 4 steps at 0.5 -> 2


def ramp(flip: bool = False, seed: int = 0) -> np.ndarray:
    """A control image: a horizontal ramp (or its mirror) with a little noise, 1 x 64 x 64 x 3 in [0, 1]."""
    x = np.linspace(0.0, 1.0, 64, dtype=np.float32)[::-1 if flip else 1]
    noise = np.random.default_rng(seed).random((64, 64, 3), dtype=np.float32) * 0.1
    return np.clip(np.broadcast_to(x[None, :, None], (64, 64, 3)) * 0.9 + noise, 0.0, 1.0)[None]


def init_image() -> np.ndarray:
    """The img2img start image: H x W x 3 float in [0, 1]."""
    return np.random.default_rng(42).random((64, 64, 3), dtype=np.float32)


def seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def generate(pipe: Any, img2img: bool, control: Any, steps: int = STEPS, **extra: Any) -> np.ndarray:
    """One 64 x 64 run of ``pipe`` with the control image(s) ``control``, denoising ``steps`` steps
    (img2img: at STRENGTH); float images, N x H x W x 3."""
    if img2img:
        extra = {"image": init_image(), "control_image": control, "strength": STRENGTH,
                 "num_inference_steps": round(steps / STRENGTH), **extra}
    else:
        extra = {"image": control, "num_inference_steps": steps, **extra}
    extra.setdefault("generator", seeded())
    out = pipe("a red cube", height=64, width=64, output_type="np", **extra).images
    assert isinstance(out, np.ndarray)
    return out


def controls(registry: models.Registry, family: str, count: int = 1) -> list[ModelSpec]:
    return [registry.resolve(role) for role in FAMILIES[family][1][:count]]


def base(registry: models.Registry, family: str) -> ModelSpec:
    return registry.resolve("text_to_image", FAMILIES[family][0])


def no_loading(*args: object) -> None:
    raise AssertionError("weights were about to load")


# --- registry --------------------------------------------------------------------------


@pytest.mark.parametrize("role, folder, family", [
    ("controlnet_depth", "controlnet-depth-sd15-tiny", "sd15"),
    ("controlnet_normal", "controlnet-normal-sd15-tiny", "sd15"),
    ("controlnet_canny", "controlnet-canny-sd15-tiny", "sd15"),
    ("controlnet_depth_sdxl", "controlnet-depth-sdxl-tiny", "sdxl"),
    ("controlnet_canny_sdxl", "controlnet-canny-sdxl-tiny", "sdxl"),
])
def test_roles_resolve_to_tiny_controlnets(registry: models.Registry, tiny_models: Path,
                                           role: str, folder: str, family: str) -> None:
    spec = registry.resolve(role)
    assert (spec.name, spec.family, spec.kind, spec.tiny) == (folder, family, "controlnet", True)
    assert spec.source == str(tiny_models / folder)
    assert models.detect_family(tiny_models / folder) == (family, "ControlNetModel")
    assert models.controlnet_role(role.split("_")[1], family) == role
    assert models.weights_problem(tiny_models / folder) is None


def test_no_sdxl_normal_controlnet_is_a_clear_missing_model(registry: models.Registry) -> None:
    role = models.controlnet_role("normal", "sdxl")
    assert role == "controlnet_normal_sdxl"
    with pytest.raises(ModelError) as info:
        registry.resolve(role)
    assert info.value.code == messages.MODEL_MISSING
    assert role in info.value.message and "controlnet_normal" in info.value.message  # lists roles


def test_describe_and_check_list_the_controlnets(registry: models.Registry) -> None:
    rows = {row["name"]: row for row in models.describe(registry)}
    assert rows["controlnet-depth-sd15-tiny"]["roles"] == ["controlnet_depth"]
    assert rows["controlnet-canny-sdxl-tiny"]["kind"] == "controlnet"
    checked = {row["name"]: row for row in models.check(registry)}
    assert all(row["ok"] for row in checked.values()), checked


# --- running the pipelines ---------------------------------------------------------------


@pytest.mark.parametrize("family, img2img", VARIANTS, ids=IDS)
def test_single_control(registry: models.Registry, cache: PipelineCache, family: str,
                        img2img: bool) -> None:
    from diffusers import ControlNetModel

    control = controls(registry, family)[0]
    pipe = cache.controlnet_pipeline(base(registry, family), [control], img2img=img2img)
    assert type(pipe).__name__ == PIPELINES[(family, img2img)]
    assert type(pipe.controlnet) is ControlNetModel
    assert {FAMILIES[family][0], control.name} <= set(cache.loaded())

    first = generate(pipe, img2img, ramp(), controlnet_conditioning_scale=1.0)
    assert first.shape == (1, 64, 64, 3) and first.dtype == np.float32
    assert np.isfinite(first).all() and first.min() >= 0.0 and first.max() <= 1.0
    assert first.std() > 0.01  # an image, not a constant
    np.testing.assert_array_equal(first, generate(pipe, img2img, ramp(), controlnet_conditioning_scale=1.0))

    # The control's weight and its image both reach the output.
    off = generate(pipe, img2img, ramp(), controlnet_conditioning_scale=0.0)
    assert np.abs(first - off).mean() > 5e-3
    mirrored = generate(pipe, img2img, ramp(flip=True), controlnet_conditioning_scale=1.0)
    assert np.abs(first - mirrored).mean() > 1e-3
    # At weight 0 the control image no longer matters.
    np.testing.assert_allclose(off, generate(pipe, img2img, ramp(flip=True), controlnet_conditioning_scale=0.0),
                               atol=1e-6)
    # A PIL image works as well as an array.
    from PIL import Image

    bytes_ = (ramp()[0] * 255).round().astype(np.uint8)
    np.testing.assert_allclose(generate(pipe, img2img, Image.fromarray(bytes_)),
                               generate(pipe, img2img, (bytes_ / np.float32(255))[None]), atol=1e-5)


@pytest.mark.parametrize("family, img2img", VARIANTS, ids=IDS)
def test_two_controls_with_weights_and_ranges(registry: models.Registry, cache: PipelineCache,
                                              family: str, img2img: bool) -> None:
    from diffusers import MultiControlNetModel

    pair = controls(registry, family, 2)
    pipe = cache.controlnet_pipeline(base(registry, family), pair, img2img=img2img)
    assert isinstance(pipe.controlnet, MultiControlNetModel) and len(pipe.controlnet.nets) == 2
    assert {FAMILIES[family][0], pair[0].name, pair[1].name} <= set(cache.loaded())
    # The ControlNets are cached by name: the single-control pipeline shares the first one.
    single = cache.controlnet_pipeline(base(registry, family), pair[:1], img2img=img2img)
    assert pipe.controlnet.nets[0] is single.controlnet

    def run(scales: list[float], second: np.ndarray, steps: int = STEPS) -> np.ndarray:
        return generate(pipe, img2img, [ramp(), second], steps, controlnet_conditioning_scale=scales,
                        control_guidance_start=[0.0, 0.2], control_guidance_end=[1.0, 0.8])

    both = run([1.0, 0.5], ramp(flip=True))
    assert both.shape == (1, 64, 64, 3) and np.isfinite(both).all()
    np.testing.assert_array_equal(both, run([1.0, 0.5], ramp(flip=True)))
    assert np.abs(both - run([0.0, 0.5], ramp(flip=True))).mean() > 5e-3  # the first weight matters
    # Step i of n runs a control when start <= i / n and (i + 1) / n <= end: of 2 steps, neither
    # lies inside the second control's 0.2 .. 0.8, so its weight and image change nothing ...
    np.testing.assert_array_equal(both, run([1.0, 0.0], ramp(seed=3)))
    # ... while of 5 steps, steps 1 to 3 do.
    five = run([1.0, 0.5], ramp(flip=True), steps=5)
    assert np.abs(five - run([1.0, 0.0], ramp(flip=True), steps=5)).mean() > 1e-3
    assert np.abs(five - run([1.0, 0.5], ramp(seed=3), steps=5)).mean() > 3e-5


@pytest.mark.parametrize("family, img2img", VARIANTS, ids=IDS)
def test_step_callback_sees_latents_and_can_cancel(registry: models.Registry, cache: PipelineCache,
                                                   family: str, img2img: bool) -> None:
    pipe = cache.controlnet_pipeline(base(registry, family), controls(registry, family), img2img=img2img)
    seen: list[tuple[int, tuple[int, ...]]] = []

    def on_step(p: object, i: int, t: object, kwargs: dict) -> dict:
        seen.append((i, tuple(kwargs["latents"].shape)))
        return kwargs

    generate(pipe, img2img, ramp(), callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"])
    assert seen == [(0, (1, 4, 8, 8)), (1, (1, 4, 8, 8))]

    class Cancelled(Exception):
        pass

    def cancel(p: object, i: int, t: object, kwargs: dict) -> dict:
        raise Cancelled  # what the backend's step callback does after a cancel request

    with pytest.raises(Cancelled):
        generate(pipe, img2img, ramp(), callback_on_step_end=cancel, callback_on_step_end_tensor_inputs=["latents"])
    assert generate(pipe, img2img, ramp()).shape == (1, 64, 64, 3)  # usable after a cancel


# --- sharing the warm base pipeline --------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_controlnet_pipelines_share_the_base_pipeline(registry: models.Registry, family: str) -> None:
    cache = PipelineCache("cpu", torch.float32)
    plain = cache.text_to_image(base(registry, family))

    def text_to_image() -> np.ndarray:
        return plain("a red cube", num_inference_steps=STEPS, height=64, width=64, output_type="np",
                     generator=seeded()).images

    before = text_to_image()
    for img2img in (False, True):
        pipe = cache.controlnet_pipeline(base(registry, family), controls(registry, family), img2img=img2img)
        assert pipe.unet is plain.unet and pipe.vae is plain.vae
        assert pipe.text_encoder is plain.text_encoder and pipe.tokenizer is plain.tokenizer
        if family == "sdxl":
            assert pipe.text_encoder_2 is plain.text_encoder_2 and pipe.tokenizer_2 is plain.tokenizer_2
        assert pipe.scheduler is not plain.scheduler  # per-run state stays apart
        assert pipe.scheduler.config == plain.scheduler.config
        generate(pipe, img2img, ramp())
    assert cache.loaded() == [FAMILIES[family][0], controls(registry, family)[0].name]
    # Running the ControlNet pipelines left the plain pipeline as it was.
    np.testing.assert_array_equal(text_to_image(), before)


def test_release_and_another_family_drop_the_controlnets(registry: models.Registry) -> None:
    cache = PipelineCache("cpu", torch.float32)
    pipe = cache.controlnet_pipeline(base(registry, "sd15"), controls(registry, "sd15", 2))
    nets = [weakref.ref(net) for net in pipe.controlnet.nets]
    del pipe
    assert cache.loaded() == [SD15, "controlnet-depth-sd15-tiny", "controlnet-normal-sd15-tiny"]
    cache.controlnet_pipeline(base(registry, "sdxl"), controls(registry, "sdxl"))
    assert cache.loaded() == [SDXL, "controlnet-depth-sdxl-tiny"]  # SDXL took the device
    gc.collect()
    assert all(ref() is None for ref in nets)  # really freed, not just forgotten
    cache.release()
    assert cache.loaded() == []


# --- family, kind and missing-model checks ---------------------------------------------------


def test_sdxl_controlnet_on_sd15_base_is_a_family_error_before_loading(
        registry: models.Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "pipeline_class", no_loading)
    cache = PipelineCache("cpu", torch.float32)
    for img2img in (False, True):
        with pytest.raises(ModelError) as info:
            cache.controlnet_pipeline(base(registry, "sd15"),
                                      [registry.resolve("controlnet_depth"), registry.resolve("controlnet_depth_sdxl")],
                                      img2img=img2img)
        err = info.value
        assert err.code == messages.MODEL_FAMILY
        assert "'controlnet-depth-sdxl-tiny'" in err.message and "SDXL" in err.message
        assert "'sd15-tiny'" in err.message and "SD 1.5" in err.message
        assert "controlnet_depth" in err.hint  # the roles that fit the base model
    assert cache.loaded() == []


def test_controlnet_declared_sd15_but_sdxl_on_disk_is_a_family_error_before_loading(
        registry: models.Registry, tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    liar = ModelSpec("depth-liar", str(tiny_models / "controlnet-depth-sdxl-tiny"), "sd15", "controlnet")
    row = models.check(models.Registry(None, {liar.name: liar}, {"controlnet_depth": liar.name}))[0]
    assert row["ok"] is False and "SDXL" in row["detail"]

    cache = PipelineCache("cpu", torch.float32)
    cache.text_to_image(base(registry, "sd15"))  # a warm base stays warm after the error
    monkeypatch.setattr(models, "pipeline_class", no_loading)
    with pytest.raises(ModelError) as info:
        cache.controlnet_pipeline(base(registry, "sd15"), [liar])
    err = info.value
    assert err.code == messages.MODEL_FAMILY
    assert "'depth-liar'" in err.message and "'sd15-tiny'" in err.message
    assert "declared SD 1.5" in err.message and "an SDXL model (ControlNetModel)" in err.message
    assert '"family": "sdxl"' in err.hint and "controlnet_depth" in err.hint
    assert cache.loaded() == [SD15]


def test_a_missing_controlnet_fails_before_the_base_loads(registry: models.Registry, tmp_path: Path) -> None:
    cache = PipelineCache("cpu", torch.float32)
    ghost = ModelSpec("ghost", "nobody-here/not-a-controlnet", "sd15", "controlnet")
    gone = ModelSpec("gone", str(tmp_path / "nothing"), "sd15", "controlnet")
    for spec, words in ((ghost, "hf download nobody-here/not-a-controlnet"), (gone, str(tmp_path / "nothing"))):
        with pytest.raises(ModelError) as info:
            cache.controlnet_pipeline(base(registry, "sd15"), [spec])
        assert info.value.code == messages.MODEL_MISSING
        assert words in info.value.message + info.value.hint
    assert cache.loaded() == []


def test_kinds_are_checked(registry: models.Registry, tiny_models: Path) -> None:
    cache = PipelineCache("cpu", torch.float32)
    depth = registry.resolve("controlnet_depth")
    cases: list[tuple[ModelSpec, list[ModelSpec], str]] = [
        (base(registry, "sd15"), [base(registry, "sd15")], "not a controlnet"),  # a pipeline as a control
        (depth, [depth], "a ControlNet guides a text_to_image model"),  # a ControlNet as the base
        (registry.resolve("intrinsics"), [depth], "intrinsics"),
        (base(registry, "sd15"), [], "No ControlNet"),
    ]
    for base_spec, control_specs, words in cases:
        with pytest.raises(ModelError) as info:
            cache.controlnet_pipeline(base_spec, control_specs)
        assert info.value.code == messages.INVALID_PARAMS and words in info.value.message
    # Folders are checked too: a ControlNet entry pointing at a pipeline, and the reverse.
    pipeline_as_cn = ModelSpec("p", str(tiny_models / SD15), "sd15", "controlnet")
    with pytest.raises(ModelError) as info:
        cache.controlnet_pipeline(base(registry, "sd15"), [pipeline_as_cn])
    assert info.value.code == messages.MODEL_FAMILY
    assert "StableDiffusionPipeline, not a ControlNetModel" in info.value.message
    cn_as_base = ModelSpec("c", depth.source, "sd15", "text_to_image")
    with pytest.raises(ModelError) as info:
        cache.text_to_image(cn_as_base)
    assert info.value.code == messages.MODEL_FAMILY and '"kind": "controlnet"' in info.value.hint
    with pytest.raises(ModelError) as info:
        models.controlnet_role("depth", "marigold")
    assert info.value.code == messages.MODEL_FAMILY
    with pytest.raises(ModelError) as info:
        models.controlnet_role("pose", "sd15")
    assert info.value.code == messages.INVALID_PARAMS
    assert cache.loaded() == []


def test_tiny_controlnets_are_not_zero_initialised(tiny_models: Path) -> None:
    """Random ControlNets with diffusers' zero convolutions would change nothing: make-tiny fills them."""
    from safetensors.numpy import load_file

    weights = load_file(str(tiny_models / "controlnet-depth-sd15-tiny" / "diffusion_pytorch_model.safetensors"))
    outs = [k for k in weights if k.startswith(("controlnet_down_blocks.", "controlnet_mid_block."))
            or k.startswith("controlnet_cond_embedding.conv_out.")]
    assert outs and all(np.abs(weights[k]).max() > 0 for k in outs if k.endswith("weight"))
    config = json.loads((tiny_models / "controlnet-depth-sd15-tiny" / "config.json").read_text())
    unet = json.loads((tiny_models / SD15 / "unet" / "config.json").read_text())
    for key in ("block_out_channels", "down_block_types", "cross_attention_dim", "layers_per_block"):
        assert config[key] == unet[key]  # shaped like the base pipeline's UNet


def test_controlnet_download_checks_config_json_first(tiny_models: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With downloads allowed, only config.json is fetched before the family check."""
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    shutil.copy(tiny_models / "controlnet-depth-sdxl-tiny" / "config.json", snapshot / "config.json")
    fetched: list[tuple[str, str]] = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        fetched.append((repo_id, filename))
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "pipeline_class", no_loading)
    cache = PipelineCache("cpu", torch.float32, allow_download=True)
    spec = ModelSpec("remote", "nobody-here/controlnet-sdxl", "sd15", "controlnet")
    with pytest.raises(ModelError) as info:
        cache.controlnet_pipeline(ModelSpec("b", str(tiny_models / SD15), "sd15", "text_to_image"), [spec])
    assert info.value.code == messages.MODEL_FAMILY and "SDXL" in info.value.message
    assert fetched == [("nobody-here/controlnet-sdxl", "config.json")]
