"""Tiny LoRA files for the tiny SD 1.5 / SDXL pipelines, in the kohya-ss format artists download.

:func:`write_tiny` reads the saved tiny UNets' tensor names (headers only) and writes seeded random LoRAs
into ``dest/loras/``:

- ``sd15-style-a.safetensors``: UNet attention + feed-forward layers and the text encoder (``lora_te_``);
- ``sd15-style-b.safetensors``: UNet only, other seed (two LoRAs that differ, one without a text encoder part);
- ``sdxl-style.safetensors``: SDXL, kohya's sgm UNet names (``input_blocks_3_1_...``) and ``lora_te1_`` /
  ``lora_te2_``;
- ``sd15-unmatched.safetensors``: valid format and SD 1.5 widths, but for blocks the tiny UNet does not have.

Names follow kohya-ss: ``lora_unet_<module path with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``,
text encoders ``lora_te_text_model_encoder_layers_<i>_self_attn_q_proj...``. diffusers' ``load_lora_weights``
converts them with its own kohya conversion, as it would a downloaded file. LoRAs are no registry models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REGISTRY_MODELS: dict[str, dict[str, Any]] = {}  # registry entries (sources relative to the registry file)
REGISTRY_ROLES: dict[str, str] = {}

LORA_DIR = "loras"
SD15_A = "sd15-style-a.safetensors"
SD15_B = "sd15-style-b.safetensors"
SDXL_STYLE = "sdxl-style.safetensors"
SD15_UNMATCHED = "sd15-unmatched.safetensors"
RANK = 4
ALPHA = 4.0  # alpha / rank = 1: the up x down product is applied as written
UP_GAIN = 1.0  # lora_up std relative to 1/sqrt(rank): large enough that the image visibly changes

# Linear layers a kohya LoRA trains in each transformer block (diffusers module names inside the block).
BLOCK_LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
TEXT_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
               "mlp.fc1", "mlp.fc2")


def write_tiny(dest: Path, seed: int = 0) -> None:
    """Write this module's tiny files under ``dest``, after the pipelines are saved there."""
    from devtools.tiny_models import SD15_DIR, SDXL_DIR

    dest = Path(dest)
    out = dest / LORA_DIR
    out.mkdir(parents=True, exist_ok=True)
    sd15, sdxl = dest / SD15_DIR, dest / SDXL_DIR
    sd15_unet = _unet_linears(sd15)
    sd15_te = _text_layers(sd15 / "text_encoder")
    _save(out / SD15_A, {**_unet_tensors(sd15_unet, seed * 7919 + 1),
                         **_tensors({f"lora_te_text_model_{m}": s for m, s in sd15_te.items()}, seed * 7919 + 2)})
    _save(out / SD15_B, _unet_tensors(sd15_unet, seed * 7919 + 3))
    layers = json.loads((sdxl / "unet" / "config.json").read_text(encoding="utf-8"))["layers_per_block"]
    sdxl_unet = {_sgm_name(name, layers): shape for name, shape in _unet_linears(sdxl).items()}
    te1 = {f"lora_te1_text_model_{m}": s for m, s in _text_layers(sdxl / "text_encoder").items()}
    te2 = {f"lora_te2_text_model_{m}": s for m, s in _text_layers(sdxl / "text_encoder_2").items()}
    _save(out / SDXL_STYLE, {**_unet_tensors(sdxl_unet, seed * 7919 + 4), **_tensors({**te1, **te2}, seed * 7919 + 5)})
    # Same layer names and widths as style-a's attn2, moved to blocks the tiny UNet lacks (down_blocks.3).
    missing = {name.replace("down_blocks.1.", "down_blocks.3.").replace("mid_block.", "down_blocks.4."): shape
               for name, shape in sd15_unet.items() if ".attn2." in name and not name.startswith("up_")}
    _save(out / SD15_UNMATCHED, _unet_tensors(missing, seed * 7919 + 6))


def _unet_linears(pipeline: Path) -> dict[str, tuple[int, int]]:
    """diffusers module path -> (out, in) of the UNet's transformer-block linears, from the weights' header."""
    from backend.models.safetensors_header import read_header

    header = read_header(pipeline / "unet" / "diffusion_pytorch_model.safetensors")
    found = {}
    for name, info in header.tensors.items():
        module = name.removesuffix(".weight")
        if module != name and module.rsplit(".transformer_blocks.", 1)[-1].split(".", 1)[-1] in BLOCK_LAYERS:
            out_f, in_f = info.shape
            found[module] = (out_f, in_f)
    return dict(sorted(found.items()))


def _text_layers(folder: Path) -> dict[str, tuple[int, int]]:
    """``encoder_layers_<i>_<layer>`` -> (out, in) for a CLIP text encoder, from its config."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    shapes = {"mlp.fc1": (inner, hidden), "mlp.fc2": (hidden, inner)}
    return {f"encoder_layers_{i}_{layer.replace('.', '_')}": shapes.get(layer, (hidden, hidden))
            for i in range(config["num_hidden_layers"]) for layer in TEXT_LAYERS}


def _sgm_name(module: str, layers_per_block: int) -> str:
    """diffusers UNet path -> kohya's SDXL (sgm) path: ``down_blocks.1.attentions.0`` -> ``input_blocks.3.1``."""
    parts = module.split(".")
    if parts[0] == "down_blocks":
        head = f"input_blocks.{1 + int(parts[1]) * (layers_per_block + 1) + int(parts[3])}.1"
    elif parts[0] == "up_blocks":
        head = f"output_blocks.{int(parts[1]) * (layers_per_block + 1) + int(parts[3])}.1"
    else:  # mid_block.attentions.0: one part shorter than the numbered blocks
        return ".".join(["middle_block.1", *parts[3:]])
    return ".".join([head, *parts[4:]])


def _unet_tensors(modules: dict[str, tuple[int, int]], seed: int) -> dict[str, Any]:
    return _tensors({f"lora_unet_{name}": shape for name, shape in modules.items()}, seed)


def _tensors(modules: dict[str, tuple[int, int]], seed: int) -> dict[str, Any]:
    """kohya tensors (down, up, alpha) for each module; names get kohya's underscores."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (out_f, in_f) in modules.items():
        name = module.replace(".", "_")
        tensors[f"{name}.lora_down.weight"] = torch.randn(RANK, in_f, generator=generator) / in_f ** 0.5
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_f, RANK, generator=generator) * (UP_GAIN / RANK ** 0.5)
        tensors[f"{name}.alpha"] = torch.tensor(ALPHA)
    return tensors


def _save(path: Path, tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    # kohya writes its training settings as metadata; the format marker is what tools look at. One entry only:
    # safetensors writes them in hash-map order, so several would make the bytes differ from build to build.
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
