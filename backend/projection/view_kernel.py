"""One view projected over all of a surface's texels in one compiled pass (numba): step 2 of ``bake``.

Per texel: project into the camera, test frame, clip range and facing, compare with the depth pass, weigh,
sample the view's image, and add colour x weight and weight to the texel's running sums. The same rules as
``backend.projection.camera`` (``project``, ``facing``, ``slack``) and the bake's module docstring; fused
into one loop because the numpy form of these steps spent most of its time writing and reading a dozen
temporaries per texel (4 views over 4.2 M texels: 1.2 s of numpy on one thread, see ``bench/bake.py``).

The sums go straight into the texture's texels (``normalize`` divides them): no per-texel array in
between. Sampling is bilinear between pixel centres with the border pixels repeated (``cv2.remap``'s
``BORDER_REPLICATE``), in exact arithmetic rather than OpenCV's 1/32-pixel steps.

Compiled on first use in a process, or loaded from numba's cache beside this file (``cache=True``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numba
import numpy as np

from contract.formats.camera import CameraInfo

from .camera import MAX_SLOPE

# One launch at a time: a launch already uses every core, and numba's fallback thread pool (workqueue)
# aborts the process when two threads launch parallel kernels at once.
_LAUNCH = threading.Lock()
# Texels handed to a thread at a time. A view sees texels in a few UV islands: split statically in halves,
# one thread would get most of the work.
PARALLEL_CHUNK = 1 << 14


@dataclass(frozen=True)
class CameraParams:
    """A camera as the kernel reads it: float64 arrays and numbers, no Python objects."""

    rotation: np.ndarray  # 3 x 3 camera-to-world rotation
    shift: np.ndarray  # 3: location @ rotation (camera space = p @ rotation - shift)
    location: np.ndarray  # 3
    plane: np.ndarray  # 4: left, right, bottom, top of the view plane
    ortho: bool
    clip_start: float
    clip_end: float
    pixel: float  # view-plane units per camera pixel

    @classmethod
    def of(cls, camera: CameraInfo) -> CameraParams:
        rotation = np.ascontiguousarray(camera.rotation(), dtype=np.float64)
        location = np.ascontiguousarray(camera.location(), dtype=np.float64)
        left, right, bottom, top = camera.view_plane()
        return cls(rotation, location @ rotation, location, np.array([left, right, bottom, top], np.float64),
                   camera.type == "ORTHO", float(camera.clip_start), float(camera.clip_end),
                   (right - left) / camera.resolution_x)


@dataclass(frozen=True)
class Weighting:
    """How a texel's weight is made (``BakeSettings`` and the bake's constants)."""

    blend_exponent: float
    depth_tolerance: float
    edge_weight: float
    border_feather: float


_NO_DEPTH = np.zeros((1, 1), np.float32)


def add_view(positions: np.ndarray, normals: np.ndarray, triangles: np.ndarray, texels: np.ndarray,
             keep: np.ndarray, camera: CameraParams, image: np.ndarray, depth: np.ndarray | None,
             weighting: Weighting, texture: np.ndarray) -> int:
    """Add one view to ``texture`` (size^2 x 4 float32: colour x weight, weight) at the ``texels`` (N int32
    flat indices) whose world positions and normals are ``positions`` and ``normals`` (3 x N float32),
    skipping texels whose ``triangles`` (N int32) have ``keep`` (T bool) False. ``image``: H x W x 3 or 4
    float32 (a 4th channel: coverage). ``depth``: the depth pass, H x W float32 (None: no occlusion test).
    Returns how many texels the view gave a weight above zero before coverage."""
    arrays = [readonly(a) for a in (positions, normals, triangles, texels, keep, image,
                                     _NO_DEPTH if depth is None else depth)]
    with _LAUNCH, numba.parallel_chunksize(PARALLEL_CHUNK):
        return int(_add_view(*arrays[:5], camera.rotation, camera.shift, camera.location, camera.plane,
                             camera.ortho, camera.clip_start, camera.clip_end, camera.pixel, *arrays[5:],
                             depth is not None, weighting.blend_exponent, weighting.depth_tolerance,
                             weighting.edge_weight, weighting.border_feather, texture))


def normalize(texture: np.ndarray, texels: np.ndarray) -> None:
    """Turn ``add_view``'s sums into colour / weight at the ``texels`` with a weight, alpha 1 there and 0 at
    the others (in place)."""
    with _LAUNCH:
        _normalize(texture, readonly(texels))


@numba.njit(parallel=True, cache=True, nogil=True)
def _normalize(texture, texels):  # type: ignore[no-untyped-def]
    for i in numba.prange(len(texels)):
        j = texels[i]
        weight = texture[j, 3]
        if weight > 0:
            for channel in range(3):
                texture[j, channel] /= weight
            texture[j, 3] = 1.0
        else:
            texture[j, 3] = 0.0


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only, C-contiguous view: numba compiles a kernel once per array type (read-only is a type of
    its own), and cached surfaces are read-only."""
    view = np.ascontiguousarray(array).view()
    view.setflags(write=False)
    return view


