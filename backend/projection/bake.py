"""Project images from cameras onto one object's UV map: blend the views, fill what none saw, pad the islands.

Steps (all numpy / OpenCV, no Blender):
1. ``surface``: rasterize the object's triangles in UV space (``backend.projection.uv_raster``) and interpolate
   the world position and normal of every covered texel from the evaluated mesh's corners.
2. For every view (``view_samples``): project those positions into the camera (``backend.projection.camera``),
   keep the texels the view really sees (frame, clip range, facing, depth pass), and sample the view's image
   bilinearly there (a texel is seen when its depth matches the depth pass at the pixel it lands in, within
   ``projection.slack``: behind it, it is occluded; in front of it, the pixel shows another surface). Each
   texel's weight is ``cos(angle) ** blend_exponent`` - the angle between the normal
   and the direction to the camera - reduced to ``EDGE_WEIGHT`` where the bilinear sample straddles a depth
   discontinuity (there the nearest pixel is read instead, which the depth test showed to be this surface,
   so no other surface's colour is mixed in) and feathered over the outer ``BORDER_FEATHER``
   of the frame, so another view that sees the texel squarely takes over there.
3. The views are averaged with those weights. Island texels no view saw are filled from the seen ones
   (``backend.projection.fill.fill_holes``), and ``padding`` texels around every island copy the nearest island
   texel (``pad_islands``).

Each object is baked on its own from its own texels: colour from one object cannot land on another, and the
depth pass (of the whole scene) keeps a view from painting what another object hides.

Conventions
- Textures are ``size x size x 4`` float32, scene-linear RGB, row 0 at the TOP (V = 1), as EXR and PNG
  files store them; UV (u, v) lies at column ``u * size - 0.5``, row ``(1 - v) * size - 0.5``.
- Alpha is 1 on the object's island texels (only the seen ones when ``fill_unseen`` is off) and their seam
  padding, 0 elsewhere.
- A view's image spans the camera's frame whatever its pixel size (a 512 x 512 generation for a
  1024 x 768 camera is stretched over the frame, as a render at that aspect would be). A 4th channel is
  read as coverage: it scales the view's weight (transparent pixels project nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np

from backend.projection.camera import Projection, facing, project, sample, slack
from backend.projection.fill import fill_holes, pad_islands
from backend.projection.uv_raster import UVRaster, rasterize_uv
from contract.formats.camera import CameraInfo
from contract.formats.surface import BakeMesh
from contract.tasks import MAX_TEXTURE_SIZE, MIN_TEXTURE_SIZE

EDGE_WEIGHT = 1e-3  # weight factor of samples that straddle a depth discontinuity
BORDER_FEATHER = 0.02  # fraction of the frame over which a view's weight ramps up from its edges
_T = TypeVar("_T")
CHUNK = 1 << 18  # texels handled at once: each temporary array of a chunk is 1 MB, not 16


class BakeError(ValueError):
    """Inputs that cannot be baked; the message says which and why."""


@dataclass(frozen=True)
class BakeView:
    camera: CameraInfo
    image: np.ndarray  # H x W x 3 or 4 float32, scene-linear, row 0 at the top; stretched over the camera frame
    depth: np.ndarray | None = None  # camera.resolution_y x camera.resolution_x Blender Z of the whole scene
    name: str = "view"  # None depth: no occlusion test (back-facing texels are still skipped)


@dataclass(frozen=True)
class BakeSettings:
    size: int = 1024  # texture width and height in pixels
    blend_exponent: float = 4.0  # view weight = cos(angle between normal and view direction) ** exponent
    padding: int = 8  # texels of seam padding around every UV island
    depth_tolerance: float = 0.01  # relative depth slack before a texel counts as occluded (projection.visible)
    fill_unseen: bool = True  # fill island texels no view saw; off: they keep alpha 0

    def __post_init__(self) -> None:
        if not MIN_TEXTURE_SIZE <= self.size <= MAX_TEXTURE_SIZE:
            raise BakeError(f"texture size must be between {MIN_TEXTURE_SIZE} and {MAX_TEXTURE_SIZE}, got {self.size}")


@dataclass
class Surface:
    """An object's texels with the world position and unit normal at each texel centre."""

    raster: UVRaster
    positions: np.ndarray  # 3 x N float32 (rows x, y, z: one array per axis keeps every step element-wise)
    normals: np.ndarray  # 3 x N float32, unit length
    corner_positions: np.ndarray  # T x 3 x 3 float32: the mesh's triangles, for culling whole triangles
    corner_normals: np.ndarray  # T x 3 x 3 float32


