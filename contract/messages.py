"""Messages between the add-on and the backend: one JSON object per line.

Standard library only: the add-on (Blender's Python, no torch) imports this module too.
Every message carries ``type``; job messages carry the job ``id``. Unknown fields are
ignored on decode so a newer peer can add fields without breaking an older one; the
protocol version in the handshake changes only when a field changes meaning.

Decoding checks every known field's type against the dataclass below (``contract.schema``), so
an ill-typed line is a ProtocolError naming the field and never reaches a worker.

Over the network (``python -m backend serve --listen``) the same messages travel on a TLS
connection, plus the remote-only ones at the end of each section: ``Auth`` first, then file
transfers. ``Chunk`` and ``FileData`` are each followed by exactly ``size`` raw bytes on the
wire (contract/framing.py); every other message is one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .schema import ParamError
from .schema import decode as decode_fields

PROTOCOL_VERSION = 2  # 2: typed decoding, remote messages, Submit.files, Progress.phase

# Job ids name folders on the server: letters, digits, "-" and "_" only.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class ProtocolError(ValueError):
    """A line that is not a valid message."""


# -- add-on -> backend -------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    """Run ``task`` on the job folder ``job_dir`` (inputs/ there, outputs/ written there).

    Remote: ``job_dir`` is empty (a client never names a server path) and ``files`` maps each
    input's path inside the job folder to the SHA-256 of content already uploaded."""

    id: str
    task: str
    job_dir: str
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
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
class Preload:
    """Load the model ``model`` (empty: the registry's default for ``role``) before a job asks for it, so the
    artist's first job skips the load. Taken only while the backend is idle with nothing loaded and memory
    allows; answered by Status either way (``loaded`` says whether it happened). A refusal or failure is only
    logged by the backend: the first job then loads the model as it always did."""

    role: str
    model: str = ""
    type: str = "preload"


@dataclass(frozen=True)
class Shutdown:
    type: str = "shutdown"


@dataclass(frozen=True)
class Auth:
    """Remote only, and the first line on every connection: the server's token, and this client's
    own secret key (random, kept for the client's session) that owns its jobs: only the same key
    can cancel them or attach to them again after a reconnect."""

    token: str
    client: str
    type: str = "auth"


@dataclass(frozen=True)
class Attach:
    """Remote: after a reconnect, ask for jobs this client submitted before. The server answers each
    id with its state now: Accepted (queued), Progress (running), the job's final message (Files then
    Result, Error or Cancelled) or Error ``unknown_job``."""

    ids: list[str]
    type: str = "attach"


@dataclass(frozen=True)
class Ping:
    """Remote keepalive; answered at once with Pong, even while a job runs."""

    n: int = 0
    type: str = "ping"


@dataclass(frozen=True)
class UploadStart:
    """Remote: about to upload content ``sha256`` of ``size`` bytes. Answered with UploadOffset:
    how many bytes the server already holds (``size`` when the whole file is there: send nothing)."""

    sha256: str
    size: int
    type: str = "upload_start"


@dataclass(frozen=True)
class Chunk:
    """Remote: followed by ``size`` raw bytes of content ``sha256`` starting at ``offset``. After the
    chunk that completes the file the server checks the hash and answers Stored (or Error)."""

    sha256: str
    offset: int
    size: int
    type: str = "chunk"


@dataclass(frozen=True)
class Download:
    """Remote: send the file ``path`` (inside job ``id``'s folder) from ``offset`` on, as FileData frames."""

    id: str
    path: str
    offset: int = 0
    type: str = "download"


