"""Which files a mesh from another tool brings into a job (task "import_mesh"): the file itself and, for a
glTF, the buffers and images it names beside it, so the job folder holds everything the backend reads."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ..tasks.mesh import MESH_FORMATS
from . import FormatError

INPUT_FOLDER = "inputs/mesh"


def mesh_file_inputs(path: Path) -> list[tuple[Path, str]]:
    """(file to copy, job-relative path) for the mesh file at ``path``, the mesh file first."""
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise FormatError(f"{path.name}: unsupported format; use {', '.join(MESH_FORMATS)}")
    pairs = [(path, f"{INPUT_FOLDER}/mesh{suffix}")]
    if suffix != ".gltf":
        return pairs
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path.name} is not a readable glTF file: {exc}") from None
    entries = [*(document.get("buffers") or []), *(document.get("images") or [])] if isinstance(document, dict) else []
    for entry in entries:
        uri = entry.get("uri") if isinstance(entry, dict) else None
        if not isinstance(uri, str) or uri.startswith("data:"):
            continue  # embedded, or a bufferView image
        relative = PurePosixPath(uri.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts or ":" in uri:
            raise FormatError(f"{path.name} names {uri!r}: only files beside it (or in folders below it) can be read")
        source = path.parent / relative
        if not source.is_file():
            raise FormatError(f"{path.name} names {uri}, which does not exist beside it")
        pairs.append((source, f"{INPUT_FOLDER}/{relative.as_posix()}"))
    return pairs