@numba.njit(cache=True, nogil=True, inline="always")
def _pixel(at: float, last: int) -> int:
    """The pixel whose centre is nearest ``at`` (pixel centres at whole numbers), clamped to 0..last."""
    if at < 0.0:
        return 0
    return min(int(at + 0.5), last)  # int() rounds toward zero: floor for the non-negative


@numba.njit(cache=True, nogil=True, inline="always")
def _block(at: float, last: int) -> int:
    """The first of the two pixels a bilinear sample at ``at`` reads, clamped to 0..last."""
    if at < 0.0:
        return 0
    return min(int(at), last)


@numba.njit(parallel=True, cache=True, nogil=True)
def _add_view(positions, normals, triangles, texels, keep, rotation, shift, location, plane,  # type: ignore[no-untyped-def]
              ortho, clip_start, clip_end, pixel, image, depth, has_depth, exponent, tolerance, edge_weight,
              feather, texture):
    count = positions.shape[1]
    height, width, channels = image.shape[0], image.shape[1], image.shape[2]
    depth_height, depth_width = depth.shape[0], depth.shape[1]
    left, right, bottom, top = plane[0], plane[1], plane[2], plane[3]
    inv_width, inv_height = 1.0 / (right - left), 1.0 / (top - bottom)
    back0, back1, back2 = rotation[0, 2], rotation[1, 2], rotation[2, 2]
    squares = 0  # exponent 2 ** squares: repeated squaring instead of pow (a third of the loop's time)
    while squares < 4 and 2.0 ** squares < exponent:
        squares += 1
    by_squares = 2.0 ** squares == exponent
    used = 0
    for i in numba.prange(count):
        if not keep[triangles[i]]:
            continue
        x, y, z = positions[0, i], positions[1, i], positions[2, i]
        local0 = x * rotation[0, 0] + y * rotation[1, 0] + z * rotation[2, 0] - shift[0]
        local1 = x * rotation[0, 1] + y * rotation[1, 1] + z * rotation[2, 1] - shift[1]
        distance = -(x * rotation[0, 2] + y * rotation[1, 2] + z * rotation[2, 2] - shift[2])
        if distance < clip_start or distance > clip_end:
            continue
        n0, n1, n2 = normals[0, i], normals[1, i], normals[2, i]
        if ortho:
            px, py, footprint = local0, local1, pixel
            cosine = n0 * back0 + n1 * back1 + n2 * back2
        else:
            px, py, footprint = local0 / distance, local1 / distance, distance * pixel
            t0, t1, t2 = location[0] - x, location[1] - y, location[2] - z
            length = math.sqrt(t0 * t0 + t1 * t1 + t2 * t2)
            cosine = (n0 * t0 + n1 * t1 + n2 * t2) / max(length, 1e-30)
        fx = (px - left) * inv_width
        fy = (top - py) * inv_height
        if not (fx >= 0.0 and fx <= 1.0 and fy >= 0.0 and fy <= 1.0 and cosine > 0.0):
            continue
        weight = min(cosine, 1.0)
        if by_squares:
            for _ in range(squares):
                weight *= weight
        else:
            weight = weight ** exponent
        straddles = False
        if has_depth:
            dx, dy = fx * depth_width - 0.5, fy * depth_height - 0.5
            cos = min(max(cosine, 1e-6), 1.0)
            tangent = min(math.sqrt(max(1.0 - cos * cos, 0.0)) / cos, MAX_SLOPE)
            allowed = tolerance * distance + footprint * tangent
            # Behind the pixel's surface: occluded; in front of it: a silhouette, the pixel shows another.
            if abs(depth[_pixel(dy, depth_height - 1), _pixel(dx, depth_width - 1)] - distance) > allowed:
                continue
            # The 2 x 2 block a bilinear sample reads: a pixel nearer or farther than the slack there means the
            # sample would mix two surfaces.
            ra, ca = _block(dy, depth_height - 1), _block(dx, depth_width - 1)
            rb, cb = min(ra + 1, depth_height - 1), min(ca + 1, depth_width - 1)
            block = (depth[ra, ca], depth[ra, cb], depth[rb, ca], depth[rb, cb])
            if min(block) < distance - 2 * allowed or max(block) > distance + 2 * allowed:
                straddles = True
                weight *= edge_weight
        border = min(min(fx, 1.0 - fx), min(fy, 1.0 - fy)) / feather
        weight *= min(max(border, edge_weight), 1.0)
        if not weight > 0.0:
            continue
        used += 1
        cx, cy = fx * width - 0.5, fy * height - 0.5
        cover = 1.0
        if straddles:  # the nearest pixel passed the depth test: it shows this surface, its neighbours may not
            r, c = _pixel(cy, height - 1), _pixel(cx, width - 1)
            red, green, blue = image[r, c, 0], image[r, c, 1], image[r, c, 2]
            if channels == 4:
                cover = image[r, c, 3]
        else:
            # Clamping the position first is BORDER_REPLICATE: both taps then read the border pixel.
            cx, cy = min(max(cx, 0.0), width - 1.0), min(max(cy, 0.0), height - 1.0)
            ca, ra = int(cx), int(cy)
            ax, ay = cx - ca, cy - ra
            cb, rb = min(ca + 1, width - 1), min(ra + 1, height - 1)
            w00, w01 = (1.0 - ax) * (1.0 - ay), ax * (1.0 - ay)
            w10, w11 = (1.0 - ax) * ay, ax * ay
            red = w00 * image[ra, ca, 0] + w01 * image[ra, cb, 0] + w10 * image[rb, ca, 0] + w11 * image[rb, cb, 0]
            green = w00 * image[ra, ca, 1] + w01 * image[ra, cb, 1] + w10 * image[rb, ca, 1] + w11 * image[rb, cb, 1]
            blue = w00 * image[ra, ca, 2] + w01 * image[ra, cb, 2] + w10 * image[rb, ca, 2] + w11 * image[rb, cb, 2]
            if channels == 4:
                cover = (w00 * image[ra, ca, 3] + w01 * image[ra, cb, 3] + w10 * image[rb, ca, 3]
                         + w11 * image[rb, cb, 3])
        weight *= min(max(cover, 0.0), 1.0)
        j = texels[i]
        texture[j, 0] += red * weight
        texture[j, 1] += green * weight
        texture[j, 2] += blue * weight
        texture[j, 3] += weight
    return used


