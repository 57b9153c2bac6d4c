"""Single-file checkpoints (SD 1.5 / SDXL ``.safetensors`` in the original LDM layout), against the tiny ones.

make-tiny writes checkpoints/sd15-tiny.safetensors and checkpoints/sdxl-tiny.safetensors from its tiny folders
(devtools/tiny_models/single_file.py); loaded through diffusers' ``from_single_file`` with the folder as config
they must give the folder's image. Every refusal happens before any weights load.
Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_checkpoints.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend import models
from backend.models import ModelError, PipelineCache
from backend.models.checkpoint import contents
from contract import messages
from contract.model_sources import is_repo_id, resolve_source

CHECKPOINTS = {"sd15": "sd15-tiny-checkpoint", "sdxl": "sdxl-tiny-checkpoint"}
FOLDERS = {"sd15": "sd15-tiny", "sdxl": "sdxl-tiny"}


def image(pipe: Any, seed: int = 7) -> np.ndarray:
    return pipe("a red cube", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed)).images


def write_registry(folder: Path, entries: dict[str, dict[str, Any]]) -> models.Registry:
    file = folder / "registry.json"
    file.write_text(json.dumps({"format": 1, "models": entries, "roles": {}}), encoding="utf-8")
    return models.load_registry(file)


def checkpoint_file(tiny: Path, family: str) -> Path:
    return tiny / "checkpoints" / f"{FOLDERS[family]}.safetensors"


@pytest.fixture()
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any weights load fails the test: refusals must come from the header and configs alone."""
    def refuse(*args: object) -> None:
        raise AssertionError("weights were about to load")

    monkeypatch.setattr(models, "pipeline_class", refuse)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_checkpoint_gives_the_folders_image(registry: models.Registry, cache: PipelineCache, family: str) -> None:
    spec = registry.resolve("text_to_image", CHECKPOINTS[family])
    assert spec.source.endswith(".safetensors") and Path(spec.config).name == FOLDERS[family]
    from_file = cache.text_to_image(spec)
    folder = cache.text_to_image(registry.resolve("text_to_image", FOLDERS[family]))
    assert type(from_file) is type(folder)
    assert from_file.unet is not folder.unet  # really loaded twice, from two sources
    expected = image(folder)
    got = image(from_file)
    assert np.abs(got - expected).max() < 1e-5
    assert not np.allclose(image(from_file, seed=8), expected)  # the comparison can fail
    assert set(cache.loaded()) >= {CHECKPOINTS[family], FOLDERS[family]}


def test_family_mismatch_names_both_and_loads_nothing(tiny_models: Path, tmp_path: Path, cache: PipelineCache,
                                                      no_loading: None) -> None:
    registry = write_registry(tmp_path, {"wrong": {"source": str(checkpoint_file(tiny_models, "sdxl")),
                                                   "family": "sd15", "config": str(tiny_models / "sd15-tiny")}})
    before = cache.loaded()
    with pytest.raises(ModelError) as info:
        cache.text_to_image(registry.resolve("text_to_image", "wrong"))
    assert info.value.code == messages.MODEL_FAMILY
    assert "declared SD 1.5" in info.value.message and "an SDXL checkpoint" in info.value.message
    assert '"family": "sdxl"' in info.value.hint
    assert cache.loaded() == before


def test_config_folder_of_another_family_is_refused(tiny_models: Path, tmp_path: Path, no_loading: None) -> None:
    registry = write_registry(tmp_path, {"odd": {"source": str(checkpoint_file(tiny_models, "sd15")),
                                                 "family": "sd15", "config": str(tiny_models / "sdxl-tiny")}})
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).text_to_image(registry.resolve("text_to_image", "odd"))
    assert info.value.code == messages.MODEL_FAMILY
    assert "StableDiffusionXLPipeline" in info.value.message and '"config"' in info.value.hint


def _spec_for(tmp_path: Path, file: Path, tiny: Path) -> models.ModelSpec:
    registry = write_registry(tmp_path, {"m": {"source": str(file), "family": "sd15",
                                               "config": str(tiny / "sd15-tiny")}})
    return registry.resolve("text_to_image", "m")


