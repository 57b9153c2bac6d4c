"""Tiny SD 1.5, SDXL, Marigold and ControlNet models: their components and pipeline builders.

Shapes follow the real models where the pipelines depend on them (VAE scale factor 8, 4 latent
channels, 77-token prompts, SDXL's text-time conditioning, Marigold's image + target latents stacked
on the UNet's channels, a ControlNet's encoder copied from its base model's UNet); widths and depths
are as small as the classes allow. torch, diffusers and transformers are imported inside functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.tiny_models.tokenizer import BOS, EOS, MAX_TOKENS, _tokenizer, tokenizer_vocab

LATENT_CHANNELS = 4

# diffusers zero-initialises a ControlNet's "zero convolutions" (the conditioning embedding's
# last one and the residual outputs), so training starts from the plain UNet: untrained, a
# ControlNet would change nothing. The tiny ones get seeded random values instead: the residual
# outputs PyTorch's default init times CONTROLNET_OUT_SCALE, the embedding He init with its last
# layer times CONTROLNET_EMBEDDING_GAIN, so that both a control's weight and its image show in
# the output (tests check both).
CONTROLNET_OUT_SCALE = 0.5
CONTROLNET_EMBEDDING_GAIN = 4.0

# What prs-eth/marigold-iid-appearance-v1-1 predicts: two targets, each an RGB-like image;
# "material" stacks roughness and metallicity in its first two channels (the third is unused).
APPEARANCE_TARGETS: dict[str, Any] = {
    "target_names": ["albedo", "material"],
    "albedo": {"prediction_space": "srgb"},
    "material": {"prediction_space": "stack", "sub_target_names": ["roughness", "metallicity", None]},
    "roughness": {"prediction_space": "linear", "up_to_scale": False},
    "metallicity": {"prediction_space": "linear", "up_to_scale": False},
}
MARIGOLD_STEPS = 1  # default_denoising_steps of the tiny models (the real v1-1 ones: 4)
MARIGOLD_RESOLUTION = 64  # default_processing_resolution (the real ones: 768)


@dataclass(frozen=True)
class TinySizes:
    """Widths of the tiny components (one place to keep them consistent)."""

    text_hidden: int = 32  # the CLIP text encoder (SDXL: the first one)
    # SDXL's second (OpenCLIP bigG-like) encoder is wider than its first, as in the real model (1280 vs 768):
    # diffusers' single-file loader tells the two apart by their widths.
    text_hidden_2: int = 48
    text_layers: int = 2
    text_heads: int = 4
    unet_channels: tuple[int, int] = (32, 64)
    unet_heads: tuple[int, int] = (2, 4)
    latent_size: int = 8  # 8 latents * VAE factor 8 = 64 px default image
    vae_channels: tuple[int, int, int, int] = (8, 8, 16, 16)  # 4 blocks -> factor 8
    vae_groups: int = 8
    time_embed_dim: int = 8  # SDXL addition_time_embed_dim
    # ControlNet conditioning embedding: 3 stride-2 convolutions take image pixels to latents (/8).
    controlnet_embedding: tuple[int, int, int, int] = (8, 8, 16, 16)


SIZES = TinySizes()


# --- components ------------------------------------------------------------------------


def _text_config(vocab_size: int, projection_dim: int, hidden: int) -> Any:
    from transformers import CLIPTextConfig

    vocab = tokenizer_vocab()
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=SIZES.text_layers,
        num_attention_heads=SIZES.text_heads,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=projection_dim,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],  # the encoder pools at this id
        pad_token_id=vocab[EOS],
    )


def _text_encoder(seed: int, with_projection: bool = False, hidden: int | None = None) -> Any:
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    width = hidden or SIZES.text_hidden
    config = _text_config(len(tokenizer_vocab()), projection_dim=width, hidden=width)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def _vae(seed: int, scaling_factor: float, latent_channels: int = LATENT_CHANNELS, **extra: Any) -> Any:
    """The tiny AutoencoderKL (4 blocks: factor 8); ``extra``: other config values (FLUX.1's shift factor ...)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    n = len(SIZES.vae_channels)
    return AutoencoderKL(
        block_out_channels=SIZES.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=SIZES.vae_groups,
        sample_size=SIZES.latent_size * 2 ** (n - 1),
        scaling_factor=scaling_factor,
        **extra,
    )


def _unet(seed: int, sdxl: bool, marigold_targets: int = 0) -> Any:
    """The denoiser. ``marigold_targets`` > 0: a Marigold UNet predicting that many targets.

    Marigold concatenates the image latent (4 channels) and the noisy target latents (4 per
    target) on the channel axis and predicts the targets' noise: in 4 * (1 + T), out 4 * T.
    Its UNet comes from Stable Diffusion 2, which uses linear projections in its transformers.
    """
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    extra: dict[str, Any] = {}
    cross_dim = SIZES.text_hidden
    in_channels = out_channels = LATENT_CHANNELS
    if marigold_targets:
        in_channels = LATENT_CHANNELS * (1 + marigold_targets)
        out_channels = LATENT_CHANNELS * marigold_targets
        extra = {"use_linear_projection": True}
    elif sdxl:
        # SDXL: prompt features of both encoders concatenated; pooled text embeds plus six
        # size/crop numbers (each time-embedded) feed the "text_time" added condition.
        cross_dim = SIZES.text_hidden + SIZES.text_hidden_2
        extra = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": SIZES.time_embed_dim,
            # the pooled (projected) features come from the second encoder
            "projection_class_embeddings_input_dim": 6 * SIZES.time_embed_dim + SIZES.text_hidden_2,
            "use_linear_projection": True,
        }
    return UNet2DConditionModel(
        sample_size=SIZES.latent_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=SIZES.unet_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=SIZES.unet_heads,  # diffusers' name for the number of heads
        norm_num_groups=8,
        cross_attention_dim=cross_dim,
        **extra,
    )


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    # The Stable Diffusion training schedule, so step counts behave like the real models.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )


