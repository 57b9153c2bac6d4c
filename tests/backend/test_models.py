"""Model registry, family checks and the pipeline cache, against tiny random-weight models.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_models.py``.
Nothing here downloads: the tiny pipelines are built once per module with make_tiny, every
load is local_files_only, and the one test that allows downloads marks the hub offline.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import models
from backend.models import ModelError, ModelSpec, PipelineCache
from contract import messages
from devtools.tiny_models import make_tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding registry.json, sd15-tiny/, sdxl-tiny/ and the Marigold models (built once)."""
    registry = make_tiny(tmp_path_factory.mktemp("tiny"), seed=0)
    assert registry.name == "registry.json"
    return registry.parent


@pytest.fixture()
def registry(tiny: Path) -> models.Registry:
    return models.load_registry(tiny)


def cpu_cache() -> PipelineCache:
    return PipelineCache("cpu", torch.float32)


def write_registry(folder: Path, doc: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "registry.json"
    file.write_text(json.dumps(doc), encoding="utf-8")
    return file


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- registry parsing ------------------------------------------------------------------


def test_registry_sources_resolve_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "reg" / "models" / "a").mkdir(parents=True)
    doc = {"format": 1,
           "models": {"near": {"source": "models/a", "family": "sd15"},
                      "plain": {"source": "not-yet-built", "family": "sdxl", "tiny": True},
                      "hub": {"source": "owner/some-model", "family": "sdxl"},
                      "abs": {"source": str(tmp_path / "elsewhere"), "family": "sd15"}},
           "roles": {"text_to_image": "near"}}
    file = write_registry(tmp_path / "reg", doc)

    reg = models.load_registry(str(file))
    assert reg.path == file.resolve()
    assert reg.models["near"].source == str((tmp_path / "reg" / "models" / "a").resolve())
    assert reg.models["plain"].source == str((tmp_path / "reg" / "not-yet-built").resolve())
    assert reg.models["plain"].tiny and reg.models["plain"].family == "sdxl"
    assert reg.models["hub"].source == "owner/some-model"  # stays a repo id
    assert reg.models["abs"].source == str(tmp_path / "elsewhere")
    assert reg.models["near"].kind == "text_to_image"  # the default kind
    assert reg.resolve("text_to_image").name == "near"
    assert reg.resolve("text_to_image", "hub").name == "hub"  # a name overrides the role
    # A folder holding registry.json reads the same file.
    assert models.load_registry(tmp_path / "reg") == reg


