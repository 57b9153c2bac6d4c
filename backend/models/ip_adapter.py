"""Reference images (IP-Adapter) for SD 1.5 and SDXL pipelines: checking, loading, unloading, call arguments.

An IP-Adapter (h94/IP-Adapter's layout: one weights file beside a CLIP image encoder folder) adds image
tokens to every cross-attention layer of the base pipeline's UNet. :func:`check_ip_adapter` reads only
the files' JSON config and safetensors header (family, layout, widths) before anything loads;
:func:`use_reference` loads an adapter into a warm base pipeline with diffusers' ``load_ip_adapter`` (or
unloads it, so that a later job without a reference gets exactly the base output again);
:func:`reference_call_kwargs` turns a reference image and a strength into the pipeline call's arguments.

ControlNet pipelines: :meth:`PipelineCache.controlnet_pipeline` wires the base pipeline's components by
the pipeline's signature, ``image_encoder`` and ``feature_extractor`` included, and shares the UNet
(whose attention processors hold the adapter). So call :func:`use_reference` on the BASE pipeline before
assembling the ControlNet pipeline; the assembled one then takes ``ip_adapter_image`` as well. A
ControlNet pipeline assembled before would share the adapted UNet but miss the image encoder
(:func:`reference_call_kwargs` says so). torch, diffusers and PIL are imported inside functions.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from backend.models.errors import ModelError
from backend.models.families import FAMILY_NAMES, KIND_FAMILIES, ModelSpec, weights_problem
from backend.models.registry import is_local_source, locate
from backend.models.safetensors_header import HeaderError, read_header
from contract import messages

ROLES = {"sd15": "ip_adapter", "sdxl": "ip_adapter_sdxl"}
# Cross-attention widths of the real UNets, to catch a mislabelled registry entry without the base at hand.
KNOWN_CROSS_DIMS = {768: "sd15", 2048: "sdxl"}
ENCODER_CLASS = "CLIPVisionModelWithProjection"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def ip_adapter_role(family: str) -> str:
    """The registry role of the reference (IP-Adapter) model for a ``family`` base model."""
    if family not in ROLES:
        raise ModelError(messages.MODEL_FAMILY,
                         f"There are no reference image adapters for {FAMILY_NAMES.get(family, family)} models.",
                         "Use an SD 1.5 or SDXL model to render with a reference image.")
    return ROLES[family]


@dataclass(frozen=True)
class AdapterLayout:
    """Where an adapter's files are and what the weights file says (widths: None for pickle files)."""

    weights: Path
    subfolder: str  # of the weights file inside the model folder ("" at its top)
    image_encoder: str  # the encoder folder, relative to the model folder
    cross_attention_dim: int | None  # the UNet width the adapter's image tokens are made for
    embed_dim: int | None  # the image embedding width its projection takes


def check_ip_adapter(spec: ModelSpec, folder: Path, base_family: str | None = None,
                     base_cross_attention_dim: int | None = None, allow_unsafe: bool = False) -> AdapterLayout:
    """Check an adapter's registry entry and files (JSON and safetensors headers only, nothing loads).

    ``base_family`` / ``base_cross_attention_dim``: the base model it must fit (None: not checked; ``models
    check`` has no base). A family mismatch or widths that do not fit are MODEL_FAMILY, missing or
    pickle-only files (unless ``allow_unsafe``) MODEL_MISSING, a non-adapter entry INVALID_PARAMS.
    """
    folder = Path(folder)
    if spec.kind != "ip_adapter":
        raise ModelError(messages.INVALID_PARAMS,
                         f"Model '{spec.name}' is a {spec.kind} model, not an ip_adapter (reference image) model.",
                         "Choose an IP-Adapter for the reference image role in the registry.")
    if spec.family not in KIND_FAMILIES["ip_adapter"]:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Reference adapter '{spec.name}' is declared {FAMILY_NAMES.get(spec.family, spec.family)}; "
                         "IP-Adapters are SD 1.5 or SDXL models.",
                         f"Give '{spec.name}' \"family\": \"sd15\" or \"sdxl\" in the registry.")
    if base_family is not None and spec.family != base_family:
        raise _family_clash(spec, base_family, f"it is an {FAMILY_NAMES[spec.family]} adapter")
    layout = _layout(spec, folder, allow_unsafe)
    if layout.cross_attention_dim is not None:
        _check_width(spec, layout, base_family, base_cross_attention_dim)
    _check_encoder(spec, folder / layout.image_encoder, layout.embed_dim, allow_unsafe)
    return layout


def _family_clash(spec: ModelSpec, base_family: str, why: str) -> ModelError:
    base = FAMILY_NAMES.get(base_family, base_family)
    hint = (f"Use the role '{ROLES[base_family]}' (an {base} IP-Adapter) with this base model, or "
            f"an {FAMILY_NAMES.get(spec.family, spec.family)} base model with '{spec.name}'."
            if base_family in ROLES else "Use an SD 1.5 or SDXL base model with a reference image.")
    return ModelError(messages.MODEL_FAMILY,
                      f"Reference adapter '{spec.name}' cannot guide an {base} model: {why}.", hint)


