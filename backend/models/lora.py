"""LoRAs on SD 1.5 / SDXL pipelines: checked from their header, loaded once, switched between jobs.

:func:`inspect_lora` tells a LoRA's family from its tensor names and shapes alone (nothing loads);
:func:`check_lora` refuses one of another family than the base model before anything loads. :func:`apply_loras`
loads the adapters a job needs that the pipeline does not hold yet (diffusers' ``load_lora_weights``, with its
kohya-ss conversion) and activates exactly those, with their weights; the others stay loaded but inactive, so
switching LoRAs between jobs costs no reload (at most :data:`MAX_KEPT` kept, least recently used deleted first).
:func:`clear_loras` disables every adapter: the cached pipeline then gives exactly its base output.

Adapters live in the UNet and text encoders themselves (PEFT layers), which ControlNet pipelines share with
their base pipeline; the bookkeeping is therefore keyed by the UNet. torch, diffusers and peft are imported
inside functions.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.models.errors import ModelError
from backend.models.families import FAMILY_NAMES, _family_phrase
from backend.models.safetensors_header import HeaderError, SafetensorsHeader, read_header
from contract import messages

log = logging.getLogger(__name__)

MAX_KEPT = 8  # adapters kept loaded per pipeline; beyond, the least recently used is deleted
# UNet cross-attention input width (the text features' width) of the real base models.
STANDARD_WIDTHS = {768: "sd15", 2048: "sdxl", 1024: "sd2"}
_LABELS = {**FAMILY_NAMES, "sd2": "SD 2.x"}
_UNSUPPORTED = {"sd2"}
_TE2_PREFIXES = ("lora_te2_", "text_encoder_2.")
_TE_PREFIXES = ("lora_te_", "lora_te1_", "text_encoder.")
# A LoRA layer's down (A) matrix: kohya ``.lora_down.weight``, diffusers ``.lora.down.weight`` /
# ``_lora.down.weight``, PEFT ``.lora_A.weight``.
_DOWN = re.compile(r"(?:lora_down|lora[._]down|lora_A)(?:\.[^.]+)?\.weight$")
# attn2 (cross-attention) key or value projection: its input width is the text features' width.
_CROSS_KV = re.compile(r"attn2[._](?:processor[._])?to[._][kv]")


@dataclass(frozen=True)
class LoraFile:
    path: Path
    weight: float
    key: str  # content id from the caller (the file's SHA-256): the adapter name, so one file loads once
    name: str  # the artist's name for it, in messages


@dataclass(frozen=True)
class LoraInfo:
    path: Path
    name: str
    family: str | None  # "sd15", "sdxl", "sd2" (unsupported), or None when its keys do not tell
    width: int | None  # cross-attention input width of its UNet layers, when it has any
    parts: tuple[str, ...]  # of "unet", "text_encoder", "text_encoder_2"
    layers: int  # LoRA layers (down matrices) in the file
    licence: str = ""  # as its metadata states it (the ModelSpec convention's ``modelspec.license``)


def inspect_lora(path: str | Path, known_widths: dict[int, str] | None = None, name: str = "") -> LoraInfo:
    """What the LoRA at ``path`` is for, from its header only.

    SDXL when it has second-text-encoder keys (``lora_te2_`` / ``text_encoder_2.``); else by the input width
    of its UNet cross-attention key/value layers: ``known_widths`` (width -> family, e.g. the local base
    models' ``cross_attention_dim``) first, then the real models' (768 SD 1.5, 2048 SDXL, 1024 SD 2.x).
    A file that is not safetensors, is cut short or holds no LoRA layers is INVALID_PARAMS.
    """
    file = Path(path)
    label = name or file.stem
    try:
        header = read_header(file)
    except HeaderError as exc:
        raise ModelError(messages.INVALID_PARAMS, f"LoRA '{label}' cannot be read: {exc}",
                         "Download the LoRA again (a .safetensors file), or remove it from the job.") from None
    downs = [key for key in header.tensors if _DOWN.search(key)]
    if not downs:
        raise ModelError(messages.INVALID_PARAMS,
                         f"LoRA '{label}' holds no LoRA layers (no lora_down / lora_A weights in its "
                         f"{len(header.tensors)} tensors): it is not a LoRA, or in a format not supported.",
                         "Choose a LoRA in the kohya-ss or diffusers format; a full checkpoint belongs in the "
                         "model registry instead.")
    parts = _parts(downs)
    width = _cross_width(header, downs)
    widths = {**STANDARD_WIDTHS, **(known_widths or {})}
    family = "sdxl" if "text_encoder_2" in parts else widths.get(width) if width is not None else None
    licence = header.metadata.get("modelspec.license", "").strip()
    return LoraInfo(file, label, family, width, parts, len(downs), licence)


def base_width(folder: str | Path) -> int | None:
    """Cross-attention width of a local pipeline folder's UNet (``unet/config.json``): for ``known_widths``."""
    try:
        width = json.loads((Path(folder) / "unet" / "config.json").read_text(encoding="utf-8"))["cross_attention_dim"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return width if isinstance(width, int) else None


def _parts(downs: list[str]) -> tuple[str, ...]:
    found = set()
    for key in downs:
        if key.startswith(_TE2_PREFIXES):
            found.add("text_encoder_2")
        elif key.startswith(_TE_PREFIXES):
            found.add("text_encoder")
        else:
            found.add("unet")
    return tuple(p for p in ("unet", "text_encoder", "text_encoder_2") if p in found)


def _cross_width(header: SafetensorsHeader, downs: list[str]) -> int | None:
    for key in downs:
        shape = header.shape(key)
        if _CROSS_KV.search(key) and shape is not None and len(shape) == 2:
            return shape[1]  # down: (rank, in_features)
    return None


def check_lora(info: LoraInfo, base_family: str, base_name: str) -> None:
    """MODEL_FAMILY when the LoRA is for another family than the base model (nothing has loaded yet).

    A LoRA whose family its keys do not tell (text encoder only, an unknown width) passes:
    :func:`apply_loras` then refuses it if it fits nothing in the model.
    """
    if info.family is None or info.family == base_family:
        return
    lora_label, base_label = _LABELS.get(info.family, info.family), _LABELS.get(base_family, base_family)
    if info.family in _UNSUPPORTED:
        raise ModelError(messages.MODEL_FAMILY,
                         f"LoRA '{info.name}' is for {lora_label}, which is not supported; '{base_name}' is "
                         f"{_family_phrase(base_family)}.",
                         f"Choose a LoRA made for {base_label} models.")
    raise ModelError(messages.MODEL_FAMILY,
                     f"LoRA '{info.name}' is for {lora_label}; '{base_name}' is {_family_phrase(base_family)}.",
                     f"Choose a LoRA made for {base_label} models, or {_family_phrase(info.family)} as the base "
                     "model for this LoRA.")


# --- on a pipeline ---------------------------------------------------------------------

# UNet -> adapter names in use order (oldest first). Weak: a released pipeline takes its entry with it.
_KEPT: weakref.WeakKeyDictionary[Any, OrderedDict[str, None]] = weakref.WeakKeyDictionary()


def adapter_name(key: str) -> str:
    """The PEFT adapter name for a content id: module-dict safe (no dots), bounded length."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", key.strip())[:64]
    if not cleaned:
        raise ValueError("a LoRA needs a non-empty key (its content id)")
    return f"lora_{cleaned}"


def apply_loras(pipe: Any, family: str, loras: list[LoraFile]) -> None:
    """Activate exactly ``loras`` (with their weights) on ``pipe``, loading those it does not hold yet.

    An empty list (or only weight-0 LoRAs) disables LoRA: the pipeline gives exactly its base output. A LoRA
    that fits no layer of the model, or fails to load, is INVALID_PARAMS; its half-loaded adapter is deleted
    and LoRA disabled, so the next job starts from the base model.
    """
    weights: dict[str, float] = {}
    files: dict[str, LoraFile] = {}
    for lora in loras:  # the same content twice adds up, as two copies of one LoRA would
        name = adapter_name(lora.key)
        weights[name] = weights.get(name, 0.0) + float(lora.weight)
        files.setdefault(name, lora)
    active = {name: weight for name, weight in weights.items() if weight != 0.0}
    if not active:
        clear_loras(pipe)
        return
    kept = _KEPT.setdefault(pipe.unet, OrderedDict())
    loaded = _adapters(pipe)
    for name in active:
        if name not in loaded:
            _load(pipe, family, files[name], name)
        kept[name] = None
        kept.move_to_end(name)
    stale = [name for name in kept if name not in active][:max(0, len(kept) - MAX_KEPT)]
    for name in stale:
        _delete(pipe, name)
        del kept[name]
    _activate(pipe, active)


def clear_loras(pipe: Any) -> None:
    """Disable every adapter (they stay loaded for later jobs): the pipeline gives its base output."""
    _activate(pipe, {})


def loaded_loras(pipe: Any) -> list[str]:
    """Adapter names loaded on ``pipe`` (active or not), least recently used first."""
    kept = _KEPT.get(pipe.unet, OrderedDict())
    present = _adapters(pipe)
    return [name for name in kept if name in present]


def _lora_models(pipe: Any) -> dict[str, Any]:
    names = getattr(pipe, "_lora_loadable_modules", ("unet", "text_encoder", "text_encoder_2"))
    return {name: model for name in names if (model := getattr(pipe, name, None)) is not None}


def _is_diffusers(model: Any) -> bool:
    """A diffusers model (the UNet), not a transformers text encoder: their LoRA methods differ."""
    from diffusers import ModelMixin

    return isinstance(model, ModelMixin)


def _adapters(pipe: Any) -> set[str]:
    return {name for model in _lora_models(pipe).values() for name in (getattr(model, "peft_config", None) or {})}


def _layer_count(pipe: Any, name: str) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for model in _lora_models(pipe).values() for module in model.modules()
               if isinstance(module, BaseTunerLayer) and name in getattr(module, "lora_A", {}))


def _load(pipe: Any, family: str, lora: LoraFile, name: str) -> None:
    from peft.utils.error import NoMatchingPeftModuleError

    info = inspect_lora(lora.path, name=lora.name)  # a truncated or non-LoRA file: a clear error first
    model = f"{_LABELS.get(family, family)} model"
    try:
        with _quiet_loading():
            pipe.load_lora_weights(str(lora.path), adapter_name=name)
    except NoMatchingPeftModuleError:
        _undo(pipe, name)
        raise _unmatched(info, model) from None
    except Exception as exc:  # conversion (KeyError, ValueError), shapes (RuntimeError), damaged data
        _undo(pipe, name)
        raise ModelError(messages.INVALID_PARAMS, f"LoRA '{info.name}' cannot be loaded into this {model}: {exc}",
                         f"Check that the LoRA is made for {_LABELS.get(family, family)} models, or download it "
                         "again.") from None
    layers = _layer_count(pipe, name)
    if layers == 0:
        _undo(pipe, name)
        raise _unmatched(info, model)
    if layers < info.layers:
        log.warning("LoRA '%s': %d of its %d layers fit this %s; the others are ignored", info.name, layers,
                    info.layers, model)


def _unmatched(info: LoraInfo, model: str) -> ModelError:
    return ModelError(messages.INVALID_PARAMS,
                      f"LoRA '{info.name}' fits no layer of this {model}: none of its {info.layers} layers name a "
                      "module the model has.",
                      "It is probably made for another model architecture (SD 2.x, SD 3, Flux, ...); choose a LoRA "
                      f"made for {model.removesuffix(' model')} models.")


def _undo(pipe: Any, name: str) -> None:
    """Delete a half-loaded adapter and disable LoRA (deleting may make another adapter active)."""
    _delete(pipe, name)
    clear_loras(pipe)


def _delete(pipe: Any, name: str) -> None:
    from diffusers.utils.peft_utils import delete_adapter_layers

    for model in _lora_models(pipe).values():
        if name not in (getattr(model, "peft_config", None) or {}):
            continue
        with warnings.catch_warnings():  # PEFT then activates another adapter; the caller sets them all next
            warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
            if _is_diffusers(model):
                model.delete_adapters([name])
            else:
                delete_adapter_layers(model, name)


def _activate(pipe: Any, active: dict[str, float]) -> None:
    """Exactly ``active`` on every part that holds any of them; parts holding none (the UNet, a text encoder)
    are disabled, so that they compute exactly their base output."""
    from diffusers.loaders.lora_base import (
        disable_lora_for_text_encoder,
        enable_lora_for_text_encoder,
        set_adapters_for_text_encoder,
    )

    for model in _lora_models(pipe).values():
        present = getattr(model, "peft_config", None) or {}
        if not present:
            continue
        names = [name for name in active if name in present]
        if not names and _is_diffusers(model):
            model.disable_lora()
        elif not names:
            disable_lora_for_text_encoder(model)
        elif _is_diffusers(model):
            model.enable_lora()
            model.set_adapters(names, [active[n] for n in names])
        else:
            enable_lora_for_text_encoder(model)
            set_adapters_for_text_encoder(names, model, [active[n] for n in names])


def _no_part_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No LoRA keys associated to")


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide chatter that misleads here: transformers lists the base weights as "missing" (a LoRA has none), PEFT
    warns that a model already holds adapters, diffusers that a LoRA has no text encoder part. _load checks fit."""
    transformers_log = logging.getLogger("transformers")
    level = transformers_log.level
    transformers_log.setLevel(logging.ERROR)
    loaders = [logging.getLogger(f"diffusers.loaders.{name}") for name in ("lora_base", "peft")]
    for logger in loaders:
        logger.addFilter(_no_part_notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        transformers_log.setLevel(level)
        for logger in loaders:
            logger.removeFilter(_no_part_notice)
