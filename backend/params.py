"""Task parameters with their bounds, validated on both sides of the pipe.

Standard library only: the add-on validates with the same code before it starts a job, so
an out-of-range size is a clear message in Blender rather than an error from the backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MIN_SIZE = 64
MAX_SIZE = 2048
MAX_STEPS = 200
MAX_SEED = 2**32 - 1


class ParamError(ValueError):
    """Invalid parameters; the message says which one and what is allowed."""


def check_size(name: str, value: int) -> None:
    if not MIN_SIZE <= value <= MAX_SIZE or value % 8:
        raise ParamError(
            f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} pixels, got {value}")


@dataclass(frozen=True)
class TextureParams:
    prompt: str
    negative_prompt: str = ""
    seed: int = -1  # -1: pick one at random (the one used is recorded in job.json)
    steps: int = 20
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    seamless_x: bool = True
    seamless_y: bool = True
    model: str = ""  # a registry model name; empty: the registry's text_to_image model
    preview_every: int = 2  # write a preview PNG every N steps (0: never)

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ParamError("prompt is empty: describe the texture to generate")
        check_size("width", self.width)
        check_size("height", self.height)
        if not 1 <= self.steps <= MAX_STEPS:
            raise ParamError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not 0.0 <= self.guidance <= 30.0:
            raise ParamError(f"guidance must be between 0 and 30, got {self.guidance}")
        if not -1 <= self.seed <= MAX_SEED:
            raise ParamError(f"seed must be -1 (random) or between 0 and {MAX_SEED}, got {self.seed}")
        if self.preview_every < 0:
            raise ParamError("preview_every must be 0 (no previews) or a positive step interval")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextureParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float), "bool": bool}


def _from_dict(cls: Any, data: dict[str, Any]) -> Any:
    """Build a params dataclass from JSON, naming unknown or mistyped fields."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ParamError(f"unknown parameter(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = known[name].type
        expected = _JSON_TYPES.get(str(kind))
        if expected is not None and (not isinstance(value, expected) or
                                     (expected is int and isinstance(value, bool))):
            raise ParamError(f"{name} must be {kind}, got {value!r}")
        values[name] = float(value) if kind == "float" else value
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ParamError(str(exc)) from None
