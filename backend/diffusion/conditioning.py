"""The control images a ControlNet pipeline gets, made from the scene's passes at the generation size
(shared by the tasks "render" and "project_texture")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from backend.errors import TaskError
from backend.imaging.control import canny_edges, depth_to_control, normals_to_control
from backend.imaging.exr import ExrError, read_exr
from backend.imaging.passes import PassError, ScenePasses, background_mask, find_passes, require_passes
from contract import messages
from contract.formats import FormatError
from contract.formats.camera import CameraInfo, read_camera

# Which passes each control (and img2img) reads.
NEEDS = {"depth": {"depth"}, "normal": {"normal", "depth"}, "canny": {"combined"}}


def load_passes(path: Path, written: str, kinds: Iterable[str], img2img: bool = False) -> ScenePasses:
    """The passes EXR at ``path`` holding what the controls ``kinds`` (and img2img: Combined) read."""
    try:
        passes = find_passes(read_exr(path))
        needed = set().union(*(NEEDS[kind] for kind in kinds)) | ({"combined"} if img2img else set())
        require_passes(passes, needed, written)
    except (ExrError, PassError, OSError) as exc:
        raise TaskError(messages.INVALID_PARAMS, str(exc),
                        "render the passes with Cycles or EEVEE (Workbench has no normal pass), "
                        "or give an EXR with Combined, Depth and Normal layers") from None
    return passes


def load_camera(path: Path) -> CameraInfo:
    try:
        return read_camera(path)
    except FormatError as exc:
        raise TaskError(messages.INVALID_PARAMS, str(exc),
                        "the normal control needs the camera the passes were rendered from") from None


def control_images(passes: ScenePasses, kinds: Sequence[str], camera: Callable[[], CameraInfo], width: int,
                   height: int, normal_encoding: str = "bae", canny_low: int = 100,
                   canny_high: int = 200) -> dict[str, np.ndarray]:
    """Control kind ("depth", "normal", "canny") -> H x W (x 3) image in [0, 1], stretched to width x height.

    The passes must hold what each kind reads (``NEEDS``); ``camera`` is called only for the normal control
    (normals go to the camera's space). A pass that cannot be converted is a TaskError."""
    images: dict[str, np.ndarray] = {}
    mask = background_mask(passes.depth) if passes.depth is not None else None
    for kind in kinds:
        try:
            if kind == "depth":
                assert passes.depth is not None
                images["depth"] = depth_to_control(passes.depth, mask)
            elif kind == "normal":
                assert passes.normal is not None
                images["normal"] = normals_to_control(passes.normal, camera(), normal_encoding, mask)
            else:
                assert passes.combined is not None
                images["canny"] = canny_edges(passes.combined, canny_low, canny_high)
        except PassError as exc:
            raise TaskError(messages.INVALID_PARAMS, str(exc)) from None
    return {kind: resized(image, width, height) for kind, image in images.items()}


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image.astype(np.float32, copy=False)
    return cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
