"""World points -> a Blender camera's image, and what the camera can see there.

``camera_rays`` and its inverse (same ``CameraInfo.view_plane``, so perspective and
orthographic cameras, sensor fit, lens shift and pixel aspect follow Blender's rule), plus the visibility
test against the view's depth pass.

Visibility (``visible``)
------------------------
A point is visible in a view when it lies inside the frame, within the clip range, on the side of its
surface facing the camera, and at the depth the scene's depth pass holds where it lands: behind it, it is
occluded (by another object or by its own); in front of it, its surface does not reach that pixel's centre
(a silhouette) and the pixel shows something else. Blender's Z is the planar depth at the
PIXEL CENTRE (see ``backend.imaging.passes``); the point is compared with the Z of the pixel it projects
into, so the surface may legitimately differ from that pixel's Z by its slope across half a pixel. The
tolerance is therefore

    |depth - Z| <= depth_tolerance * depth + footprint * min(tan(angle), MAX_SLOPE)

where ``footprint`` is the size of one pixel at that depth and ``angle`` the angle between the surface
normal and the direction to the camera. ``depth_tolerance`` (default 1 %) absorbs the rest: float32 Z,
smooth-shaded normals against flat-faced geometry. Occlusion by other objects and by the object itself
is the same test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from contract.formats.camera import CameraInfo


def camera_rays(camera: CameraInfo) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through the pixel centres: (origins, directions), each H x W x 3 float64, row 0 at the top.

    Directions have unit length ALONG THE VIEW AXIS (not unit length), so ``origin + Z * direction`` is the
    world point a pixel with Blender depth Z sees (Z planar, see the module docstring). Perspective: every
    origin is the camera location. Orthographic: origins lie on the camera's plane, directions all equal
    the view axis.
    """
    width, height = camera.resolution_x, camera.resolution_y
    left, right, bottom, top = camera.view_plane()
    xs = left + (right - left) * (np.arange(width, dtype=np.float64) + 0.5) / width
    ys = top - (top - bottom) * (np.arange(height, dtype=np.float64) + 0.5) / height
    local = np.empty((height, width, 3), dtype=np.float64)
    local[:, :, 0] = xs[None, :]
    local[:, :, 1] = ys[:, None]
    rotation = camera.rotation()
    location = camera.location()
    if camera.type == "ORTHO":
        local[:, :, 2] = 0.0
        origins = local @ rotation.T + location
        directions = np.broadcast_to(-rotation[:, 2], (height, width, 3)).copy()
    else:
        local[:, :, 2] = -1.0
        directions = local @ rotation.T
        origins = np.broadcast_to(location, (height, width, 3)).copy()
    return origins, directions

MAX_SLOPE = 8.0  # tan(83 deg): beyond it the footprint term stops growing (such texels weigh ~0 anyway)


