"""Tiny FLUX.1 pipeline and union ControlNet builders.

Shapes follow FLUX.1-dev where FluxPipeline depends on them: a CLIP text encoder for the pooled
prompt and a T5 encoder for the token features (text_encoder_2, required), a 16-channel VAE with
scale factor 8 and FLUX's scaling / shift factors, latents packed 2 x 2 into 64 transformer input
channels, distilled guidance (``guidance_embeds``) so ``guidance_scale`` reaches the model, RoPE axes
summing to the head width, and FLUX.1-dev's dynamically shifted flow-matching schedule. The
ControlNet is a union one like InstantX's (``num_mode`` control kinds picked by ``control_mode``).
torch and diffusers are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.tiny_models.diffusion import CONTROLNET_OUT_SCALE, SIZES, _text_encoder, _vae
from devtools.tiny_models.t5 import t5_encoder, t5_tokenizer
from devtools.tiny_models.tokenizer import _tokenizer

FLUX_LATENT_CHANNELS = 16
FLUX_VAE_SCALING = 0.3611  # black-forest-labs/FLUX.1-dev vae/config.json
FLUX_VAE_SHIFT = 0.1159
# FLUX.1-dev's scheduler/scheduler_config.json: the shift grows with the image's token count.
FLUX_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
}
UNION_MODES = 10  # InstantX/FLUX.1-dev-Controlnet-Union's num_mode
# The union mode reaches the image as one extra text token among 513 (T5's 512 + the mode): with random weights
# attention is near uniform, so the mode would move the image by ~3e-5 (invisible in 8 bits). The tiny ControlNet's
# joint blocks get their context keys' RMS-norm weight times this gain: sharper attention over the text tokens, so
# that the mode token stands out (then 2e-3 to 4e-3, as much as a mirrored control image).
UNION_KEY_GAIN = 16.0


@dataclass(frozen=True)
class TinyFluxSizes:
    heads: int = 2
    head_dim: int = 16
    rope_axes: tuple[int, int, int] = (4, 6, 6)  # (index, row, column); sums to head_dim
    layers: int = 1  # double-stream (joint) blocks
    single_layers: int = 1
    t5_width: int = 32  # joint_attention_dim
    controlnet_layers: int = 1
    controlnet_single_layers: int = 1


FLUX_SIZES = TinyFluxSizes()


def latent16_vae(seed: int, scaling_factor: float, shift_factor: float) -> Any:
    """The FLUX.1 / SD 3 style AutoencoderKL: 16 latent channels, 4 blocks (factor 8), no quant convs."""
    return _vae(seed, scaling_factor, latent_channels=FLUX_LATENT_CHANNELS, shift_factor=shift_factor,
                use_quant_conv=False, use_post_quant_conv=False)  # as the real FLUX.1 and SD 3 VAEs


def _transformer_config() -> dict[str, Any]:
    return {
        "patch_size": 1,
        "in_channels": 4 * FLUX_LATENT_CHANNELS,  # 2 x 2 latent patches packed into tokens
        "num_layers": FLUX_SIZES.layers,
        "num_single_layers": FLUX_SIZES.single_layers,
        "attention_head_dim": FLUX_SIZES.head_dim,
        "num_attention_heads": FLUX_SIZES.heads,
        "joint_attention_dim": FLUX_SIZES.t5_width,
        "pooled_projection_dim": SIZES.text_hidden,  # the CLIP encoder's pooled output
        "guidance_embeds": True,  # FLUX.1-dev (schnell has none)
        "axes_dims_rope": FLUX_SIZES.rope_axes,
    }


def _transformer(seed: int) -> Any:
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer: Any = FluxTransformer2DModel(**_transformer_config())
    # The prompt reaches the image through the output projection: it must not start at zero.
    if not bool(transformer.proj_out.weight.abs().sum()):
        raise AssertionError("FluxTransformer2DModel.proj_out is all zeros")
    return transformer.eval()


def flux_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)


def build_flux(scratch: Path, seed: int = 0) -> Any:
    from diffusers import FluxPipeline

    return FluxPipeline(
        scheduler=flux_scheduler(),
        vae=latent16_vae(seed, FLUX_VAE_SCALING, FLUX_VAE_SHIFT),
        text_encoder=_text_encoder(seed + 1),
        tokenizer=_tokenizer(scratch),
        text_encoder_2=t5_encoder(seed + 3, FLUX_SIZES.t5_width),
        tokenizer_2=t5_tokenizer(scratch),
        transformer=_transformer(seed + 2),
    )


def build_flux_controlnet(scratch: Path, seed: int = 0, salt: int = 0, union: bool = True) -> Any:
    """A union FluxControlNetModel for the tiny FLUX.1 pipeline built with the same ``seed`` (``union`` False: a
    single-control one, as Jasper AI's surface-normal ControlNet).

    As ``FluxControlNetModel.from_transformer`` does, its embedders and blocks start as copies of the base
    transformer's; ``salt`` seeds what differs between controls: the mode embedding and the input / output
    projections diffusers zero-initialises, given seeded random values (times CONTROLNET_OUT_SCALE) so that
    the control image and its weight reach the image; see UNION_KEY_GAIN for the mode. The bytes depend on
    ``seed`` and ``salt`` only.
    """
    import torch
    from diffusers import FluxControlNetModel

    base = _transformer(seed + 2)
    config = {**_transformer_config(), "num_layers": FLUX_SIZES.controlnet_layers,
              "num_single_layers": FLUX_SIZES.controlnet_single_layers, "num_mode": UNION_MODES if union else None}
    torch.manual_seed(seed + 100 + salt)
    controlnet: Any = FluxControlNetModel(**config)
    for name in ("time_text_embed", "context_embedder", "x_embedder"):
        getattr(controlnet, name).load_state_dict(getattr(base, name).state_dict())
    controlnet.transformer_blocks.load_state_dict(base.transformer_blocks.state_dict(), strict=False)
    controlnet.single_transformer_blocks.load_state_dict(base.single_transformer_blocks.state_dict(), strict=False)
    with torch.no_grad():
        for linear in (controlnet.controlnet_x_embedder, *controlnet.controlnet_blocks,
                       *controlnet.controlnet_single_blocks):
            linear.reset_parameters()  # PyTorch's default init, from the seeded global generator
            linear.weight.mul_(CONTROLNET_OUT_SCALE)
            linear.bias.mul_(CONTROLNET_OUT_SCALE)
        for block in controlnet.transformer_blocks if union else ():
            block.attn.norm_added_k.weight.mul_(UNION_KEY_GAIN)
    return controlnet.eval()
