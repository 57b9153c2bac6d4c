"""Switching LoRAs between jobs on a warm pipeline against reloading the pipeline with the other LoRA.

    python bench/lora_switch.py [TINY_DIR] [--repeat 7] [--full-size]

TINY_DIR: a make-tiny folder (with loras/); without it the tiny SD 1.5 and SDXL pipelines and their LoRAs are
built into a temporary folder. --full-size: an SD 1.5 pipeline of the real architecture (860M-parameter UNet,
CLIP ViT-L text encoder, the real VAE) with random weights, saved like a downloaded model, and two rank-4 kohya
LoRAs over every attention and feed-forward layer (what costs time is the same as with real weights).
Warm: one StableDiffusionPipeline holds both LoRAs (each loaded once, before timing);
every job switches with ``apply_loras`` (style-a, then style-b, alternating) and ``clear_loras`` after it, as the
backend does. Cold: every job loads the pipeline with ``from_pretrained`` and then ``load_lora_weights`` the other
LoRA. CPU, float32. Prints the median milliseconds per switch of both and the ratio (goal: >= 10x).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `backend` is top level
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backend.models.lora import LoraFile, apply_loras, clear_loras  # noqa: E402
from devtools.tiny_models import SD15_DIR, SDXL_DIR, build_sd15, build_sdxl  # noqa: E402
from devtools.tiny_models import lora as tiny_loras  # noqa: E402


def build_tiny(dest: Path) -> Path:
    """Only what this benchmark needs: the SD 1.5 and SDXL pipelines (write_tiny reads both) and the LoRAs."""
    for name, build in ((SD15_DIR, build_sd15), (SDXL_DIR, build_sdxl)):
        build(dest, 0).save_pretrained(str(dest / name), safe_serialization=True)
    tiny_loras.write_tiny(dest, 0)
    return dest


def build_full_size(dest: Path) -> Path:
    """SD 1.5's architecture (facts from its published configs) with random weights, and two LoRAs for it."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from devtools.tiny_models.tokenizer import _tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=_tokenizer(dest), unet=unet,
                                   scheduler=EulerDiscreteScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(dest / SD15_DIR), safe_serialization=True)
    out = dest / tiny_loras.LORA_DIR
    out.mkdir(parents=True, exist_ok=True)
    unet_layers = tiny_loras._unet_linears(dest / SD15_DIR)
    tiny_loras._save(out / tiny_loras.SD15_A, tiny_loras._unet_tensors(unet_layers, 1))
    tiny_loras._save(out / tiny_loras.SD15_B, tiny_loras._unet_tensors(unet_layers, 2))
    return dest


def lora_file(path: Path) -> LoraFile:
    return LoraFile(path, 1.0, hashlib.sha256(path.read_bytes()).hexdigest(), path.stem)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tiny_dir", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--full-size", action="store_true", help="SD 1.5's real architecture, random weights")
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    scratch = Path(tempfile.mkdtemp(prefix="sd-lora-bench-"))
    folder = build_full_size(scratch) if args.full_size else args.tiny_dir or build_tiny(scratch)
    model = str(folder / SD15_DIR)
    files = [lora_file(folder / tiny_loras.LORA_DIR / name) for name in (tiny_loras.SD15_A, tiny_loras.SD15_B)]

    def load() -> Any:
        pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    warm = load()
    for lora in files:  # each LoRA loaded once, as the first job that uses it would
        apply_loras(warm, "sd15", [lora])
    clear_loras(warm)
    switches = []
    for job in range(2 * args.repeat):
        started = time.perf_counter()
        apply_loras(warm, "sd15", [files[job % 2]])
        clear_loras(warm)
        switches.append(time.perf_counter() - started)
    reloads = []
    for job in range(args.repeat):
        started = time.perf_counter()
        pipe = load()
        pipe.load_lora_weights(str(files[job % 2].path), adapter_name="job")
        reloads.append(time.perf_counter() - started)
        del pipe
    switch_ms, reload_ms = 1000 * statistics.median(switches), 1000 * statistics.median(reloads)
    size = "full-size SD 1.5 architecture, random weights" if args.full_size else "tiny SD 1.5"
    print(f"{size} ({folder}), two kohya LoRAs, CPU float32, median of {len(switches)} switches / "
          f"{len(reloads)} reloads")
    print(f"{'switch on a warm pipeline':<34} {switch_ms:9.2f} ms")
    print(f"{'reload pipeline + other LoRA':<34} {reload_ms:9.2f} ms")
    print(f"ratio {reload_ms / switch_ms:.1f}x")
    shutil.rmtree(scratch, ignore_errors=True)  # the full-size model is 4 GB
    return 0


if __name__ == "__main__":
    sys.exit(main())