def test_env_override_and_builtin_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.ENV_REGISTRY, raising=False)
    builtin = models.load_registry()
    assert builtin.path is None
    spec = builtin.resolve("text_to_image")
    assert (spec.name, spec.family, spec.source) == (
        "sd15", "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert builtin.resolve("text_to_image", "sdxl").source == "stabilityai/stable-diffusion-xl-base-1.0"
    intrinsics, normals = builtin.resolve("intrinsics"), builtin.resolve("normals")
    assert (intrinsics.source, intrinsics.family, intrinsics.kind) == (
        "prs-eth/marigold-iid-appearance-v1-1", "marigold", "intrinsics")
    assert (normals.source, normals.family, normals.kind) == (
        "prs-eth/marigold-normals-v1-1", "marigold", "normals")
    roles = ("controlnet_depth", "controlnet_normal", "controlnet_canny", "controlnet_depth_sdxl",
             "controlnet_canny_sdxl")
    specs = {role: builtin.resolve(role) for role in roles}
    controlnets = {role: (spec.source, spec.family, spec.kind) for role, spec in specs.items()}
    assert controlnets == {
        "controlnet_depth": ("lllyasviel/control_v11f1p_sd15_depth", "sd15", "controlnet"),
        "controlnet_normal": ("lllyasviel/control_v11p_sd15_normalbae", "sd15", "controlnet"),
        "controlnet_canny": ("lllyasviel/control_v11p_sd15_canny", "sd15", "controlnet"),
        "controlnet_depth_sdxl": ("diffusers/controlnet-depth-sdxl-1.0", "sdxl", "controlnet"),
        "controlnet_canny_sdxl": ("diffusers/controlnet-canny-sdxl-1.0", "sdxl", "controlnet"),
    }
    assert models.controlnet_role("depth", "sd15") == "controlnet_depth"
    assert models.controlnet_role("depth", "sdxl") == "controlnet_depth_sdxl"
    with pytest.raises(ModelError) as info:  # no SDXL normal ControlNet by default
        builtin.resolve(models.controlnet_role("normal", "sdxl"))
    assert info.value.code == messages.MODEL_MISSING and "controlnet_normal_sdxl" in info.value.message

    write_registry(tmp_path, {"models": {"mine": {"source": "m", "family": "sdxl"}},
                              "roles": {"text_to_image": "mine"}})
    monkeypatch.setenv(models.ENV_REGISTRY, str(tmp_path))
    reg = models.load_registry()
    assert reg.path == (tmp_path / "registry.json").resolve()
    assert reg.resolve("text_to_image").source == str((tmp_path / "m").resolve())
    assert "sd15" not in reg.models  # a file replaces the built-in registry


@pytest.mark.parametrize("content, words", [
    (None, "Cannot read"),
    ("{not json", "not valid JSON"),
    ('{"models": {"x": {"source": "x", "family": "sd2"}}}', "family 'sd2'"),
    ('{"format": 9}', "unsupported format"),
])
def test_bad_registry_files_name_the_path(tmp_path: Path, content: str | None, words: str) -> None:
    file = tmp_path / "registry.json"
    if content is not None:
        file.write_text(content, encoding="utf-8")
    with pytest.raises(ModelError) as info:
        models.load_registry(file)
    assert str(file) in str(info.value)
    assert words in info.value.message
    assert info.value.hint


def test_unknown_role_and_name_say_what_was_tried_and_how_to_fix(registry: models.Registry) -> None:
    with pytest.raises(ModelError) as info:
        registry.resolve("controlnet_normal_sdxl")
    err = info.value
    assert err.code == messages.MODEL_MISSING
    assert "controlnet_normal_sdxl" in err.message and "text_to_image" in err.message  # known roles
    assert str(registry.path) in err.hint
    assert models.ENV_REGISTRY in err.hint and "make-tiny" in err.hint

    with pytest.raises(ModelError) as info:
        registry.resolve("text_to_image", "sd99-huge")
    err = info.value
    assert err.code == messages.MODEL_MISSING
    assert "sd99-huge" in err.message and "text_to_image" in err.message
    assert "sd15-tiny" in err.message  # lists what exists
    assert str(registry.path) in err.hint

    dangling = models.Registry(path=None, models={}, roles={"text_to_image": "gone"})
    with pytest.raises(ModelError, match="role 'text_to_image' points to model 'gone'"):
        dangling.resolve("text_to_image")


# --- family checks and missing models ----------------------------------------------------


def test_family_mismatch_raises_before_any_weights_load(
        tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = ModelSpec("wrong", str(tiny / "sdxl-tiny"), "sd15", "text_to_image")
    with pytest.raises(ModelError) as info:
        models.check_family(wrong, tiny / "sdxl-tiny")
    assert info.value.code == messages.MODEL_FAMILY
    assert "SD 1.5" in info.value.message and "SDXL" in info.value.message

    def no_loading(*args: object) -> None:
        raise AssertionError("weights were about to load")

    monkeypatch.setattr(models, "pipeline_class", no_loading)
    cache = cpu_cache()
    with pytest.raises(ModelError) as info:
        cache.text_to_image(wrong)
    assert info.value.code == messages.MODEL_FAMILY
    assert "wrong" in info.value.message and '"family": "sdxl"' in info.value.hint
    assert cache.loaded() == []
    # The right declaration passes the same check.
    models.check_family(ModelSpec("ok", wrong.source, "sdxl", "text_to_image"), tiny / "sdxl-tiny")


def test_controlnet_style_config_family(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"_class_name": "ControlNetModel", "addition_embed_type": "text_time"}))
    assert models.detect_family(tmp_path) == ("sdxl", "ControlNetModel")
    with pytest.raises(ModelError) as info:
        models.check_family(ModelSpec("cn", str(tmp_path), "sd15", "controlnet"), tmp_path)
    assert info.value.code == messages.MODEL_FAMILY


@pytest.mark.parametrize("config, family", [
    # the relevant keys of lllyasviel/control_v11f1p_sd15_depth and diffusers/controlnet-depth-sdxl-1.0
    ({"_class_name": "ControlNetModel", "cross_attention_dim": 768, "addition_embed_type": None}, "sd15"),
    ({"_class_name": "ControlNetModel", "cross_attention_dim": 2048, "addition_embed_type": "text_time"}, "sdxl"),
    ({"_class_name": "ControlNetModel", "cross_attention_dim": 1024}, None),  # an SD 2.x ControlNet
    ({"_class_name": "UNet2DConditionModel", "cross_attention_dim": 768}, "sd15"),
    ({"_class_name": "SD3ControlNetModel", "addition_embed_type": "text_time"}, "sd3"),
    ({"_class_name": "FluxControlNetModel"}, "flux"),
    ({"_class_name": "QwenImageControlNetModel"}, "qwen_image"),
    ({"_class_name": "ZImageControlNetModel"}, "z_image"),
    ({"_class_name": "FluxTransformer2DModel"}, None),  # a transformer alone is no model folder we load
])
def test_config_only_folder_families(tmp_path: Path, config: dict, family: str | None) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert models.detect_family(tmp_path) == (family, config["_class_name"])


