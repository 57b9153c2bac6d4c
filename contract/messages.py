"""Messages between the add-on and the backend: one JSON object per line.

Standard library only: the add-on (Blender's Python, no torch) imports this module too.
Every message carries ``type``; job messages carry the job ``id``. Unknown fields are
ignored on decode so a newer peer can add fields without breaking an older one; the
protocol version in the handshake changes only when a field changes meaning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROTOCOL_VERSION = 1


class ProtocolError(ValueError):
    """A line that is not a valid message."""


# -- add-on -> backend -------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    """Run ``task`` on the job folder ``job_dir`` (inputs/ there, outputs/ written there)."""

    id: str
    task: str
    job_dir: str
    params: dict[str, Any] = field(default_factory=dict)
    type: str = "submit"


@dataclass(frozen=True)
class Cancel:
    id: str
    type: str = "cancel"


@dataclass(frozen=True)
class StatusRequest:
    type: str = "status_request"


@dataclass(frozen=True)
class Release:
    """Drop loaded pipelines and free device memory, after the running job; answered by Status."""

    type: str = "release"


@dataclass(frozen=True)
class Shutdown:
    type: str = "shutdown"


# -- backend -> add-on -------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    protocol: int
    backend_version: str
    device: str
    dtype: str
    versions: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    type: str = "handshake"


@dataclass(frozen=True)
class Accepted:
    id: str
    queued: int = 0
    type: str = "accepted"


@dataclass(frozen=True)
class Progress:
    """``preview`` is a PNG path relative to the job folder, when one was written."""

    id: str
    step: int
    total: int
    preview: str | None = None
    message: str = ""
    type: str = "progress"


@dataclass(frozen=True)
class Result:
    """``outputs`` maps output names to paths relative to the job folder."""

    id: str
    outputs: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)
    type: str = "result"


@dataclass(frozen=True)
class Cancelled:
    id: str
    type: str = "cancelled"


@dataclass(frozen=True)
class Error:
    """``id`` is None for errors about a line rather than a job."""

    id: str | None
    code: str
    message: str
    hint: str = ""
    type: str = "error"


@dataclass(frozen=True)
class Status:
    state: str
    job: str | None = None
    queued: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    type: str = "status"


@dataclass(frozen=True)
class Bye:
    type: str = "bye"


Message = (Submit | Cancel | StatusRequest | Release | Shutdown
           | Handshake | Accepted | Progress | Result | Cancelled | Error | Status | Bye)

_TYPES: dict[str, type] = {
    cls.type: cls  # type: ignore[attr-defined]
    for cls in (Submit, Cancel, StatusRequest, Release, Shutdown, Handshake, Accepted,
                Progress, Result, Cancelled, Error, Status, Bye)
}

# Error codes shared by both sides.
BAD_MESSAGE = "bad_message"
UNKNOWN_TASK = "unknown_task"
INVALID_PARAMS = "invalid_params"
MODEL_MISSING = "model_missing"
MODEL_FAMILY = "model_family"
OUT_OF_MEMORY = "out_of_memory"
DEPENDENCY = "dependency"
INTERNAL = "internal"


def encode(message: Message) -> str:
    """One line of JSON, newline included."""
    return json.dumps(asdict(message), separators=(",", ":")) + "\n"


def decode(line: str | bytes) -> Message:
    """Parse one line; raise ProtocolError with a readable reason when it is not a message."""
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[no-any-return]
    except TypeError as exc:
        raise ProtocolError(f"{kind}: {exc}") from None
