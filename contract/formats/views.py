"""The views file of the projection tasks: where each view looks from and which files it brings.

JSON, UTF-8 (also what ``python -m backend project-image --views`` reads)::

    {"views": [
        {"name": "Camera",
         "camera": {... camera.json's object: contract.formats.camera.CameraInfo ...},
         "passes": "views/00/passes.exr",
         "image": "views/00/image.png",
         "image_colorspace": "srgb"}
    ]}

- ``name``: for messages and warnings; default "view <n>" (n counted from 1).
- ``camera``: the camera the view was seen from; its ``resolution_x`` x ``resolution_y`` is the passes' size.
- ``passes``: a multilayer EXR of the scene from that camera as Blender writes it (``ViewLayer.Depth``,
  ``ViewLayer.Normal``, ...), exactly ``resolution_x`` x ``resolution_y`` pixels. Task "project_image":
  optional; with it a texel hidden behind other geometry in the view takes no colour from it, without it
  there is no occlusion test (the task warns). Task "project_texture": required, with a Depth layer and,
  when ``normal_weight`` > 0, a Normal layer.
- ``image``: the picture the view projects; "project_image" requires it, "project_texture" ignores it (it
  generates one). Any size: it is stretched over the camera's frame. PNG or JPEG (8-bit, sRGB), EXR
  (scene-linear; the un-prefixed R, G, B(, A) layer, else the first layer with R, G and B channels), or
  ``.npy`` (H x W x 3 or 4 float32, row 0 at the top).
- ``image_colorspace``: "srgb" (display-encoded, converted to scene-linear) or "linear"; by default the
  file's own: sRGB for PNG, JPEG and ``.npy``, linear for EXR.

Paths are relative to the folder holding the views file and stay inside it (no absolute paths, no ``..``),
so a job folder carries its views with it. Every problem is a FormatError naming the view and the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..jobfolder import atomic_write_text
from ..tasks.project import MAX_VIEWS
from . import FormatError
from .camera import CameraInfo

COLORSPACES = ("srgb", "linear")
IMAGE_SUFFIXES = {".png": "srgb", ".jpg": "srgb", ".jpeg": "srgb", ".exr": "linear", ".npy": "srgb"}


@dataclass(frozen=True)
class ViewEntry:
    """One view as the file holds it; paths relative to the views file's folder."""

    name: str
    camera: CameraInfo
    passes: str | None = None
    image: str | None = None
    image_colorspace: str | None = None  # None: the image file's own (see IMAGE_SUFFIXES)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "camera": self.camera.to_dict()}
        for key in ("passes", "image", "image_colorspace"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        return entry


def write_views(path: str | os.PathLike[str], views: Sequence[ViewEntry]) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps({"views": [view.to_dict() for view in views]}, indent=2))
    return path


def _view_objects(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"views file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"views file {path} is unreadable: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"views file {path.name} is not valid JSON: {exc}") from None
    views = data.get("views") if isinstance(data, dict) else None
    if not isinstance(views, list):
        raise FormatError(f"views file {path.name} must be a JSON object with a \"views\" list")
    if not views:
        raise FormatError(f"views file {path.name} lists no views; add at least one camera view")
    if len(views) > MAX_VIEWS:
        raise FormatError(f"views file {path.name} lists {len(views)} views; at most {MAX_VIEWS} are supported: "
                          "use fewer cameras")
    for index, view in enumerate(views):
        if not isinstance(view, dict):
            raise FormatError(f"views file {path.name}: view {index + 1} must be a JSON object, got {view!r:.60}")
    return views


def _relative_file(view: dict[str, Any], key: str, folder: Path, who: str) -> str | None:
    """``view[key]`` checked to be a relative path, without '..', of an existing file; None when absent."""
    value = view.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise FormatError(f"{who}: \"{key}\" must be a file path, got {value!r}")
    parts = PurePosixPath(value.replace("\\", "/"))
    if parts.is_absolute() or value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":") \
            or ".." in parts.parts:
        raise FormatError(f"{who}: {key} {value!r} must be a path relative to the views file's folder, without '..'")
    if not (folder / parts).is_file():
        raise FormatError(f"{who}: {key} file {value} does not exist (looked in {folder})")
    return value


def read_views(path: str | os.PathLike[str], images: bool = True) -> list[ViewEntry]:
    """Every view of the file at ``path``, checked: a camera each, referenced files relative and present,
    a known image format and colour space. Without ``images`` the views' images are neither checked nor
    returned (task "project_texture" generates its own)."""
    path = Path(path)
    entries: list[ViewEntry] = []
    for index, view in enumerate(_view_objects(path)):
        name = view.get("name")
        name = name if isinstance(name, str) and name.strip() else f"view {index + 1}"
        who = f"view '{name}' ({path.name})"
        if "camera" not in view:
            raise FormatError(f"{who} has no \"camera\"")
        try:
            camera = CameraInfo.from_dict(view["camera"])
        except FormatError as exc:
            raise FormatError(f"{who}: {exc}; write the camera as the add-on's camera.json does "
                              "(contract.formats.camera)") from None
        image = _relative_file(view, "image", path.parent, who) if images else None
        colorspace = view.get("image_colorspace")
        if image is not None:
            suffix = PurePosixPath(image).suffix.lower()
            if suffix not in IMAGE_SUFFIXES:
                raise FormatError(f"{who}: image {image} has an unsupported format ({suffix or 'no suffix'}); "
                                  "use PNG, JPEG, EXR or .npy")
        if images and colorspace is not None and colorspace not in COLORSPACES:
            raise FormatError(f"{who}: image_colorspace must be one of {', '.join(COLORSPACES)}, got {colorspace!r}")
        entries.append(ViewEntry(name, camera, _relative_file(view, "passes", path.parent, who), image, colorspace))
    return entries


def referenced_files(path: str | os.PathLike[str], images: bool = True) -> list[str]:
    """The files the views file names (relative to its folder, each once, in order), checked to exist;
    the image files only with ``images``. For copying a views file with everything it needs."""
    found: list[str] = []
    for view in read_views(path, images):
        for value in (view.passes, view.image):
            if value is not None and value not in found:
                found.append(value)
    return found
