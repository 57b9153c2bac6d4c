"""The CUDA speed settings (backend/diffusion/speedups.py) on the tiny SD 1.5, on CPU.

Off CUDA nothing is applied. The settings themselves do not depend on the device, so they are checked here by
forcing the device string "cuda" on a CPU pipeline (or calling the helpers directly): channels-last weights,
fused q/k/v projections that compute what the unfused ones do, and LoRAs loaded after fusing that still apply
(and unload) exactly. Run: ``.venv/bin/python -m pytest tests/backend/test_speedups.py -q``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.diffusion import speedups
from backend.diffusion.memory import apply_memory_plan, plan_memory
from backend.diffusion.speedups import LoraSafeFusedProcessor, Speedups, applied_speedups, apply_speedups
from backend.models.lora import LoraFile, apply_loras, clear_loras
from devtools.tiny_models import build_sd15

TOL = 1e-5  # fp32: fusing only regroups the same products


@pytest.fixture()
def sd15(tmp_path: Path) -> Any:
    return build_sd15(tmp_path, 0)


@pytest.fixture(autouse=True)
def _keep_cudnn_flag() -> Iterator[None]:
    before = torch.backends.cudnn.benchmark  # apply_speedups sets it (process-wide) when told "cuda"
    yield
    torch.backends.cudnn.benchmark = before


def unet_out(pipe: Any) -> torch.Tensor:
    unet = pipe.unet
    gen = torch.Generator("cpu").manual_seed(5)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        return unet(sample, torch.tensor([500, 500]), text, return_dict=False)[0]


def processors(pipe: Any) -> set[str]:
    return {type(p).__name__ for p in pipe.unet.attn_processors.values()}


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_off_cuda_nothing_is_applied(sd15: Any, device: str) -> None:
    before = processors(sd15)
    everything = Speedups(compile=True)
    assert apply_speedups(sd15, device, torch.float16, everything) == []
    assert processors(sd15) == before
    assert sd15.unet.conv_in.weight.is_contiguous()
    assert getattr(sd15.unet, "_compiled_call_impl", None) is None


def test_placing_on_cpu_records_nothing(sd15: Any) -> None:
    pipe = apply_memory_plan(sd15, plan_memory("high", "cpu", None), "cpu")
    assert applied_speedups(pipe) == []
    assert processors(pipe) == {"AttnProcessor2_0"}


def test_forced_cuda_applies_the_defaults_and_keeps_the_output(sd15: Any) -> None:
    plain = unet_out(sd15)
    applied = apply_speedups(sd15, "cuda", torch.float16, Speedups())
    # diffusers already runs SDPA on PyTorch 2 (nothing to change); no compile by default; fp16 keeps the upcast
    assert applied == ["channels-last", "fused-qkv", "cudnn-benchmark"]
    assert sd15.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert sd15.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert processors(sd15) == {"LoraSafeFusedProcessor"}
    torch.testing.assert_close(unet_out(sd15), plain, atol=TOL, rtol=TOL)
    # idempotent: a ControlNet pipeline assembled from this one passes the same UNet through again
    assert apply_speedups(sd15, "cuda", torch.float16, Speedups()) == ["cudnn-benchmark"]


def test_the_whole_pipeline_still_generates_after_the_settings(sd15: Any) -> None:
    def generate(pipe: Any) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = pipe("a stone wall", num_inference_steps=2, width=64, height=64, output_type="pt",
                         generator=torch.Generator("cpu").manual_seed(3)).images
        return torch.as_tensor(image)

    plain = generate(sd15)
    apply_speedups(sd15, "cuda", torch.float32, Speedups())
    torch.testing.assert_close(generate(sd15), plain, atol=1e-4, rtol=1e-4)


def test_channels_last_is_converted_once(sd15: Any) -> None:
    assert speedups.to_channels_last(sd15)
    for model in (sd15.unet, sd15.vae):
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not speedups.to_channels_last(sd15)


def test_fused_qkv_equals_unfused(sd15: Any) -> None:
    plain = unet_out(sd15)
    assert speedups.fuse_qkv(sd15.unet)
    attention = sd15.unet.down_blocks[1].attentions[0].transformer_blocks[0]
    assert hasattr(attention.attn1, "to_qkv") and hasattr(attention.attn2, "to_kv")
    assert isinstance(attention.attn1.processor, LoraSafeFusedProcessor)
    torch.testing.assert_close(unet_out(sd15), plain, atol=TOL, rtol=TOL)
    assert not speedups.fuse_qkv(sd15.unet)  # already fused: left as it is


def test_sliced_attention_is_not_fused(sd15: Any) -> None:
    sd15.enable_attention_slicing()  # the UNet's processors (the VAE's stay plain SDPA)
    assert not speedups.fuse_qkv(sd15.unet)
    assert processors(sd15) == {"SlicedAttnProcessor"}
    assert "fused-qkv" not in apply_speedups(sd15, "cuda", torch.float16, Speedups(), memory_saving=True)


@pytest.mark.parametrize("budget", ["12gb", "8gb", "6gb"])
def test_memory_saving_plans_do_not_fuse(sd15: Any, budget: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plan as it is on a card; placing is stubbed (no CUDA here): only what is applied before it counts.
    plan = plan_memory(budget, "cuda", None)
    for name in ("to", "enable_model_cpu_offload", "enable_sequential_cpu_offload"):
        monkeypatch.setattr(type(sd15), name, lambda self, *a, **k: self)
    pipe = apply_memory_plan(sd15, plan, "cuda")
    assert applied_speedups(pipe) == ["channels-last", "cudnn-benchmark"]
    assert "LoraSafeFusedProcessor" not in processors(pipe)


def test_the_high_plan_fuses(sd15: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(sd15), "to", lambda self, *a, **k: self)
    pipe = apply_memory_plan(sd15, plan_memory("high", "cuda", None), "cuda")
    assert applied_speedups(pipe) == ["channels-last", "fused-qkv", "cudnn-benchmark"]


def write_lora(tmp_path: Path, seed: int) -> Path:
    """A diffusers-format LoRA over the tiny UNet's q/k/v/out projections, non-zero so that it shows."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = build_sd15(tmp_path, 0).unet
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)  # PEFT starts B at zero: an untrained LoRA changes nothing
    folder = tmp_path / "lora"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                              weight_name="style.safetensors", safe_serialization=True)
    return folder / "style.safetensors"


