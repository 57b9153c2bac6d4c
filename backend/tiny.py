"""Tiny random-weight pipelines built with the real diffusers / transformers classes.

``python -m backend models make-tiny DIR`` calls :func:`make_tiny`. Tests and the offline
demo then load the result through the same registry and ``from_pretrained`` path as real
weights, so nothing ever downloads from a hub. Shapes follow the real models where the
pipelines depend on them (VAE scale factor 8, 4 latent channels, 77-token prompts, SDXL's
text-time conditioning, Marigold's image + target latents stacked on the UNet's channels, a
ControlNet's encoder copied from its base model's UNet, Shap-E's latent sized to its renderer's
MLP); widths and depths are as small as the classes allow. The Shap-E renderer is also fit, briefly
and deterministically, so that every latent decodes to a closed, coloured, roughly spherical surface
(random weights decode to no surface at all): see :func:`shape_shap_e_renderer`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTRY_FORMAT = 1
SD15_DIR = "sd15-tiny"
SDXL_DIR = "sdxl-tiny"
INTRINSICS_DIR = "marigold-intrinsics-tiny"
NORMALS_DIR = "marigold-normals-tiny"
SHAP_E_DIR = "shap-e-img2img-tiny"
LATENT_CHANNELS = 4

# ControlNets: registry role -> (folder, family). Their UNet-side weights are copied from the tiny
# SD 1.5 / SDXL UNet, so each matches the base pipeline of its family.
CONTROLNETS: dict[str, tuple[str, str]] = {
    "controlnet_depth": ("controlnet-depth-sd15-tiny", "sd15"),
    "controlnet_normal": ("controlnet-normal-sd15-tiny", "sd15"),
    "controlnet_canny": ("controlnet-canny-sd15-tiny", "sd15"),
    "controlnet_depth_sdxl": ("controlnet-depth-sdxl-tiny", "sdxl"),
    "controlnet_canny_sdxl": ("controlnet-canny-sdxl-tiny", "sdxl"),
}
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

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length; the pipelines pad and truncate to it
LOAD_KWARGS = ("is_local", "local_files_only")

# A handful of merges so the tokenizer exercises real BPE, not only single bytes.
MERGES = (("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "n"))


@dataclass(frozen=True)
class TinySizes:
    """Widths of the tiny components (one place to keep them consistent)."""

    text_hidden: int = 32  # each CLIP text encoder
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


POSENC_OCTAVES = 15  # diffusers' encode_position: the point, then sin and cos at 15 octaves
POSENC_FEATURES = 3 + 3 * 2 * POSENC_OCTAVES  # 93


@dataclass(frozen=True)
class TinyShapESizes:
    """Widths of the tiny Shap-E image-to-3D pipeline, and which ones must agree.

    The prior denoises ``num_embeddings`` latent vectors of ``latent_dim`` each; the renderer's
    ``params_proj`` turns consecutive runs of those vectors into the weights of the first four
    layers of its MLP (``param_shapes``: one vector per output row), so ``num_embeddings`` is the
    sum of the rows (4 x ``mlp_hidden``; the real model: 4 x 256 = 1024) and ``latent_dim`` is both
    the prior's ``embedding_dim`` and the renderer's ``d_latent`` (real: 1024). The prior reads the
    CLIP vision encoder's patch features: its ``embedding_proj_dim`` is the encoder's hidden size
    (real: 1024, ViT-L/14 at 224 px, 256 patches), and it predicts a mean and a variance per latent
    (``clip_embed_dim`` = 2 x ``latent_dim``). The first MLP layer reads the NeRF positional
    encoding of a point: 3 + 3 x 2 x 15 = 93 inputs.
    """

    mlp_hidden: int = 16  # renderer MLP width (real: 256)
    mlp_layers: int = 6  # the first 4 take their weights from the latent, as in the real model
    latent_dim: int = 16
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    vision_image: int = 32  # CLIP image processor size; 32 / 8 = 4 x 4 patches
    vision_patch: int = 8
    prior_heads: int = 2
    prior_head_dim: int = 8
    prior_layers: int = 2

    @property
    def param_shapes(self) -> tuple[tuple[int, int], ...]:
        return ((self.mlp_hidden, POSENC_FEATURES),) + ((self.mlp_hidden, self.mlp_hidden),) * 3

    @property
    def num_embeddings(self) -> int:
        return sum(rows for rows, _ in self.param_shapes)


SHAP_E_SIZES = TinyShapESizes()
SHAP_E_PARAM_NAMES = tuple(f"nerstf.mlp.{i}.weight" for i in range(4))
# Shaping (see shape_shap_e_renderer): the surface the tiny renderer learns, and how much the
# latent may move it.
SHAP_E_RADIUS = 0.5  # sphere radius in the renderer's [-1, 1]^3 volume
SHAP_E_LATENT_GAIN = 0.02  # LayerNorm gain of params_proj: how far a latent moves the MLP weights
SHAP_E_LOW_OCTAVES = 2  # positional-encoding octaves the first layer may use (a smooth field)
SHAP_E_FIT_STEPS = 300
SHAP_E_FIT_POINTS = 2048
SHAP_E_FIT_LR = 5e-2


# --- tokenizer -----------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2 / CLIP mapping).

    Printable Latin-1 bytes stand for themselves; the others are shifted past 255 so no
    symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + shifted)
            shifted += 1
    return [symbols[b] for b in range(256)]


def tokenizer_vocab() -> dict[str, int]:
    """Bytes, their end-of-word forms, merge results, then the two specials (last, as in CLIP)."""
    tokens = _byte_symbols()
    tokens += [s + "</w>" for s in tokens]
    tokens += [a + b for a, b in MERGES]
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}


def write_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt``: the files CLIPTokenizer reads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tokenizer_vocab(), ensure_ascii=False),
                                       encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in MERGES]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _tokenizer(scratch: Path) -> Any:
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(scratch / "tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)
    # transformers 5 saves how the tokenizer was loaded (is_local, local_files_only) into
    # tokenizer_config.json; drop it so the output does not depend on HF_HUB_OFFLINE.
    for key in LOAD_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


# --- components ------------------------------------------------------------------------


def _text_config(vocab_size: int, projection_dim: int) -> Any:
    from transformers import CLIPTextConfig

    vocab = tokenizer_vocab()
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=SIZES.text_hidden,
        intermediate_size=2 * SIZES.text_hidden,
        num_hidden_layers=SIZES.text_layers,
        num_attention_heads=SIZES.text_heads,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=projection_dim,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],  # the encoder pools at this id
        pad_token_id=vocab[EOS],
    )


def _text_encoder(seed: int, with_projection: bool = False) -> Any:
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = _text_config(len(tokenizer_vocab()), projection_dim=SIZES.text_hidden)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def _vae(seed: int, scaling_factor: float) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    n = len(SIZES.vae_channels)
    return AutoencoderKL(
        block_out_channels=SIZES.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=SIZES.vae_groups,
        sample_size=SIZES.latent_size * 2 ** (n - 1),
        scaling_factor=scaling_factor,
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
        cross_dim = 2 * SIZES.text_hidden
        extra = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": SIZES.time_embed_dim,
            "projection_class_embeddings_input_dim": 6 * SIZES.time_embed_dim + SIZES.text_hidden,
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
        text_encoder_2=_text_encoder(seed + 3, with_projection=True),
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


# --- Shap-E ----------------------------------------------------------------------------

# The corners of a marching-cubes cell are numbered x + 2y + 4z (bit set: the field is > 0, inside);
# its 12 edges as diffusers' MeshDecoder numbers them: 4 along x (at (y, z) = (0,0), (1,0), (0,1),
# (1,1)), then 4 along y (at (x, z)), then 4 along z (at (x, y)).


def _corner_bits(corner: int) -> tuple[int, int, int]:
    return corner & 1, (corner >> 1) & 1, (corner >> 2) & 1


def _edge_between(a: int, b: int) -> int:
    x, y, z = _corner_bits(a & b)  # the lower end
    axis = (a ^ b).bit_length() - 1
    return (y + 2 * z, 4 + x + 2 * z, 8 + x + 2 * y)[axis]


def _edge_ends(edge: int) -> tuple[int, int]:
    axis, k = divmod(edge, 4)
    u, v = [a for a in range(3) if a != axis]
    low = (k & 1) << u | (k >> 1) << v
    return low, low | 1 << axis


def _cube_faces() -> list[tuple[int, int, int, int]]:
    """The 6 faces, each as its 4 corners in cyclic order."""
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for side in (0, 1):
            faces.append(tuple(side << axis | du << u | dv << v for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1))))
    return faces  # type: ignore[return-value]


def marching_cubes_table() -> tuple[Any, Any]:
    """The lookup table diffusers' ``MeshDecoder`` reads: ``cases`` 256 x 5 x 3 (edge indices of up to
    5 triangles per corner configuration) and ``masks`` 256 x 5 (which of them exist).

    ``MeshDecoder`` keeps the table in buffers that a checkpoint fills (they are zeros when the class is
    constructed, and a decoder with zeros makes no triangles), so the tiny renderer carries its own,
    derived here from the cube rather than typed in. On each face the crossed edges are joined in pairs;
    a face with all four edges crossed (diagonal corners alike) is resolved by cutting each inside corner
    off on its own, which depends on that face's corners only, so neighbouring cells agree and the surface
    is closed. The segments chain into loops around the cell; each loop is ordered counter-clockwise seen
    from outside (normals point out of the solid) and cut into a triangle fan. No configuration needs more
    than 5 triangles.
    """
    import numpy as np

    cases = np.zeros((256, 5, 3), dtype=np.int64)
    masks = np.zeros((256, 5), dtype=bool)
    centres = {e: np.mean([_corner_bits(c) for c in _edge_ends(e)], axis=0) for e in range(12)}
    for config in range(256):
        inside = [bool(config >> c & 1) for c in range(8)]
        neighbours: dict[int, list[int]] = {}
        for face in _cube_faces():
            edges = [_edge_between(face[i], face[(i + 1) % 4]) for i in range(4)]
            crossed = [i for i in range(4) if inside[face[i]] != inside[face[(i + 1) % 4]]]
            if len(crossed) == 2:
                pairs = [(edges[crossed[0]], edges[crossed[1]])]
            else:  # 0 or 4 crossings; with 4, one segment around each inside corner
                pairs = [(edges[k - 1], edges[k]) for k in range(4) if len(crossed) == 4 and inside[face[k]]]
            for a, b in pairs:
                neighbours.setdefault(a, []).append(b)
                neighbours.setdefault(b, []).append(a)
        triangles: list[tuple[int, int, int]] = []
        seen: set[int] = set()
        for start in sorted(neighbours):
            if start in seen:
                continue
            loop, seen_here = [start], {start}
            while True:
                following = [n for n in neighbours[loop[-1]] if n not in seen_here]
                if not following:
                    break
                loop.append(following[0])
                seen_here.add(following[0])
            seen |= seen_here
            points = [centres[e] for e in loop]
            normal = sum(np.cross(points[i], points[(i + 1) % len(points)]) for i in range(len(points)))
            outward = np.zeros(3)
            for e in loop:
                low, high = _edge_ends(e)
                outward[e // 4] += 1.0 if inside[low] and not inside[high] else -1.0
            if float(np.dot(normal, outward)) < 0:
                loop.reverse()
            triangles += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        assert len(triangles) <= 5, (config, triangles)
        for i, triangle in enumerate(triangles):
            cases[config, i] = triangle
            masks[config, i] = True
    return cases, masks


def _shap_e_renderer(seed: int) -> Any:
    import torch
    from diffusers.pipelines.shap_e.renderer import ShapERenderer

    torch.manual_seed(seed)
    sizes = SHAP_E_SIZES
    renderer = ShapERenderer(
        param_names=SHAP_E_PARAM_NAMES,
        param_shapes=sizes.param_shapes,
        d_latent=sizes.latent_dim,
        d_hidden=sizes.mlp_hidden,
        n_output=12,  # sdf, 2 densities, 3 x RGB (stf, nerf coarse, nerf fine): fixed by the renderer
        n_hidden_layers=sizes.mlp_layers,
        act_fn="swish",
        insert_direction_at=4,
        background=(255.0, 255.0, 255.0),
    )
    cases, masks = marching_cubes_table()
    with torch.no_grad():
        renderer.mesh_decoder.cases.copy_(torch.from_numpy(cases))
        renderer.mesh_decoder.masks.copy_(torch.from_numpy(masks))
    shape_shap_e_renderer(renderer, seed + 1)
    return renderer.eval()


def _sphere_targets(points: Any) -> Any:
    """Raw (pre-activation) outputs of the renderer MLP for a coloured sphere of SHAP_E_RADIUS.

    Channel 0 is the signed distance (tanh; > 0 inside), 1-2 the NeRF densities (relu), 3-11 three
    RGB triples (sigmoid; the mesh colours are 3-5): a smooth colour by direction from the centre.
    """
    import torch

    radius = points.norm(dim=-1, keepdim=True)
    sdf = 2.0 * (SHAP_E_RADIUS - radius)
    density = 10.0 * (SHAP_E_RADIUS - radius)
    colour = 0.5 + 0.35 * points / radius.clamp_min(1e-6)
    logit = torch.log(colour / (1.0 - colour))
    return torch.cat([sdf, density, density, logit, logit, logit], dim=-1)


def shape_shap_e_renderer(renderer: Any, seed: int) -> None:
    """Fit the random renderer so that any latent decodes to a (slightly perturbed) coloured sphere.

    Random weights give a signed-distance field without a zero crossing (an empty mesh) or a noise
    of tiny blobs. The renderer's ``params_proj`` maps each latent vector through a linear layer and a
    LayerNorm to the weights of the MLP's first four layers: here the LayerNorm gain is
    SHAP_E_LATENT_GAIN (its shift zero), so a latent moves those weights by at most a few hundredths
    whatever its scale, and the projection biases carry the weights themselves. The first layer may
    only use the point and its SHAP_E_LOW_OCTAVES lowest positional-encoding octaves (its other
    columns stay zero), which keeps the field smooth. Adam then fits the projection biases and the
    MLP's own parameters, for random latents, to the analytic sphere (:func:`_sphere_targets`) at
    points drawn in the volume and near the surface. Seeded, on one thread: the same bytes every build.
    """
    import torch
    from torch.func import functional_call

    sizes = SHAP_E_SIZES
    generator = torch.Generator().manual_seed(seed)
    low = torch.zeros(POSENC_FEATURES)
    low[:3] = 1.0
    for octave in range(SHAP_E_LOW_OCTAVES):
        for start in (3, 3 + 3 * POSENC_OCTAVES):  # sines, then cosines (sin at +pi/2)
            low[start + 3 * octave:start + 3 * octave + 3] = 1.0
    mlp, projections = renderer.mlp, renderer.params_proj.projections
    trained: list[Any] = []
    with torch.no_grad():
        for index, (name, (rows, columns)) in enumerate(zip(SHAP_E_PARAM_NAMES, sizes.param_shapes, strict=True)):
            project = projections[name.replace(".", "__")]
            allowed = low if index == 0 else torch.ones(columns)
            project.norm.weight.copy_(SHAP_E_LATENT_GAIN * allowed)
            project.norm.bias.zero_()
            bound = float(allowed.sum()) ** -0.5  # PyTorch's default Linear range for the used inputs
            start = (torch.rand(rows, columns, generator=generator) * 2 - 1) * bound * allowed
            project.proj.bias.copy_(start.reshape(-1))
            trained.append(project.proj.bias)
    first_mask = low.repeat(sizes.param_shapes[0][0])
    projected = {name[len("nerstf."):] for name in SHAP_E_PARAM_NAMES}
    trained += [p for n, p in mlp.named_parameters() if n not in projected]
    raw: list[Any] = []
    hook = mlp.mlp[-1].register_forward_hook(lambda module, args, out: raw.append(out))
    optimiser = torch.optim.Adam(trained, lr=SHAP_E_FIT_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, SHAP_E_FIT_STEPS)
    weights = torch.tensor([8.0, 0.2, 0.2] + [1.0] * 9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        half = SHAP_E_FIT_POINTS // 2
        for _ in range(SHAP_E_FIT_STEPS):
            uniform = torch.rand(half, 3, generator=generator) * 2 - 1
            directions = torch.randn(half, 3, generator=generator)
            directions = directions / directions.norm(dim=-1, keepdim=True)
            shell = directions * (SHAP_E_RADIUS + (torch.rand(half, 1, generator=generator) - 0.5) * 0.3)
            points = torch.cat([uniform, shell])[None]
            latent = torch.randn(1, sizes.num_embeddings, sizes.latent_dim, generator=generator)
            params = {k[len("nerstf."):]: v[0] for k, v in renderer.params_proj(latent).items()}
            raw.clear()
            functional_call(mlp, params, (), {"position": points, "direction": None, "ts": None,
                                              "nerf_level": "fine", "rendering_mode": "stf"})
            loss = (((raw[0] - _sphere_targets(points)) ** 2) * weights).mean()
            optimiser.zero_grad()
            loss.backward()
            trained[0].grad *= first_mask  # the first layer keeps away from high frequencies
            optimiser.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
        hook.remove()
    with torch.no_grad():  # the MLP's own copies: what a latent of zeros would project to
        for name, shape in zip(SHAP_E_PARAM_NAMES, sizes.param_shapes, strict=True):
            mlp.get_parameter(name[len("nerstf."):]).copy_(projections[name.replace(".", "__")].proj.bias.view(shape))
    renderer.zero_grad(set_to_none=True)


def build_shap_e_img2img(scratch: Path, seed: int = 0) -> Any:
    """A ShapEImg2ImgPipeline shaped like openai/shap-e-img2img, with a renderer fit to a sphere."""
    import torch
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEImg2ImgPipeline
    from transformers import CLIPVisionConfig, CLIPVisionModel

    sizes = SHAP_E_SIZES
    torch.manual_seed(seed + 2)
    prior: Any = PriorTransformer(
        num_attention_heads=sizes.prior_heads,
        attention_head_dim=sizes.prior_head_dim,
        num_layers=sizes.prior_layers,
        embedding_dim=sizes.latent_dim,
        num_embeddings=sizes.num_embeddings,
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        embedding_proj_norm_type="layer",
        encoder_hid_proj_type=None,
        added_emb_type=None,
        time_embed_dim=4 * sizes.prior_heads * sizes.prior_head_dim,
        embedding_proj_dim=sizes.vision_hidden,
        clip_embed_dim=2 * sizes.latent_dim,  # mean and variance; the pipeline keeps the mean
    )
    torch.manual_seed(seed + 1)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=sizes.vision_hidden, intermediate_size=2 * sizes.vision_hidden,
        num_hidden_layers=sizes.vision_layers, num_attention_heads=sizes.vision_heads,
        image_size=sizes.vision_image, patch_size=sizes.vision_patch, projection_dim=sizes.vision_hidden,
    )).eval()
    # What openai/shap-e-img2img ships, on the Shap-E prior's 1024-step exponential schedule.
    scheduler = HeunDiscreteScheduler(beta_schedule="exp", num_train_timesteps=1024, prediction_type="sample",
                                      use_karras_sigmas=True, clip_sample=True, clip_sample_range=1.0)
    prior.eval()
    pipe = ShapEImg2ImgPipeline(prior=prior, image_encoder=image_encoder,
                                image_processor=_clip_image_processor(), scheduler=scheduler,
                                shap_e_renderer=_shap_e_renderer(seed + 3))
    # Without torchvision, transformers builds the Pillow variant of the processor; record the class
    # name the real model records, so loading takes the same path (and the same fallback).
    pipe.register_to_config(image_processor=("transformers", "CLIPImageProcessor"))  # type: ignore[attr-defined]
    return pipe


def _clip_image_processor() -> Any:
    """CLIP preprocessing (resize, centre crop, CLIP mean / std) at the tiny encoder's size."""
    import transformers

    # no torchvision needed; older transformers have the one class
    processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    size = SHAP_E_SIZES.vision_image
    return processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3)


