"""Tiny Stable Diffusion 3.5 pipeline and ControlNet builders.

Shapes follow SD 3.5 Large where StableDiffusion3Pipeline depends on them: two CLIP encoders with
projections, the second wider than the first (CLIP-L 768 / OpenCLIP bigG 1280 in the real model), whose
pooled outputs are concatenated into pooled_projection_dim and whose token features, zero-padded to the
T5 width, are stacked before T5's tokens on the joint_attention_dim axis; a 16-channel VAE with SD 3's
scaling / shift factors; 2 x 2 patches; RMS q/k norms (SD 3.5); and the flow-matching schedule with a
fixed shift of 3.0. The ControlNet is shaped like stabilityai's SD 3.5 Large ControlNets: no text
stream (joint_attention_dim None), the base transformer's positional embedding (use_pos_embed False)
and the real pooled prompt (force_zeros_for_pooled_projection False).
torch and diffusers are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.tiny_models.diffusion import CONTROLNET_OUT_SCALE, SIZES, _text_encoder
from devtools.tiny_models.flux import FLUX_LATENT_CHANNELS, latent16_vae
from devtools.tiny_models.t5 import t5_encoder, t5_tokenizer
from devtools.tiny_models.tokenizer import _tokenizer

SD3_VAE_SCALING = 1.5305  # stabilityai/stable-diffusion-3.5-large vae/config.json
SD3_VAE_SHIFT = 0.0609
SD3_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}


@dataclass(frozen=True)
class TinySD3Sizes:
    heads: int = 2
    head_dim: int = 16
    layers: int = 2  # the last block is context_pre_only, so one block takes ControlNet residuals
    # Patches per side the (saved) positional embedding covers: 64 * 2 (patch) * 8 (VAE) = 1024 px images at
    # most, the real models' native size.
    pos_embed_max_size: int = 64
    # The T5 width is joint_attention_dim: at least both CLIP widths together (their features are padded to it).
    t5_width: int = 96
    controlnet_layers: int = 1


SD3_SIZES = TinySD3Sizes()


def _transformer_config() -> dict[str, Any]:
    inner = SD3_SIZES.heads * SD3_SIZES.head_dim
    return {
        "sample_size": SIZES.latent_size,
        "patch_size": 2,
        "in_channels": FLUX_LATENT_CHANNELS,
        "num_layers": SD3_SIZES.layers,
        "attention_head_dim": SD3_SIZES.head_dim,
        "num_attention_heads": SD3_SIZES.heads,
        "joint_attention_dim": SD3_SIZES.t5_width,
        "caption_projection_dim": inner,
        "pooled_projection_dim": SIZES.text_hidden + SIZES.text_hidden_2,
        "out_channels": FLUX_LATENT_CHANNELS,
        "pos_embed_max_size": SD3_SIZES.pos_embed_max_size,
        "qk_norm": "rms_norm",  # SD 3.5 (SD 3 medium has none)
    }


def _transformer(seed: int) -> Any:
    import torch
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    transformer: Any = SD3Transformer2DModel(**_transformer_config())
    # The prompt reaches the image through the output projection: it must not start at zero.
    if not bool(transformer.proj_out.weight.abs().sum()):
        raise AssertionError("SD3Transformer2DModel.proj_out is all zeros")
    return transformer.eval()


def sd3_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER)


def build_sd3(scratch: Path, seed: int = 0) -> Any:
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(
        transformer=_transformer(seed + 2),
        scheduler=sd3_scheduler(),
        vae=latent16_vae(seed, SD3_VAE_SCALING, SD3_VAE_SHIFT),
        text_encoder=_text_encoder(seed + 1, with_projection=True),
        tokenizer=_tokenizer(scratch),
        text_encoder_2=_text_encoder(seed + 3, with_projection=True, hidden=SIZES.text_hidden_2),
        tokenizer_2=_tokenizer(scratch),
        text_encoder_3=t5_encoder(seed + 4, SD3_SIZES.t5_width),
        tokenizer_3=t5_tokenizer(scratch),
    )


def build_sd3_controlnet(scratch: Path, seed: int = 0, salt: int = 0) -> Any:
    """An SD3ControlNetModel for the tiny SD 3.5 pipeline built with the same ``seed``.

    Its timestep / pooled-text embedding starts as a copy of the base transformer's; ``salt`` seeds the
    rest, and the projections diffusers zero-initialises (the control latent's patch embedding and the
    per-block outputs) get seeded random values (times CONTROLNET_OUT_SCALE) so that the control image
    and its weight reach the image. The bytes depend on ``seed`` and ``salt`` only.
    """
    import torch
    from diffusers import SD3ControlNetModel

    base = _transformer(seed + 2)
    config = {**_transformer_config(), "num_layers": SD3_SIZES.controlnet_layers, "joint_attention_dim": None,
              "use_pos_embed": False, "pos_embed_type": None, "force_zeros_for_pooled_projection": False}
    torch.manual_seed(seed + 100 + salt)
    controlnet: Any = SD3ControlNetModel(**config)
    controlnet.time_text_embed.load_state_dict(base.time_text_embed.state_dict())
    with torch.no_grad():
        for layer in (controlnet.pos_embed_input.proj, *controlnet.controlnet_blocks):
            layer.reset_parameters()  # PyTorch's default init, from the seeded global generator
            layer.weight.mul_(CONTROLNET_OUT_SCALE)
            layer.bias.mul_(CONTROLNET_OUT_SCALE)
    return controlnet.eval()