def _marigold_scheduler() -> Any:
    from diffusers import DDIMScheduler

    # What the Marigold v1-1 checkpoints ship: DDIM on the Stable Diffusion schedule,
    # v-prediction, "trailing" timesteps (so one step starts from pure noise at t = 999).
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )


# --- pipelines -------------------------------------------------------------------------


def build_sd15(scratch: Path, seed: int = 0) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=_vae(seed, scaling_factor=0.18215),
        text_encoder=_text_encoder(seed + 1),
        tokenizer=_tokenizer(scratch),
        unet=_unet(seed + 2, sdxl=False),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(scratch: Path, seed: int = 0) -> Any:
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=_vae(seed, scaling_factor=0.13025),
        text_encoder=_text_encoder(seed + 1),
        text_encoder_2=_text_encoder(seed + 3, with_projection=True, hidden=SIZES.text_hidden_2),
        tokenizer=_tokenizer(scratch),
        tokenizer_2=_tokenizer(scratch),
        unet=_unet(seed + 2, sdxl=True),
        scheduler=_scheduler(),
    )


def build_marigold_intrinsics(scratch: Path, seed: int = 0) -> Any:
    """A MarigoldIntrinsicsPipeline shaped like marigold-iid-appearance (albedo + material)."""
    from diffusers import MarigoldIntrinsicsPipeline

    targets = len(APPEARANCE_TARGETS["target_names"])
    return MarigoldIntrinsicsPipeline(
        unet=_unet(seed + 2, sdxl=False, marigold_targets=targets),
        vae=_vae(seed, scaling_factor=0.18215),
        scheduler=_marigold_scheduler(),
        text_encoder=_text_encoder(seed + 1),
        tokenizer=_tokenizer(scratch),
        prediction_type="intrinsics",
        target_properties=APPEARANCE_TARGETS,
        default_denoising_steps=MARIGOLD_STEPS,
        default_processing_resolution=MARIGOLD_RESOLUTION,
    )


def build_marigold_normals(scratch: Path, seed: int = 0) -> Any:
    from diffusers import MarigoldNormalsPipeline

    return MarigoldNormalsPipeline(
        unet=_unet(seed + 2, sdxl=False, marigold_targets=1),
        vae=_vae(seed, scaling_factor=0.18215),
        scheduler=_marigold_scheduler(),
        text_encoder=_text_encoder(seed + 1),
        tokenizer=_tokenizer(scratch),
        prediction_type="normals",
        use_full_z_range=True,
        default_denoising_steps=MARIGOLD_STEPS,
        default_processing_resolution=MARIGOLD_RESOLUTION,
    )


def build_controlnet(seed: int, sdxl: bool, salt: int) -> Any:
    """A ControlNetModel for the tiny SD 1.5 (or SDXL) pipeline built with the same ``seed``.

    Like a real ControlNet before training, its encoder is a copy of the base UNet's
    (``ControlNetModel.from_unet``); ``salt`` seeds what differs between controls: the
    conditioning embedding and the output convolutions, which are made non-zero (see
    CONTROLNET_OUT_SCALE) so the control image reaches the UNet. The bytes depend on ``seed``
    and ``salt`` only.
    """
    import torch
    from diffusers import ControlNetModel

    unet = _unet(seed + 2, sdxl=sdxl)  # the same weights as the base pipeline's UNet
    torch.manual_seed(seed + 100 + salt)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=SIZES.controlnet_embedding)
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        # He initialisation without biases keeps the control image's variations alive through
        # the embedding's eight convolutions (PyTorch's default init shrinks them at every layer,
        # leaving little but the biases, the same for every image).
        for conv in (embedding.conv_in, *embedding.blocks, embedding.conv_out):
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
        embedding.conv_out.weight.mul_(CONTROLNET_EMBEDDING_GAIN)
        for conv in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
            conv.reset_parameters()  # PyTorch's default init, from the seeded global generator
            conv.weight.mul_(CONTROLNET_OUT_SCALE)
            conv.bias.mul_(CONTROLNET_OUT_SCALE)
    return controlnet.eval()


def _controlnet_builder(family: str, salt: int) -> Callable[[Path, int], Any]:
    def build(scratch: Path, seed: int = 0) -> Any:
        return build_controlnet(seed, sdxl=family == "sdxl", salt=salt)

    return build
