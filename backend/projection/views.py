"""The inputs of the projection tasks, read: every view of the views file (``contract.formats.views``) with
its depth, normal and image pixels, and the objects' surfaces (``contract.formats.surface``). Every problem is
a TaskError (INVALID_PARAMS) naming the view or object and the file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.errors import TaskError
from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import ExrError, ExrImage, read_exr
from backend.imaging.image_io import read_image
from backend.imaging.passes import PassError, find_passes, require_passes
from backend.projection.bake import BakeView
from contract import messages
from contract.formats import FormatError
from contract.formats.camera import CameraInfo
from contract.formats.surface import BakeMesh, BakeMeshError, load_bake_mesh
from contract.formats.views import IMAGE_SUFFIXES, ViewEntry, read_views

FORMAT_HINT = "see the views file format in contract/formats/views.py"
PASSES_HINT = ("render the view's passes with Cycles (Z, and Normal for the normal control) at the camera's "
               "resolution into a multilayer EXR")


def _invalid(message: str, hint: str = FORMAT_HINT) -> TaskError:
    return TaskError(messages.INVALID_PARAMS, message, hint)


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
        """The view for ``backend.projection.bake``: this view's image, or ``image`` (scene-linear) instead."""
        chosen = self.image if image is None else image
        if chosen is None:
            raise ValueError(f"view '{self.name}' has no image to bake")
        return BakeView(camera=self.camera, image=chosen, depth=self.depth, name=self.name)


def load_views(path: Path, *, need_image: bool, need_depth: bool, need_normal: bool = False) -> list[ViewInput]:
    """Read the views file at ``path`` and everything it references.

    ``need_image``: every view must have an image (task "project_image"); without it images are not read.
    ``need_depth``: every view must have passes with a Depth layer (task "project_texture").
    ``need_normal``: ... and a Normal layer (the normal control)."""
    try:
        entries = read_views(path, images=need_image)
    except FormatError as exc:
        raise _invalid(str(exc)) from None
    return [_load(entry, path, need_image, need_depth, need_normal) for entry in entries]


def _load(entry: ViewEntry, path: Path, need_image: bool, need_depth: bool, need_normal: bool) -> ViewInput:
    who, folder = f"view '{entry.name}' ({path.name})", path.parent
    depth = normal = None
    if entry.passes is None:
        if need_depth:
            raise _invalid(f"{who} has no \"passes\": projecting a generated texture needs each view's depth pass",
                           PASSES_HINT)
    else:
        depth, normal = _passes(folder / entry.passes, entry.passes, entry.camera, who, need_normal)
    image = None
    if need_image:
        if entry.image is None:
            raise _invalid(f"{who} has no \"image\" to project")
        image = _image(folder / entry.image, entry.image, entry.image_colorspace, who)
    return ViewInput(name=entry.name, camera=entry.camera, depth=depth, normal=normal, image=image,
                     passes=entry.passes, image_path=entry.image if need_image else None)


def _passes(file: Path, written: str, camera: CameraInfo, who: str,
            need_normal: bool) -> tuple[np.ndarray, np.ndarray | None]:
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


def _image(file: Path, written: str, colorspace: str | None, who: str) -> np.ndarray:
    suffix = file.suffix.lower()
    colorspace = colorspace or IMAGE_SUFFIXES[suffix]
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
    """The objects' surfaces (``contract/formats/surface.py``), relative to the job folder, in order."""
    meshes: list[BakeMesh] = []
    for index, relative in enumerate(paths):
        file = job_dir / relative
        if not file.is_file():
            raise _invalid(f"mesh file {relative} (object {index + 1}) does not exist in the job folder",
                           "export each object's evaluated mesh as MESH.npz (contract/formats/surface.py)")
        try:
            meshes.append(load_bake_mesh(file))
        except BakeMeshError as exc:
            raise _invalid(f"mesh file {relative}: {exc}",
                           "see the MESH.npz format in contract/formats/surface.py") from None
    return meshes


def bake_views(views: Sequence[ViewInput], warn_without_passes: bool = True) -> tuple[list[BakeView], list[str]]:
    """Each view as a BakeView, and a warning for every view without passes (no occlusion test)."""
    warnings = [f"view '{view.name}' has no passes: without its depth there is no occlusion test, so it also "
                "paints surfaces hidden behind other geometry" for view in views
                if view.depth is None and warn_without_passes]
    return [view.bake_view() for view in views], warnings
