"""UV-space hole filling and seam padding for baked textures.

- ``fill_holes``: texels inside the UV islands that no view saw take a smooth fill from the seen texels
  around them (push-pull: average down an image pyramid, then fill each level's holes from the coarser
  one), so small gaps vanish and large ones get the surrounding colours rather than black.
- ``pad_islands``: texels OUTSIDE the islands, up to ``padding`` texels away, copy the nearest island
  texel, so bilinear filtering and mipmaps near a UV seam read the island's own colour, not the
  background.
"""

from __future__ import annotations

import cv2
import numpy as np


def fill_holes(colour: np.ndarray, known: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Fill the texels of H x W x C ``colour`` in ``region`` but not ``known`` by push-pull from the known
    ones, IN PLACE (other texels are left alone); returns ``colour``. Without known texels nothing changes."""
    if not known.any() or not (region & ~known).any():
        return colour
    weights = known.astype(np.float32)
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    premultiplied = colour * weights[..., None]
    while True:
        levels.append((premultiplied, weights))
        height, width = weights.shape
        if height <= 1 and width <= 1:
            break
        size = (max(1, (width + 1) // 2), max(1, (height + 1) // 2))
        premultiplied = _resized(premultiplied, size, cv2.INTER_AREA)
        weights = _resized(weights, size, cv2.INTER_AREA)
    # Pull: from the coarsest level up, each level's missing weight is made up from the level below it.
    filled = levels[-1][0] / np.maximum(levels[-1][1], 1e-12)[..., None]
    for premultiplied, weights in reversed(levels[1:-1]):
        height, width = weights.shape
        coarse = _resized(filled, (width, height), cv2.INTER_LINEAR)
        w = np.minimum(weights, 1.0)[..., None]
        filled = premultiplied / np.maximum(weights, 1e-12)[..., None] * w + coarse * (1.0 - w)
    # The full-size level: known texels keep their colour, only the holes take the upsampled fill.
    holes = region & ~known
    height, width = known.shape
    coarse = _resized(filled, (width, height), cv2.INTER_LINEAR)
    colour[holes] = coarse[holes]
    return colour


def pad_islands(colour: np.ndarray, island: np.ndarray, padding: int,
                into: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Copy the nearest ``island`` texel into texels outside it within ``padding`` texels (Euclidean),
    only where ``into`` allows (default: everywhere), IN PLACE. Returns (colour, covered = island or padded)."""
    if padding <= 0 or not island.any() or island.all():
        return colour, island.copy()
    # distanceTransform measures the distance to the nearest ZERO pixel: make the island the zeros.
    outside = (~island).astype(np.uint8)
    distance, labels = cv2.distanceTransformWithLabels(outside, cv2.DIST_L2, cv2.DIST_MASK_5,
                                                       labelType=cv2.DIST_LABEL_PIXEL)
    # Each island pixel got its own label: label -> its flat index.
    sources = np.flatnonzero(island.reshape(-1))
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lookup[labels.reshape(-1)[sources]] = sources
    padded = (~island) & (distance <= padding)
    if into is not None:
        padded &= into
    targets = np.flatnonzero(padded.reshape(-1))
    flat = colour.reshape(-1, colour.shape[-1])
    flat[targets] = flat[lookup[labels.reshape(-1)[targets]]]
    return colour, island | padded


def _resized(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """cv2.resize for any channel count (it handles at most 4 at a time)."""
    if image.ndim == 2 or image.shape[2] <= 4:
        out = cv2.resize(image, size, interpolation=interpolation)
        return out if image.ndim == 2 or out.ndim == 3 else out[..., None]
    return np.concatenate([_resized(image[..., i:i + 4], size, interpolation)
                           for i in range(0, image.shape[2], 4)], axis=2)