def test_missing_repo_without_downloads_names_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec("ghost", "nobody-here/not-a-model", "sd15", "text_to_image")
    assert models.locate(spec) is None
    with pytest.raises(ModelError) as info:
        cpu_cache().text_to_image(spec)
    err = info.value
    assert err.code == messages.MODEL_MISSING
    assert "nobody-here/not-a-model" in err.message and "downloads are turned off" in err.message
    assert "hf download nobody-here/not-a-model" in err.hint and "make-tiny" in err.hint

    # Downloads allowed but the hub is marked offline: still no network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        PipelineCache("cpu", torch.float32, allow_download=True).text_to_image(spec)


def test_missing_local_folder_names_the_path(tmp_path: Path) -> None:
    spec = ModelSpec("gone", str(tmp_path / "nothing"), "sd15", "text_to_image")
    assert models.locate(spec) is None
    with pytest.raises(ModelError) as info:
        cpu_cache().text_to_image(spec)
    assert info.value.code == messages.MODEL_MISSING
    assert str(tmp_path / "nothing") in info.value.message


# --- tiny models -------------------------------------------------------------------------


def test_make_tiny_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = make_tiny(tmp_path / "again", seed=0).parent
    first, second = file_hashes(tiny), file_hashes(again)
    assert any(name.endswith(".safetensors") for name in first)
    assert first == second
    doc = json.loads((tiny / "registry.json").read_text())
    assert doc["roles"] == {"text_to_image": "sd15-tiny", "intrinsics": "marigold-intrinsics-tiny",
                            "normals": "marigold-normals-tiny",
                            "controlnet_depth": "controlnet-depth-sd15-tiny",
                            "controlnet_normal": "controlnet-normal-sd15-tiny",
                            "controlnet_canny": "controlnet-canny-sd15-tiny",
                            "controlnet_depth_sdxl": "controlnet-depth-sdxl-tiny",
                            "controlnet_canny_sdxl": "controlnet-canny-sdxl-tiny",
                            "image_to_3d": "shap-e-img2img-tiny",
                            "ip_adapter": "ip-adapter-sd15-tiny", "ip_adapter_sdxl": "ip-adapter-sdxl-tiny",
                            # the transformer families' control models (union ones serve depth and canny)
                            "controlnet_depth_flux": "controlnet-union-flux-tiny",
                            "controlnet_canny_flux": "controlnet-union-flux-tiny",
                            "controlnet_normal_flux": "controlnet-normal-flux-tiny",
                            "controlnet_depth_qwen_image": "controlnet-union-qwen-image-tiny",
                            "controlnet_canny_qwen_image": "controlnet-union-qwen-image-tiny",
                            "controlnet_depth_z_image": "controlnet-union-z-image-tiny",
                            "controlnet_canny_z_image": "controlnet-union-z-image-tiny",
                            "controlnet_depth_sd3": "controlnet-depth-sd3-tiny",
                            "controlnet_canny_sd3": "controlnet-canny-sd3-tiny"}
    assert doc["models"]["controlnet-union-flux-tiny"]["control_modes"] == "canny=0,depth=2"
    assert doc["models"]["flux-tiny"] == {"source": "flux-tiny", "family": "flux", "kind": "text_to_image",
                                          "tiny": True}
    assert doc["models"]["controlnet-canny-sdxl-tiny"] == {"source": "controlnet-canny-sdxl-tiny",
                                                           "family": "sdxl", "kind": "controlnet",
                                                           "tiny": True}
    assert "controlnet-depth-sd15-tiny/diffusion_pytorch_model.safetensors" in first
    assert doc["models"]["sdxl-tiny"] == {"source": "sdxl-tiny", "family": "sdxl",
                                          "kind": "text_to_image", "tiny": True}
    assert doc["models"]["marigold-normals-tiny"] == {"source": "marigold-normals-tiny",
                                                      "family": "marigold", "kind": "normals",
                                                      "tiny": True}


