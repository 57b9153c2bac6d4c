"""Seconds per denoising step on CUDA: diffusers' defaults against the backend's speed settings.

    python bench/gpu.py [--steps 20] [--warmup 5] [--dtype fp16|bf16] [--compile] [--only sd15|sdxl]
    python bench/gpu.py --flops-only

Cases: SD 1.5 UNet + depth ControlNet at 512² (latents 64²) and the SDXL UNet at 1024² (latents 128²), their
full-size architectures built from the published configs (written below) with random weights: the same FLOPs
and kernels as the real models, no download. One step is the model forward(s) of a classifier-free-guidance
batch of 2, under inference mode, timed with CUDA events; the median over ``--steps`` after ``--warmup``.
"defaults" is the models as diffusers builds them (its SDPA processor, NCHW, cuDNN heuristics); "ours" is the
same models after ``backend.diffusion.speedups.apply_speedups`` (what the backend applies on CUDA); ``--compile``
adds ours with torch.compile (minutes of compiling first). Prints seconds per step, ``ratio N.Nx`` (goal: ours
>= 1.5x the defaults) and the fraction of the GPU's dense fp16/bf16 tensor peak that the step reaches; FLOPs
are counted with torch.utils.flop_counter on the meta device (no memory, about a second per model).

Without CUDA it prints that it skipped and exits 0; ``--flops-only`` needs no CUDA and prints the FLOPs only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `backend` is top level

import torch  # noqa: E402

SKIP_LINE = "bench/gpu.py: skipped: no CUDA device (torch.cuda.is_available() is False)"
GOAL = 1.5

# runwayml/stable-diffusion-v1-5 unet/config.json (859.52M parameters)
SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
}
# lllyasviel/control_v11f1p_sd15_depth config.json (361.28M parameters): the SD 1.5 UNet's encoder + mid block.
SD15_DEPTH_CONTROLNET: dict[str, Any] = {
    "in_channels": 4, "layers_per_block": 2, "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": SD15_UNET["down_block_types"], "cross_attention_dim": 768, "attention_head_dim": 8,
    "norm_num_groups": 32, "conditioning_embedding_out_channels": (16, 32, 96, 256),
}
# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (2567.46M parameters)
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (5, 10, 20), "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048,
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32,
}

# Dense (no 2:4 sparsity) fp16/bf16 tensor-core peak with fp32 accumulation, TFLOPS, from NVIDIA's datasheets
# (H100 / H200 datasheet, A100 datasheet, L40S datasheet) and the Ada whitepaper's table for the RTX 4090
# (GeForce: 165.2 with fp32 accumulate, which PyTorch's fp16 matmuls use; 330.3 is with fp16 accumulate).
# Matched in order against torch.cuda.get_device_name(): specific names before their family.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.5), ("H100", 989.4),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("H200 NVL", 835.5), ("H200", 989.4),
    ("A100", 312.0), ("L40S", 362.05), ("RTX 4090", 165.2),
)


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS if key.lower() in device_name.lower()), None)


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    latent: int  # latent side: image side / 8
    models: tuple[str, ...]  # of "unet", "controlnet"
    unet: dict[str, Any]
    text_width: int  # cross-attention input width


CASES = (
    Case("sd15", "SD 1.5 UNet + depth ControlNet 512²", 64, ("controlnet", "unet"), SD15_UNET, 768),
    Case("sdxl", "SDXL UNet 1024²", 128, ("unet",), SDXL_UNET, 2048),
)
BATCH = 2  # classifier-free guidance: the conditional and unconditional halves in one batch


def build(case: Case, name: str, device: str, dtype: torch.dtype) -> Any:
    """A model of the case, random weights initialised directly on ``device`` (meta: shapes only)."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its warning on .to(dtype) is about from_pretrained's fp32 modules
    with torch.device(device):
        model = (ControlNetModel(**SD15_DEPTH_CONTROLNET) if name == "controlnet"
                 else UNet2DConditionModel(**case.unet))
    return model.to(dtype=dtype).eval()


def inputs(case: Case, device: str, dtype: torch.dtype) -> dict[str, Any]:
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    found: dict[str, Any] = {
        "sample": rand(BATCH, 4, case.latent, case.latent),
        "timestep": torch.full((BATCH,), 999, device=device, dtype=torch.long),
        "encoder_hidden_states": rand(BATCH, 77, case.text_width),
    }
    if case.key == "sdxl":  # pooled text features (1280) + 6 size/crop numbers
        found["added_cond_kwargs"] = {"text_embeds": rand(BATCH, 1280), "time_ids": rand(BATCH, 6)}
    if "controlnet" in case.models:
        found["controlnet_cond"] = rand(BATCH, 3, case.latent * 8, case.latent * 8)
    return found


