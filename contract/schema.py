"""Typed JSON for the contract's dataclasses: decode with type checks, encode with ``asdict``, bounds.

Every parameters and outputs class is a frozen dataclass whose field annotations say what JSON must
hold; ``decode`` checks each value against them (nested dataclasses, lists, dicts, optionals) and
names the field that is wrong, so a malformed request is a clear ParamError, never a crash later.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ParamError(ValueError):
    """Invalid parameters; the message says which one and what is allowed."""


def bounded(default: Any, low: float, high: float, what: str = "") -> Any:
    """A numeric field with inclusive bounds, checked by ``check_bounds`` (``what`` names it in messages)."""
    return dataclasses.field(default=default, metadata={"bounds": (low, high), "what": what})


def check_bounds(obj: Any) -> None:
    """Raise ParamError for the first field declared with ``bounded`` whose value lies outside its bounds."""
    for item in dataclasses.fields(obj):
        bounds = item.metadata.get("bounds")
        if bounds is None:
            continue
        value, (low, high) = getattr(obj, item.name), bounds
        if not low <= value <= high:
            name = item.metadata.get("what") or item.name
            raise ParamError(f"{name} must be between {low:g} and {high:g}, got {value}")


def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ParamError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def relative(name: str, value: str) -> None:
    """A path inside the job folder: relative, no ``..``, no drive letter."""
    parts = value.replace("\\", "/").split("/")
    if not value or value.startswith(("/", "\\")) or ".." in parts or (len(value) > 1 and value[1] == ":"):
        raise ParamError(f"{name} must be a path inside the job folder, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _decode_value(hint: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as ``hint`` says; ParamError naming ``where`` when it does not fit."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _decode_value(option, value, where)
            except ParamError:
                continue
        raise ParamError(f"{where} must be {' or '.join(_type_name(o) for o in options)}, got {value!r:.80}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ParamError(f"{where} must be an object, got {value!r:.80}")
        return decode(hint, value, where)  # type: ignore[arg-type]
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise ParamError(f"{where} must be a list, got {value!r:.80}")
        (item,) = typing.get_args(hint)[:1]
        return [_decode_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamError(f"{where} must be an object, got {value!r:.80}")
        _, item = typing.get_args(hint)
        return {str(k): _decode_value(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"{where} must be float, got {value!r:.80}")
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ParamError(f"{where} must be {hint.__name__}, got {value!r:.80}")
        return value
    raise TypeError(f"schema: no JSON decoding for {hint!r} ({where})")


def decode(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build the dataclass ``cls`` from a JSON object, naming unknown, missing and mistyped fields."""
    if not isinstance(data, dict):
        raise ParamError(f"{where or cls.__name__} must be an object, got {data!r:.80}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)  # type: ignore[arg-type]
             if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ParamError(f"unknown parameter(s){' in ' + where if where else ''}: {', '.join(unknown)}")
    prefix = f"{where}." if where else ""
    values = {name: _decode_value(hints[name], value, prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ParamError(f"{where or cls.__name__}: {exc}") from None


def encode(obj: Any) -> dict[str, Any]:
    """The dataclass as plain JSON types (nested dataclasses become objects)."""
    return dataclasses.asdict(obj)