@pytest.mark.parametrize("tensors, words", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, "a LoRA"),
    ({"weights": torch.randn(3, 3)}, "no Stable Diffusion UNet"),
])
def test_a_safetensors_that_is_no_checkpoint(tiny_models: Path, tmp_path: Path, no_loading: None,
                                             tensors: dict[str, torch.Tensor], words: str) -> None:
    from safetensors.torch import save_file

    file = tmp_path / "other.safetensors"
    save_file(tensors, str(file))
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).text_to_image(_spec_for(tmp_path, file, tiny_models))
    assert info.value.code == messages.MODEL_FAMILY
    assert words in info.value.message and str(file) in info.value.message
    assert "full SD 1.5 checkpoint" in info.value.hint


def test_truncated_checkpoint(tiny_models: Path, tmp_path: Path, no_loading: None) -> None:
    data = checkpoint_file(tiny_models, "sd15").read_bytes()
    file = tmp_path / "cut.safetensors"
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).text_to_image(_spec_for(tmp_path, file, tiny_models))
    assert info.value.code == messages.MODEL_MISSING
    assert "truncated" in info.value.message and "download it again" in info.value.hint


def test_ckpt_needs_allow_unsafe(tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    file = tmp_path / "old.ckpt"
    torch.save({"state_dict": load_file(str(checkpoint_file(tiny_models, "sd15")))}, file)
    spec = _spec_for(tmp_path, file, tiny_models)
    with monkeypatch.context() as patch:
        patch.setattr(models, "pipeline_class", lambda *a: pytest.fail("weights were about to load"))
        with pytest.raises(ModelError) as info:
            PipelineCache("cpu", torch.float32).text_to_image(spec)
    assert info.value.code == messages.MODEL_MISSING
    assert "pickle" in info.value.message and "Allow Pickle Weights" in info.value.hint
    rows = {r["name"]: r for r in models.check(models.load_registry(tmp_path))}
    assert rows["m"]["ok"] is False and "pickle" in rows["m"]["detail"]
    # Allowed, it loads (torch.load with weights_only) and gives the folder's image.
    unsafe = PipelineCache("cpu", torch.float32, allow_unsafe=True)
    folder = PipelineCache("cpu", torch.float32).text_to_image(models.load_registry(tiny_models).resolve(
        "text_to_image", "sd15-tiny"))
    assert np.abs(image(unsafe.text_to_image(spec)) - image(folder)).max() < 1e-5


def test_missing_config_folder_says_what_to_do(tiny_models: Path, tmp_path: Path, no_loading: None) -> None:
    registry = write_registry(tmp_path, {"m": {"source": str(checkpoint_file(tiny_models, "sdxl")),
                                               "family": "sdxl", "config": "no-such-folder"}})
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).text_to_image(registry.resolve("text_to_image", "m"))
    assert info.value.code == messages.MODEL_MISSING
    assert str(tmp_path / "no-such-folder") in info.value.message
    assert ('hf download stabilityai/stable-diffusion-xl-base-1.0 --include "*.json" "*.txt"' in info.value.hint
            and '"config"' in info.value.hint)


def test_default_config_repo_missing_from_the_cache(tiny_models: Path, tmp_path: Path, no_loading: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    registry = write_registry(tmp_path, {"m": {"source": str(checkpoint_file(tiny_models, "sd15")),
                                               "family": "sd15"}})
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).text_to_image(registry.resolve("text_to_image", "m"))
    assert info.value.code == messages.MODEL_MISSING
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in info.value.message
    assert 'hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include "*.json" "*.txt"' in info.value.hint
    row = {r["name"]: r for r in models.check(registry)}["m"]
    assert row["ok"] is False and "not in the Hugging Face cache" in row["detail"]


def test_check_and_list_rows(tiny_models: Path, registry: models.Registry) -> None:
    rows = {r["name"]: r for r in models.check(registry)}
    for family, name in CHECKPOINTS.items():
        assert rows[name]["ok"] is True, rows[name]
        assert str(checkpoint_file(tiny_models, family)) in rows[name]["detail"]
    listed = {r["name"]: r for r in models.describe(registry)}
    assert listed[CHECKPOINTS["sd15"]]["local"] == str(checkpoint_file(tiny_models, "sd15"))