def kept_triangles(corner_positions: np.ndarray, corner_normals: np.ndarray, camera: CameraParams) -> np.ndarray:
    """T bool: the triangles (corners T x 3 x 3 float32, their normals likewise) that may show the camera
    something. A triangle is dropped when every corner lies beyond one side of the frame or of the clip
    range, or when it faces away everywhere. Both tests are exact for a whole triangle: planar depth and the
    frame's edges are affine over it, and with interpolated normals the sign of n(b) . (C - p(b)) is a sum
    of b_i b_j n_i . (C - p_j) with b >= 0, negative when all nine terms are."""
    keep = np.empty(len(corner_positions), dtype=np.bool_)
    with _LAUNCH:
        _keep_triangles(readonly(corner_positions), readonly(corner_normals), camera.rotation, camera.shift,
                        camera.location, camera.plane, camera.ortho, camera.clip_start, camera.clip_end, keep)
    return keep


@numba.njit(parallel=True, cache=True, nogil=True)
def _keep_triangles(corners, normals, rotation, shift, location, plane, ortho, clip_start,  # type: ignore[no-untyped-def]
                    clip_end, keep):
    left, right, bottom, top = plane[0], plane[1], plane[2], plane[3]
    for t in numba.prange(corners.shape[0]):
        near = far = in_front = 0
        out_left = out_right = out_top = out_bottom = 0
        facing = False
        for k in range(3):
            x, y, z = corners[t, k, 0], corners[t, k, 1], corners[t, k, 2]
            local0 = x * rotation[0, 0] + y * rotation[1, 0] + z * rotation[2, 0] - shift[0]
            local1 = x * rotation[0, 1] + y * rotation[1, 1] + z * rotation[2, 1] - shift[1]
            distance = -(x * rotation[0, 2] + y * rotation[1, 2] + z * rotation[2, 2] - shift[2])
            near += distance < clip_start
            far += distance > clip_end
            if distance > 1e-9:  # a corner behind a perspective camera flips its projection
                in_front += 1
                px, py = (local0, local1) if ortho else (local0 / distance, local1 / distance)
                out_left += px < left
                out_right += px > right
                out_bottom += py < bottom
                out_top += py > top
            n0, n1, n2 = normals[t, k, 0], normals[t, k, 1], normals[t, k, 2]
            if ortho:
                facing |= n0 * rotation[0, 2] + n1 * rotation[1, 2] + n2 * rotation[2, 2] >= 0.0
            else:
                for j in range(3):  # n_k . (C - p_j)
                    facing |= (n0 * (location[0] - corners[t, j, 0]) + n1 * (location[1] - corners[t, j, 1])
                               + n2 * (location[2] - corners[t, j, 2])) >= 0.0
        outside = in_front == 3 and (out_left == 3 or out_right == 3 or out_bottom == 3 or out_top == 3)
        keep[t] = facing and near < 3 and far < 3 and not outside
