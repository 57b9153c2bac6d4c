"""Tiny Qwen-Image: a QwenImagePipeline shaped like Qwen/Qwen-Image, and QwenImageControlNetModels for it.

Shapes follow the real model where the pipelines depend on them: the causal 3D VAE AutoencoderKLQwenImage
(three spatial downsamplings -> factor 8, 16 latent channels with Qwen-Image's per-channel mean and std),
a transformer taking 2x2 latent patches (64 channels) and Qwen2.5-VL hidden states as its context, no
guidance embedding (true CFG with a negative prompt), the dynamically shifted flow-matching schedule of
Qwen-Image. A ControlNet, like the InstantX ones, is the base transformer's first blocks plus a linear
embedding of the packed control latents and one linear output per block. torch and diffusers are imported
inside functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.tiny_models.diffusion import CONTROLNET_OUT_SCALE
from devtools.tiny_models.qwen_text import QWEN_SIZES, qwen25_vl_text_encoder, qwen_tokenizer

QWEN_IMAGE_LATENT_CHANNELS = 16
# QwenImageControlNetInpaintPipeline packs the masked image's latents with the (inverted) mask, 16 + 1
# channels, into 2x2 patches: 68 = the 64 patch channels + 4 extra (as InstantX/Qwen-Image-ControlNet-Inpainting).
INPAINT_EXTRA_CHANNELS = 4
# Untrained, this VAE decodes every latent to a nearly flat grey (pixel std ~0.04 in [0, 1]); its last
# convolution is scaled up so that what the transformer changes shows in the pixels.
VAE_OUT_GAIN = 6.0


@dataclass(frozen=True)
class TinyQwenImageSizes:
    heads: int = 2
    head_dim: int = 16
    rope_axes: tuple[int, int, int] = (4, 6, 6)  # (frame, H, W); sums to head_dim like (16, 56, 56) for 128
    layers: int = 1
    controlnet_layers: int = 1
    vae_base: int = 8
    vae_mult: tuple[int, int, int, int] = (1, 1, 2, 2)  # 4 levels, 3 downsamplings -> factor 8


QWEN_IMAGE_SIZES = TinyQwenImageSizes()


def reinit_linears(linears: Iterable[Any], scale: float) -> None:
    """Give (zero-initialised) linear layers PyTorch's default init times ``scale``, from the seeded
    global generator: diffusers zero-initialises control outputs, so untrained they would change nothing."""
    import torch

    with torch.no_grad():
        for linear in linears:
            linear.reset_parameters()
            linear.weight.mul_(scale)
            if linear.bias is not None:
                linear.bias.mul_(scale)


def _vae(seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    vae: Any = AutoencoderKLQwenImage(
        base_dim=QWEN_IMAGE_SIZES.vae_base,
        z_dim=QWEN_IMAGE_LATENT_CHANNELS,
        dim_mult=list(QWEN_IMAGE_SIZES.vae_mult),
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # as the real VAE (time is 1 frame for images)
    )
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(VAE_OUT_GAIN)
        vae.decoder.conv_out.bias.mul_(VAE_OUT_GAIN)
    return vae.eval()


def _transformer_config() -> dict[str, Any]:
    return {
        "patch_size": 2,
        "in_channels": 4 * QWEN_IMAGE_LATENT_CHANNELS,
        "out_channels": QWEN_IMAGE_LATENT_CHANNELS,
        "num_layers": QWEN_IMAGE_SIZES.layers,
        "attention_head_dim": QWEN_IMAGE_SIZES.head_dim,
        "num_attention_heads": QWEN_IMAGE_SIZES.heads,
        "joint_attention_dim": QWEN_SIZES.qwen_vl_hidden,
        "guidance_embeds": False,
        "axes_dims_rope": QWEN_IMAGE_SIZES.rope_axes,
    }


def _transformer(seed: int) -> Any:
    import torch
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    transformer: Any = QwenImageTransformer2DModel(**_transformer_config())
    return transformer.eval()


def qwen_image_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    # Qwen-Image's schedule: resolution-dependent exponential shift up to 8192 tokens, stretched so the
    # last sigma ends at 0.02.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )


def build_qwen_image(scratch: Path, seed: int = 0) -> Any:
    """A QwenImagePipeline; ``scratch`` is unused (the tokenizer is built in memory)."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline(
        scheduler=qwen_image_scheduler(),
        vae=_vae(seed),
        text_encoder=qwen25_vl_text_encoder(seed + 1),
        tokenizer=qwen_tokenizer(),
        transformer=_transformer(seed + 2),
    )


def build_qwen_image_controlnet(scratch: Path, seed: int = 0, salt: int = 0, inpaint: bool = False) -> Any:
    """A QwenImageControlNetModel for the tiny Qwen-Image built with the same ``seed``.

    Like a real one before training, its blocks are copied from the base transformer
    (``from_transformer``); ``salt`` seeds what differs between controls: the control embedding and the
    per-block outputs, made non-zero (see CONTROLNET_OUT_SCALE) so the control image reaches the
    transformer. ``inpaint``: the variant QwenImageControlNetInpaintPipeline needs (mask channels added).
    """
    import torch
    from diffusers import QwenImageControlNetModel

    transformer = _transformer(seed + 2)  # the same weights as the base pipeline's transformer
    torch.manual_seed(seed + 100 + salt)
    controlnet: Any = QwenImageControlNetModel.from_transformer(
        transformer,
        num_layers=QWEN_IMAGE_SIZES.controlnet_layers,
        attention_head_dim=QWEN_IMAGE_SIZES.head_dim,
        num_attention_heads=QWEN_IMAGE_SIZES.heads,
        extra_condition_channels=INPAINT_EXTRA_CHANNELS if inpaint else 0,
    )
    reinit_linears([controlnet.controlnet_x_embedder, *controlnet.controlnet_blocks], CONTROLNET_OUT_SCALE)
    return controlnet.eval()
