"""Single-file checkpoints (SD 1.5 / SDXL ``.safetensors`` as community sites distribute them): checks and loading.

A registry entry whose source is a checkpoint file loads with diffusers' ``from_single_file``, offline, its
component configs (and tokenizers, scheduler) taken from a local diffusers folder of the same family (the
entry's ``config``, else the family's default repo in the Hugging Face cache: see registry.locate_config). The
family comes from the checkpoint's own key names, read from the safetensors header alone, so a LoRA, an SD 2.x
or an SDXL file declared SD 1.5 is refused before any weights load. ``.ckpt`` files are pickles: refused unless
the user allows unsafe weights. torch and diffusers are imported inside functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.models.errors import ModelError
from backend.models.families import _ARTICLES, FAMILY_NAMES, ModelSpec, detect_family
from backend.models.safetensors_header import HeaderError, read_header
from contract import messages
from contract.model_sources import is_repo_id

DEFAULT_CONFIG_IDS = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                      "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}
UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_CLIP = "cond_stage_model.transformer."  # SD 1.x: CLIP ViT-L in transformers' layout
SD2_OPENCLIP = "cond_stage_model.model."  # SD 2.x: OpenCLIP ViT-H
SDXL_CLIP = "conditioner.embedders.0.transformer."  # SDXL base: CLIP ViT-L ...
SDXL_OPENCLIP = "conditioner.embedders.1.model."  # ... and OpenCLIP ViT-bigG
SDXL_REFINER = "conditioner.embedders.0.model."  # the refiner has only the OpenCLIP encoder
_LORA = re.compile(r"(^lora_(unet|te)|\.lora_(down|up|A|B)\.|\.alpha$|^(unet|text_encoder)\.)")
_PICKLE_HINT = ("Use the .safetensors version of the checkpoint (most sites offer one), or turn on Allow Pickle "
                "Weights in the add-on preferences (--allow-unsafe on the command line) if you trust the file.")
_DAMAGED_HINT = "The file is damaged or was cut short: download it again."


@dataclass(frozen=True)
class CheckpointContents:
    """What a checkpoint file holds, by its key names: a family (None when unsupported) and why."""

    family: str | None
    what: str  # "an SD 1.5 checkpoint", "a LoRA, not a checkpoint", ...
    is_checkpoint: bool  # False: some other file (LoRA, diffusers-format weights, random tensors)


def tensor_shapes(file: Path, allow_unsafe: bool = False) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors header (a ``.ckpt`` only with ``allow_unsafe``: it is a pickle)."""
    if file.suffix.lower() == ".ckpt":
        if not allow_unsafe:
            raise ModelError(messages.MODEL_MISSING,
                             f"{file} is a pickle checkpoint (.ckpt), which can run code when loaded.", _PICKLE_HINT)
        return _pickle_shapes(file)
    try:
        header = read_header(file)
    except HeaderError as exc:
        raise ModelError(messages.MODEL_MISSING, f"Cannot read checkpoint: {exc}", _DAMAGED_HINT) from None
    return {name: info.shape for name, info in header.tensors.items()}


def _pickle_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    import torch

    try:  # mmap: shapes without reading every tensor (zip-format checkpoints); weights_only: no code runs
        data = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError):
        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors of every kind mean "not a readable checkpoint"
            raise ModelError(messages.MODEL_MISSING, f"Cannot read checkpoint {file}: {exc}", _DAMAGED_HINT) from None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        return {}
    return {str(k): tuple(v.shape) for k, v in data.items() if hasattr(v, "shape")}