def test_missing_checkpoint_file_row_and_error(tmp_path: Path) -> None:
    registry = write_registry(tmp_path, {"gone": {"source": "gone/model.safetensors", "family": "sd15"}})
    spec = registry.resolve("text_to_image", "gone")
    assert spec.source == str(tmp_path / "gone" / "model.safetensors")  # a file, not the repo id "gone/model..."
    row = models.check(registry)[0]
    assert row["ok"] is False and f"file {spec.source} does not exist" in row["detail"]
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).text_to_image(spec)
    assert info.value.code == messages.MODEL_MISSING and "Put the checkpoint at" in info.value.hint


def test_sources_ending_in_checkpoint_suffixes_are_files(tmp_path: Path) -> None:
    assert not is_repo_id("someone/model.safetensors") and not is_repo_id("someone/model.CKPT")
    assert is_repo_id("someone/model") and is_repo_id("someone/model.v2")
    assert resolve_source("someone/model.safetensors", tmp_path) == str(tmp_path / "someone" / "model.safetensors")


def _unet_keys(in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    return {"model.diffusion_model.input_blocks.0.0.weight": (320, in_channels, 3, 3),
            "model.diffusion_model.out.2.weight": (4, 320, 3, 3), "first_stage_model.decoder.conv_in.weight": (1,)}


@pytest.mark.parametrize("extra, family, words", [
    ({"cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)}, "sd15", "an SD 1.5 checkpoint"),
    ({"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
      "conditioner.embedders.1.model.positional_embedding": (77, 1280)}, "sdxl", "an SDXL checkpoint"),
    ({"cond_stage_model.model.positional_embedding": (77, 1024)}, None, "SD 2.x"),
    ({"conditioner.embedders.0.model.positional_embedding": (77, 1280)}, None, "SDXL refiner"),
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
      "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)}, None, "9-channel UNet"),
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (1,)}, None, "unsupported architecture"),
])
def test_family_from_key_names(extra: dict[str, tuple[int, ...]], family: str | None, words: str) -> None:
    shapes = {**_unet_keys(), **extra}
    if "joint_blocks" in next(iter(extra)):
        shapes = {k: v for k, v in shapes.items() if "input_blocks" not in k}
    found = contents(shapes)
    assert found.family == family and words in found.what and found.is_checkpoint


def test_config_of_other_sizes_is_a_clear_error(tiny_models: Path, tmp_path: Path) -> None:
    import shutil

    config = tmp_path / "bigger-vae"
    shutil.copytree(tiny_models / "sd15-tiny", config)
    vae = json.loads((config / "vae" / "config.json").read_text(encoding="utf-8"))
    vae["block_out_channels"] = [8, 8, 16, 32]
    (config / "vae" / "config.json").write_text(json.dumps(vae), encoding="utf-8")
    registry = write_registry(tmp_path, {"m": {"source": str(checkpoint_file(tiny_models, "sd15")),
                                               "family": "sd15", "config": str(config)}})
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).text_to_image(registry.resolve("text_to_image", "m"))
    assert info.value.code == messages.MODEL_MISSING
    assert "Cannot load checkpoint model 'm'" in info.value.message and str(config) in info.value.message
    assert '"config"' in info.value.hint


def test_checkpoint_family_for_the_artists_own_files(tiny_models: Path, tmp_path: Path) -> None:
    from backend.models.checkpoint import checkpoint_family

    assert checkpoint_family(checkpoint_file(tiny_models, "sd15")) == "sd15"
    assert checkpoint_family(checkpoint_file(tiny_models, "sdxl")) == "sdxl"
    (tmp_path / "junk.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ModelError) as info:
        checkpoint_family(tmp_path / "junk.safetensors")
    assert info.value.code == messages.MODEL_FAMILY and "not an SD 1.5 or SDXL checkpoint" in info.value.message
