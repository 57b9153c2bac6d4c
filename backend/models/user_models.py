"""The artist's own checkpoints, added in the add-on's preferences, merged into the registry.

The add-on writes them to a small JSON file (``--user-models FILE``, local backend only: a remote server's
models are its own registry's) in the registry's format: ``{"format": 1, "models": {name: {"source": FILE,
"family": "sd15" | "sdxl" | "auto", "kind": "text_to_image"}}}``. ``"auto"`` takes the family from the
checkpoint's own keys; the component configs come from the family's base model in the Hugging Face cache or a
local folder of that family in the registry. An entry that cannot be used is left out with a warning, so one
bad file never stops the backend from starting; using it by name then says it is unknown.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from backend.models.errors import ModelError
from backend.models.families import FAMILIES, ModelSpec
from backend.models.registry import Registry

log = logging.getLogger("backend.models")


def merge_user_models(registry: Registry, file: str | Path | None) -> tuple[Registry, list[str]]:
    """``registry`` with the file's models added (a name the registry has is replaced); the warnings."""
    if not file:
        return registry, []
    path = Path(file).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return registry, [f"your checkpoints list {path} cannot be read ({exc}); they are not available"]
    entries = data.get("models", {}) if isinstance(data, dict) else {}
    if not isinstance(entries, dict):
        return registry, [f"your checkpoints list {path} has no \"models\" object; they are not available"]
    models, warnings = dict(registry.models), []
    for name, entry in entries.items():
        try:
            models[str(name)] = _with_config(_spec(str(name), entry), registry)
        except ModelError as exc:
            warnings.append(f"checkpoint '{name}' left out: {exc.message}")
    for warning in warnings:
        log.warning("%s", warning)
    return replace(registry, models=models), warnings


def _with_config(spec: ModelSpec, registry: Registry) -> ModelSpec:
    """A checkpoint's component configs: its family's base model in the Hugging Face cache, else a local
    diffusers folder of that family the registry names (its configs are the same for every fine-tune)."""
    from backend.models.checkpoint import locate_config
    from backend.models.registry import is_local_source

    if spec.config or locate_config(spec) is not None:
        return spec
    for other in registry.models.values():
        if (other.family == spec.family and other.kind == "text_to_image" and is_local_source(other)
                and Path(other.source, "model_index.json").is_file()):
            return replace(spec, config=other.source)
    return spec  # loading it says what to download


def _spec(name: str, entry: Any) -> ModelSpec:
    from contract import messages

    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
        raise ModelError(messages.MODEL_MISSING, "it needs a \"source\" file", "")
    source = Path(entry["source"]).expanduser()
    if not source.is_file():
        raise ModelError(messages.MODEL_MISSING, f"{source} does not exist", "")
    family = entry.get("family", "auto")
    if family == "auto":
        from backend.models.checkpoint import checkpoint_family

        family = checkpoint_family(source)
    if family not in FAMILIES:
        raise ModelError(messages.MODEL_FAMILY, f"family {family!r} is not supported", "")
    return ModelSpec(name=name, source=str(source.resolve()), family=family,
                     kind=str(entry.get("kind", "text_to_image")), licence=str(entry.get("licence", "")))