def contents(shapes: Mapping[str, tuple[int, ...]]) -> CheckpointContents:
    """Tell SD 1.5 from SDXL from what is unsupported, by key names (and the UNet's input channels)."""
    names = list(shapes)

    def has(prefix: str) -> bool:
        return any(n.startswith(prefix) for n in names)

    if not has(UNET):
        if any(_LORA.search(n) for n in names):
            return CheckpointContents(None, "a LoRA or diffusers-format weights, not a full checkpoint", False)
        return CheckpointContents(None, "no Stable Diffusion UNet (model.diffusion_model.*): not a checkpoint",
                                  False)
    if not has(UNET + "input_blocks."):  # SD 3, Flux and others share the prefix, not the layout
        return CheckpointContents(None, "a checkpoint of an unsupported architecture (not SD 1.5 or SDXL)", True)
    if has(SDXL_CLIP) and has(SDXL_OPENCLIP):
        family, what = "sdxl", "an SDXL checkpoint"
    elif has(SDXL_REFINER):
        return CheckpointContents(None, "an SDXL refiner checkpoint (not a base model)", True)
    elif has(SD2_OPENCLIP):
        return CheckpointContents(None, "an SD 2.x checkpoint", True)
    elif has(SD1_CLIP):
        family, what = "sd15", "an SD 1.5 checkpoint"
    else:
        return CheckpointContents(None, "a checkpoint without a text encoder of a supported family", True)
    channels = shapes.get(UNET + "input_blocks.0.0.weight", (0, 4))
    if len(channels) > 1 and channels[1] != 4:  # 9: inpainting, 8: instruct-pix2pix
        return CheckpointContents(None, f"{what} with a {channels[1]}-channel UNet (inpainting or editing, "
                                        "not text-to-image)", True)
    return CheckpointContents(family, what, True)


def checkpoint_family(file: Path, allow_unsafe: bool = False) -> str:
    """"sd15" or "sdxl" from the file's own keys (header only); a ModelError when it is neither."""
    found = contents(tensor_shapes(Path(file), allow_unsafe))
    if found.family is None:
        raise ModelError(messages.MODEL_FAMILY, f"{file} holds {found.what}, not an SD 1.5 or SDXL checkpoint.",
                         "Choose a full SD 1.5 or SDXL checkpoint (UNet, VAE and text encoder in one file).")
    return found.family


def check_checkpoint(spec: ModelSpec, file: Path, allow_unsafe: bool = False) -> str:
    """Raise a ModelError unless ``file`` is a full checkpoint of ``spec.family`` for text_to_image; the family.

    Reads the header only (a ``.ckpt``: refused unless ``allow_unsafe``). MODEL_MISSING: unreadable, truncated,
    refused pickle, no VAE or text encoder; MODEL_FAMILY: not a checkpoint, unsupported, another family.
    """
    want = FAMILY_NAMES.get(spec.family, spec.family)
    if spec.kind != "text_to_image":
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a {spec.kind} model, but its source {file} is a "
                         "single-file checkpoint, which serves text_to_image only.",
                         f"Give '{spec.name}' \"kind\": \"text_to_image\", or point it at a {spec.kind} model.")
    shapes = tensor_shapes(file, allow_unsafe)
    found = contents(shapes)
    if not found.is_checkpoint:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' points at {file}, which holds {found.what}.",
                         f"Point '{spec.name}' at a full {want} checkpoint (UNet, VAE and text encoder in one "
                         "file) or a diffusers folder.")
    if found.family is None:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is declared {want}, but {file} is {found.what}, which is not a "
                         f"supported family (SD 1.5 or SDXL checkpoints).",
                         f"Choose a {want} checkpoint for '{spec.name}' in the registry.")
    if found.family != spec.family:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is declared {want}, but {file} is {found.what}.",
                         f"Set \"family\": \"{found.family}\" for '{spec.name}' in the registry, or point it at "
                         f"{_ARTICLES.get(spec.family, 'a')} {want} checkpoint.")
    for prefix, part in ((VAE, "VAE"), (UNET + "out.", "complete UNet")):
        if not any(n.startswith(prefix) for n in shapes):
            raise ModelError(messages.MODEL_MISSING,
                             f"Checkpoint {file} of model '{spec.name}' holds no {part} ({prefix}*).",
                             "Use a full checkpoint (UNet, VAE and text encoder), not a UNet-only or pruned file.")
    return found.family


