"""``camera.json``: a Blender camera as the add-on writes it into a job folder (also each view's "camera" in
the views file). The add-on builds a ``CameraInfo`` from the camera object and writes it with
``write_camera``; the backend reads it with ``read_camera`` (or ``CameraInfo.from_dict`` inside another file).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..jobfolder import atomic_write_text
from . import FormatError

CAMERA_TYPES = ("PERSP", "ORTHO")
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")


def _number(d: Mapping[str, Any], key: str, *, positive: bool = False) -> float:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FormatError(f"camera {key!r} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise FormatError(f"camera {key!r} must be greater than 0, got {value!r}")
    return float(value)


def _integer(d: Mapping[str, Any], key: str) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FormatError(f"camera {key!r} must be a whole number greater than 0, got {value!r}")
    return value


def _choice(d: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = d[key]
    if value not in allowed:
        raise FormatError(f"camera {key!r} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _matrix(value: Any) -> list[list[float]]:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"camera 'matrix_world' must be 4 rows of 4 numbers: {exc}") from exc
    if array.shape != (4, 4) or not np.all(np.isfinite(array)):
        raise FormatError(f"camera 'matrix_world' must be 4 rows of 4 finite numbers, got shape {array.shape}")
    if np.any(np.linalg.norm(array[:3, :3], axis=0) < 1e-12):
        raise FormatError("camera 'matrix_world' has a zero-length axis (scale 0)")
    return [[float(x) for x in row] for row in array]


@dataclass(frozen=True)
class CameraInfo:
    """A Blender camera as the add-on writes it to the job folder (``camera.json``).

    ``matrix_world``: the camera object's 4 x 4 camera-to-world matrix, row-major (``[list(row) for row in
    obj.matrix_world]``); the camera looks down its local -Z, +X is right, +Y up in the image. Lengths in
    Blender units, ``lens`` and sensor sizes in mm, shifts in units of the fitted image dimension (as in
    Blender's UI). ``resolution_x/y``: the rendered size in pixels, ``resolution_percentage`` applied.
    """

    matrix_world: list[list[float]]
    type: str  # "PERSP" | "ORTHO"
    lens: float
    sensor_width: float
    sensor_height: float
    sensor_fit: str  # "AUTO" | "HORIZONTAL" | "VERTICAL"
    shift_x: float
    shift_y: float
    ortho_scale: float
    clip_start: float
    clip_end: float
    resolution_x: int
    resolution_y: int
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CameraInfo:
        """Read the camera.json object; unknown keys are ignored, missing or invalid ones raise FormatError."""
        if not isinstance(d, Mapping):
            raise FormatError(f"a camera must be a JSON object, got {type(d).__name__}")
        required = ("matrix_world", "type", "lens", "sensor_width", "sensor_height", "sensor_fit", "shift_x",
                    "shift_y", "ortho_scale", "clip_start", "clip_end", "resolution_x", "resolution_y")
        missing = [key for key in required if key not in d]
        if missing:
            raise FormatError(f"camera lacks {', '.join(repr(key) for key in missing)}")
        camera = cls(
            matrix_world=_matrix(d["matrix_world"]),
            type=_choice(d, "type", CAMERA_TYPES),
            lens=_number(d, "lens", positive=True),
            sensor_width=_number(d, "sensor_width", positive=True),
            sensor_height=_number(d, "sensor_height", positive=True),
            sensor_fit=_choice(d, "sensor_fit", SENSOR_FITS),
            shift_x=_number(d, "shift_x"),
            shift_y=_number(d, "shift_y"),
            ortho_scale=_number(d, "ortho_scale", positive=True),
            clip_start=_number(d, "clip_start", positive=True),
            clip_end=_number(d, "clip_end", positive=True),
            resolution_x=_integer(d, "resolution_x"),
            resolution_y=_integer(d, "resolution_y"),
            pixel_aspect_x=_number(d, "pixel_aspect_x", positive=True) if "pixel_aspect_x" in d else 1.0,
            pixel_aspect_y=_number(d, "pixel_aspect_y", positive=True) if "pixel_aspect_y" in d else 1.0,
        )
        if camera.clip_end <= camera.clip_start:
            raise FormatError(f"camera 'clip_end' ({camera.clip_end}) must be beyond "
                              f"'clip_start' ({camera.clip_start})")
        return camera

    def to_dict(self) -> dict[str, Any]:
        """The camera.json object (plain JSON types); ``from_dict(to_dict())`` gives the same camera."""
        return {
            "matrix_world": [[float(x) for x in row] for row in self.matrix_world],
            "type": self.type,
            "lens": self.lens,
            "sensor_width": self.sensor_width,
            "sensor_height": self.sensor_height,
            "sensor_fit": self.sensor_fit,
            "shift_x": self.shift_x,
            "shift_y": self.shift_y,
            "ortho_scale": self.ortho_scale,
            "clip_start": self.clip_start,
            "clip_end": self.clip_end,
            "resolution_x": self.resolution_x,
            "resolution_y": self.resolution_y,
            "pixel_aspect_x": self.pixel_aspect_x,
            "pixel_aspect_y": self.pixel_aspect_y,
        }

    def rotation(self) -> np.ndarray:
        """3 x 3 camera-to-world rotation: the columns of ``matrix_world``'s upper 3 x 3, scale removed."""
        linear = np.asarray(self.matrix_world, dtype=np.float64)[:3, :3]
        return linear / np.linalg.norm(linear, axis=0, keepdims=True)

    def location(self) -> np.ndarray:
        return np.asarray(self.matrix_world, dtype=np.float64)[:3, 3].copy()

    def view_plane(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) of the image in camera space: on the plane 1 unit in front of a
        perspective camera, on the camera's own plane for an orthographic one.

        Blender's rule (``BKE_camera_params_compute_viewplane``): the sensor (or ``ortho_scale``) spans the
        fitted dimension; AUTO fits the larger of width * pixel_aspect_x and height * pixel_aspect_y and
        then uses ``sensor_width`` whichever that is; VERTICAL uses ``sensor_height``. Shifts move the
        image by that many fitted-dimension widths.
        """
        width, height = float(self.resolution_x), float(self.resolution_y)
        aspect_x, aspect_y = self.pixel_aspect_x, self.pixel_aspect_y
        ycor = aspect_y / aspect_x
        fit = self.sensor_fit
        if fit == "AUTO":
            fit = "HORIZONTAL" if aspect_x * width >= aspect_y * height else "VERTICAL"
        size = self.ortho_scale if self.type == "ORTHO" else (
            (self.sensor_height if self.sensor_fit == "VERTICAL" else self.sensor_width) / self.lens)
        view = width if fit == "HORIZONTAL" else ycor * height
        pixel = size / view
        dx, dy = self.shift_x * view, self.shift_y * view
        return ((-0.5 * width + dx) * pixel, (0.5 * width + dx) * pixel,
                (-0.5 * ycor * height + dy) * pixel, (0.5 * ycor * height + dy) * pixel)


def write_camera(path: str | os.PathLike[str], camera: CameraInfo) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(camera.to_dict(), indent=2))
    return path


def read_camera(path: str | os.PathLike[str]) -> CameraInfo:
    """The camera in ``path``; FormatError naming the file when it is missing or not a camera."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"camera file {path.name} is missing or unreadable: {exc}") from None
    return CameraInfo.from_dict(data)