def test_lora_after_fusing_applies_and_unloads_exactly(tmp_path: Path) -> None:
    lora = LoraFile(write_lora(tmp_path, 11), 1.0, "0" * 64, "style")
    plain, fused = build_sd15(tmp_path, 0), build_sd15(tmp_path, 0)
    base = unet_out(plain)
    assert speedups.fuse_qkv(fused)
    apply_loras(plain, "sd15", [lora])
    apply_loras(fused, "sd15", [lora])
    with_lora = unet_out(plain)
    assert (with_lora - base).abs().max() > 1e-3  # the LoRA shows
    torch.testing.assert_close(unet_out(fused), with_lora, atol=TOL, rtol=TOL)
    # diffusers' own fused processor would run to_qkv, bypassing the LoRA's q/k/v layers: the reason for ours
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    fused.unet.set_attn_processor(FusedAttnProcessor2_0())
    assert (unet_out(fused) - with_lora).abs().max() > 1e-4
    fused.unet.set_attn_processor(LoraSafeFusedProcessor())
    clear_loras(fused)
    torch.testing.assert_close(unet_out(fused), base, atol=TOL, rtol=TOL)


def test_vae_upcast_is_dropped_only_in_bf16(sd15: Any) -> None:
    assert sd15.vae.config.force_upcast
    assert "vae-no-upcast" not in apply_speedups(sd15, "cuda", torch.float16, Speedups())
    assert sd15.vae.config.force_upcast
    assert "vae-no-upcast" in apply_speedups(sd15, "cuda", torch.bfloat16, Speedups())
    assert not sd15.vae.config.force_upcast


def test_compile_is_off_by_default_and_skipped_with_sequential_offload(sd15: Any) -> None:
    assert not Speedups().compile
    on = Speedups(compile=True)
    assert not any(a.startswith("compile") for a in
                   apply_speedups(sd15, "cuda", torch.float16, on, sequential_offload=True))
    assert getattr(sd15.unet, "_compiled_call_impl", None) is None
    applied = apply_speedups(sd15, "cuda", torch.float16, on)  # lazy: nothing compiles until a forward
    assert applied[-1] == f"compile({on.compile_mode})"
    assert getattr(sd15.unet, "_compiled_call_impl", None) is not None


def test_settings_from_the_environment() -> None:
    assert Speedups.from_env({}) == Speedups()
    assert Speedups.from_env({speedups.ENV_COMPILE: "1", speedups.ENV_COMPILE_MODE: "default"}) == \
        Speedups(compile=True, compile_mode="default")
    off = Speedups.from_env({speedups.ENV_SPEEDUPS: "0", speedups.ENV_COMPILE: "1"})
    assert not (off.sdpa or off.channels_last or off.fuse_qkv or off.cudnn_benchmark or off.compile)


def test_sdpa_replaces_only_the_legacy_processor(sd15: Any) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    sd15.unet.set_attn_processor(AttnProcessor())
    assert speedups.use_sdpa(sd15)
    assert processors(sd15) == {"AttnProcessor2_0"}
    assert not speedups.use_sdpa(sd15)


def test_the_cache_reports_what_its_models_run_with(sd15: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # What runner.py writes to job.json as backend.speedups: the settings of every loaded model, once each.
    from backend.models.cache import PipelineCache, _Loaded
    from backend.models.families import ModelSpec

    cache = PipelineCache("cuda", torch.float32)
    assert cache.speedups() == []
    monkeypatch.setattr(type(sd15), "to", lambda self, *a, **k: self)
    pipe = apply_memory_plan(sd15, plan_memory("high", "cuda", None), "cuda")
    spec = ModelSpec(name="tiny", source="tiny", family="sd15", kind="text_to_image")
    cache._loaded = {"a": _Loaded(spec, pipe), "b": _Loaded(spec, pipe)}
    assert cache.speedups() == ["channels-last", "fused-qkv", "cudnn-benchmark"]
