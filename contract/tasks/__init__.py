"""Every task's parameters and outputs, by task name: the one list both processes agree on."""

from __future__ import annotations

from typing import Any

from ..schema import ParamError
from .base import MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE, TaskOutputs, TaskParams
from .mesh import ImportMeshParams, MeshOutputs, MeshParams
from .options import (
    MAX_LORAS,
    SCHEDULER_DEFAULTS,
    SCHEDULER_LABELS,
    SCHEDULERS,
    LicencePolicy,
    LoraParams,
    ModelOptions,
    lora_input,
    reference_input,
)
from .pbr import (
    MAP_NAMES,
    MAX_MAP_SIZE,
    ExportMapsOutputs,
    ExportMapsParams,
    ImportMapsOutputs,
    ImportMapsParams,
    PbrOutputs,
    PbrParams,
)
from .project import (
    MAX_BLEND_EXPONENT,
    MAX_PADDING,
    MAX_TEXTURE_SIZE,
    MAX_VIEWS,
    MIN_TEXTURE_SIZE,
    ProjectImageOutputs,
    ProjectImageParams,
    ProjectTextureOutputs,
    ProjectTextureParams,
)
from .render import MAX_CANNY_THRESHOLD, MAX_CONTROL_WEIGHT, ControlParams, RenderOutputs, RenderParams
from .texture import TextureOutputs, TextureParams

TASKS: dict[str, type[TaskParams]] = {cls.task: cls for cls in (
    TextureParams, RenderParams, PbrParams, ExportMapsParams, ImportMapsParams, MeshParams, ImportMeshParams,
    ProjectImageParams, ProjectTextureParams)}


def params_for(task: str, data: dict[str, Any]) -> TaskParams:
    """The typed parameters of ``task`` from a request's JSON; ParamError when unknown or invalid."""
    cls = TASKS.get(task)
    if cls is None:
        raise ParamError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return cls.from_dict(data)


__all__ = [
    "MAP_NAMES", "MAX_BLEND_EXPONENT", "MAX_CANNY_THRESHOLD", "MAX_CONTROL_WEIGHT", "MAX_MAP_SIZE", "MAX_PADDING",
    "MAX_LORAS", "MAX_SEED", "SCHEDULERS", "SCHEDULER_DEFAULTS", "SCHEDULER_LABELS", "LicencePolicy", "LoraParams",
    "ModelOptions", "lora_input", "reference_input", "MAX_SIZE", "MAX_STEPS", "MAX_TEXTURE_SIZE", "MAX_VIEWS",
    "MIN_SIZE", "MIN_TEXTURE_SIZE",
    "TASKS", "ControlParams", "ExportMapsOutputs", "ExportMapsParams", "ImportMapsOutputs", "ImportMapsParams",
    "ImportMeshParams", "MeshOutputs", "MeshParams", "ParamError", "PbrOutputs", "PbrParams",
    "ProjectImageOutputs", "ProjectImageParams", "ProjectTextureOutputs", "ProjectTextureParams",
    "RenderOutputs", "RenderParams", "TaskOutputs", "TaskParams", "TextureOutputs", "TextureParams", "params_for",
]