def _layout(spec: ModelSpec, folder: Path, allow_unsafe: bool) -> AdapterLayout:
    if not spec.weight_name:
        raise ModelError(messages.MODEL_MISSING, f"Reference adapter '{spec.name}' names no weights file.",
                         f"Set \"weight_name\" for '{spec.name}' in the registry (such as "
                         "\"models/ip-adapter_sd15.safetensors\").")
    relative = PurePosixPath(spec.weight_name)
    subfolder = "" if str(relative.parent) == "." else str(relative.parent)
    encoder = spec.image_encoder or "image_encoder"
    if "/" not in encoder and subfolder:  # diffusers' rule: a bare name sits beside the weights file
        encoder = f"{subfolder}/{encoder}"
    weights = folder / relative
    if not weights.is_file():
        raise ModelError(messages.MODEL_MISSING,
                         f"Reference adapter '{spec.name}': the weights file {weights} is missing.",
                         _missing_hint(spec, encoder))
    if weights.name.endswith(_PICKLE_SUFFIXES):
        if not allow_unsafe:
            raise ModelError(messages.MODEL_MISSING,
                             f"Reference adapter '{spec.name}': {weights} is a pickle file, which can run code "
                             "when loaded.",
                             "Use the .safetensors version of the adapter, or turn on Allow Pickle Weights in "
                             "the add-on preferences (--allow-unsafe on the command line).")
        return AdapterLayout(weights, subfolder, encoder, None, None)
    try:
        header = read_header(weights)
    except HeaderError as exc:
        raise ModelError(messages.MODEL_MISSING, f"Reference adapter '{spec.name}': {exc}",
                         _missing_hint(spec, encoder)) from None
    if not (header.has_prefix("image_proj.") and header.has_prefix("ip_adapter.")):
        raise ModelError(messages.MODEL_FAMILY,
                         f"Reference adapter '{spec.name}': {weights} is not an IP-Adapter (it has no "
                         "image_proj.* and ip_adapter.* weights).",
                         f"Point \"weight_name\" of '{spec.name}' at an IP-Adapter file such as "
                         "models/ip-adapter_sd15.safetensors of h94/IP-Adapter.")
    keys = sorted(k for k in header.tensors if k.startswith("ip_adapter.") and k.endswith(".to_k_ip.weight"))
    cross = header.shape(keys[0]) if keys else None
    proj = header.shape("image_proj.proj.weight")  # a plain IP-Adapter (Plus variants differ)
    return AdapterLayout(weights, subfolder, encoder, cross[-1] if cross else None,
                         proj[-1] if proj and len(proj) == 2 else None)


def _check_width(spec: ModelSpec, layout: AdapterLayout, base_family: str | None, base_dim: int | None) -> None:
    width = layout.cross_attention_dim
    if base_dim is not None and width != base_dim:
        raise _family_clash(spec, base_family or spec.family,
                            f"its image tokens are {width} wide, the base model's cross-attention {base_dim}")
    found = KNOWN_CROSS_DIMS.get(width or 0)
    if found is not None and found != spec.family:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Reference adapter '{spec.name}' is declared {FAMILY_NAMES[spec.family]}, but "
                         f"{layout.weights} is an {FAMILY_NAMES[found]} adapter (image tokens {width} wide).",
                         f"Set \"family\": \"{found}\" for '{spec.name}' in the registry, or point it at an "
                         f"{FAMILY_NAMES[spec.family]} adapter.")


def _check_encoder(spec: ModelSpec, encoder: Path, embed_dim: int | None, allow_unsafe: bool) -> None:
    config_file = encoder / "config.json"
    if not config_file.is_file():
        raise ModelError(messages.MODEL_MISSING,
                         f"Reference adapter '{spec.name}': its image encoder {config_file} is missing.",
                         _missing_hint(spec, str(encoder)))
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(messages.MODEL_MISSING, f"Cannot read {config_file}: {exc}",
                         "The image encoder's files look damaged; download them again.") from None
    classes = config.get("architectures") or []
    if config.get("model_type") != "clip_vision_model" and ENCODER_CLASS not in classes:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Reference adapter '{spec.name}': {encoder} holds a "
                         f"{', '.join(classes) or config.get('model_type') or 'model of unknown class'}, "
                         f"not a CLIP image encoder ({ENCODER_CLASS}).",
                         f"Set \"image_encoder\" of '{spec.name}' to the adapter's image encoder folder.")
    width = config.get("projection_dim")
    if embed_dim is not None and width is not None and int(width) != embed_dim:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Reference adapter '{spec.name}' takes {embed_dim}-wide image embeddings, but its "
                         f"image encoder {encoder} makes {width}-wide ones.",
                         f"Set \"image_encoder\" of '{spec.name}' to the encoder released with the adapter "
                         "(h94/IP-Adapter: models/image_encoder for SD 1.5, sdxl_models/image_encoder for SDXL).")
    problem = weights_problem(encoder, allow_unsafe)
    if problem is not None:
        raise ModelError(messages.MODEL_MISSING, f"Reference adapter '{spec.name}': image encoder {problem}",
                         _missing_hint(spec, str(encoder)))


