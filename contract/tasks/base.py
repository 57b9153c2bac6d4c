"""The two halves of every task: its parameters (what the add-on submits) and its outputs (what it gets back).

A task is named by its parameters class (``TextureParams.task == "texture"``), so a job can only be
submitted with parameters that belong to it. Outputs are split on the wire into the files a task
wrote (paths relative to the job folder: what a remote transport downloads) and facts (seed, counts,
warnings), and rebuilt into the same typed object on the other side.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from ..schema import ParamError, check_bounds, decode, encode

P = TypeVar("P", bound="TaskParams")
OutputsT = TypeVar("OutputsT", bound="TaskOutputs")

MIN_SIZE = 64
MAX_SIZE = 2048
MAX_STEPS = 200
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0


def output_file(default: Any = dataclasses.MISSING) -> Any:
    """An outputs field holding job-relative paths (a path, a list of them, or a name -> path object)."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"file": True})
    return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"file": True})


@dataclasses.dataclass(frozen=True)
class TaskOutputs:
    """Base of every task's outputs."""

    @classmethod
    def file_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("file"))

    def files(self) -> dict[str, Any]:
        """The file fields a task wrote, as JSON (``Result.outputs``); optional ones left empty are left out."""
        data = encode(self)
        return {name: data[name] for name in self.file_fields() if data[name] not in ("", [], {})}

    def info(self) -> dict[str, Any]:
        """Everything else (``Result.info``)."""
        data = encode(self)
        return {name: value for name, value in data.items() if name not in self.file_fields()}

    def paths(self) -> list[str]:
        """Every job-relative path the outputs name, once each."""
        found: list[str] = []
        for value in self.files().values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
            found.extend(p for p in items if isinstance(p, str) and p and p not in found)
        return found

    @classmethod
    def from_result(cls: type[OutputsT], files: dict[str, Any], info: dict[str, Any]) -> OutputsT:
        """Rebuild the outputs from ``Result.outputs`` and ``Result.info``; ParamError when they do not fit."""
        return decode(cls, {**info, **files}, cls.__name__)


@dataclasses.dataclass(frozen=True)
class TaskParams:
    """Base of every task's parameters: validated when built, on both sides of the boundary.

    Subclasses set ``task`` (the task's name) and ``outputs`` (its outputs class) and put their own
    checks in ``validate``; fields declared with ``schema.bounded`` are range-checked first."""

    task: ClassVar[str] = ""
    outputs: ClassVar[type[TaskOutputs]] = TaskOutputs

    def __post_init__(self) -> None:
        check_bounds(self)
        self.validate()

    def validate(self) -> None:
        """Checks beyond the declared bounds; raise ParamError."""

    @classmethod
    def from_dict(cls: type[P], data: dict[str, Any]) -> P:
        return decode(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return encode(self)

    def replace(self: P, **changes: Any) -> P:
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)


def check_seed(seed: int) -> None:
    if not -1 <= seed <= MAX_SEED:
        raise ParamError(f"seed must be -1 (random) or between 0 and {MAX_SEED}, got {seed}")


def check_size(name: str, value: int) -> None:
    if not MIN_SIZE <= value <= MAX_SIZE or value % 8:
        raise ParamError(f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} pixels, got {value}")


def check_preview_every(value: int) -> None:
    if value < 0:
        raise ParamError("preview_every must be 0 (no previews) or a positive step interval")


def check_generation(params: Any, what: str) -> None:
    """The bounds every text-conditioned generation shares: prompt, size, steps, guidance, seed."""
    if not params.prompt.strip():
        raise ParamError(f"prompt is empty: {what}")
    check_size("width", params.width)
    check_size("height", params.height)
    if not 1 <= params.steps <= MAX_STEPS:
        raise ParamError(f"steps must be between 1 and {MAX_STEPS}, got {params.steps}")
    if not 0.0 <= params.guidance <= MAX_GUIDANCE:
        raise ParamError(f"guidance must be between 0 and {MAX_GUIDANCE:g}, got {params.guidance}")
    check_seed(params.seed)
    check_preview_every(params.preview_every)