@pytest.mark.parametrize("name, family", [("sd15-tiny", "sd15"), ("sdxl-tiny", "sdxl")])
def test_tiny_pipeline_generates_64px(registry: models.Registry, name: str, family: str,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    capfd.readouterr()
    pipe = cpu_cache().text_to_image(registry.resolve("text_to_image", name))
    loading_log = capfd.readouterr().err
    assert "tokenizer" not in loading_log.lower()  # no "missing tokenizer files" warnings
    expected: object = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    assert type(pipe) is expected and pipe.vae_scale_factor == 8

    steps: list[int] = []

    def on_step(p: object, i: int, t: object, kwargs: dict) -> dict:
        steps.append(i)
        return kwargs

    def run(**extra: object) -> np.ndarray:
        return pipe("a red cube", num_inference_steps=2, height=64, width=64,
                    output_type="np", **extra).images

    first = run(generator=torch.Generator("cpu").manual_seed(7), callback_on_step_end=on_step)
    assert first.shape == (1, 64, 64, 3) and first.dtype == np.float32
    assert np.isfinite(first).all() and 0.0 <= first.min() and first.max() <= 1.0
    assert first.std() > 0.01  # an image, not a constant
    assert steps == [0, 1]
    np.testing.assert_array_equal(first, run(generator=torch.Generator("cpu").manual_seed(7)))
    # Explicit latents (step previews start from them) give the same image as the generator.
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(7))
    np.testing.assert_allclose(run(latents=latents), first, atol=1e-6)
    assert not np.array_equal(first, run(generator=torch.Generator("cpu").manual_seed(8)))


def test_cache_keeps_one_pipeline_per_model(registry: models.Registry) -> None:
    cache = cpu_cache()
    spec = registry.resolve("text_to_image")
    pipe = cache.text_to_image(spec)
    assert cache.text_to_image(spec) is pipe
    assert cache.loaded() == ["sd15-tiny"]
    cache.release()
    assert cache.loaded() == []
    assert cache.text_to_image(spec) is not pipe


def test_other_family_releases_the_first(registry: models.Registry) -> None:
    cache = cpu_cache()
    first = weakref.ref(cache.text_to_image(registry.resolve("text_to_image", "sd15-tiny")))
    assert cache.loaded() == ["sd15-tiny"]
    cache.text_to_image(registry.resolve("text_to_image", "sdxl-tiny"))
    assert cache.loaded() == ["sdxl-tiny"]
    gc.collect()
    assert first() is None  # really freed, not just forgotten


# --- listing -----------------------------------------------------------------------------


def test_describe_rows(registry: models.Registry, tiny: Path) -> None:
    rows = {row["name"]: row for row in models.describe(registry)}
    assert rows["sd15-tiny"] == {"roles": ["text_to_image"], "name": "sd15-tiny",
                                 "family": "sd15", "kind": "text_to_image",
                                 "source": str(tiny / "sd15-tiny"),
                                 "local": str(tiny / "sd15-tiny"), "tiny": True}
    assert rows["sdxl-tiny"]["roles"] == [] and rows["sdxl-tiny"]["family"] == "sdxl"
    hub = models.describe(models.Registry(None, {"g": ModelSpec(
        "g", "nobody-here/not-a-model", "sd15", "text_to_image")}, {}))
    assert hub[0]["local"] is None and hub[0]["tiny"] is False


def test_check_rows_say_why(tiny: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny / "sd15-tiny", pickled)
    for weights in (pickled / "unet").glob("*.safetensors"):
        weights.unlink()
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"")
    doc = {"models": {"good": {"source": str(tiny / "sd15-tiny"), "family": "sd15"},
                      "wrong": {"source": str(tiny / "sdxl-tiny"), "family": "sd15"},
                      "ghost": {"source": "nobody-here/not-a-model", "family": "sd15"},
                      "pickled": {"source": "pickled", "family": "sd15"}},
           "roles": {"text_to_image": "good", "controlnet_depth": "nothing"}}
    rows = {r["name"]: r for r in models.check(models.load_registry(write_registry(tmp_path, doc)))}
    assert rows["good"]["ok"] is True
    assert rows["wrong"]["ok"] is False and "SDXL" in rows["wrong"]["detail"]
    assert rows["ghost"]["ok"] is False and "missing locally" in rows["ghost"]["detail"]
    assert rows["pickled"]["ok"] is False and "no safetensors in unet/" in rows["pickled"]["detail"]
    assert rows["nothing"]["ok"] is False and "controlnet_depth" in rows["nothing"]["detail"]
    assert models.weights_problem(pickled, allow_unsafe=True) is None


def test_listing_stays_light(tiny: Path) -> None:
    code = ("import sys; from backend import models; "
            f"models.describe(models.load_registry({str(tiny)!r})); "
            "models.check(models.load_registry()); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip() == "[]"
