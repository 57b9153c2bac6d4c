"""UV-space hole filling and seam padding for baked textures.

- ``fill_holes``: texels inside the UV islands that no view saw take a smooth fill from the seen texels
  around them (push-pull: average down an image pyramid, then fill each level's holes from the coarser
  one), so small gaps vanish and large ones get the surrounding colours rather than black.
- ``pad_islands``: texels OUTSIDE the islands, up to ``padding`` texels away, copy the nearest island
  texel, so bilinear filtering and mipmaps near a UV seam read the island's own colour, not the
  background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def fill_holes(colour: np.ndarray, known: np.ndarray, region: np.ndarray, *,
               unknown_are_zero: bool = False) -> np.ndarray:
    """Fill the texels of H x W x C ``colour`` in ``region`` but not ``known`` by push-pull from the known
    ones, IN PLACE (other texels are left alone); returns ``colour``. Without known texels nothing changes.
    ``unknown_are_zero``: ``colour`` is already 0 wherever it is not known (spares a full-size multiply).

    Only the holes are computed at full size: the pyramid's levels are built as a whole (each depends on
    everything below it), but the last upsampling is evaluated at the hole texels alone, with the weights
    cv2.resize uses, so the holes get what upsampling the whole level would give them."""
    holes = region & ~known
    if not known.any() or not holes.any():
        return colour
    weights = known.astype(np.float32)
    premultiplied = colour if unknown_are_zero else colour * weights[..., None]
    # Push: average down a pyramid. Below the full size each level is kept as one plane per channel, so
    # the arithmetic is plain 2-D (a broadcast over rows of 3 or 4 channels is several times slower).
    height, width = weights.shape
    levels: list[tuple[list[np.ndarray], np.ndarray]] = []
    while height > 1 or width > 1:
        size = (max(1, (width + 1) // 2), max(1, (height + 1) // 2))
        premultiplied = _resized(premultiplied, size, cv2.INTER_AREA)
        weights = _resized(weights, size, cv2.INTER_AREA)
        levels.append((list(cv2.split(premultiplied)), weights))
        height, width = weights.shape
    if not levels:  # a single texel: its own level is the coarsest
        levels.append((list(cv2.split(np.ascontiguousarray(premultiplied, dtype=np.float32))), weights))
    # Pull: from the coarsest level up, each level's missing weight is made up from the level below it.
    planes, weights = levels[-1]
    filled = [plane / np.maximum(weights, 1e-12) for plane in planes]
    for planes, weights in reversed(levels[:-1]):
        height, width = weights.shape
        w = np.minimum(weights, 1.0)
        inverse = w / np.maximum(weights, 1e-12)
        rest = 1.0 - w
        filled = [plane * inverse + cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR) * rest
                  for plane, coarse in zip(planes, filled, strict=True)]
    top = cv2.merge(filled) if len(filled) > 1 else filled[0][..., None]
    # The full-size level: known texels keep their colour, only the holes take the upsampled fill.
    if np.count_nonzero(holes) * FEW_HOLES < holes.size:
        rows, cols = np.nonzero(holes)  # few: upsample at them only
        colour[rows, cols] = upsampled_at(top, rows, cols, (known.shape[0], known.shape[1]))
    else:
        height, width = known.shape
        coarse = _resized(top, (width, height), cv2.INTER_LINEAR)
        if colour.shape[2] == 4 and colour.dtype == np.float32 and colour.flags.c_contiguous:
            # Each texel's 4 floats as one 16-byte item: a 2-D mask instead of a broadcast over 4 channels.
            np.copyto(colour.view(np.complex128)[..., 0], coarse.view(np.complex128)[..., 0], where=holes)
        else:
            np.copyto(colour, coarse, where=holes[..., None])
    return colour


def upsampled_at(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """What ``cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)`` holds at texels
    (rows, cols) of the resized image, computed at those texels only: K x C float32 (``image``: h x w x C)."""
    source = np.asarray(image, dtype=np.float32)
    y0, y1, fy = _linear_taps(rows, source.shape[0], shape[0])
    x0, x1, fx = _linear_taps(cols, source.shape[1], shape[1])
    taps = source[y0, x0], source[y0, x1], source[y1, x0], source[y1, x1]
    one = np.float32(1.0)
    out = np.empty(taps[0].shape, dtype=np.float32)
    for c in range(out.shape[1]):  # OpenCV's order: along the row first, then between the two rows
        top = taps[0][:, c] * (one - fx) + taps[1][:, c] * fx
        bottom = taps[2][:, c] * (one - fx) + taps[3][:, c] * fx
        out[:, c] = top * (one - fy) + bottom * fy
    return out


def _linear_taps(index: np.ndarray, source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.resize's linear taps along one axis: (first source index, second, weight of the second), with
    the source centre of target texel i at (i + 0.5) * source / target - 0.5, clamped to the edges."""
    position = ((index.astype(np.float64) + 0.5) * (source / target) - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    weight = position - first.astype(np.float32)
    outside = (first < 0) | (first >= source - 1)
    weight[outside] = 0.0
    first = np.clip(first, 0, source - 1)
    return first, np.minimum(first + 1, source - 1), weight


FEW_HOLES = 16  # holes below 1/16 of the texels are upsampled one by one; above it gathering costs more


def pad_islands(colour: np.ndarray, island: np.ndarray, padding: int,
                into: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Copy the nearest ``island`` texel into texels outside it within ``padding`` texels (Euclidean),
    only where ``into`` allows (default: everywhere), IN PLACE. Returns (colour, covered = island or padded)."""
    return apply_padding(colour, padding_plan(island, padding, into))


@dataclass(frozen=True)
class PaddingPlan:
    """Which texels ``pad_islands`` fills and from where: it depends on the island mask alone, so a bake
    can compute it beside the colours, and keep it with the surface."""

    targets: np.ndarray  # flat indices of the padded texels
    sources: np.ndarray  # flat index of the nearest island texel of each
    covered: np.ndarray  # H x W bool: island or padded


def padding_plan(island: np.ndarray, padding: int, into: np.ndarray | None = None) -> PaddingPlan:
    if padding <= 0 or not island.any() or island.all():
        empty = np.zeros(0, dtype=np.int64)
        return PaddingPlan(empty, empty, island.copy())
    # distanceTransform measures the distance to the nearest ZERO pixel: make the island the zeros.
    outside = (~island).astype(np.uint8)
    distance, labels = cv2.distanceTransformWithLabels(outside, cv2.DIST_L2, cv2.DIST_MASK_5,
                                                       labelType=cv2.DIST_LABEL_PIXEL)
    # Each island pixel got its own label: label -> its flat index.
    labels = labels.reshape(-1)
    sources = np.flatnonzero(island.reshape(-1))
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lookup[labels[sources]] = sources
    padded = (~island) & (distance <= padding)
    if into is not None:
        padded &= into
    targets = np.flatnonzero(padded.reshape(-1))
    return PaddingPlan(targets, lookup[labels[targets]], island | padded)


def apply_padding(colour: np.ndarray, plan: PaddingPlan) -> tuple[np.ndarray, np.ndarray]:
    """``pad_islands`` with its plan made: (colour padded IN PLACE, covered)."""
    if len(plan.targets):
        flat = colour.reshape(-1, colour.shape[-1])
        flat[plan.targets] = flat[plan.sources]
    return colour, plan.covered.copy()


def _resized(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """cv2.resize for any channel count (it handles at most 4 at a time)."""
    if image.ndim == 2 or image.shape[2] <= 4:
        out = cv2.resize(image, size, interpolation=interpolation)
        return out if image.ndim == 2 or out.ndim == 3 else out[..., None]
    return np.concatenate([_resized(image[..., i:i + 4], size, interpolation)
                           for i in range(0, image.shape[2], 4)], axis=2)