@dataclass
class BakeResult:
    texture: np.ndarray  # size x size x 4 float32 (see the module docstring)
    seen: np.ndarray  # size x size bool: texels at least one view saw
    island: np.ndarray  # size x size bool: texels whose centre lies in one of the object's UV triangles
    view_texels: list[int] = field(default_factory=list)  # per view: island texels it contributed to
    surface: Surface | None = field(default=None, repr=False)  # kept for render_into_view

    @property
    def seen_fraction(self) -> float:
        covered = int(self.island.sum())
        return float((self.seen & self.island).sum()) / covered if covered else 0.0


def surface(mesh: BakeMesh, size: int) -> Surface:
    raster = rasterize_uv(mesh.uvs, size)
    count = len(raster.triangles)
    positions = np.empty((3, count), dtype=np.float32)
    normals = np.empty((3, count), dtype=np.float32)
    corner_positions = [[np.ascontiguousarray(mesh.corner_positions[:, k, axis]) for axis in range(3)]
                        for k in range(3)]
    corner_normals = [[np.ascontiguousarray(mesh.normals[:, k, axis]) for axis in range(3)] for k in range(3)]

    def fill(first: int) -> None:
        part = slice(first, min(first + CHUNK, count))
        triangles, bary = raster.triangles[part], raster.bary[part]
        weights = [np.ascontiguousarray(bary[:, k]) for k in range(3)]
        for out, corners in ((positions, corner_positions), (normals, corner_normals)):
            for axis in range(3):  # barycentric interpolation: exact on a flat triangle
                out[axis, part] = sum(np.take(corners[k][axis], triangles) * weights[k] for k in range(3))
        n = normals[:, part]
        n /= np.maximum(np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), np.float32(1e-12))

    _in_chunks(fill, count)
    return Surface(raster, positions, normals, mesh.corner_positions, mesh.normals)


def _in_chunks(work: Callable[[int], _T], count: int) -> list[_T]:
    """``work(first)`` for first = 0, CHUNK, 2 CHUNK, ... < count, on two threads (numpy and OpenCV release the
    GIL). Chunks keep the temporaries of every element-wise step at a few MB: 4 views over 4.2 M texels on one
    thread took 0.80 s in chunks of 2^14 texels, 0.56 s of 2^16, 0.51 s of 2^18, 0.67 s of 2^20. Each chunk
    writes only its own slice of the outputs, so the threads never write the same memory."""
    starts = range(0, count, CHUNK)
    if len(starts) <= 1:
        return [work(first) for first in starts]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(work, starts))


def _depth_corners(depth: np.ndarray) -> np.ndarray:
    """H x W x 2: minimum and maximum of each pixel's 2 x 2 block with its right and lower neighbours - the
    pixels a bilinear sample between them reads."""
    z = np.ascontiguousarray(depth, dtype=np.float32)
    kernel = np.ones((2, 2), np.uint8)
    # A 2 x 2 kernel anchored at its top-left corner covers (row, col) to (row + 1, col + 1).
    return np.dstack([cv2.erode(z, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE),
                      cv2.dilate(z, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)])


def _culled(surf: Surface, camera: CameraInfo) -> np.ndarray:
    """T bool: triangles that certainly show the camera nothing - every corner beyond one side of the frame
    or of the clip range, or back-facing everywhere. Both tests are exact for a whole triangle: planar depth
    and the frame's edges are affine over it, and with interpolated normals the sign of n(b) . (C - p(b)) is
    a sum of b_i b_j n_i . (C - p_j) with b >= 0, negative when all nine terms are."""
    corners = surf.corner_positions.reshape(-1, 3).T
    proj = project(camera, corners)
    fx, fy, depth = (a.reshape(-1, 3) for a in (proj.fx, proj.fy, proj.depth))
    culled = (depth < camera.clip_start).all(axis=1) | (depth > camera.clip_end).all(axis=1)
    in_front = (depth > 1e-9).all(axis=1)  # a corner behind a perspective camera flips its projection
    culled |= in_front & ((fx < 0).all(axis=1) | (fx > 1).all(axis=1) | (fy < 0).all(axis=1) | (fy > 1).all(axis=1))
    normals = surf.corner_normals
    if camera.type == "ORTHO":
        back = camera.rotation()[:, 2].astype(np.float32)
        culled |= (normals @ back < 0).all(axis=1)
    else:
        toward = camera.location().astype(np.float32) - surf.corner_positions  # T x 3 (corner j) x 3
        terms = np.matmul(normals, toward.transpose(0, 2, 1))  # [t, i, j] = n_i . (C - p_j)
        culled |= (terms < 0).all(axis=(1, 2))
    return culled


