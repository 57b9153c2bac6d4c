"""The artist's own checkpoints (the preferences' list) as a registry file the backend merges into its own
(``--user-models FILE``). No bpy: the preferences hand over their rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ...contract import jobfolder

FILE_NAME = "user_models.json"
FORMAT = 1
FAMILIES = ("auto", "sd15", "sdxl")
KIND = "text_to_image"

# (name, absolute file, family) per checkpoint: also part of the launch config, so a changed list restarts the
# local backend.
Entry = tuple[str, str, str]


def entries(rows: Iterable[Any], abspath: Callable[[str], str] = str) -> tuple[Entry, ...]:
    """The rows that name a model and a file (``name``, ``filepath``, ``family`` attributes), first of each name."""
    found: dict[str, Entry] = {}
    for row in rows:
        name, file = str(row.name).strip(), str(row.filepath).strip()
        if name and file and name not in found:
            family = row.family if row.family in FAMILIES else "auto"
            found[name] = (name, str(Path(abspath(file)).resolve()), family)
    return tuple(found.values())


def document(checkpoints: Iterable[Entry]) -> dict[str, Any]:
    return {"format": FORMAT,
            "models": {name: {"source": file, "family": family, "kind": KIND} for name, file, family in checkpoints}}


def write(path: Path, checkpoints: tuple[Entry, ...]) -> str | None:
    """Write the file for a non-empty list and return its path (None, nothing written, for no checkpoints).
    Rewritten only when its content changes, so a running backend never reads half a file."""
    if not checkpoints:
        return None
    text = json.dumps(document(checkpoints), indent=2) + "\n"
    try:
        unchanged = path.read_text(encoding="utf-8") == text
    except OSError:
        unchanged = False
    if not unchanged:
        path.parent.mkdir(parents=True, exist_ok=True)
        jobfolder.atomic_write_text(path, text)
    return str(path)
