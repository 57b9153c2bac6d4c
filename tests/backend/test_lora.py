"""LoRAs on the tiny SD 1.5 / SDXL pipelines: family checks from the header, switching without reloads, exactness.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_lora.py``. The LoRA files are the kohya-ss
format ones make-tiny writes into ``loras/`` (devtools/tiny_models/lora.py); diffusers' ``load_lora_weights``
converts them as it would downloaded ones. Pipelines come from the module's warm PipelineCache (cpu, float32), so
adapters stay loaded across tests as they do across jobs: every test starts from :func:`clear_loras`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend import models
from backend.models import ModelError, PipelineCache
from backend.models import lora as lora_mod
from backend.models.lora import LoraFile, apply_loras, check_lora, clear_loras, inspect_lora, loaded_loras
from contract import messages

SD15, SDXL = "sd15-tiny", "sdxl-tiny"
STEPS = 2


@pytest.fixture(scope="module")
def lora_dir(tiny_models: Path) -> Path:
    return tiny_models / "loras"


@pytest.fixture(scope="module")
def known_widths(tiny_models: Path) -> dict[int, str]:
    """Width -> family of the local base models, as a task derives it from the registry's local folders."""
    widths = {lora_mod.base_width(tiny_models / name): family for name, family in ((SD15, "sd15"), (SDXL, "sdxl"))}
    assert widths == {32: "sd15", 80: "sdxl"}
    assert lora_mod.base_width(tiny_models / "no-such-model") is None
    return {width: family for width, family in widths.items() if width is not None}


@pytest.fixture(scope="module")
def warm(tiny_models: Path) -> PipelineCache:
    return PipelineCache("cpu", torch.float32)


def _pipe(warm: PipelineCache, tiny_models: Path, name: str) -> Any:
    pipe = warm.text_to_image(models.load_registry(tiny_models).resolve("text_to_image", name))
    clear_loras(pipe)
    return pipe


@pytest.fixture()
def sd15(warm: PipelineCache, tiny_models: Path) -> Any:
    return _pipe(warm, tiny_models, SD15)


def _file(path: Path, weight: float = 1.0) -> LoraFile:
    return LoraFile(path, weight, hashlib.sha256(path.read_bytes()).hexdigest(), path.stem)


def _run(pipe: Any) -> np.ndarray:
    out = pipe("a stone cottage", num_inference_steps=STEPS, height=64, width=64, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(3), output_type="np")
    return np.asarray(out.images[0])


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) > 1e-3


