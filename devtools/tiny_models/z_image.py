"""Tiny Z-Image: a ZImagePipeline shaped like Tongyi-MAI/Z-Image-Turbo, and a ZImageControlNetModel for it.

Shapes follow the real model where the pipelines depend on them: the FLUX.1-style AutoencoderKL (scale
factor 8, 16 latent channels, scaling and shift factors), a single-stream transformer on 2x2 latent patches
whose caption features are Qwen3's second-to-last hidden states, Z-Image-Turbo's fixed-shift flow-matching
schedule. The ControlNet is shaped like the Z-Image-Turbo-Fun-Controlnet-Union 2.x ones: 33 control
channels (16 control-image latents, 1 mask, 16 masked-image latents: ZImageControlNetPipeline zero-fills the
last 17, ZImageControlNetInpaintPipeline fills them) and control blocks beside the noise refiner. torch
and diffusers are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.tiny_models.diffusion import CONTROLNET_EMBEDDING_GAIN, CONTROLNET_OUT_SCALE
from devtools.tiny_models.flux import latent16_vae
from devtools.tiny_models.qwen_image import reinit_linears
from devtools.tiny_models.qwen_text import QWEN_SIZES, qwen3_text_encoder, qwen_tokenizer

Z_IMAGE_LATENT_CHANNELS = 16
# What the 2.x Union ControlNets take: control latents (16) + inverted mask (1) + masked-image latents (16).
Z_IMAGE_CONTROL_IN_DIM = 2 * Z_IMAGE_LATENT_CHANNELS + 1


@dataclass(frozen=True)
class TinyZImageSizes:
    dim: int = 32
    heads: int = 2  # head_dim 16
    rope_axes: tuple[int, int, int] = (4, 6, 6)  # (caption/frame, H, W); sums to head_dim like (32, 48, 48)
    layers: int = 1
    refiner_layers: int = 1


Z_IMAGE_SIZES = TinyZImageSizes()


def _vae(seed: int) -> Any:
    # Z-Image decodes with the FLUX.1 autoencoder (16 channels, scaling 0.3611, shift 0.1159, no quant convs).
    return latent16_vae(seed, 0.3611, 0.1159).eval()


def _transformer(seed: int) -> Any:
    import torch
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(seed)
    transformer: Any = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=Z_IMAGE_LATENT_CHANNELS,
        dim=Z_IMAGE_SIZES.dim,
        n_layers=Z_IMAGE_SIZES.layers,
        n_refiner_layers=Z_IMAGE_SIZES.refiner_layers,
        n_heads=Z_IMAGE_SIZES.heads,
        n_kv_heads=Z_IMAGE_SIZES.heads,
        cap_feat_dim=QWEN_SIZES.hidden,
        axes_dims=list(Z_IMAGE_SIZES.rope_axes),
    )
    return transformer.eval()


def z_image_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    # Z-Image-Turbo's schedule: a fixed shift of 3 (no resolution-dependent shift).
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def build_z_image(scratch: Path, seed: int = 0) -> Any:
    """A ZImagePipeline; ``scratch`` is unused (the tokenizer is built in memory)."""
    from diffusers import ZImagePipeline

    return ZImagePipeline(
        scheduler=z_image_scheduler(),
        vae=_vae(seed),
        text_encoder=qwen3_text_encoder(seed + 1, layers=QWEN_SIZES.layers, causal_lm=False),
        tokenizer=qwen_tokenizer(),
        transformer=_transformer(seed + 2),
    )


def build_z_image_controlnet(scratch: Path, seed: int = 0, salt: int = 0) -> Any:
    """A ZImageControlNetModel for the tiny Z-Image. It holds only its own control blocks, as the real
    checkpoints do: the ControlNet pipelines lend it the base transformer's embedders and refiners
    (``ZImageControlNetModel.from_transformer``), so it fits the tiny base whatever its ``seed``.

    ``seed`` and ``salt`` seed the weights; the control blocks' zero-initialised input and output projections
    (before_proj / after_proj) get seeded random values (see CONTROLNET_OUT_SCALE and
    CONTROLNET_EMBEDDING_GAIN) so that the control image and its weight reach the output.
    """
    import torch
    from diffusers import ZImageControlNetModel

    torch.manual_seed(seed + 100 + salt)
    controlnet: Any = ZImageControlNetModel(
        control_layers_places=[0],
        control_refiner_layers_places=[0],
        control_in_dim=Z_IMAGE_CONTROL_IN_DIM,
        add_control_noise_refiner="control_noise_refiner",
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        dim=Z_IMAGE_SIZES.dim,
        n_refiner_layers=Z_IMAGE_SIZES.refiner_layers,
        n_heads=Z_IMAGE_SIZES.heads,
        n_kv_heads=Z_IMAGE_SIZES.heads,
    )
    modules = dict(controlnet.named_modules())
    reinit_linears([m for name, m in modules.items() if name.endswith("after_proj")], CONTROLNET_OUT_SCALE)
    # The control tokens are added to the image tokens (before_proj(control) + x): the VAE latents of an
    # untrained encoder vary little between images, so their projection gets a larger gain.
    reinit_linears([m for name, m in modules.items() if name.endswith("before_proj")], CONTROLNET_EMBEDDING_GAIN)
    return controlnet.eval()
