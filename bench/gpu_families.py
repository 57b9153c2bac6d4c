"""Seconds per denoising step of every image family on CUDA, at full size, with and without the VRAM-budget modes.

    python bench/gpu_families.py [--families flux,sd3_large] [--steps 8] [--warmup 2] [--modes high,12gb,8gb,group]
    python bench/gpu_families.py --cpu-smoke    # every family scaled down, one mode, on the CPU: the code path only

Families: SD 1.5 (512²) and SDXL, FLUX.1-dev, FLUX.2 klein 4B, Qwen-Image, Z-Image Turbo, SD 3.5 Large and
Medium (1024²). Each denoiser (UNet or transformer) and VAE is built from the real model's config (written below,
with the model each comes from) with random weights in bf16 directly on the GPU: the same FLOPs, kernels and
memory as the real model, no download. The text encoders are not built: the pipeline is called with random prompt
embeddings of the real shapes (its text encoder slots empty), so a step is what the pipeline does per step (the
denoiser forward, twice where the family runs classifier-free guidance, and the scheduler step).

One timed pipeline call per family and mode of ``warmup + steps + 1`` steps: each step's end is stamped from the
pipeline's step-end callback after a CUDA synchronize; "s/step" is the median of the last ``steps`` gaps (the
first, which also moves offloaded weights on and compiles kernels, is left out); "decode" is the time from the
last step to the image (the VAE decode: what tiling changes); "peak" is torch.cuda.max_memory_allocated.

Modes (backend/diffusion/memory.py's plans, through apply_memory_plan as the backend places pipelines):
``high`` all on the GPU, ``12gb`` + VAE tiling, ``8gb`` model CPU offload + tiling, ``6gb`` sequential offload
+ tiling + attention slicing (slow: every weight crosses PCIe every step; not run unless asked), and ``group``:
diffusers' group offload of the denoiser (leaf level, CUDA streams) with the rest on the GPU, which the backend
does not use (yet): a measure of what it would cost. Each line has ``ratio N.Nx``: that mode's s/step over the
first mode's (``high`` by default), and the same for the whole call (model offload costs per call, not per step).

Without CUDA it prints that it skipped and exits 0. Imports torch only at module level.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `backend` is top level
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/gpu.py's configs

import torch  # noqa: E402

SKIP_LINE = "bench/gpu_families.py: skipped: no CUDA device (torch.cuda.is_available() is False)"
GIB = 1024**3

# --- denoisers: the real models' configs --------------------------------------------------------------------

# SD 1.5 and SDXL: the UNet configs bench/gpu.py times (stable-diffusion-v1-5, stable-diffusion-xl-base-1.0).
from gpu import SD15_UNET, SDXL_UNET  # noqa: E402

# black-forest-labs/FLUX.1-dev transformer/config.json (11.9B parameters)
FLUX_DEV: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
# black-forest-labs/FLUX.2-klein-4B transformer/config.json (the distilled 4B; joint width = 3 Qwen3-4B layers x 2560)
FLUX2_KLEIN_4B: dict[str, Any] = {
    "patch_size": 1, "in_channels": 128, "num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 7680, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32), "rope_theta": 2000, "eps": 1e-6, "guidance_embeds": False,
}
# Qwen/Qwen-Image transformer/config.json (20B parameters)
QWEN_IMAGE: dict[str, Any] = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 3584, "guidance_embeds": False, "axes_dims_rope": (16, 56, 56),
}
# Tongyi-MAI/Z-Image-Turbo transformer/config.json (6B parameters)
Z_IMAGE_TURBO: dict[str, Any] = {
    "all_patch_size": (2,), "all_f_patch_size": (1,), "in_channels": 16, "dim": 3840, "n_layers": 30,
    "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-5, "qk_norm": True, "cap_feat_dim": 2560,
    "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": (32, 48, 48), "axes_lens": (1536, 512, 512),
}
# stabilityai/stable-diffusion-3.5-large transformer/config.json (8.1B parameters; no dual-attention layers)
SD35_LARGE: dict[str, Any] = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 38,
    "attention_head_dim": 64, "num_attention_heads": 38, "joint_attention_dim": 4096, "caption_projection_dim": 2432,
    "pooled_projection_dim": 2048, "pos_embed_max_size": 192, "qk_norm": "rms_norm", "dual_attention_layers": (),
}
# stabilityai/stable-diffusion-3.5-medium transformer/config.json (2.5B parameters; MMDiT-X: dual attention 0-12)
SD35_MEDIUM: dict[str, Any] = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
    "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "pos_embed_max_size": 384, "qk_norm": "rms_norm",
    "dual_attention_layers": tuple(range(13)),
}

# --- VAEs ---------------------------------------------------------------------------------------------------

_KL_BLOCKS: dict[str, Any] = {
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
}
# stable-diffusion-v1-5 vae/config.json; stabilityai/sdxl-vae differs only in scaling_factor 0.13025
SD_VAE: dict[str, Any] = {**_KL_BLOCKS, "latent_channels": 4, "sample_size": 512, "scaling_factor": 0.18215}
SDXL_VAE: dict[str, Any] = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025}
# black-forest-labs/FLUX.1-dev vae/config.json; Tongyi-MAI/Z-Image-Turbo ships the same VAE (16 latent channels)
FLUX_VAE: dict[str, Any] = {**_KL_BLOCKS, "latent_channels": 16, "sample_size": 1024, "scaling_factor": 0.3611,
                            "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False}
# stabilityai/stable-diffusion-3.5-large vae/config.json (Medium's is the same)
SD3_VAE: dict[str, Any] = {**_KL_BLOCKS, "latent_channels": 16, "sample_size": 1024, "scaling_factor": 1.5305,
                           "shift_factor": 0.0609, "use_quant_conv": False, "use_post_quant_conv": False}
# FLUX.2's AutoencoderKLFlux2 and Qwen-Image's AutoencoderKLQwenImage: diffusers 0.42's defaults, which are those
# models' vae/config.json as far as could be checked (Qwen-Image: base_dim 96, z_dim 16, dim_mult 1,2,4,4 seen in
# published copies of the config; FLUX.2's 32 latent channels and 128/256/512/512 blocks not confirmed from the
# repo itself).
FLUX2_VAE: dict[str, Any] = {}
QWEN_VAE: dict[str, Any] = {}


def _flow_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    # The sigma schedule does not change a step's cost; dynamic shifting because FLUX and Qwen-Image pass mu.
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)


def _sd_scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


# --- families -----------------------------------------------------------------------------------------------

Embeds = Callable[[torch.device, torch.dtype], dict[str, Any]]


def _rand(device: torch.device, dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    generator = torch.Generator(device).manual_seed(0)
    return lambda *shape: torch.randn(*shape, generator=generator, device=device, dtype=dtype)


def _sd_embeds(width: int, pooled: int = 0) -> Embeds:
    def make(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        rand = _rand(device, dtype)
        found = {"prompt_embeds": rand(1, 77, width), "negative_prompt_embeds": rand(1, 77, width)}
        if pooled:  # SDXL: OpenCLIP bigG's pooled output
            found |= {"pooled_prompt_embeds": rand(1, pooled), "negative_pooled_prompt_embeds": rand(1, pooled)}
        return found
    return make


def _flux_embeds(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    rand = _rand(device, dtype)  # T5-XXL padded to 512 tokens; CLIP-L pooled
    return {"prompt_embeds": rand(1, 512, 4096), "pooled_prompt_embeds": rand(1, 768)}


def _flux2_embeds(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    rand = _rand(device, dtype)  # Qwen3-4B, 3 layers stacked, padded to 512 tokens
    return {"prompt_embeds": rand(1, 512, 7680)}


PROMPT_TOKENS = 128  # Qwen-Image and Z-Image keep only the prompt's own tokens: a longish prompt (a choice)


def _qwen_embeds(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    rand = _rand(device, dtype)  # Qwen2.5-VL-7B hidden states; true CFG: a negative prompt too
    mask = torch.ones(1, PROMPT_TOKENS, device=device, dtype=torch.long)
    return {"prompt_embeds": rand(1, PROMPT_TOKENS, 3584), "prompt_embeds_mask": mask,
            "negative_prompt_embeds": rand(1, PROMPT_TOKENS, 3584), "negative_prompt_embeds_mask": mask}


def _z_image_embeds(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    return {"prompt_embeds": [_rand(device, dtype)(PROMPT_TOKENS, 2560)]}  # Qwen3-4B hidden states, one per image


def _sd3_embeds(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    rand = _rand(device, dtype)  # CLIP-L + CLIP-G (77) then T5-XXL (256) tokens; pooled CLIP-L + CLIP-G
    return {"prompt_embeds": rand(1, 333, 4096), "negative_prompt_embeds": rand(1, 333, 4096),
            "pooled_prompt_embeds": rand(1, 2048), "negative_pooled_prompt_embeds": rand(1, 2048)}


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    size: int  # image side in pixels
    pipeline: str  # diffusers pipeline class
    denoiser_cls: str
    denoiser: dict[str, Any]
    vae_cls: str
    vae: dict[str, Any]
    scheduler: Callable[[], Any]
    embeds: Embeds
    call: dict[str, Any]  # guidance arguments, as the family runs (default steps' guidance)
    forwards: int  # denoiser forwards per step: 2 with classifier-free guidance
    smoke: dict[str, Any] = field(default_factory=dict)  # denoiser overrides for --cpu-smoke
    init: dict[str, Any] = field(default_factory=dict)  # extra pipeline constructor arguments

    @property
    def slot(self) -> str:
        return "unet" if self.denoiser_cls == "UNet2DConditionModel" else "transformer"


_SMOKE_UNET = {"block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
               "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "layers_per_block": 1, "norm_num_groups": 8}
_SD_INIT = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

FAMILIES = (
    Family("sd15", "SD 1.5", 512, "StableDiffusionPipeline", "UNet2DConditionModel", SD15_UNET, "AutoencoderKL",
           SD_VAE, _sd_scheduler, _sd_embeds(768), {"guidance_scale": 7.5}, 2, _SMOKE_UNET, _SD_INIT),
    Family("sdxl", "SDXL", 1024, "StableDiffusionXLPipeline", "UNet2DConditionModel", SDXL_UNET, "AutoencoderKL",
           SDXL_VAE, _sd_scheduler, _sd_embeds(2048, 1280), {"guidance_scale": 5.0}, 2,
           {**_SMOKE_UNET, "attention_head_dim": (2, 4), "transformer_layers_per_block": (1, 1)}),
    Family("flux", "FLUX.1-dev", 1024, "FluxPipeline", "FluxTransformer2DModel", FLUX_DEV, "AutoencoderKL", FLUX_VAE,
           _flow_scheduler, _flux_embeds, {"guidance_scale": 3.5}, 1,
           {"num_layers": 1, "num_single_layers": 1, "num_attention_heads": 2}),
    Family("flux2_klein", "FLUX.2 klein 4B", 1024, "Flux2KleinPipeline", "Flux2Transformer2DModel", FLUX2_KLEIN_4B,
           "AutoencoderKLFlux2", FLUX2_VAE, _flow_scheduler, _flux2_embeds, {"guidance_scale": 1.0}, 1,
           {"num_layers": 1, "num_single_layers": 1, "num_attention_heads": 2}, {"is_distilled": True}),
    Family("qwen_image", "Qwen-Image", 1024, "QwenImagePipeline", "QwenImageTransformer2DModel", QWEN_IMAGE,
           "AutoencoderKLQwenImage", QWEN_VAE, _flow_scheduler, _qwen_embeds, {"true_cfg_scale": 4.0}, 2,
           {"num_layers": 1, "num_attention_heads": 2}),
    Family("z_image", "Z-Image Turbo", 1024, "ZImagePipeline", "ZImageTransformer2DModel", Z_IMAGE_TURBO,
           "AutoencoderKL", FLUX_VAE, _flow_scheduler, _z_image_embeds, {"guidance_scale": 0.0}, 1,
           {"dim": 256, "n_heads": 2, "n_kv_heads": 2, "n_layers": 1, "n_refiner_layers": 1}),
    Family("sd3_large", "SD 3.5 Large", 1024, "StableDiffusion3Pipeline", "SD3Transformer2DModel", SD35_LARGE,
           "AutoencoderKL", SD3_VAE, _flow_scheduler, _sd3_embeds, {"guidance_scale": 3.5}, 2,
           {"num_layers": 1, "num_attention_heads": 2, "caption_projection_dim": 128}),
    Family("sd3_medium", "SD 3.5 Medium", 1024, "StableDiffusion3Pipeline", "SD3Transformer2DModel", SD35_MEDIUM,
           "AutoencoderKL", SD3_VAE, _flow_scheduler, _sd3_embeds, {"guidance_scale": 4.5}, 2,
           {"num_layers": 1, "num_attention_heads": 2, "caption_projection_dim": 128, "dual_attention_layers": (0,)}),
)
# The backend's family key of each case (sd3_large / sd3_medium are both "sd3").
FAMILY_KEYS = {f.key: ("sd3" if f.key.startswith("sd3") else f.key) for f in FAMILIES}
# VAE overrides for --cpu-smoke: the same depth (so the same scale factor), narrow.
_SMOKE_VAE: dict[str, dict[str, Any]] = {
    "AutoencoderKL": {"block_out_channels": (32, 32, 32, 32), "layers_per_block": 1},
    "AutoencoderKLFlux2": {"block_out_channels": (32, 32, 32, 32), "layers_per_block": 1},
    "AutoencoderKLQwenImage": {"base_dim": 16, "num_res_blocks": 1},
}
SMOKE_SIZE = 128

# --- modes --------------------------------------------------------------------------------------------------

MODES = ("high", "12gb", "8gb", "group", "6gb")
DEFAULT_MODES = ("high", "12gb", "8gb", "group")
MODE_LABELS = {"high": "all on the device", "12gb": "VAE tiling", "8gb": "model offload + tiling",
               "group": "group offload (denoiser)", "6gb": "sequential offload + tiling + slicing"}


def build(family: Family, device: str, dtype: torch.dtype, smoke: bool) -> Any:
    """The family's pipeline without text encoders, random weights created in ``dtype`` on ``device``."""
    import diffusers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # no "text encoder missing" / dtype chatter
    denoiser_config = {**family.denoiser, **(family.smoke if smoke else {})}
    vae_config = {**family.vae, **(_SMOKE_VAE[family.vae_cls] if smoke else {})}
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        # Made in dtype on the device: no fp32 copy first (FLUX.1 would take 48 GB, Qwen-Image 80 GB).
        torch.set_default_dtype(dtype)
        with torch.device(device):
            denoiser = getattr(diffusers, family.denoiser_cls)(**denoiser_config)
            vae = getattr(diffusers, family.vae_cls)(**vae_config)
    finally:
        torch.set_default_dtype(previous)
    denoiser, vae = denoiser.to(dtype=dtype).eval(), vae.to(dtype=dtype).eval()
    parts: dict[str, Any] = {family.slot: denoiser, "vae": vae, "scheduler": family.scheduler(), **family.init}
    cls = getattr(diffusers, family.pipeline)
    for name in cls._get_signature_keys(cls)[0]:  # every text encoder / tokenizer slot: empty
        parts.setdefault(name, None)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_parameters(family: Family) -> int:
    """The full-size denoiser's parameters, built on the meta device (shapes only: no memory, no CUDA)."""
    import diffusers

    with torch.device("meta"):
        model = getattr(diffusers, family.denoiser_cls)(**family.denoiser)
    return sum(p.numel() for p in model.parameters())


