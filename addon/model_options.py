"""What an artist adds to a base model in the Texture, Render and Project panels: LoRAs, a sampler and a
reference image (one ``ModelOptionsSettings`` under each of those settings groups), and the model menu's names.

The LoRA files and the reference image become job inputs (:mod:`.model_inputs` writes them); the parameters
name them by their job-relative paths, so a remote server sees the same job as the local backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty

from ..contract.tasks import (
    MAX_LORAS,
    SCHEDULER_DEFAULTS,
    SCHEDULER_LABELS,
    SCHEDULERS,
    LoraParams,
    ParamError,
    lora_input,
    reference_input,
)
from ..contract.tasks.options import LORA_SUFFIX, MAX_LORA_WEIGHT, MAX_REFERENCE_STRENGTH
from . import preferences
from .jobs.model_sizes import REGISTRY_FILE

DEFAULT_SCHEDULER = "DEFAULT"  # Blender enums need a name; the contract's "" (the family's default)
# The built-in registry's text-to-image models (backend/models/registry.py; a unit test keeps them equal).
BUILTIN_MODELS = ("sd15", "sdxl", "flux-schnell", "flux-dev", "flux2-klein", "qwen-image", "z-image-turbo",
                  "sd35-large", "sd35-medium")
TEXT_TO_IMAGE = "text_to_image"
REFERENCE_INPUT = reference_input(".npy")  # the image's pixels as Blender holds them (scene_export.pixels)


def _scheduler_items() -> list[tuple[str, str, str]]:
    defaults = {SCHEDULER_LABELS[name] for name in SCHEDULER_DEFAULTS.values()}
    shown = defaults.pop() if len(defaults) == 1 else "the family's"
    return [(DEFAULT_SCHEDULER, f"Default ({shown})", "The sampler most artists use with the model's family"),
            *((name, SCHEDULER_LABELS[name], "") for name in SCHEDULERS)]


class OptionsError(ParamError):
    """A LoRA that cannot be used; the message names it and says what to do. A ParamError, so every operator
    reports it before it makes a job folder."""


class LoraEntry(bpy.types.PropertyGroup):
    filepath: StringProperty(  # type: ignore[valid-type]
        name="LoRA File", subtype="FILE_PATH", description=f"A LoRA for the base model's family ({LORA_SUFFIX})")
    weight: FloatProperty(  # type: ignore[valid-type]
        name="Weight", default=1.0, min=-MAX_LORA_WEIGHT, max=MAX_LORA_WEIGHT, soft_min=-2.0, soft_max=2.0,
        description="How strongly the LoRA changes the model (negative for slider LoRAs)")
    enabled: BoolProperty(name="Enabled", default=True, description="Use this LoRA")  # type: ignore[valid-type]


@dataclass(frozen=True)
class OptionFiles:
    """The files a job's model options need in its folder: (artist's LoRA file, job-relative path) pairs and
    the reference image datablock's name ("" for none)."""

    loras: tuple[tuple[Path, str], ...] = ()
    reference: str = ""

    def write(self, job_dir: Path) -> None:
        """Place them in ``job_dir``; OSError or ValueError (an image without pixels) when that fails."""
        from . import model_inputs

        model_inputs.write(job_dir, self)


