"""Step previews as UI icons (bpy.utils.previews), loaded on the timer, never while drawing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import bpy.utils.previews

_collection: Any = None
_current: dict[str, int] = {}  # job id -> icon id of its latest preview


def update(job_id: str, path: Path | None) -> None:
    global _collection
    if path is None or bpy.app.background or not path.is_file():
        return
    if _collection is None:
        _collection = bpy.utils.previews.new()
    key = str(path)
    if key not in _collection:
        _collection.load(key, key, "IMAGE")
    _current[job_id] = _collection[key].icon_id


def icon(job_id: str) -> int:
    return _current.get(job_id, 0)


def clear() -> None:
    global _collection
    if _collection is not None:
        bpy.utils.previews.remove(_collection)
    _collection = None
    _current.clear()


def unregister() -> None:
    clear()
