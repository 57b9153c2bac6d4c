"""Project images from cameras onto one object's UV map: blend the views, fill what none saw, pad the islands.

Steps (all numpy / OpenCV, no Blender):
1. ``surface`` (``backend.projection.surface``): rasterize the object's triangles in UV space and interpolate
   the world position and normal of every covered texel from the evaluated mesh's corners; cached by the
   mesh's content, so the later bakes of sequential generation reuse it.
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

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from backend.projection.camera import (
    Projection,
    facing,
    map_subset,
    pixel_map,
    project,
    remap_points,
    sample,
    slack,
)
from backend.projection.fill import PaddingPlan, apply_padding, fill_holes, pad_islands, padding_plan
from backend.projection.surface import CHUNK, Surface, in_chunks, surface
from contract.formats.camera import CameraInfo
from contract.formats.surface import BakeMesh
from contract.tasks import MAX_TEXTURE_SIZE, MIN_TEXTURE_SIZE

EDGE_WEIGHT = 1e-3  # weight factor of samples that straddle a depth discontinuity
BORDER_FEATHER = 0.02  # fraction of the frame over which a view's weight ramps up from its edges
KEPT_CAMERAS = 32  # culling masks kept per cached surface (one per camera; sequential generation reuses them)


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
        # [t, i, j] = n_i . (C - p_j) = n_i . C - n_i . p_j, the second term computed once per surface
        toward = normals.astype(np.float64) @ camera.location()  # T x 3: n_i . C
        culled |= (toward[:, :, None] < surf.normal_dot_corner).all(axis=(1, 2))
    return culled


@dataclass
class _PreparedView:
    """What every chunk of texels reads of one view, computed once."""

    view: BakeView
    image: np.ndarray  # H x W x 4 float32, contiguous: colour and coverage (1 where the view has none)
    keep: np.ndarray  # T bool: triangles not culled
    corners: np.ndarray | None  # the depth pass's 2 x 2 minimum and maximum (see _depth_corners)


def _view_arrays(view: BakeView) -> tuple[np.ndarray, np.ndarray | None]:
    """What a view's chunks read that does not depend on the surface: (its image as H x W x 4 float32, the
    depth pass's 2 x 2 minimum and maximum or None)."""
    image = np.asarray(view.image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BakeError(f"view '{view.name}': the image must be H x W x 3 or 4, got shape {image.shape}")
    if image.shape[2] == 3:  # coverage 1: every chunk then samples colour and coverage in one remap
        image = cv2.merge([*cv2.split(image.astype(np.float32, copy=False)), np.ones(image.shape[:2], np.float32)])
    image = np.ascontiguousarray(image, dtype=np.float32)
    return image, _depth_corners(view.depth) if view.depth is not None else None


def _prepare(surf: Surface, view: BakeView) -> _PreparedView:
    image, corners = _view_arrays(view)
    return _PreparedView(view, image, _kept(surf, view.camera), corners)


def _kept(surf: Surface, camera: CameraInfo) -> np.ndarray:
    """T bool: the triangles ``_culled`` keeps, kept with the surface per camera (sequential generation
    bakes the earlier views again at every step)."""
    key = repr(sorted(camera.to_dict().items()))
    keep = surf.kept.get(key)
    if keep is None:
        keep = ~_culled(surf, camera)
        keep.setflags(write=False)
        if len(surf.kept) >= KEPT_CAMERAS:  # a cached surface outlives jobs: its masks must not pile up
            surf.kept.clear()
        surf.kept[key] = keep
    return keep


def _candidates(surf: Surface, camera: CameraInfo, keep: np.ndarray,
                part: slice) -> tuple[np.ndarray, Projection, np.ndarray]:
    """Texels of ``part`` in the frame and clip range and facing the camera: (their indices within the part,
    projection, cosine). ``keep``: the triangles _culled did not rule out."""
    index = np.flatnonzero(keep[surf.raster.triangles[part]])
    # One 1-D take per axis: three times faster than fancy-indexing the 3 x N block.
    positions = [np.take(surf.positions[axis, part], index) for axis in range(3)]
    normals = [np.take(surf.normals[axis, part], index) for axis in range(3)]
    projection = project(camera, positions)
    cosine = facing(camera, positions, normals)
    live = np.flatnonzero(projection.in_frame & (cosine > 0.0))
    return index[live], projection.subset(live), cosine[live]


def _samples(surf: Surface, prepared: _PreparedView, settings: BakeSettings,
             part: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view over the texels of ``part``: (indices within the part of the texels it sees, their colour
    K x 4 (the 4th column: the image's coverage), their weight K > 0)."""
    view = prepared.view
    index, proj, cosine = _candidates(surf, view.camera, prepared.keep, part)
    weight = np.minimum(cosine, np.float32(1.0))
    if settings.blend_exponent != 1.0:
        weight **= np.float32(settings.blend_exponent)
    count = len(index)
    image = prepared.image
    straddles = np.zeros(count, dtype=bool)
    points = pixel_map(proj, image.shape[1], image.shape[0])
    if view.depth is not None and prepared.corners is not None:
        height, width = view.depth.shape[:2]
        at = points if (height, width) == image.shape[:2] else pixel_map(proj, width, height)
        z = remap_points(view.depth, at, count, cv2.INTER_NEAREST)
        # Nearest at half a pixel up-left = the top-left pixel of the 2 x 2 block a bilinear sample reads.
        block = remap_points(prepared.corners, at - np.float32(0.5), count, cv2.INTER_NEAREST)
        allowed = slack(proj, cosine, settings.depth_tolerance)
        # Block pixels nearer or farther than the slack: a bilinear sample there mixes two surfaces.
        near, far = proj.depth - 2 * allowed, proj.depth + 2 * allowed
        straddles = (block[:, 0] < near) | (block[:, 1] > far)
        weight[straddles] *= np.float32(EDGE_WEIGHT)
        # Behind the pixel's surface: occluded. In front of it: the texel's surface does not reach that
        # pixel's centre (a silhouette), so the pixel shows something else. Either way, not this view's.
        z -= proj.depth
        weight[np.abs(z) > allowed] = 0.0
    border = np.minimum(np.minimum(proj.fx, 1.0 - proj.fx), np.minimum(proj.fy, 1.0 - proj.fy))
    border *= np.float32(1.0 / BORDER_FEATHER)
    weight *= np.clip(border, EDGE_WEIGHT, 1.0, out=border)
    # The image at every candidate with the depth pass's map (few fail the depth test), then only the
    # texels the view sees are kept: compacting the colours is cheaper than a second map and projection.
    values = remap_points(image, points, count)
    live = np.flatnonzero(weight > 0)
    index, weight, values = index[live], weight[live], _items(values)[live].view(np.float32).reshape(-1, 4)
    edge = np.flatnonzero(straddles[live])
    if len(edge):  # the nearest pixel passed the depth test: it shows this surface, its neighbours may not
        values[edge] = remap_points(image, map_subset(points, live[edge]), len(edge), cv2.INTER_NEAREST)
    weight *= np.clip(values[:, 3], 0.0, 1.0)
    return index, values, weight


def view_samples(surf: Surface, view: BakeView, settings: BakeSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view over all the surface's texels: (indices of the texels it sees, their colour K x 3, weight K > 0)."""
    index, values, weight = _samples(surf, _prepare(surf, view), settings, slice(0, surf.positions.shape[1]))
    return index, values[:, :3], weight


def bake(mesh: BakeMesh, views: Sequence[BakeView], settings: BakeSettings) -> BakeResult:
    """Bake ``views`` onto ``mesh``'s UV map (see the module docstring)."""
    return bake_surface(surface(mesh, settings.size), views, settings)


def bake_surface(surf: Surface, views: Sequence[BakeView], settings: BakeSettings) -> BakeResult:
    size = settings.size
    count = surf.positions.shape[1]
    with ThreadPoolExecutor(max_workers=2) as pool:
        prepared = list(pool.map(lambda view: _prepare(surf, view), views))
    # Per texel (colour, seen): the texture's RGBA at the island texels before fill and padding.
    texels = np.zeros((count, 4), dtype=np.float32)

    def blend(first: int) -> list[int]:
        """All views over one chunk of texels: their weighted average, written into the chunk's slice."""
        part = slice(first, min(first + CHUNK, count))
        sums = np.zeros((part.stop - part.start, 4), dtype=np.float32)  # (colour * weight, weight) summed
        used = []
        for view in prepared:
            index, values, weight = _samples(surf, view, settings, part)
            for channel in range(3):  # column by column: a broadcast over rows of 4 is several times slower
                values[:, channel] *= weight
            values[:, 3] = weight
            # Each row as one 16-byte item: one gather and one scatter per view instead of one per channel
            # (a view lists each texel once: no repeated indices).
            got = _items(sums)[index]
            got4 = got.view(np.float32).reshape(-1, 4)
            got4 += values
            _items(sums)[index] = got
            used.append(len(index))
        weights = sums[:, 3]
        seen = weights > 0
        for channel in range(3):
            np.divide(sums[:, channel], weights, out=texels[part, channel], where=seen)
        texels[part, 3] = seen
        return used

    per_chunk = in_chunks(blend, count)
    view_texels = [sum(used[k] for used in per_chunk) for k in range(len(views))]

    texture = np.zeros((size * size, 4), dtype=np.float32)
    _items(texture)[surf.raster.texels] = _items(texels)
    texture = texture.reshape(size, size, 4)
    island = surf.island
    seen = texture[:, :, 3] > 0
    # Fill and padding work on all four channels (cv2 takes four at once); alpha is set after them.
    if settings.fill_unseen:
        with ThreadPoolExecutor(max_workers=1) as pool:  # the padding's plan beside the fill: both mostly cv2
            plan = pool.submit(_padding_plan, surf, settings.padding)
            texture = fill_holes(texture, seen, island, unknown_are_zero=True)  # unseen texels hold 0
            texture, covered = apply_padding(texture, plan.result())
    else:
        texture, covered = pad_islands(texture, seen, settings.padding, into=~island)
    # Colour is 0 outside ``covered`` already: only island texels, filled holes and padding were written.
    texture[:, :, 3] = covered
    return BakeResult(texture, seen, island.copy(), view_texels, surf)


def _padding_plan(surf: Surface, padding: int) -> PaddingPlan:
    """The padding around the surface's islands, kept with it: a cached surface pads without recomputing."""
    plan = surf.padding_plans.get(padding)
    if plan is None:
        plan = surf.padding_plans[padding] = padding_plan(surf.island, padding)
    return plan


def _items(rgba: np.ndarray) -> np.ndarray:
    """N x 4 float32 (contiguous) viewed as N 16-byte items, to move whole rows with 1-D indexing."""
    return rgba.reshape(-1, 4).view(np.complex128).reshape(-1)


def render_into_view(mesh: BakeMesh, result: BakeResult, view: BakeView, width: int,
                     height: int, depth_tolerance: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The baked texture as ``view`` sees it, at width x height: (image H x W x 3 float32 scene-linear,
    known H x W bool = pixels showing mostly texels some view saw). For sequential multi-view generation:
    keep the known pixels, inpaint the rest.

    Texels visible in the view are splatted into the pixel their centre projects to (a texture at least as
    dense as the image covers every pixel); pixels left empty inside a covered area take the average of
    their neighbours when most of them are covered."""
    surf = result.surface if result.surface is not None else surface(mesh, result.texture.shape[0])
    index, proj, cosine = _candidates(surf, view.camera, _kept(surf, view.camera),
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
