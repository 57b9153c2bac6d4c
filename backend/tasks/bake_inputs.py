"""The inputs of the projection tasks ("bake", "project_texture"): the views file and the objects' meshes.

The views file (JSON, UTF-8; also what ``python -m backend bake --views`` reads)::

    {"views": [
        {"name": "Camera",
         "camera": {... the camera.json object: backend.imaging.passes.CameraInfo.from_dict ...},
         "passes": "views/00/passes.exr",
         "image": "views/00/image.png",
         "image_colorspace": "srgb"}
    ]}

- ``name``: for messages and warnings; default "view <n>" (n counted from 1).
- ``camera``: the camera the view was seen from; its ``resolution_x`` x ``resolution_y`` is the passes' size.
- ``passes``: a multilayer EXR of the scene from that camera as Blender writes it (``ViewLayer.Depth``,
  ``ViewLayer.Normal``, ...; read with ``find_passes``), exactly ``resolution_x`` x ``resolution_y`` pixels.
  Task "bake": optional; with it a texel hidden behind other geometry in the view takes no colour from it,
  without it there is no occlusion test (the task warns). Task "project_texture": required, with a Depth
  layer (the depth ControlNet and the occlusion test) and, when ``normal_weight`` > 0, a Normal layer.
- ``image``: the picture the view projects; task "bake" requires it, "project_texture" ignores it (it
  generates one). Any size: it is stretched over the camera's frame. PNG or JPEG (8-bit, sRGB), EXR
  (scene-linear; the un-prefixed R, G, B(, A) layer, else the first layer with R, G and B channels), or
  ``.npy`` (H x W x 3 or 4 float32, row 0 at the top).
- ``image_colorspace``: "srgb" (display-encoded, converted to scene-linear) or "linear"; by default the
  file's own: sRGB for PNG, JPEG and ``.npy``, linear for EXR.

Paths are relative to the folder holding the views file and stay inside it (no absolute paths, no ``..``),
so a job folder carries its views with it. Every problem is a TaskError (INVALID_PARAMS) naming the view
and the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from backend import protocol
from backend.geometry.bake_mesh import BakeMesh, BakeMeshError, load_bake_mesh
from backend.imaging.bake import BakeView
from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import ExrError, ExrImage, read_exr
from backend.imaging.image_io import read_image
from backend.imaging.passes import CameraInfo, PassError, find_passes, require_passes
from backend.params import MAX_VIEWS
from backend.tasks.context import TaskError

COLORSPACES = ("srgb", "linear")
IMAGE_SUFFIXES = {".png": "srgb", ".jpg": "srgb", ".jpeg": "srgb", ".exr": "linear", ".npy": "srgb"}
FORMAT_HINT = "see the views file format in backend/tasks/bake_inputs.py"
PASSES_HINT = ("render the view's passes with Cycles (Z, and Normal for the normal control) at the camera's "
               "resolution into a multilayer EXR")


@dataclass(frozen=True)
class ViewInput:
    """One view of the views file, read and checked."""

    name: str
    camera: CameraInfo
    depth: np.ndarray | None = None  # resolution_y x resolution_x Blender Z; None without passes
    normal: np.ndarray | None = None  # resolution_y x resolution_x x 3 world-space unit normals, when read
    image: np.ndarray | None = None  # H x W x 3 or 4 float32 scene-linear, row 0 at the top; None when not read
    passes: str | None = None  # as written in the views file, for messages
    image_path: str | None = None

    def bake_view(self, image: np.ndarray | None = None) -> BakeView:
        """The view for ``backend.imaging.bake``: this view's image, or ``image`` (scene-linear) instead."""
        chosen = self.image if image is None else image
        if chosen is None:
            raise ValueError(f"view '{self.name}' has no image to bake")
        return BakeView(camera=self.camera, image=chosen, depth=self.depth, name=self.name)


def _invalid(message: str, hint: str = FORMAT_HINT) -> TaskError:
    return TaskError(protocol.INVALID_PARAMS, message, hint)