# -- backend -> add-on -------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """``warnings``: what the artist should know about the device, e.g. a GPU the backend's torch cannot use
    (added after protocol 2 without a bump: older peers ignore it, and a line without it decodes as none)."""

    protocol: int
    backend_version: str
    device: str
    dtype: str
    versions: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    warnings: list[str] = field(default_factory=list)
    memory: str = ""  # the VRAM mode in force, e.g. "8 GB: model offload + VAE tiling" (optional, like warnings)
    type: str = "handshake"


@dataclass(frozen=True)
class Accepted:
    id: str
    queued: int = 0
    type: str = "accepted"


@dataclass(frozen=True)
class Progress:
    """``preview`` is a PNG path relative to the job folder, when one was written. ``phase`` is ""
    while the task runs; a remote client reports moving files as "upload" / "download" with
    ``step`` and ``total`` in bytes."""

    id: str
    step: int
    total: int
    preview: str | None = None
    message: str = ""
    phase: str = ""
    type: str = "progress"


@dataclass(frozen=True)
class Result:
    """``outputs`` maps output names to paths relative to the job folder."""

    id: str
    outputs: dict[str, Any]  # a name -> a path, or a list / dict of paths (pbr maps)
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
    """``job`` and ``queued`` are this client's own jobs; ``positions`` gives each queued one's place in
    the server's whole queue (0: next), ``waiting`` counts every client's queued jobs."""

    state: str
    job: str | None = None
    queued: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    waiting: int = 0
    clients: int = 0
    type: str = "status"


@dataclass(frozen=True)
class FileRef:
    sha256: str
    size: int


@dataclass(frozen=True)
class Files:
    """Remote, before a job's Result: every file of its folder the client should have (outputs/,
    job.json, the log), by path inside the job folder; the client downloads what it lacks."""

    id: str
    files: dict[str, FileRef]
    type: str = "files"


@dataclass(frozen=True)
class Pong:
    n: int = 0
    type: str = "pong"


@dataclass(frozen=True)
class UploadOffset:
    sha256: str
    offset: int
    type: str = "upload_offset"


@dataclass(frozen=True)
class Stored:
    sha256: str
    type: str = "stored"


@dataclass(frozen=True)
class FileData:
    """Followed by ``size`` raw bytes of ``path`` (job ``id``) from ``offset``; ``total`` is the file's size.
    Frames follow each other until ``offset + size == total``."""

    id: str
    path: str
    offset: int
    size: int
    total: int
    type: str = "file_data"


@dataclass(frozen=True)
class Bye:
    type: str = "bye"


Message = (Submit | Cancel | StatusRequest | Release | Preload | Shutdown | Auth | Attach | Ping | UploadStart | Chunk
           | Download | Handshake | Accepted | Progress | Result | Cancelled | Error | Status | Bye | Files
           | Pong | UploadOffset | Stored | FileData)

REQUESTS: tuple[type, ...] = (Submit, Cancel, StatusRequest, Release, Preload, Shutdown, Auth, Attach, Ping,
                              UploadStart, Chunk, Download)
REPLIES: tuple[type, ...] = (Handshake, Accepted, Progress, Result, Cancelled, Error, Status, Bye, Files,
                             Pong, UploadOffset, Stored, FileData)

_TYPES: dict[str, type] = {
    cls.type: cls  # type: ignore[attr-defined]
    for cls in REQUESTS + REPLIES
}

# Error codes shared by both sides.
BAD_MESSAGE = "bad_message"
UNKNOWN_TASK = "unknown_task"
INVALID_PARAMS = "invalid_params"
MODEL_MISSING = "model_missing"
MODEL_FAMILY = "model_family"
MODEL_LICENCE = "model_licence"  # a model whose stated licence forbids what the job is for (commercial work)
OUT_OF_MEMORY = "out_of_memory"
DEPENDENCY = "dependency"
INTERNAL = "internal"
# Remote only.
UNAUTHORIZED = "unauthorized"  # no Auth first, or a wrong token; the connection is closed
NOT_YOURS = "not_yours"  # another client's job (cancel, attach, download)
UNKNOWN_JOB = "unknown_job"
BAD_FILE = "bad_file"  # an upload's name, size or hash is refused
TOO_LARGE = "too_large"  # a line or upload over the server's limit


def encode(message: Message) -> str:
    """One line of JSON, newline included."""
    return json.dumps(asdict(message), separators=(",", ":")) + "\n"


def decode(line: str | bytes) -> Message:
    """Parse one line; raise ProtocolError with a readable reason when it is not a message."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:  # also: deep nesting, integers over Python's digit limit
        raise ProtocolError(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    known = {f.name for f in fields(cls)}
    try:
        message: Any = decode_fields(cls, {k: v for k, v in data.items() if k in known}, str(kind))
    except ParamError as exc:
        raise ProtocolError(str(exc)) from None
    _check_values(message)
    return message  # type: ignore[no-any-return]


def _check_values(message: Any) -> None:
    """What types alone do not say: ids and hashes are short and plain, sizes and offsets not negative."""
    kind = message.type
    for name in ("id",):
        value = getattr(message, name, None)
        if isinstance(value, str) and not ID_PATTERN.fullmatch(value):
            raise ProtocolError(f"{kind}.{name} must be 1-64 letters, digits, '-' or '_', got {value[:80]!r}")
    for value in getattr(message, "ids", ()):
        if not ID_PATTERN.fullmatch(value):
            raise ProtocolError(f"{kind}.ids must hold 1-64 letters, digits, '-' or '_', got {value[:80]!r}")
    sha = getattr(message, "sha256", None)
    if sha is not None and not SHA256_PATTERN.fullmatch(sha):
        raise ProtocolError(f"{kind}.sha256 must be 64 lowercase hex digits, got {sha[:80]!r}")
    for name in ("size", "offset", "total", "step", "n"):
        value = getattr(message, name, None)
        if isinstance(value, int) and value < 0:
            raise ProtocolError(f"{kind}.{name} must not be negative, got {value}")
    if isinstance(message, Submit):
        for path, digest in message.files.items():
            if not SHA256_PATTERN.fullmatch(digest):
                raise ProtocolError(f"submit.files[{path[:80]!r}] must be a SHA-256 (64 lowercase hex digits)")