def step_fn(case: Case, models: dict[str, Any], args: dict[str, Any]) -> Callable[[], Any]:
    """One denoising step: ControlNet (if any) then UNet, as the pipelines call them."""
    common = {k: args[k] for k in ("sample", "timestep", "encoder_hidden_states")}
    extra = {k: args[k] for k in ("added_cond_kwargs",) if k in args}

    def step() -> Any:
        residuals: dict[str, Any] = {}
        if "controlnet" in models:
            down, mid = models["controlnet"](**common, controlnet_cond=args["controlnet_cond"],
                                             conditioning_scale=1.0, return_dict=False)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return models["unet"](**common, **extra, **residuals, return_dict=False)[0]

    return step


def count_flops(case: Case) -> dict[str, tuple[int, int]]:
    """(FLOPs per step, parameters) of each model of ``case``, on the meta device (shapes only)."""
    from torch.utils.flop_counter import FlopCounterMode

    dtype = torch.float16
    models = {name: build(case, name, "meta", dtype) for name in case.models}
    args = inputs(case, "meta", dtype)
    common = {k: args[k] for k in ("sample", "timestep", "encoder_hidden_states")}
    out: dict[str, tuple[int, int]] = {}
    with torch.inference_mode():
        residuals: dict[str, Any] = {}
        if "controlnet" in models:
            with FlopCounterMode(display=False) as counter:
                down, mid = models["controlnet"](**common, controlnet_cond=args["controlnet_cond"],
                                                 return_dict=False)
            out["controlnet"] = (counter.get_total_flops(), _params(models["controlnet"]))
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        extra = {k: args[k] for k in ("added_cond_kwargs",) if k in args}
        with FlopCounterMode(display=False) as counter:
            models["unet"](**common, **extra, **residuals, return_dict=False)
        out["unet"] = (counter.get_total_flops(), _params(models["unet"]))
    return out


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def time_steps(step: Callable[[], Any], steps: int, warmup: int) -> float:
    """Median seconds per step, each step timed with CUDA events."""
    with torch.inference_mode():
        for _ in range(warmup):
            step()
        torch.cuda.synchronize()
        times = []
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
    return statistics.median(times)


def run_case(case: Case, dtype: torch.dtype, steps: int, warmup: int, compile_mode: str | None,
             peak: float | None) -> float:
    """Print the case's lines; the ratio ours / defaults (best of ours)."""
    from backend.diffusion.speedups import Speedups, apply_speedups

    flops = sum(f for f, _ in count_flops(case).values())
    models = {name: build(case, name, "cuda", dtype) for name in case.models}
    step = step_fn(case, models, inputs(case, "cuda", dtype))
    torch.backends.cudnn.benchmark = False  # diffusers' default: PyTorch's
    rows = [("defaults", time_steps(step, steps, warmup), "")]
    applied: list[str] = []
    for model in models.values():
        applied = apply_speedups(model, "cuda", dtype, Speedups())
    rows.append(("ours", time_steps(step, steps, warmup), ", ".join(applied)))
    if compile_mode is not None:
        for model in models.values():
            apply_speedups(model, "cuda", dtype, Speedups(compile=True, compile_mode=compile_mode))
        rows.append((f"ours + compile({compile_mode})", time_steps(step, steps, max(warmup, 3)), ""))
    print(f"{case.label}, CFG batch {BATCH}, {dtype_label(dtype)}: {flops / 1e12:.3f} TFLOP per step, "
          f"median of {steps} steps after {warmup}")
    for name, seconds, what in rows:
        share = f"{flops / seconds / (peak * 1e12):6.1%} of peak" if peak else "peak unknown"
        print(f"  {name:<40} {seconds:8.4f} s/step  {flops / seconds / 1e12:7.1f} TFLOPS  {share}"
              f"{'  [' + what + ']' if what else ''}")
    best = min(seconds for _, seconds, _ in rows[1:])
    ratio = rows[0][1] / best
    print(f"  ratio {ratio:.1f}x (goal >= {GOAL:.1f}x: {'met' if ratio >= GOAL else 'not met'})")
    return ratio


def dtype_label(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def flops_only(cases: list[Case]) -> None:
    for case in cases:
        counts = count_flops(case)
        for name, (flops, params) in counts.items():
            print(f"flops {case.key}-{name}: {flops / 1e12:.3f} TFLOP per step (CFG batch {BATCH}), "
                  f"{params / 1e6:.2f}M parameters")
        print(f"flops {case.key}-step: {sum(f for f, _ in counts.values()) / 1e12:.3f} TFLOP per step "
              f"({case.label})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument("--only", choices=[c.key for c in CASES])
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs on the meta device; no CUDA needed")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.only in (None, c.key)]
    if args.flops_only:
        flops_only(cases)
        return 0
    if not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name)
    print(f"{name}: dense {args.dtype} peak {f'{peak:.1f} TFLOPS' if peak else 'unknown'}; torch {torch.__version__}")
    ratios = [run_case(case, dtype, args.steps, args.warmup, args.compile_mode if args.compile else None, peak)
              for case in cases]
    print(f"ratio {min(ratios):.1f}x (the smaller of the cases; goal >= {GOAL:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