def place(pipe: Any, family: Family, mode: str, device: str) -> Any:
    """Put ``pipe`` on ``device`` the way ``mode`` says (the backend's memory plans; group: diffusers' hooks)."""
    from backend.diffusion.memory import apply_memory_plan, plan_memory
    from backend.diffusion.speedups import APPLIED_ATTR, Speedups, apply_speedups

    if mode != "group":
        return apply_memory_plan(pipe, plan_memory(mode, device, None), device)
    # The speed settings the backend's memory-saving plans get (no fused copies), before the hooks copy weights.
    setattr(pipe, APPLIED_ATTR, apply_speedups(pipe, device, pipe.vae.dtype, Speedups.from_env(),
                                               memory_saving=True))
    getattr(pipe, family.slot).to("cpu")  # built on the GPU; its offloaded home is the CPU
    # Leaf level with CUDA streams: each layer's weights arrive while the previous layer runs; the VAE stays on.
    pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                              offload_type="leaf_level", use_stream=True, exclude_modules=["vae"])
    return pipe


@dataclass(frozen=True)
class Timing:
    step: float  # median seconds per step
    decode: float  # last step to image
    total: float  # the whole call
    peak_gib: float | None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(pipe: Any, family: Family, device: str, dtype: torch.dtype, size: int, steps: int,
              warmup: int) -> Timing:
    """One pipeline call of ``warmup + steps + 1`` steps, each step's end stamped after a synchronize."""
    stamps: list[float] = []

    def on_step_end(_pipe: Any, _step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        _sync(device)
        stamps.append(time.perf_counter())
        return kwargs

    embeds = family.embeds(torch.device(device), dtype)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        pipe(**embeds, **family.call, height=size, width=size, num_inference_steps=warmup + steps + 1,
             output_type="pt", callback_on_step_end=on_step_end,
             generator=torch.Generator("cpu").manual_seed(0))
    _sync(device)
    end = time.perf_counter()
    gaps = [b - a for a, b in itertools.pairwise(stamps)][warmup:]
    peak = torch.cuda.max_memory_allocated() / GIB if device.startswith("cuda") else None
    return Timing(statistics.median(gaps), end - stamps[-1], end - start, peak)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_family(family: Family, modes: list[str], device: str, dtype: torch.dtype, steps: int, warmup: int,
               smoke: bool) -> dict[str, Timing]:
    """Print one line per mode (``family mode s/step ... ratio N.Nx``); the timings."""
    size = SMOKE_SIZE if smoke else family.size
    from backend.diffusion.speedups import applied_speedups

    found: dict[str, Timing] = {}
    applied: dict[str, list[str]] = {}
    params = 0
    for mode in modes:
        pipe = build(family, device, dtype, smoke)
        params = sum(p.numel() for p in getattr(pipe, family.slot).parameters())
        try:
            pipe = place(pipe, family, mode, device)
            applied[mode] = applied_speedups(pipe)
            found[mode] = time_call(pipe, family, device, dtype, size, steps, warmup)
        except torch.OutOfMemoryError as exc:  # a mode that does not fit this card: say so, go on
            print(f"{family.key} {mode} out of memory: {str(exc).splitlines()[0]}")
            continue
        finally:
            del pipe
            _free(device)
        t = found[mode]
        speedups = ", ".join(applied[mode]) or "no speedups"
        base = found.get(modes[0])
        ratio = f"ratio {t.step / base.step:.1f}x (call {t.total / base.total:.1f}x)" if base else "ratio n/a"
        peak = f"peak {t.peak_gib:5.1f} GiB" if t.peak_gib is not None else "peak n/a"
        print(f"{family.key} {mode} {t.step:.4f} s/step  decode {t.decode:.3f} s  call {t.total:.2f} s  {peak}  "
              f"{ratio}  [{MODE_LABELS[mode]}; {family.label} {size}², {params / 1e6:.1f}M denoiser parameters, "
              f"{family.forwards} forward{'s' if family.forwards > 1 else ''}/step; {speedups}]")
        sys.stdout.flush()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(f.key for f in FAMILIES),
                        help=f"comma-separated, of: {', '.join(f.key for f in FAMILIES)}")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per call (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="every family scaled down (one or two layers, narrow) on the CPU, in fp32, mode high "
                             "only: the code path, not a speed")
    args = parser.parse_args(argv)
    by_key = {f.key: f for f in FAMILIES}
    families, modes = args.families.split(","), args.modes.split(",")
    unknown = [k for k in families if k not in by_key] + [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if args.cpu_smoke:
        print(f"cpu smoke: {len(families)} families scaled down, {SMOKE_SIZE}², fp32, mode high; torch "
              f"{torch.__version__}")
        for key in families:
            run_family(by_key[key], ["high"], "cpu", torch.float32, max(args.steps, 1), args.warmup, smoke=True)
        for key in families:  # the full-size configs build (and their sizes match the published ones)
            print(f"{key} full size: {count_parameters(by_key[key]) / 1e6:.1f}M denoiser parameters")
        return 0
    if not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    print(f"{torch.cuda.get_device_name()}: {torch.cuda.get_device_properties(0).total_memory / GIB:.0f} GiB; "
          f"bf16; torch {torch.__version__}; median of {args.steps} steps after {args.warmup}")
    for key in families:
        run_family(by_key[key], modes, "cuda", torch.bfloat16, args.steps, args.warmup, smoke=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
