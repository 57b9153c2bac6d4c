"""Step previews as UI icons (bpy.utils.previews), loaded on the timer, never while drawing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import bpy.utils.previews

_collection: Any = None
_current: dict[str, str] = {}  # job id -> key (file path) of its latest loaded preview


def update(job_id: str, path: Path | None) -> None:
    global _collection
    if path is None or bpy.app.background or not path.is_file():
        return
    if _collection is None:
        _collection = bpy.utils.previews.new()
    key = str(path)
    if key == _current.get(job_id):
        return
    if key not in _collection:
        _collection.load(key, key, "IMAGE")
    # Reading the size loads the picture now (BKE_previewimg_ensure). Otherwise Blender loads it in the
    # background and draws an empty icon meanwhile: with a new file every step the box would flicker
    # blank, so the panel keeps the previous step until this one has pixels.
    if tuple(_collection[key].image_size) == (0, 0):
        del _collection[key]
        return
    previous = _current.get(job_id)
    _current[job_id] = key
    if previous is not None and previous in _collection:
        del _collection[previous]  # one icon per job, not one per step


def icon(job_id: str) -> int:
    key = _current.get(job_id)
    if _collection is None or key is None or key not in _collection:
        return 0
    return int(_collection[key].icon_id)


def clear() -> None:
    global _collection
    if _collection is not None:
        bpy.utils.previews.remove(_collection)
    _collection = None
    _current.clear()


def unregister() -> None:
    clear()