@pytest.fixture()
def load_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Paths given to load_lora_weights (any pipeline class), in call order."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    calls: list[str] = []
    for cls in (StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin):
        original = cls.load_lora_weights

        def counted(self: Any, path: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(str(path))
            return _original(self, path, *args, **kwargs)

        monkeypatch.setattr(cls, "load_lora_weights", counted)
    yield calls


# --- header only -------------------------------------------------------------------------


def test_inspect_tells_family_and_parts(lora_dir: Path, known_widths: dict[int, str]) -> None:
    a = inspect_lora(lora_dir / "sd15-style-a.safetensors", known_widths)
    assert (a.family, a.width, a.parts) == ("sd15", 32, ("unet", "text_encoder"))
    assert a.name == "sd15-style-a" and a.layers > 0
    b = inspect_lora(lora_dir / "sd15-style-b.safetensors", known_widths)
    assert (b.family, b.parts) == ("sd15", ("unet",))
    xl = inspect_lora(lora_dir / "sdxl-style.safetensors", known_widths)
    assert (xl.family, xl.width, xl.parts) == ("sdxl", 80, ("unet", "text_encoder", "text_encoder_2"))
    # Without the local widths the tiny width (32) tells nothing; the second text encoder still means SDXL.
    assert inspect_lora(lora_dir / "sd15-style-a.safetensors").family is None
    assert inspect_lora(lora_dir / "sdxl-style.safetensors").family == "sdxl"


def _write_safetensors(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    """A float32 safetensors file of zeros with these names and shapes (the format written by hand)."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


@pytest.mark.parametrize(("width", "family"), [(768, "sd15"), (2048, "sdxl"), (1024, "sd2")])
def test_inspect_knows_the_real_widths(tmp_path: Path, width: int, family: str) -> None:
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    path = _write_safetensors(tmp_path / "real.safetensors",
                              {f"{key}.lora_down.weight": (2, width), f"{key}.lora_up.weight": (8, 2)})
    assert inspect_lora(path).family == family


def test_sd2_lora_is_refused_as_unsupported(tmp_path: Path) -> None:
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"  # diffusers / PEFT naming
    path = _write_safetensors(tmp_path / "sd2.safetensors", {f"{key}.lora_A.weight": (2, 1024)})
    with pytest.raises(ModelError) as err:
        check_lora(inspect_lora(path), "sd15", SD15)
    assert err.value.code == messages.MODEL_FAMILY
    assert "SD 2.x" in err.value.message and "not supported" in err.value.message


def test_sdxl_lora_refused_on_sd15_before_loading(lora_dir: Path, known_widths: dict[int, str],
                                                  load_calls: list[str]) -> None:
    info = inspect_lora(lora_dir / "sdxl-style.safetensors", known_widths, name="toon-xl")
    with pytest.raises(ModelError) as err:
        check_lora(info, "sd15", SD15)
    assert err.value.code == messages.MODEL_FAMILY
    assert err.value.message == "LoRA 'toon-xl' is for SDXL; 'sd15-tiny' is an SD 1.5 model."
    assert "SD 1.5" in err.value.hint
    with pytest.raises(ModelError, match="is for SD 1.5; 'sdxl-tiny' is an SDXL model"):
        check_lora(inspect_lora(lora_dir / "sd15-style-a.safetensors", known_widths), "sdxl", SDXL)
    check_lora(inspect_lora(lora_dir / "sd15-style-a.safetensors", known_widths), "sd15", SD15)
    assert load_calls == []


def test_truncated_lora_is_a_clear_error(sd15: Any, lora_dir: Path, tmp_path: Path, load_calls: list[str]) -> None:
    cut = tmp_path / "cut.safetensors"
    data = (lora_dir / "sd15-style-a.safetensors").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as err:
        inspect_lora(cut)
    assert err.value.code == messages.INVALID_PARAMS
    assert "LoRA 'cut' cannot be read" in err.value.message and "truncated" in err.value.message
    assert "Download" in err.value.hint
    base = _run(sd15)
    with pytest.raises(ModelError, match="truncated"):
        apply_loras(sd15, "sd15", [_file(cut)])
    assert load_calls == []  # refused from the header, before diffusers read anything
    assert np.array_equal(_run(sd15), base)


def test_not_a_lora_is_a_clear_error(tmp_path: Path) -> None:
    path = _write_safetensors(tmp_path / "checkpoint.safetensors", {"model.diffusion_model.out.2.weight": (4, 8)})
    with pytest.raises(ModelError, match="holds no LoRA layers") as err:
        inspect_lora(path)
    assert err.value.code == messages.INVALID_PARAMS


# --- on the tiny pipelines ---------------------------------------------------------------


def test_lora_changes_output_and_removing_it_restores_base(sd15: Any, lora_dir: Path) -> None:
    base = _run(sd15)
    apply_loras(sd15, "sd15", [_file(lora_dir / "sd15-style-a.safetensors")])
    styled = _run(sd15)
    assert _differs(styled, base)
    apply_loras(sd15, "sd15", [])
    assert np.array_equal(_run(sd15), base)
    apply_loras(sd15, "sd15", [_file(lora_dir / "sd15-style-a.safetensors")])
    assert np.array_equal(_run(sd15), styled)  # active again, same result
    clear_loras(sd15)
    assert np.array_equal(_run(sd15), base)


def test_weight_zero_gives_exactly_base(sd15: Any, lora_dir: Path) -> None:
    base = _run(sd15)
    a = lora_dir / "sd15-style-a.safetensors"
    apply_loras(sd15, "sd15", [_file(a, 0.0)])
    assert np.array_equal(_run(sd15), base)
    apply_loras(sd15, "sd15", [_file(a, 1.0)])
    apply_loras(sd15, "sd15", [_file(a, 0.0), _file(lora_dir / "sd15-style-b.safetensors", 0.0)])
    assert np.array_equal(_run(sd15), base)
    apply_loras(sd15, "sd15", [_file(a, 0.5)])
    half = _run(sd15)
    apply_loras(sd15, "sd15", [_file(a, 1.0)])
    full = _run(sd15)
    assert _differs(half, base) and _differs(half, full)


def test_two_loras_differ_from_each_alone(sd15: Any, lora_dir: Path) -> None:
    a, b = _file(lora_dir / "sd15-style-a.safetensors"), _file(lora_dir / "sd15-style-b.safetensors")
    outputs = {}
    for label, job in (("a", [a]), ("b", [b]), ("ab", [a, b]), ("ba", [b, a])):
        apply_loras(sd15, "sd15", job)
        outputs[label] = _run(sd15)
    assert _differs(outputs["a"], outputs["b"])
    assert _differs(outputs["ab"], outputs["a"]) and _differs(outputs["ab"], outputs["b"])
    assert np.allclose(outputs["ab"], outputs["ba"], atol=1e-5)  # the order of a job's LoRAs does not matter


def _prompt_features(pipe: Any) -> np.ndarray:
    ids = pipe.tokenizer("a stone cottage", padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0].numpy()


def test_text_encoder_part_follows_the_active_loras(sd15: Any, lora_dir: Path) -> None:
    """style-a trains the text encoder too, style-b only the UNet: with b alone the text encoder is the base one."""
    base = _prompt_features(sd15)
    apply_loras(sd15, "sd15", [_file(lora_dir / "sd15-style-a.safetensors")])
    assert _differs(_prompt_features(sd15), base)
    apply_loras(sd15, "sd15", [_file(lora_dir / "sd15-style-b.safetensors")])
    assert np.array_equal(_prompt_features(sd15), base)


def test_switching_between_jobs_reuses_pipeline_and_loads_each_file_once(
        warm: PipelineCache, tiny_models: Path, lora_dir: Path, load_calls: list[str]) -> None:
    spec = models.load_registry(tiny_models).resolve("text_to_image", SD15)
    first = warm.text_to_image(spec)
    for adapter in loaded_loras(first):  # earlier tests loaded these: start from a pipeline without adapters
        lora_mod._delete(first, adapter)
    clear_loras(first)
    base = _run(first)
    a, b = _file(lora_dir / "sd15-style-a.safetensors"), _file(lora_dir / "sd15-style-b.safetensors")
    seen: dict[str, list[np.ndarray]] = {"a": [], "b": []}
    for label, lora in (("a", a), ("b", b), ("a", a), ("b", b)):
        pipe = warm.text_to_image(spec)  # a job asks the cache again
        assert pipe is first
        apply_loras(pipe, "sd15", [lora])
        seen[label].append(_run(pipe))
        clear_loras(pipe)  # between jobs
        assert np.array_equal(_run(pipe), base)
    assert sorted(load_calls) == sorted([str(a.path), str(b.path)])
    assert np.array_equal(seen["a"][0], seen["a"][1]) and np.array_equal(seen["b"][0], seen["b"][1])
    assert _differs(seen["a"][0], seen["b"][0])
    assert set(loaded_loras(first)) == {lora_mod.adapter_name(a.key), lora_mod.adapter_name(b.key)}


def test_controlnet_pipeline_shares_the_base_pipelines_adapters(warm: PipelineCache, tiny_models: Path,
                                                                lora_dir: Path, load_calls: list[str]) -> None:
    """A ControlNet pipeline is wired from the cached base pipeline's UNet and text encoder: a LoRA loaded for
    a plain job is not loaded again for a ControlNet job, and clearing either clears both."""
    registry = models.load_registry(tiny_models)
    base_pipe = _pipe(warm, tiny_models, SD15)
    a = _file(lora_dir / "sd15-style-a.safetensors")
    apply_loras(base_pipe, "sd15", [a])
    calls = len(load_calls)
    controlled = warm.controlnet_pipeline(registry.resolve("text_to_image", SD15),
                                          [registry.resolve("controlnet_depth")])
    control = np.linspace(0.0, 1.0, 64 * 64 * 3, dtype=np.float32).reshape(1, 64, 64, 3)

    def run() -> np.ndarray:
        out = controlled("a stone cottage", image=control, num_inference_steps=STEPS, height=64, width=64,
                         generator=torch.Generator().manual_seed(3), output_type="np")
        return np.asarray(out.images[0])

    clear_loras(controlled)
    base = run()
    apply_loras(controlled, "sd15", [a])
    assert len(load_calls) == calls  # already on the shared UNet and text encoder
    assert _differs(run(), base)
    clear_loras(base_pipe)
    assert np.array_equal(run(), base)


def test_kept_adapters_are_bounded(sd15: Any, lora_dir: Path, load_calls: list[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lora_mod, "MAX_KEPT", 1)
    a, b = _file(lora_dir / "sd15-style-a.safetensors"), _file(lora_dir / "sd15-style-b.safetensors")
    apply_loras(sd15, "sd15", [a])
    apply_loras(sd15, "sd15", [b])  # a is the least recently used beyond 1: deleted
    assert loaded_loras(sd15) == [lora_mod.adapter_name(b.key)]
    assert lora_mod.adapter_name(a.key) not in lora_mod._adapters(sd15)
    calls = len(load_calls)
    apply_loras(sd15, "sd15", [a])
    assert len(load_calls) == calls + 1  # deleted, so loaded again
    apply_loras(sd15, "sd15", [a, b])  # one job may need more than the bound: all its LoRAs stay
    assert set(loaded_loras(sd15)) == {lora_mod.adapter_name(a.key), lora_mod.adapter_name(b.key)}


def test_unmatched_lora_is_refused_and_base_stays_exact(sd15: Any, lora_dir: Path, known_widths: dict[int, str],
                                                       load_calls: list[str]) -> None:
    base = _run(sd15)
    unmatched = _file(lora_dir / "sd15-unmatched.safetensors")
    check_lora(inspect_lora(unmatched.path, known_widths), "sd15", SD15)  # right family by its widths
    apply_loras(sd15, "sd15", [_file(lora_dir / "sd15-style-a.safetensors")])
    with pytest.raises(ModelError) as err:
        apply_loras(sd15, "sd15", [unmatched])
    assert err.value.code == messages.INVALID_PARAMS
    assert "LoRA 'sd15-unmatched' fits no layer of this SD 1.5 model" in err.value.message
    assert "another model architecture" in err.value.hint
    assert lora_mod.adapter_name(unmatched.key) not in lora_mod._adapters(sd15)  # nothing half-loaded stays
    assert np.array_equal(_run(sd15), base)
    apply_loras(sd15, "sd15", [])
    assert np.array_equal(_run(sd15), base)


def test_lora_for_another_architecture_is_no_silent_no_op(sd15: Any, tmp_path: Path, load_calls: list[str]) -> None:
    """A Flux-style LoRA (diffusers names under ``transformer.``): diffusers finds nothing to load and says nothing."""
    key = "transformer.single_transformer_blocks.0.attn.to_k"
    path = _write_safetensors(tmp_path / "flux-style.safetensors",
                              {f"{key}.lora_A.weight": (2, 48), f"{key}.lora_B.weight": (48, 2)})
    info = inspect_lora(path)
    assert info.family is None  # its keys tell no SD family: the family check lets it through
    check_lora(info, "sd15", SD15)
    base = _run(sd15)
    with pytest.raises(ModelError, match="LoRA 'flux-style' fits no layer of this SD 1.5 model"):
        apply_loras(sd15, "sd15", [_file(path)])
    assert load_calls == [str(path)]  # it was tried: the count of loaded layers caught it
    assert np.array_equal(_run(sd15), base)


def test_sdxl_lora_on_sdxl(warm: PipelineCache, tiny_models: Path, lora_dir: Path) -> None:
    pipe = _pipe(warm, tiny_models, SDXL)
    base = _run(pipe)
    apply_loras(pipe, "sdxl", [_file(lora_dir / "sdxl-style.safetensors")])
    assert _differs(_run(pipe), base)
    assert {"unet", "text_encoder", "text_encoder_2"} <= {
        part for part, names in pipe.get_list_adapters().items() if names}
    apply_loras(pipe, "sdxl", [])
    assert np.array_equal(_run(pipe), base)


def test_lora_files_are_kohya_format(lora_dir: Path) -> None:
    from backend.models.safetensors_header import read_header

    names = list(read_header(lora_dir / "sd15-style-a.safetensors").tensors)
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    assert {f"{key}.lora_down.weight", f"{key}.lora_up.weight", f"{key}.alpha"} <= set(names)
    assert any(n.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for n in names)
    xl = list(read_header(lora_dir / "sdxl-style.safetensors").tensors)
    assert any(n.startswith("lora_unet_input_blocks_") for n in xl)
    assert any(n.startswith("lora_te1_") for n in xl) and any(n.startswith("lora_te2_") for n in xl)


def test_adapter_name_comes_from_the_content(lora_dir: Path, tmp_path: Path) -> None:
    """The adapter name comes from the content id, so a job-folder copy of a loaded LoRA is not loaded again."""
    copy = tmp_path / "renamed.safetensors"
    shutil.copy(lora_dir / "sd15-style-a.safetensors", copy)
    assert lora_mod.adapter_name(_file(copy).key) == lora_mod.adapter_name(
        _file(lora_dir / "sd15-style-a.safetensors").key)
    with pytest.raises(ValueError, match="non-empty key"):
        lora_mod.adapter_name("  ")
