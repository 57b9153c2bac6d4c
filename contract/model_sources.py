"""A registry entry's ``source``: a Hugging Face repo id or a folder. One rule for the backend's registry and
the add-on's Backend panel (which reads the registry file without the backend). Standard library only."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(source: str, base: Path) -> str:
    """Repo ids stay as they are; folders become absolute, relative ones to the registry file's folder.

    A source is a folder when it is absolute, starts with ``.`` or ``~``, does not look like
    ``owner/name``, or exists relative to the registry file's folder.
    """
    expanded = Path(source).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    if REPO_ID.match(source) and not (base / source).exists():
        return source
    return str((base / source).resolve())


def is_repo_id(source: str) -> bool:
    return REPO_ID.match(source) is not None
