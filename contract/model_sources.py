"""A registry entry's ``source``: a Hugging Face repo id, a folder, or a single checkpoint file. One rule for the
backend's registry and the add-on's Backend panel (which reads the registry file without the backend). Standard
library only."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Single-file checkpoints as community sites distribute them (.ckpt is a pickle: loaded only on request).
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def resolve_source(source: str, base: Path) -> str:
    """Repo ids stay as they are; folders and files become absolute, relative ones to the registry file's folder.

    A source is a path when it is absolute, starts with ``.`` or ``~``, does not look like ``owner/name``, names
    a checkpoint file (``.safetensors``, ``.ckpt``), or exists relative to the registry file's folder.
    """
    expanded = Path(source).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    if is_repo_id(source) and not (base / source).exists():
        return source
    return str((base / source).resolve())


def is_checkpoint_file(source: str) -> bool:
    """Whether ``source`` names a single-file checkpoint (by its suffix), not a folder or a repo id."""
    return source.lower().endswith(CHECKPOINT_SUFFIXES)


def is_repo_id(source: str) -> bool:
    return REPO_ID.match(source) is not None and not is_checkpoint_file(source)