def read_views_file(path: Path) -> list[dict[str, Any]]:
    """The views file's list of view objects (checked to be objects; at least one, at most MAX_VIEWS)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _invalid(f"views file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(f"views file {path} is unreadable: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _invalid(f"views file {path.name} is not valid JSON: {exc}") from None
    views = data.get("views") if isinstance(data, dict) else None
    if not isinstance(views, list):
        raise _invalid(f"views file {path.name} must be a JSON object with a \"views\" list")
    if not views:
        raise _invalid(f"views file {path.name} lists no views", "add at least one camera view")
    if len(views) > MAX_VIEWS:
        raise _invalid(f"views file {path.name} lists {len(views)} views; at most {MAX_VIEWS} are supported",
                       "use fewer cameras")
    for index, view in enumerate(views):
        if not isinstance(view, dict):
            raise _invalid(f"views file {path.name}: view {index + 1} must be a JSON object, got {view!r:.60}")
    return views


def view_name(view: dict[str, Any], index: int) -> str:
    name = view.get("name")
    return name if isinstance(name, str) and name.strip() else f"view {index + 1}"


def _relative_file(view: dict[str, Any], key: str, folder: Path, who: str) -> tuple[str, Path] | None:
    """(the path as written, the file) for ``view[key]``; None when absent. Checks it is relative and exists."""
    value = view.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"{who}: \"{key}\" must be a file path, got {value!r}")
    parts = PurePosixPath(value.replace("\\", "/"))
    if parts.is_absolute() or value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":") \
            or ".." in parts.parts:
        raise _invalid(f"{who}: {key} {value!r} must be a path relative to the views file's folder, without '..'")
    file = folder / parts
    if not file.is_file():
        raise _invalid(f"{who}: {key} file {value} does not exist (looked in {folder})")
    return value, file


def referenced_files(path: Path, images: bool = True) -> list[str]:
    """The files the views file names (relative to its folder, each once, in order), checked to exist;
    the image files only with ``images``. For copying a views file with everything it needs."""
    folder = path.parent
    found: list[str] = []
    for index, view in enumerate(read_views_file(path)):
        who = f"view '{view_name(view, index)}' ({path.name})"
        for key in ("passes", "image") if images else ("passes",):
            entry = _relative_file(view, key, folder, who)
            if entry is not None and entry[0] not in found:
                found.append(entry[0])
    return found


def load_views(path: Path, *, need_image: bool, need_depth: bool, need_normal: bool = False) -> list[ViewInput]:
    """Read the views file at ``path`` and everything it references.

    ``need_image``: every view must have an image (task "bake"); without it images are not read.
    ``need_depth``: every view must have passes with a Depth layer (task "project_texture").
    ``need_normal``: ... and a Normal layer (the normal control)."""
    folder = path.parent
    loaded: list[ViewInput] = []
    for index, view in enumerate(read_views_file(path)):
        name = view_name(view, index)
        who = f"view '{name}' ({path.name})"
        camera = _camera(view, who)
        passes = _relative_file(view, "passes", folder, who)
        depth = normal = None
        if passes is None:
            if need_depth:
                raise _invalid(f"{who} has no \"passes\": projecting a generated texture needs each view's depth "
                               "pass", PASSES_HINT)
        else:
            depth, normal = _passes(passes, camera, who, need_normal)
        image = None
        image_entry = _relative_file(view, "image", folder, who) if need_image else None
        if need_image:
            if image_entry is None:
                raise _invalid(f"{who} has no \"image\" to project")
            image = _image(image_entry, view.get("image_colorspace"), who)
        loaded.append(ViewInput(name=name, camera=camera, depth=depth, normal=normal, image=image,
                                passes=passes[0] if passes else None,
                                image_path=image_entry[0] if image_entry else None))
    return loaded


def _camera(view: dict[str, Any], who: str) -> CameraInfo:
    if "camera" not in view:
        raise _invalid(f"{who} has no \"camera\"")
    try:
        return CameraInfo.from_dict(view["camera"])
    except PassError as exc:
        raise _invalid(f"{who}: {exc}", "write the camera as the add-on's camera.json does "
                                        "(backend.imaging.passes.CameraInfo)") from None


def _passes(entry: tuple[str, Path], camera: CameraInfo, who: str,
            need_normal: bool) -> tuple[np.ndarray, np.ndarray | None]:
    written, file = entry
    try:
        passes = find_passes(read_exr(file))
        require_passes(passes, {"depth", "normal"} if need_normal else {"depth"}, written)
    except (ExrError, PassError, OSError) as exc:
        raise _invalid(f"{who}: {exc}", PASSES_HINT) from None
    assert passes.depth is not None
    height, width = passes.depth.shape
    if (width, height) != (camera.resolution_x, camera.resolution_y):
        raise _invalid(f"{who}: passes {written} are {width} x {height} pixels but the camera renders "
                       f"{camera.resolution_x} x {camera.resolution_y}",
                       "render the passes at the camera's resolution (resolution percentage applied)")
    return passes.depth, passes.normal if need_normal else None


def _image(entry: tuple[str, Path], colorspace: Any, who: str) -> np.ndarray:
    written, file = entry
    suffix = file.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise _invalid(f"{who}: image {written} has an unsupported format ({suffix or 'no suffix'}); "
                       "use PNG, JPEG, EXR or .npy")
    if colorspace is None:
        colorspace = IMAGE_SUFFIXES[suffix]
    if colorspace not in COLORSPACES:
        raise _invalid(f"{who}: image_colorspace must be one of {', '.join(COLORSPACES)}, got {colorspace!r}")
    try:
        if suffix == ".exr":
            pixels = _exr_colour(read_exr(file), written)
        elif suffix == ".npy":
            pixels = _npy_colour(file, written)
        else:
            pixels = read_image(file)
    except (ExrError, OSError, ValueError) as exc:
        raise _invalid(f"{who}: image {written} is unreadable: {exc}") from None
    if not np.all(np.isfinite(pixels)):
        raise _invalid(f"{who}: image {written} holds NaN or infinite values")
    if colorspace == "srgb":
        pixels = np.concatenate([srgb_to_linear(pixels[:, :, :3]), pixels[:, :, 3:]], axis=2)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _exr_colour(exr: ExrImage, written: str) -> np.ndarray:
    """The un-prefixed R, G, B(, A) layer, else the first layer whose channels are R, G, B (and A)."""
    letters = _letters(exr)
    names = [""] if "" in exr.layers else []
    names += [name for name in exr.layers if name]
    for name in names:
        found = letters.get(name, [])
        if {"R", "G", "B"} <= set(found) and set(found) <= {"R", "G", "B", "A"}:
            pixels = exr.layers[name]
            return np.stack([pixels[:, :, found.index(c)] for c in "RGBA" if c in found], axis=-1)
    present = ", ".join(repr(name) for name in exr.layers) or "none"
    raise ValueError(f"{written} has no R, G, B layer (layers present: {present})")


def _letters(exr: ExrImage) -> dict[str, list[str]]:
    """Layer -> its channel letters in array order (``read_exr`` lists the channels layer by layer)."""
    letters: dict[str, list[str]] = {}
    index = 0
    for layer, pixels in exr.layers.items():
        count = 1 if pixels.ndim == 2 else pixels.shape[2]
        letters[layer] = [name.rpartition(".")[2].upper() for name in exr.channels[index:index + count]]
        index += count
    return letters


def _npy_colour(file: Path, written: str) -> np.ndarray:
    array = np.load(file, allow_pickle=False)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise ValueError(f"{written} must be an H x W x 3 or H x W x 4 array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{written} must hold floats (values in [0, 1] for sRGB), got dtype {array.dtype}")
    return array.astype(np.float32)


def load_meshes(job_dir: Path, paths: Sequence[str]) -> list[BakeMesh]:
    """The objects' meshes (``backend/geometry/bake_mesh.py``), relative to the job folder, in order."""
    meshes: list[BakeMesh] = []
    for index, relative in enumerate(paths):
        file = job_dir / relative
        if not file.is_file():
            raise _invalid(f"mesh file {relative} (object {index + 1}) does not exist in the job folder",
                           "export each object's evaluated mesh as MESH.npz (backend/geometry/bake_mesh.py)")
        try:
            meshes.append(load_bake_mesh(file))
        except BakeMeshError as exc:
            raise _invalid(f"mesh file {relative}: {exc}",
                           "see the MESH.npz format in backend/geometry/bake_mesh.py") from None
    return meshes


def bake_views(views: Sequence[ViewInput], warn_without_passes: bool = True) -> tuple[list[BakeView], list[str]]:
    """Each view as a BakeView, and a warning for every view without passes (no occlusion test)."""
    warnings = [f"view '{view.name}' has no passes: without its depth there is no occlusion test, so it also "
                "paints surfaces hidden behind other geometry" for view in views
                if view.depth is None and warn_without_passes]
    return [view.bake_view() for view in views], warnings
