"""Project images from cameras onto one object's UV map: blend the views, fill what none saw, pad the islands.

Steps (numpy, OpenCV and numba-compiled loops, no Blender):
1. ``surface`` (``backend.projection.surface``): rasterize the object's triangles in UV space and interpolate
   the world position and normal of every covered texel from the evaluated mesh's corners; cached by the
   mesh's content, so the later bakes of sequential generation reuse it.
2. For every view (``backend.projection.view_kernel``, one compiled pass over the texels): drop the triangles
   that certainly show the camera nothing, project the texels into the camera (``backend.projection.camera``'s rules),
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
    project,
    sample,
    slack,
)
from backend.projection.fill import PaddingPlan, apply_padding, fill_holes, pad_islands, padding_plan
from backend.projection.surface import Surface, surface
from backend.projection.view_kernel import CameraParams, Weighting, add_view, kept_triangles, normalize
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


@dataclass
class _PreparedView:
    """What the kernel reads of one view."""

    view: BakeView
    image: np.ndarray  # H x W x 3 or 4 float32, contiguous (a 4th channel: coverage)
    keep: np.ndarray  # T bool: triangles not culled
    depth: np.ndarray | None  # the depth pass, float32, contiguous


def _prepare(surf: Surface, view: BakeView) -> _PreparedView:
    image = np.asarray(view.image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BakeError(f"view '{view.name}': the image must be H x W x 3 or 4, got shape {image.shape}")
    depth = None if view.depth is None else np.ascontiguousarray(view.depth, dtype=np.float32)
    return _PreparedView(view, np.ascontiguousarray(image, dtype=np.float32), _kept(surf, view.camera), depth)


def _kept(surf: Surface, camera: CameraInfo) -> np.ndarray:
    """T bool: the triangles ``kept_triangles`` keeps, kept with the surface per camera (sequential generation
    bakes the earlier views again at every step)."""
    key = repr(sorted(camera.to_dict().items()))
    keep = surf.kept.get(key)
    if keep is None:
        keep = kept_triangles(surf.corner_positions, surf.corner_normals, CameraParams.of(camera))
        keep.setflags(write=False)
        if len(surf.kept) >= KEPT_CAMERAS:  # a cached surface outlives jobs: its masks must not pile up
            surf.kept.clear()
        surf.kept[key] = keep
    return keep


def _candidates(surf: Surface, camera: CameraInfo, keep: np.ndarray,
                part: slice) -> tuple[np.ndarray, Projection, np.ndarray]:
    """Texels of ``part`` in the frame and clip range and facing the camera: (their indices within the part,
    projection, cosine). ``keep``: the triangles kept_triangles did not rule out."""
    index = np.flatnonzero(keep[surf.raster.triangles[part]])
    # One 1-D take per axis: three times faster than fancy-indexing the 3 x N block.
    positions = [np.take(surf.positions[axis, part], index) for axis in range(3)]
    normals = [np.take(surf.normals[axis, part], index) for axis in range(3)]
    projection = project(camera, positions)
    cosine = facing(camera, positions, normals)
    live = np.flatnonzero(projection.in_frame & (cosine > 0.0))
    return index[live], projection.subset(live), cosine[live]


def bake(mesh: BakeMesh, views: Sequence[BakeView], settings: BakeSettings) -> BakeResult:
    """Bake ``views`` onto ``mesh``'s UV map (see the module docstring)."""
    return bake_surface(surface(mesh, settings.size), views, settings)


def bake_surface(surf: Surface, views: Sequence[BakeView], settings: BakeSettings) -> BakeResult:
    size = settings.size
    prepared = [_prepare(surf, view) for view in views]
    weighting = Weighting(settings.blend_exponent, settings.depth_tolerance, EDGE_WEIGHT, BORDER_FEATHER)
    # Per texel (colour x weight, weight) summed over the views, then (colour, seen): the texture's RGBA at
    # the island texels before fill and padding.
    texture = np.zeros((size * size, 4), dtype=np.float32)
    raster = surf.raster
    view_texels = [add_view(surf.positions, surf.normals, raster.triangles, raster.texels, view.keep,
                            CameraParams.of(view.view.camera), view.image, view.depth, weighting, texture)
                   for view in prepared]
    normalize(texture, raster.texels)
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
