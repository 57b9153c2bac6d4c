"""What a ``.safetensors`` file holds, from its header alone: tensor names, shapes, dtypes, metadata.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, data offsets;
``__metadata__`` -> strings), then the tensor bytes. Reading only the header tells a checkpoint from a
LoRA, finds a model's family and catches a truncated download before anything loads (diffusers would
fail halfway with an unclear error). Standard library only.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit (safetensors refuses larger headers)


class HeaderError(ValueError):
    """Not a readable safetensors file; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    def has_prefix(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in self.tensors)

    def shape(self, name: str) -> tuple[int, ...] | None:
        info = self.tensors.get(name)
        return info.shape if info is not None else None


def read_header(path: str | Path) -> SafetensorsHeader:
    """The header of ``path``; HeaderError when the file is not safetensors or is cut short."""
    file = Path(path)
    try:
        size = file.stat().st_size
        with file.open("rb") as stream:
            head = stream.read(8)
            if len(head) < 8:
                raise HeaderError(f"{file} is too short to be a safetensors file ({size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise HeaderError(f"{file} is not a safetensors file, or it is truncated "
                                  f"(header of {length} bytes in a file of {size})")
            raw = stream.read(length)
    except OSError as exc:
        raise HeaderError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HeaderError(f"{file} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(data, dict):
        raise HeaderError(f"{file} is not a safetensors file (its header is not a JSON object)")
    metadata = data.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    end = 0
    for name, entry in data.items():
        try:
            begin, stop = entry["data_offsets"]
            tensors[name] = TensorInfo(str(entry["dtype"]), tuple(int(n) for n in entry["shape"]))
        except (KeyError, TypeError, ValueError):
            raise HeaderError(f"{file} is not a safetensors file (entry {name!r} is malformed)") from None
        end = max(end, int(stop))
    if 8 + length + end > size:
        raise HeaderError(f"{file} is truncated: its tensors need {8 + length + end} bytes, the file has {size}. "
                          "Download it again.")
    return SafetensorsHeader(file, tensors, {str(k): str(v) for k, v in dict(metadata).items()})