class ModelOptionsSettings(bpy.types.PropertyGroup):
    show: BoolProperty(name="Model Options", default=False, description="Show LoRAs, sampler and reference")  # type: ignore[valid-type]
    loras: CollectionProperty(type=LoraEntry)  # type: ignore[valid-type]
    scheduler: EnumProperty(name="Sampler", items=_scheduler_items(), default=DEFAULT_SCHEDULER)  # type: ignore[valid-type]
    reference: PointerProperty(  # type: ignore[valid-type]
        name="Reference Image", type=bpy.types.Image,
        description="An image whose style and content guide the generation (IP-Adapter); empty: none")
    reference_strength: FloatProperty(  # type: ignore[valid-type]
        name="Strength", default=0.6, min=0.0, max=MAX_REFERENCE_STRENGTH, subtype="FACTOR",
        description="How much the reference image guides the generation")

    def lora_files(self) -> list[tuple[Path, LoraParams]]:
        """The enabled LoRAs, checked: each an existing .safetensors file. OptionsError says which is not."""
        enabled = [entry for entry in self.loras if entry.enabled]
        if len(enabled) > MAX_LORAS:
            raise OptionsError(f"{len(enabled)} LoRAs are enabled; a job takes at most {MAX_LORAS}: "
                               "disable or remove some")
        rows = []
        for index, entry in enumerate(enabled):
            if not entry.filepath.strip():
                raise OptionsError(f"LoRA {index + 1} has no file: choose its {LORA_SUFFIX} file or remove the row")
            path = Path(bpy.path.abspath(entry.filepath.strip()))
            if path.suffix.lower() != LORA_SUFFIX:
                raise OptionsError(f"LoRA {path.name} is not a {LORA_SUFFIX} file (pickle LoRAs such as .pt and "
                                   f".ckpt can run code when loaded): use the {LORA_SUFFIX} version of it")
            if not path.is_file():
                raise OptionsError(f"LoRA file not found: {path}. Choose the file again or remove the row")
            rows.append((path, LoraParams(file=lora_input(index, path.name), weight=_exact(entry.weight),
                                                name=path.name)))
        return rows

    def files(self) -> OptionFiles:
        """What :meth:`OptionFiles.write` places in a job folder (checked like :meth:`lora_files`)."""
        loras = tuple((path, lora.file) for path, lora in self.lora_files())
        return OptionFiles(loras, self.reference.name if self.reference is not None else "")

    def param_fields(self) -> dict[str, Any]:
        """Keyword arguments for a generating task's parameters (ModelOptions' fields)."""
        from .scene_export.pixels import colorspace_of  # numpy: not at register time

        return dict(loras=[lora for _path, lora in self.lora_files()],
                    scheduler="" if self.scheduler == DEFAULT_SCHEDULER else self.scheduler,
                    reference=REFERENCE_INPUT if self.reference is not None else "",
                    reference_colorspace=colorspace_of(self.reference) if self.reference is not None else "srgb",
                    reference_strength=_exact(self.reference_strength), commercial=commercial())


def _exact(value: float) -> float:
    """Blender stores single-precision floats: 0.7 reads back as 0.699999988; job.json records what was typed."""
    return round(value, 4)


def commercial() -> bool:
    """The "Commercial Work" preference, which every job's parameters carry."""
    return bool(preferences.get().commercial_work)


def registry_text_to_image(registry: str | None) -> list[str]:
    """The text-to-image model names of a registry file (or folder holding registry.json); [] when unreadable.
    Entries without a "kind" are text-to-image models, as the backend reads them."""
    if not registry:
        return []
    file = Path(registry).expanduser()
    if file.is_dir():
        file = file / REGISTRY_FILE
    try:
        models = json.loads(file.read_text(encoding="utf-8")).get("models", {})
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(models, dict):
        return []
    return [str(name) for name, entry in models.items()
            if isinstance(entry, dict) and entry.get("kind", TEXT_TO_IMAGE) == TEXT_TO_IMAGE]


def known_models() -> list[str]:
    """Base model names the model menus offer: built-in, the registry file's, the artist's checkpoints."""
    prefs = preferences.get()
    names = [*BUILTIN_MODELS, *registry_text_to_image(preferences.models_registry()),
             *(entry.name for entry in prefs.checkpoints if entry.name.strip())]
    return list(dict.fromkeys(names))


def model_search(_settings: object, _context: object, edit_text: str) -> list[str]:
    """StringProperty search: the known names containing what was typed (any other text is still taken)."""
    typed = edit_text.strip().lower()
    return [name for name in known_models() if typed in name.lower()]


classes = (LoraEntry, ModelOptionsSettings)
