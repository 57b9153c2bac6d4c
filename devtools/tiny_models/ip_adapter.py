"""Tiny IP-Adapters (reference images) for the tiny SD 1.5 and SDXL pipelines, in h94/IP-Adapter's layout.

``ip-adapter-tiny/`` mirrors the hub repository: ``models/ip-adapter_sd15.safetensors`` beside
``models/image_encoder/`` (SD 1.5) and ``sdxl_models/ip-adapter_sdxl.safetensors`` beside
``sdxl_models/image_encoder/`` (SDXL). Each weights file holds the keys diffusers' ``load_ip_adapter``
converts: ``image_proj.proj.*`` / ``image_proj.norm.*`` (CLIP image embedding -> 4 tokens of the UNet's
cross-attention width) and ``ip_adapter.<n>.to_k_ip.weight`` / ``to_v_ip.weight``, where ``n`` counts the
UNet's attention processors in diffusers' order and only the cross-attention ones (odd ``n``: 1, 3, ...)
carry weights, as in the original checkpoints. The image encoders are tiny
``CLIPVisionModelWithProjection`` models saved with ``save_pretrained``; no feature extractor config is
needed, since ``load_ip_adapter`` builds a ``CLIPImageProcessor`` sized to the encoder's ``image_size``.

The weights are seeded random values, scaled (:data:`IP_ADAPTER_GAIN`) so that a reference image visibly
changes the output and two references change it differently. torch, transformers and diffusers are
imported inside functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IP_ADAPTER_DIR = "ip-adapter-tiny"
IMAGE_TOKENS = 4  # what diffusers' ImageProjection expects of a plain IP-Adapter
IP_ADAPTER_GAIN = 3.0  # to_k_ip / to_v_ip weights: normal(0, GAIN / sqrt(cross-attention width))


@dataclass(frozen=True)
class TinyAdapter:
    name: str  # registry model name
    family: str
    pipeline_dir: str  # the tiny pipeline whose UNet the adapter fits
    weight_name: str  # relative to IP_ADAPTER_DIR, as in h94/IP-Adapter
    image_encoder: str  # relative to IP_ADAPTER_DIR
    projection_dim: int  # the image encoder's embedding width (real: 1024 ViT-H, 1280 ViT-bigG)
    salt: int  # keeps the two adapters' random weights apart


ADAPTERS = (
    TinyAdapter("ip-adapter-sd15-tiny", "sd15", "sd15-tiny", "models/ip-adapter_sd15.safetensors",
                "models/image_encoder", projection_dim=16, salt=101),
    TinyAdapter("ip-adapter-sdxl-tiny", "sdxl", "sdxl-tiny", "sdxl_models/ip-adapter_sdxl.safetensors",
                "sdxl_models/image_encoder", projection_dim=24, salt=202),
)

# Registry entries (sources relative to the registry file) and roles.
REGISTRY_MODELS: dict[str, dict[str, Any]] = {
    a.name: {"source": IP_ADAPTER_DIR, "family": a.family, "kind": "ip_adapter", "tiny": True,
             "weight_name": a.weight_name, "image_encoder": a.image_encoder}
    for a in ADAPTERS
}
REGISTRY_ROLES: dict[str, str] = {"ip_adapter": ADAPTERS[0].name, "ip_adapter_sdxl": ADAPTERS[1].name}


def write_tiny(dest: Path, seed: int = 0) -> None:
    """Write ``dest/ip-adapter-tiny/`` for the tiny pipelines already saved under ``dest``."""
    import shutil

    root = Path(dest) / IP_ADAPTER_DIR
    if root.is_dir():  # a rebuild leaves no stale files from older layouts
        shutil.rmtree(root)
    for adapter in ADAPTERS:
        unet_config = Path(dest) / adapter.pipeline_dir / "unet" / "config.json"
        _write_adapter(root, adapter, json.loads(unet_config.read_text(encoding="utf-8")), seed)


def _write_adapter(root: Path, adapter: TinyAdapter, unet_config: dict[str, Any], seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed + adapter.salt)
    tensors = {**_image_proj(unet_config["cross_attention_dim"], adapter.projection_dim, generator),
               **_cross_attention_weights(unet_config, generator)}
    weights = root / adapter.weight_name
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(weights))
    _image_encoder(adapter.projection_dim, seed + adapter.salt).save_pretrained(
        str(root / adapter.image_encoder), safe_serialization=True)


def _image_proj(cross_dim: int, projection_dim: int, generator: Any) -> dict[str, Any]:
    import torch

    def normal(*shape: int, std: float) -> Any:
        return torch.randn(*shape, generator=generator) * std

    return {
        "image_proj.proj.weight": normal(IMAGE_TOKENS * cross_dim, projection_dim, std=projection_dim ** -0.5),
        "image_proj.proj.bias": normal(IMAGE_TOKENS * cross_dim, std=0.1),
        "image_proj.norm.weight": 1.0 + normal(cross_dim, std=0.1),
        "image_proj.norm.bias": normal(cross_dim, std=0.1),
    }


def _cross_attention_weights(unet_config: dict[str, Any], generator: Any) -> dict[str, Any]:
    """``ip_adapter.<n>.to_k_ip.weight`` / ``to_v_ip.weight`` for every cross-attention processor.

    The UNet is built from its config (random init, no weights read) only to list its attention
    processors in diffusers' order and read each one's width.
    """
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(unet_config)
    cross_dim = int(unet_config["cross_attention_dim"])
    std = IP_ADAPTER_GAIN * cross_dim ** -0.5
    tensors = {}
    # The original numbers every processor (self-attention at the even numbers, without weights); the
    # k-th cross-attention processor is 2k + 1, which is what diffusers' loader counts.
    index = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):  # self-attention: no image tokens
            continue
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
        for part in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{index}.{part}.weight"] = torch.randn(hidden, cross_dim, generator=generator) * std
        index += 2
    return tensors


def _image_encoder(projection_dim: int, seed: int) -> Any:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8,
                              projection_dim=projection_dim)
    return CLIPVisionModelWithProjection(config).eval()
