"""Tiny single-file checkpoints: the saved tiny SD 1.5 / SDXL pipelines re-written in the original (LDM) layout.

Community sites distribute Stable Diffusion models as one ``.safetensors`` file with the key names of the
original training code: ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE),
``cond_stage_model.transformer.*`` (SD 1.5's CLIP text encoder) or ``conditioner.embedders.0.transformer.*`` and
``conditioner.embedders.1.model.*`` (SDXL's CLIP-L and its OpenCLIP bigG, in OpenCLIP's own layout). The mapping
below goes from diffusers' names to those, written from the layouts themselves; loading the file back through
diffusers' ``from_single_file(config=<the tiny folder>)`` must give the folder's weights exactly (tests compare
the images). torch and safetensors are imported inside functions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"
SD15_FILE = f"{CHECKPOINT_DIR}/sd15-tiny.safetensors"
SDXL_FILE = f"{CHECKPOINT_DIR}/sdxl-tiny.safetensors"

REGISTRY_MODELS: dict[str, dict[str, Any]] = {  # registry entries (sources relative to the registry file)
    "sd15-tiny-checkpoint": {"source": SD15_FILE, "family": "sd15", "kind": "text_to_image",
                             "config": "sd15-tiny", "tiny": True},
    "sdxl-tiny-checkpoint": {"source": SDXL_FILE, "family": "sdxl", "kind": "text_to_image",
                             "config": "sdxl-tiny", "tiny": True},
}
REGISTRY_ROLES: dict[str, str] = {}

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

# diffusers ResnetBlock2D -> LDM ResBlock (the UNet's); the VAE's resnets keep diffusers' names but one.
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}


def write_tiny(dest: Path, seed: int = 0) -> None:
    """Write checkpoints/sd15-tiny.safetensors and checkpoints/sdxl-tiny.safetensors from the saved folders."""
    dest = Path(dest)
    (dest / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    write_checkpoint(dest / "sd15-tiny", dest / SD15_FILE, sdxl=False)
    write_checkpoint(dest / "sdxl-tiny", dest / SDXL_FILE, sdxl=True)


def write_checkpoint(folder: Path, file: Path, sdxl: bool) -> None:
    """One LDM-layout safetensors file holding the UNet, VAE and text encoder(s) of a diffusers folder."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    unet_config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    for name, value in _weights(folder / "unet").items():
        tensors[UNET_PREFIX + unet_key(name, unet_config)] = value
    vae_blocks = len(json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))["up_block_types"])
    for name, value in _weights(folder / "vae").items():
        key = vae_key(name, vae_blocks)
        if re.search(r"attn_1\.(q|k|v|proj_out)\.weight$", key):
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        tensors[VAE_PREFIX + key] = value
    clip_prefix = SDXL_CLIP_PREFIX if sdxl else SD15_CLIP_PREFIX
    for name, value in _weights(folder / "text_encoder").items():
        tensors[clip_prefix + _wrapped_clip_key(name)] = value
    if sdxl:
        for name, value in openclip_weights(_weights(folder / "text_encoder_2")).items():
            tensors[SDXL_OPENCLIP_PREFIX + name] = value
    # One metadata entry: safetensors writes them in hash-map order, so several would make the bytes differ
    # from one build to the next (make-tiny is deterministic).
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(file), metadata={"format": "pt"})


def _weights(component: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted(component.glob("*.safetensors"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .safetensors file in {component}, found {len(files)}")
    return load_file(str(files[0]))


def _wrapped_clip_key(name: str) -> str:
    """transformers >= 5.6 saves CLIPTextModel without its ``text_model.`` level; checkpoints have it."""
    return name if name.startswith("text_model.") else f"text_model.{name}"


def unet_key(name: str, config: dict[str, Any]) -> str:
    """diffusers UNet2DConditionModel key -> LDM UNetModel key (without ``model.diffusion_model.``)."""
    per_down = config["layers_per_block"] + 1  # resnets, then the downsampler, share LDM's block count
    per_up = config["layers_per_block"] + 1
    for diffusers, ldm in _UNET_TOP.items():
        if name.startswith(diffusers + "."):
            return ldm + name[len(diffusers):]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, part, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * per_down + layer
        return f"input_blocks.{index}.0.{_resnet(rest)}" if part == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
        return f"input_blocks.{1 + int(m[1]) * per_down + per_down - 1}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name):
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, part, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per_up + layer
        return f"output_blocks.{index}.0.{_resnet(rest)}" if part == "resnets" else f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name):
        block = int(m[1])
        with_attention = "CrossAttn" in config["up_block_types"][block]
        return f"output_blocks.{block * per_up + per_up - 1}.{2 if with_attention else 1}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet weight {name!r}")


def _resnet(rest: str) -> str:
    part, _, leaf = rest.rpartition(".")
    return f"{_UNET_RESNET[part]}.{leaf}"


def vae_key(name: str, blocks: int) -> str:
    """diffusers AutoencoderKL key -> LDM AutoencoderKL key (without ``first_stage_model.``)."""
    name = name.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(.+)", name):
        return f"encoder.down.{m[1]}.block.{m[2]}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", name):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    # LDM numbers the decoder's up blocks from the lowest resolution's end: diffusers' first is LDM's last.
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(.+)", name):
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", name):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", name):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", name):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}"
    return name  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv: the same in both


def openclip_weights(state: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextModelWithProjection weights -> OpenCLIP's text tower layout (``token_embedding``, ``resblocks``).

    OpenCLIP keeps one fused query/key/value projection per layer (``attn.in_proj_weight``, rows q, k, v) and
    multiplies by ``text_projection`` from the right (the transpose of a Linear weight).
    """
    import torch

    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, Any] = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T,
    }
    layers = sorted({int(m[1]) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    for n in layers:
        src, dst = f"encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for leaf in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{leaf}"] = torch.cat(
                [state.pop(f"{src}self_attn.{p}_proj.{leaf}") for p in ("q", "k", "v")])
            for diffusers, openclip in _OPENCLIP_LAYER.items():
                out[f"{dst}{openclip}.{leaf}"] = state.pop(f"{src}{diffusers}.{leaf}")
    state.pop("embeddings.position_ids", None)  # a buffer, not a weight
    if state:
        raise KeyError(f"no OpenCLIP name for text encoder weights {sorted(state)}")
    return out
