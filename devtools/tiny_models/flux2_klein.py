"""Tiny FLUX.2 [klein]: a Flux2KleinPipeline shaped like black-forest-labs/FLUX.2-klein-4B.

Shapes follow the real model where the pipeline depends on them: the FLUX.2 VAE (AutoencoderKLFlux2,
scale factor 8, 32 latent channels, its batch-norm statistics over 2x2-patchified latents), a
transformer taking those 2x2 patches as 128 channels and Qwen3 hidden states 9, 18 and 27 stacked as its
context (3 x the encoder width), no guidance embedding, ``is_distilled`` as the 4-step checkpoint and
FLUX.2's dynamically shifted flow-matching schedule. diffusers 0.42 has no FLUX.2 ControlNet, so there
is no control model to build. torch and diffusers are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.tiny_models.qwen_text import QWEN_SIZES, qwen3_text_encoder, qwen_tokenizer

FLUX2_LATENT_CHANNELS = 32
KLEIN_TEXT_LAYERS = (9, 18, 27)  # the pipeline's default text_encoder_out_layers


@dataclass(frozen=True)
class TinyFlux2Sizes:
    heads: int = 2
    head_dim: int = 16
    rope_axes: tuple[int, int, int, int] = (4, 4, 4, 4)  # (T, H, W, L); sums to head_dim like (32,) * 4 for 128
    vae_channels: tuple[int, int, int, int] = (8, 8, 16, 16)  # 4 blocks -> factor 8
    vae_groups: int = 8


FLUX2_SIZES = TinyFlux2Sizes()


def _vae(seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    n = len(FLUX2_SIZES.vae_channels)
    vae: Any = AutoencoderKLFlux2(
        block_out_channels=FLUX2_SIZES.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1,
        latent_channels=FLUX2_LATENT_CHANNELS,
        norm_num_groups=FLUX2_SIZES.vae_groups,
        sample_size=64,
    )
    return vae.eval()


def _transformer(seed: int) -> Any:
    import torch
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    transformer: Any = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * FLUX2_LATENT_CHANNELS,  # the pipeline packs 2x2 latent patches into channels
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=FLUX2_SIZES.head_dim,
        num_attention_heads=FLUX2_SIZES.heads,
        joint_attention_dim=len(KLEIN_TEXT_LAYERS) * QWEN_SIZES.hidden,
        timestep_guidance_channels=32,
        axes_dims_rope=FLUX2_SIZES.rope_axes,
        guidance_embeds=False,  # klein is not guidance-distilled: the pipeline passes guidance=None
    )
    return transformer.eval()


def flux2_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.2's schedule: resolution-dependent shift (the pipeline passes mu), exponential time shift.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )


def build_flux2_klein(scratch: Path, seed: int = 0) -> Any:
    """A Flux2KleinPipeline; ``scratch`` is unused (the tokenizer is built in memory)."""
    from diffusers import Flux2KleinPipeline

    return Flux2KleinPipeline(
        scheduler=flux2_scheduler(),
        vae=_vae(seed),
        text_encoder=qwen3_text_encoder(seed + 1, layers=QWEN_SIZES.klein_layers, causal_lm=True),
        tokenizer=qwen_tokenizer(),
        transformer=_transformer(seed + 2),
        is_distilled=True,  # as FLUX.2-klein-4B (step-distilled; guidance_scale is ignored)
    )