def _missing_hint(spec: ModelSpec, encoder: str) -> str:
    if is_local_source(spec):
        return (f"Put the adapter's weights file and image encoder in {spec.source}, or fix \"weight_name\" / "
                f"\"image_encoder\" of '{spec.name}' in the registry.")
    return (f"Download them once with `hf download {spec.source} {spec.weight_name} --include "
            f"\"{encoder}/*\"`, or point '{spec.name}' at a local folder in the registry.")


# --- loading into a pipeline ------------------------------------------------------------------

# The adapter each adapted UNet holds (by UNet: a ControlNet pipeline shares its base pipeline's), and
# whether loading it added the pipeline's feature extractor (unloading takes it away again).
_LOADED: weakref.WeakKeyDictionary[Any, tuple[tuple[ModelSpec, str], bool]] = weakref.WeakKeyDictionary()


def loaded_reference(pipe: Any) -> ModelSpec | None:
    """The adapter loaded into ``pipe``'s UNet by :func:`use_reference`, or None."""
    entry = _LOADED.get(pipe.unet)
    return entry[0][0] if entry is not None else None


def use_reference(pipe: Any, spec: ModelSpec | None, folder: Path | None = None,
                  allow_unsafe: bool = False) -> None:
    """Load the adapter ``spec`` (files in ``folder``; None: located from the registry entry) into the
    base pipeline ``pipe`` unless it is the loaded one; ``spec`` None unloads any adapter, leaving the
    pipeline exactly as it was before. Everything is checked (:func:`check_ip_adapter`) first, and a
    failed load leaves no adapter behind."""
    if not hasattr(pipe, "load_ip_adapter") or getattr(pipe, "unet", None) is None:
        raise ModelError(messages.INVALID_PARAMS,
                         f"A {type(pipe).__name__} takes no reference image.",
                         "Use an SD 1.5 or SDXL pipeline for reference images.")
    if spec is None:
        _unload(pipe)
        return
    if folder is None:
        folder = locate(spec)
        if folder is None:
            raise ModelError(messages.MODEL_MISSING,
                             f"Reference adapter '{spec.name}' is not available: {spec.source} is not on this "
                             "machine.", _missing_hint(spec, spec.image_encoder))
    folder = Path(folder)
    entry = _LOADED.get(pipe.unet)
    if entry is not None and entry[0] == (spec, str(folder)) and getattr(pipe, "image_encoder", None) is not None:
        return
    layout = check_ip_adapter(spec, folder, _base_family(pipe), int(pipe.unet.config.cross_attention_dim),
                              allow_unsafe)
    _unload(pipe)  # load_ip_adapter keeps an image encoder already there: start clean
    added_extractor = getattr(pipe, "feature_extractor", None) is None
    try:
        pipe.load_ip_adapter(str(folder), subfolder=layout.subfolder, weight_name=layout.weights.name,
                             image_encoder_folder=layout.image_encoder, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        _LOADED[pipe.unet] = ((spec, str(folder)), added_extractor)
        _unload(pipe)
        raise ModelError(messages.MODEL_MISSING,
                         f"Cannot load reference adapter '{spec.name}' from {folder}: {exc}",
                         "The adapter's files look incomplete or damaged, or its weights file and image "
                         "encoder do not belong together: download them again.") from None
    _LOADED[pipe.unet] = ((spec, str(folder)), added_extractor)


def _base_family(pipe: Any) -> str:
    return "sdxl" if type(pipe).__name__.startswith("StableDiffusionXL") else "sd15"


def _unload(pipe: Any) -> None:
    entry = _LOADED.pop(pipe.unet, None)
    if entry is None and getattr(pipe.unet, "encoder_hid_proj", None) is None:
        return  # nothing loaded
    pipe.unload_ip_adapter()
    if entry is not None and entry[1] and getattr(pipe, "feature_extractor", None) is not None:
        pipe.register_modules(feature_extractor=None)


def reference_call_kwargs(pipe: Any, image: np.ndarray, strength: float) -> dict[str, Any]:
    """Set the adapter's scale to ``strength`` (0: no effect, 1: the adapter's full weight) and return the
    call's ``{"ip_adapter_image": ...}`` for ``image`` (H x W x 3 float sRGB in 0..1)."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ModelError(messages.INVALID_PARAMS,
                         f"A reference image must be H x W x 3 (RGB), got shape {array.shape}.",
                         "Pass the reference as an RGB image.")
    if not np.isfinite(strength) or strength < 0:
        raise ModelError(messages.INVALID_PARAMS, f"Reference strength must be 0 or more, got {strength}.",
                         "Use a strength between 0 and 1.")
    if loaded_reference(pipe) is None or getattr(pipe, "image_encoder", None) is None:
        raise ModelError(messages.INVALID_PARAMS,
                         f"This {type(pipe).__name__} has no reference adapter loaded.",
                         "Call use_reference on the base pipeline before assembling a ControlNet pipeline.")
    pipe.set_ip_adapter_scale(float(strength))
    pixels = np.clip(np.nan_to_num(array.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return {"ip_adapter_image": Image.fromarray(pixels, "RGB")}