@dataclass
class Projection:
    """Points seen through one camera: where they land and how far they are (arrays of N float32)."""

    fx: np.ndarray  # position across the frame, 0 = left edge, 1 = right edge
    fy: np.ndarray  # 0 = top edge, 1 = bottom edge
    depth: np.ndarray  # planar depth along the camera's view axis (Blender's Z)
    footprint: np.ndarray  # world size of one camera pixel at each point's depth
    in_frame: np.ndarray  # N bool: inside the frame and the clip range

    def pixels(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Column and row of an image of width x height spanning the frame (pixel centres at whole numbers)."""
        return self.fx * width - 0.5, self.fy * height - 0.5

    def subset(self, index: np.ndarray) -> Projection:
        return Projection(self.fx[index], self.fy[index], self.depth[index], self.footprint[index],
                          self.in_frame[index])


def project(camera: CameraInfo, points: np.ndarray | Sequence[np.ndarray]) -> Projection:
    """``points``: 3 x N world positions (rows x, y, z: one array per axis keeps every step a fast
    element-wise operation)."""
    rotation = camera.rotation()
    location = camera.location()
    x, y, z = (np.asarray(row, dtype=np.float32) for row in points)
    # Camera-space coordinates: local = rotation^T (p - location); x right, y up, z toward the viewer.
    shift = location @ rotation
    local = [x * np.float32(rotation[0, j]) + y * np.float32(rotation[1, j]) + z * np.float32(rotation[2, j])
             - np.float32(shift[j]) for j in range(3)]
    depth = -local[2]
    left, right, bottom, top = camera.view_plane()
    pixel = (right - left) / camera.resolution_x  # plane units per pixel (the view plane keeps pixels square)
    if camera.type == "ORTHO":
        px, py = local[0], local[1]
        footprint = np.full(len(depth), pixel, dtype=np.float32)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = np.float32(1.0) / depth
        px, py = local[0] * inverse, local[1] * inverse
        footprint = np.maximum(depth, 0.0) * np.float32(pixel)
    fx = (px - np.float32(left)) * np.float32(1.0 / (right - left))
    fy = (np.float32(top) - py) * np.float32(1.0 / (top - bottom))
    in_frame = (depth >= camera.clip_start) & (depth <= camera.clip_end)
    in_frame &= (fx >= 0.0) & (fx <= 1.0) & (fy >= 0.0) & (fy <= 1.0)
    return Projection(fx, fy, depth, footprint, in_frame)


def facing(camera: CameraInfo, points: np.ndarray | Sequence[np.ndarray],
           normals: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """N float32: cosine of the angle between each normal and the direction from its point to the camera
    (``points`` and ``normals``: 3 x N, normals of unit length)."""
    if camera.type == "ORTHO":
        back = camera.rotation()[:, 2]  # every point looks at an orthographic camera along its +Z axis
        n = np.asarray(normals, dtype=np.float32)
        return n[0] * np.float32(back[0]) + n[1] * np.float32(back[1]) + n[2] * np.float32(back[2])
    location = camera.location()
    toward = [np.float32(location[i]) - np.asarray(points[i], dtype=np.float32) for i in range(3)]
    length = np.sqrt(toward[0] * toward[0] + toward[1] * toward[1] + toward[2] * toward[2])
    dot = normals[0] * toward[0] + normals[1] * toward[1] + normals[2] * toward[2]
    return dot / np.maximum(length, np.float32(1e-30))


def sample(image: np.ndarray, projection: Projection, interpolation: int = cv2.INTER_LINEAR,
           shift: float = 0.0) -> np.ndarray:
    """Bilinear (or nearest) samples of an H x W (x C) image at the projected points: N (x C) float32.
    ``shift`` moves the sample positions by that many pixels right and down."""
    height, width = image.shape[:2]
    return remap_points(image, pixel_map(projection, width, height, shift), len(projection.fx), interpolation)


MAP_COLUMNS = 4096  # cv2.remap takes maps of at most 32767 columns: points go in rows of 4096
_NO_MAP = np.empty((0, 0), dtype=np.float32)  # cv2.remap's second map, unused with a 2-channel first one


def pixel_map(projection: Projection, width: int, height: int, shift: float = 0.0) -> np.ndarray:
    """cv2.remap's map of the projected points on an image of width x height: R x MAP_COLUMNS x 2 float32
    (column, row; padded with zeros), to sample several images of that size from one map (``remap_points``).
    ``shift`` moves the positions by that many pixels right and down."""
    count = len(projection.fx)
    rows = max(1, -(-count // MAP_COLUMNS))
    out = np.empty((rows * MAP_COLUMNS, 2), dtype=np.float32)
    np.multiply(projection.fx, np.float32(width), out=out[:count, 0])
    np.multiply(projection.fy, np.float32(height), out=out[:count, 1])
    out[:count] -= np.float32(0.5 - shift)
    out[count:] = 0.0
    return out.reshape(rows, MAP_COLUMNS, 2)


def remap_points(image: np.ndarray, points: np.ndarray, count: int,
                 interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Samples of an H x W (x C) float32 image at the ``count`` points of a ``pixel_map``: N (x C) float32."""
    if count == 0:
        return np.zeros((0,) + image.shape[2:], dtype=np.float32)
    source = np.ascontiguousarray(image, dtype=np.float32)
    channels = 1 if source.ndim == 2 else source.shape[2]
    if channels <= 4:  # cv2.remap handles at most 4 channels at a time
        got = cv2.remap(source, points, _NO_MAP, interpolation, borderMode=cv2.BORDER_REPLICATE)
        flat = got.reshape(-1) if source.ndim == 2 else got.reshape(-1, channels)
        return flat[:count]
    out = np.empty((count, channels), dtype=np.float32)
    for first in range(0, channels, 4):
        part = np.ascontiguousarray(source[:, :, first:first + 4])
        got = cv2.remap(part, points, _NO_MAP, interpolation, borderMode=cv2.BORDER_REPLICATE)
        got = got.reshape(-1, part.shape[2])[:count]
        out[:, first:first + got.shape[1]] = got
    return out


def visible(projection: Projection, cosine: np.ndarray, depth_pass: np.ndarray | None,
            depth_tolerance: float) -> np.ndarray:
    """N bool: in frame, facing the camera and not occluded in ``depth_pass`` (None: no occlusion test).
    ``cosine``: from ``facing``."""
    seen = projection.in_frame & (cosine > 0.0)
    if depth_pass is None:
        return seen
    scene_depth = sample(depth_pass, projection, cv2.INTER_NEAREST)
    return seen & (np.abs(projection.depth - scene_depth) <= slack(projection, cosine, depth_tolerance))


def slack(projection: Projection, cosine: np.ndarray, depth_tolerance: float) -> np.ndarray:
    """How far behind the depth pass a visible point may be (see the module docstring)."""
    cos = np.clip(cosine, 1e-6, 1.0)
    tangent = np.minimum(np.sqrt(np.maximum(1.0 - cos * cos, 0.0)) / cos, MAX_SLOPE)
    return depth_tolerance * projection.depth + projection.footprint * tangent