BUILDERS = ((SD15_DIR, build_sd15), (SDXL_DIR, build_sdxl),
            (INTRINSICS_DIR, build_marigold_intrinsics), (NORMALS_DIR, build_marigold_normals),
            (SHAP_E_DIR, build_shap_e_img2img),
            *((folder, _controlnet_builder(family, salt))
              for salt, (folder, family) in enumerate(CONTROLNETS.values())))


def registry_document() -> dict[str, Any]:
    """The registry file for the tiny models; sources are relative to the file's folder."""
    return {
        "format": REGISTRY_FORMAT,
        "models": {
            SD15_DIR: {"source": SD15_DIR, "family": "sd15", "kind": "text_to_image",
                       "tiny": True},
            SDXL_DIR: {"source": SDXL_DIR, "family": "sdxl", "kind": "text_to_image",
                       "tiny": True},
            INTRINSICS_DIR: {"source": INTRINSICS_DIR, "family": "marigold", "kind": "intrinsics",
                             "tiny": True},
            NORMALS_DIR: {"source": NORMALS_DIR, "family": "marigold", "kind": "normals",
                          "tiny": True},
            SHAP_E_DIR: {"source": SHAP_E_DIR, "family": "shap_e", "kind": "image_to_3d", "tiny": True},
            **{folder: {"source": folder, "family": family, "kind": "controlnet", "tiny": True}
               for folder, family in CONTROLNETS.values()},
        },
        "roles": {"text_to_image": SD15_DIR, "intrinsics": INTRINSICS_DIR, "normals": NORMALS_DIR,
                  "image_to_3d": SHAP_E_DIR,
                  **{role: folder for role, (folder, _) in CONTROLNETS.items()}},
    }


def make_tiny(dest: str | os.PathLike, seed: int = 0) -> Path:
    """Build every tiny pipeline under ``dest`` and return the path of ``dest/registry.json``."""
    import shutil
    import tempfile

    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sd-tiny-") as scratch:
        for name, build in BUILDERS:
            pipe = build(Path(scratch), seed)
            if (dest / name).is_dir():  # a rebuild leaves no stale files from older layouts
                shutil.rmtree(dest / name)
            pipe.save_pretrained(str(dest / name), safe_serialization=True)
    registry = dest / "registry.json"
    registry.write_text(json.dumps(registry_document(), indent=2) + "\n", encoding="utf-8")
    return registry