@dataclass
class _PreparedView:
    """What every chunk of texels reads of one view, computed once."""

    view: BakeView
    image: np.ndarray  # H x W x 3|4 float32, contiguous
    keep: np.ndarray  # T bool: triangles not culled
    corners: np.ndarray | None  # the depth pass's 2 x 2 minimum and maximum (see _depth_corners)


def _prepare(surf: Surface, view: BakeView) -> _PreparedView:
    image = np.ascontiguousarray(view.image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BakeError(f"view '{view.name}': the image must be H x W x 3 or 4, got shape {image.shape}")
    corners = _depth_corners(view.depth) if view.depth is not None else None
    return _PreparedView(view, image, ~_culled(surf, view.camera), corners)


def _candidates(surf: Surface, camera: CameraInfo, keep: np.ndarray,
                part: slice) -> tuple[np.ndarray, Projection, np.ndarray]:
    """Texels of ``part`` in the frame and clip range and facing the camera: (their indices within the part,
    projection, cosine). ``keep``: the triangles _culled did not rule out."""
    index = np.flatnonzero(keep[surf.raster.triangles[part]])
    positions, normals = surf.positions[:, part][:, index], surf.normals[:, part][:, index]
    projection = project(camera, positions)
    cosine = facing(camera, positions, normals)
    live = np.flatnonzero(projection.in_frame & (cosine > 0.0))
    return index[live], projection.subset(live), cosine[live]


def _samples(surf: Surface, prepared: _PreparedView, settings: BakeSettings,
             part: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view over the texels of ``part``: (indices within the part of the texels it sees, their colour
    K x 3, their weight K > 0)."""
    view = prepared.view
    index, proj, cosine = _candidates(surf, view.camera, prepared.keep, part)
    weight = np.minimum(cosine, np.float32(1.0))
    if settings.blend_exponent != 1.0:
        weight **= np.float32(settings.blend_exponent)
    straddles = np.zeros(len(index), dtype=bool)
    if view.depth is not None and prepared.corners is not None:
        z = sample(view.depth, proj, cv2.INTER_NEAREST)
        # Nearest at half a pixel up-left = the top-left pixel of the 2 x 2 block a bilinear sample reads.
        z_min, z_max = sample(prepared.corners, proj, cv2.INTER_NEAREST, shift=-0.5).T
        allowed = slack(proj, cosine, settings.depth_tolerance)
        # Block pixels nearer or farther than the slack: a bilinear sample there mixes two surfaces.
        straddles = (z_min < proj.depth - 2 * allowed) | (z_max > proj.depth + 2 * allowed)
        weight *= np.where(straddles, np.float32(EDGE_WEIGHT), np.float32(1.0))
        # Behind the pixel's surface: occluded. In front of it: the texel's surface does not reach that
        # pixel's centre (a silhouette), so the pixel shows something else. Either way, not this view's.
        weight[np.abs(proj.depth - z) > allowed] = 0.0
    border = np.minimum(np.minimum(proj.fx, 1.0 - proj.fx), np.minimum(proj.fy, 1.0 - proj.fy))
    weight *= np.clip(border * np.float32(1.0 / BORDER_FEATHER), EDGE_WEIGHT, 1.0)
    live = np.flatnonzero(weight > 0)
    index, proj, weight, straddles = index[live], proj.subset(live), weight[live], straddles[live]
    values = sample(prepared.image, proj)
    edge = np.flatnonzero(straddles)
    if len(edge):  # the nearest pixel passed the depth test: it shows this surface, its neighbours may not
        values[edge] = sample(prepared.image, proj.subset(edge), cv2.INTER_NEAREST)
    if prepared.image.shape[2] == 4:
        weight = weight * np.clip(values[:, 3], 0.0, 1.0)
    return index, values[:, :3], weight


def view_samples(surf: Surface, view: BakeView, settings: BakeSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view over all the surface's texels: (indices of the texels it sees, their colour K x 3, weight K > 0)."""
    return _samples(surf, _prepare(surf, view), settings, slice(0, surf.positions.shape[1]))


def bake(mesh: BakeMesh, views: Sequence[BakeView], settings: BakeSettings) -> BakeResult:
    """Bake ``views`` onto ``mesh``'s UV map (see the module docstring)."""
    return bake_surface(surface(mesh, settings.size), views, settings)


def bake_surface(surf: Surface, views: Sequence[BakeView], settings: BakeSettings) -> BakeResult:
    size = settings.size
    count = surf.positions.shape[1]
    with ThreadPoolExecutor(max_workers=2) as pool:
        prepared = list(pool.map(lambda view: _prepare(surf, view), views))
    colour_texels = np.zeros((count, 3), dtype=np.float32)
    seen_texels = np.zeros(count, dtype=bool)

    def blend(first: int) -> list[int]:
        """All views over one chunk of texels: their weighted average, written into the chunk's slice."""
        part = slice(first, min(first + CHUNK, count))
        size_of = part.stop - part.start
        total = np.zeros((size_of, 3), dtype=np.float32)
        weights = np.zeros(size_of, dtype=np.float32)
        used = []
        for view in prepared:
            index, colour, weight = _samples(surf, view, settings, part)
            total[index] += colour * weight[:, None]  # a view lists each texel once: no repeated indices
            weights[index] += weight
            used.append(len(index))
        seen = weights > 0
        np.divide(total, weights[:, None], out=colour_texels[part], where=seen[:, None])
        seen_texels[part] = seen
        return used

    per_chunk = _in_chunks(blend, count)
    view_texels = [sum(used[k] for used in per_chunk) for k in range(len(views))]

    flat = surf.raster.texels
    colour = np.zeros((size * size, 3), dtype=np.float32)
    colour[flat] = colour_texels
    colour = colour.reshape(size, size, 3)
    island = surf.raster.mask()
    seen = np.zeros(size * size, dtype=bool)
    seen[flat[seen_texels]] = True
    seen = seen.reshape(size, size)
    if settings.fill_unseen:
        colour = fill_holes(colour, seen, island)
        colour, covered = pad_islands(colour, island, settings.padding)
    else:
        colour, covered = pad_islands(colour, seen, settings.padding, into=~island)
    texture = np.empty((size, size, 4), dtype=np.float32)
    texture[..., :3] = colour
    texture[..., 3] = covered
    texture[~covered] = 0.0
    return BakeResult(texture, seen, island, view_texels, surf)


def render_into_view(mesh: BakeMesh, result: BakeResult, view: BakeView, width: int,
                     height: int, depth_tolerance: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The baked texture as ``view`` sees it, at width x height: (image H x W x 3 float32 scene-linear,
    known H x W bool = pixels showing mostly texels some view saw). For sequential multi-view generation:
    keep the known pixels, inpaint the rest.

    Texels visible in the view are splatted into the pixel their centre projects to (a texture at least as
    dense as the image covers every pixel); pixels left empty inside a covered area take the average of
    their neighbours when most of them are covered."""
    surf = result.surface if result.surface is not None else surface(mesh, result.texture.shape[0])
    index, proj, cosine = _candidates(surf, view.camera, ~_culled(surf, view.camera),
                                      slice(0, surf.positions.shape[1]))
    if view.depth is not None:
        z = sample(view.depth, proj, cv2.INTER_NEAREST)
        live = np.flatnonzero(np.abs(proj.depth - z) <= slack(proj, cosine, depth_tolerance))
        index, proj = index[live], proj.subset(live)
    cols = np.clip((proj.fx * width).astype(np.int64), 0, width - 1)
    rows = np.clip((proj.fy * height).astype(np.int64), 0, height - 1)
    pixel = rows * width + cols
    texels = surf.raster.texels[index]
    texel_colour = result.texture.reshape(-1, 4)[texels, :3]
    texel_seen = result.seen.reshape(-1)[texels].astype(np.float64)
    pixels = width * height
    counts = np.bincount(pixel, minlength=pixels).astype(np.float32).reshape(height, width)
    sums = np.stack([np.bincount(pixel, texel_colour[:, c], pixels) for c in range(3)],
                    axis=1).astype(np.float32).reshape(height, width, 3)
    seen_sum = np.bincount(pixel, texel_seen, pixels).astype(np.float32).reshape(height, width)
    hit = counts > 0
    # Empty pixels with most of their 8 neighbours hit: between texel centres, not off the surface.
    neighbours = cv2.boxFilter(hit.astype(np.float32), -1, (3, 3), normalize=False)
    holes = ~hit & (neighbours >= 5)
    if holes.any():
        box = (3, 3)
        counts = np.where(holes, cv2.boxFilter(counts, -1, box, normalize=False), counts)
        sums = np.where(holes[..., None], cv2.boxFilter(sums, -1, box, normalize=False), sums)
        seen_sum = np.where(holes, cv2.boxFilter(seen_sum, -1, box, normalize=False), seen_sum)
    image = np.zeros((height, width, 3), dtype=np.float32)
    covered = counts > 0
    np.divide(sums, counts[..., None], out=image, where=covered[..., None])
    known = covered & (seen_sum > 0.5 * counts)
    return image, known