def check_config_folder(spec: ModelSpec, folder: Path) -> None:
    """MODEL_FAMILY unless ``folder`` (the configs a checkpoint's components are built from) is of its family."""
    try:
        found, cls = detect_family(folder)
    except ModelError:
        found, cls = None, "no model_index.json"
    if found != spec.family:
        want = FAMILY_NAMES.get(spec.family, spec.family)
        raise ModelError(messages.MODEL_FAMILY,
                         f"The config folder {folder} of checkpoint model '{spec.name}' ({want}) holds "
                         f"{cls or 'a model of unknown class'}, not {want} diffusers configs.",
                         f"Set \"config\" of '{spec.name}' to a {want} diffusers folder or repo id "
                         f"(such as {DEFAULT_CONFIG_IDS.get(spec.family, '?')}).")


def locate_config(spec: ModelSpec) -> Path | None:
    """The local diffusers folder a checkpoint's components are configured from: ``spec.config`` (a folder, or
    a repo id found in the Hugging Face cache), else the family's default repo in the cache; None: not here."""
    source = spec.config or DEFAULT_CONFIG_IDS.get(spec.family, "")
    if is_repo_id(source):
        from backend.models.registry import cached_snapshot  # which imports this module

        return cached_snapshot(source)
    folder = Path(source).expanduser()
    return folder if source and folder.is_dir() else None


def checkpoint_config(spec: ModelSpec, file: Path, allow_unsafe: bool = False) -> Path:
    """Every check before a checkpoint loads (header, family, config folder); the config folder, or raise."""
    check_checkpoint(spec, file, allow_unsafe)
    config = locate_config(spec)
    if config is None:
        raise ModelError(messages.MODEL_MISSING, f"Cannot load checkpoint model '{spec.name}': "
                                                 f"{missing_config_detail(spec)}.", missing_config_hint(spec))
    check_config_folder(spec, config)
    return config


def checkpoint_row(spec: ModelSpec, file: Path, allow_unsafe: bool = False) -> dict[str, Any]:
    """The ``models check`` row of a checkpoint model."""
    try:
        config = checkpoint_config(spec, file, allow_unsafe)
    except ModelError as exc:
        return {"name": spec.name, "ok": False, "detail": exc.message}
    return {"name": spec.name, "ok": True, "detail": f"ok: {file} (configs from {config})"}


def missing_config_detail(spec: ModelSpec) -> str:
    if spec.config and not is_repo_id(spec.config):
        return f"its config folder {spec.config} does not exist"
    repo = spec.config or DEFAULT_CONFIG_IDS.get(spec.family, "?")
    return f"the diffusers configs of {repo} are not in the Hugging Face cache"


def missing_config_hint(spec: ModelSpec) -> str:
    repo = spec.config if is_repo_id(spec.config) else DEFAULT_CONFIG_IDS.get(spec.family, "<owner/name>")
    return (f"Fetch only its configs and tokenizer once with `hf download {repo} --include \"*.json\" \"*.txt\"` "
            f"(no weights), or set \"config\" in the registry entry of '{spec.name}' to a local "
            f"{FAMILY_NAMES.get(spec.family, spec.family)} diffusers folder.")


def load_checkpoint(cls: Any, spec: ModelSpec, file: Path, config: Path, dtype: Any) -> Any:
    """``cls.from_single_file`` on ``file`` with ``config``'s component configs, never the network."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        return cls.from_single_file(str(file), config=str(config), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as exc:
        # Shapes that do not fit the config folder's (another model size), missing tensors, damaged data.
        raise ModelError(messages.MODEL_MISSING, f"Cannot load checkpoint model '{spec.name}' from {file} with "
                                                 f"the configs of {config}: {exc}",
                         f"Check that \"config\" of '{spec.name}' is the diffusers folder of the checkpoint's "
                         "own base model (the same sizes), or download the checkpoint again.") from None


