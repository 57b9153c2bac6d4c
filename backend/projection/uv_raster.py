"""Rasterize a mesh's triangles in UV space: which triangle covers each texel, and where on it.

A texel belongs to a triangle when its CENTRE lies inside the triangle's UV image (edges included), the
usual sampling rule of a rasterizer; texel (row, col) has its centre at UV ((col + 0.5) / size,
1 - (row + 0.5) / size), row 0 at the top (V = 1). Where UV triangles overlap (mirrored or stacked
islands) one of them owns the texel. Triangles too thin to cover a texel centre get none; the seam
padding of ``backend.projection.fill`` covers what they would have shown to bilinear filtering.

Vectorised scanline: for every (triangle, texel row) pair the covered columns form one span, found from
the three edge functions at once; the texels of all spans are then enumerated with ``np.repeat``. Only
covered texels are ever generated, so the work is proportional to the output.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

_CHUNK_SPANS = 1 << 20  # (triangle, row) spans handled at once, which bounds the temporaries
_INSIDE_EPS = -1e-6  # barycentric slack: centres on a shared edge belong to both sides (one of them wins)


@dataclass
class UVRaster:
    size: int
    texels: np.ndarray  # N int32: flat texel index, row * size + col (row 0 at the top)
    triangles: np.ndarray  # N int32: the triangle owning each texel
    bary: np.ndarray  # 3 x N float32: barycentric weights of the texel centre on that triangle's corners
    # (one row per corner: the per-corner rows are what interpolation reads, contiguous)

    def mask(self) -> np.ndarray:
        """size x size bool: texels some triangle covers."""
        out = np.zeros(self.size * self.size, dtype=bool)
        out[self.texels] = True
        return out.reshape(self.size, self.size)

    def interpolate(self, corner_values: np.ndarray) -> np.ndarray:
        """T x 3 x C per-corner values -> N x C at the texel centres (exact for the affine map of a triangle)."""
        values = corner_values[self.triangles]  # N x 3 x C
        return np.einsum("kn,nkc->nc", self.bary, values, dtype=np.float32)


def texel_coordinates(uvs: np.ndarray, size: int) -> np.ndarray:
    """UV -> texel coordinates (x = column, y = row, texel centres at whole numbers)."""
    out = np.empty(uvs.shape, dtype=np.float64)
    out[..., 0] = uvs[..., 0].astype(np.float64) * size - 0.5
    out[..., 1] = (1.0 - uvs[..., 1].astype(np.float64)) * size - 0.5
    return out


def rasterize_uv(uvs: np.ndarray, size: int) -> UVRaster:
    """``uvs``: T x 3 x 2 corner UVs. Returns the covered texels, their triangles and barycentrics."""
    points = texel_coordinates(np.asarray(uvs), size)  # T x 3 x 2
    x, y = points[..., 0], points[..., 1]
    x0 = np.clip(np.ceil(x.min(axis=1)), 0, size).astype(np.int64)
    x1 = np.clip(np.floor(x.max(axis=1)), -1, size - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(axis=1)), 0, size).astype(np.int64)
    y1 = np.clip(np.floor(y.max(axis=1)), -1, size - 1).astype(np.int64)
    widths = np.maximum(x1 - x0 + 1, 0)
    counts = widths * np.maximum(y1 - y0 + 1, 0)

    # Barycentrics as affine functions of the texel position: b1 = a1 x + c1 y + d1, b2 likewise.
    ex1, ey1 = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    ex2, ey2 = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    area = ex1 * ey2 - ex2 * ey1
    usable = np.abs(area) > 1e-12
    counts[~usable] = 0
    safe = np.where(usable, area, 1.0)
    a1, c1 = ey2 / safe, -ex2 / safe
    a2, c2 = -ey1 / safe, ex1 / safe
    d1 = -(a1 * x[:, 0] + c1 * y[:, 0])
    d2 = -(a2 * x[:, 0] + c2 * y[:, 0])

    heights = np.where(counts > 0, np.maximum(y1 - y0 + 1, 0), 0)
    # Chunks of triangles with a bounded number of (triangle, row) spans, two at a time on two threads
    # (numpy releases the GIL); owners are assigned in chunk order, so the result does not depend on timing.
    live_rows = np.cumsum(heights)
    chunk = max(1, min(_CHUNK_SPANS, int(live_rows[-1]) // 2 + 1)) if len(live_rows) else 1
    cuts = np.unique(np.searchsorted(live_rows, np.arange(chunk, int(live_rows[-1]) + chunk, chunk),
                                     side="right")) if len(live_rows) else np.zeros(0, np.int64)
    ranges = list(zip(np.concatenate([[0], cuts[:-1]]), cuts, strict=True))
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda r: _spans(np.arange(r[0], r[1]), heights[r[0]:r[1]], y0, x0, x1,
                                          (a1, c1, d1), (a2, c2, d2), size), ranges)
        pieces = [piece for piece in found if piece is not None]
    if not pieces:
        empty = np.zeros(0, dtype=np.int32)
        return UVRaster(size, empty, np.zeros(0, np.int32), np.zeros((3, 0), np.float32))
    flat = np.concatenate([p[0] for p in pieces])
    tri = np.concatenate([p[1] for p in pieces])
    bary = np.concatenate([p[2] for p in pieces], axis=1)
    # A texel centre on two triangles (overlapping islands, or a shared edge): counted once per texel is
    # the usual case, checked with one bincount; otherwise the last triangle written owns the texel.
    if len(flat) <= size * size and np.bincount(flat, minlength=size * size).max() <= 1:
        return UVRaster(size, flat, tri, bary)
    owner = np.full(size * size, -1, dtype=np.int32)
    for piece in pieces:
        owner[piece[0]] = piece[1]
    keep = owner[flat] == tri  # one entry per texel: its owner's
    return UVRaster(size, flat[keep], tri[keep], bary[:, keep])


def _spans(tris: np.ndarray, heights: np.ndarray, y0: np.ndarray, x0: np.ndarray, x1: np.ndarray,
           edge1: tuple[np.ndarray, np.ndarray, np.ndarray], edge2: tuple[np.ndarray, np.ndarray, np.ndarray],
           size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Texels of ``tris`` (flat index, triangle, barycentrics), or None when they cover none."""
    keep = heights > 0
    tris, heights = tris[keep], heights[keep]
    if not len(tris):
        return None
    tri = np.repeat(tris, heights)
    row = y0[tri] + (np.arange(len(tri)) - np.repeat(np.cumsum(heights) - heights, heights))
    yf = row.astype(np.float64)
    a1, c1, d1 = (v[tri] for v in edge1)
    a2, c2, d2 = (v[tri] for v in edge2)
    # On this row each barycentric is slope * x + offset; b0 = 1 - b1 - b2.
    slopes = (a1, a2, -(a1 + a2))
    offsets = (c1 * yf + d1, c2 * yf + d2, 1.0 - (c1 + c2) * yf - (d1 + d2))
    low = x0[tri].astype(np.float64)
    high = x1[tri].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for slope, offset in zip(slopes, offsets, strict=True):
            bound = (_INSIDE_EPS - offset) / slope  # slope * x + offset >= eps
            low = np.where(slope > 0, np.maximum(low, bound), low)
            high = np.where(slope < 0, np.minimum(high, bound), high)
            flat_out = (slope == 0) & (offset < _INSIDE_EPS)
            high = np.where(flat_out, -1.0, high)
    first = np.ceil(low - 1e-9).astype(np.int32)
    count = np.maximum(np.floor(high + 1e-9).astype(np.int32) - first + 1, 0)
    total = int(count.sum())
    if total == 0:
        return None
    # Per texel its span, then every per-span value by np.take: np.repeat holds the GIL, take does not, so
    # the two threads of rasterize_uv overlap (int32 throughout: 4096^2 texels fit, and half the bytes).
    span = np.repeat(np.arange(len(count), dtype=np.int32), count)
    span_start = np.cumsum(count, dtype=np.int32) - count
    x = np.take(first - span_start, span) + np.arange(total, dtype=np.int32)
    flat = np.take((row * size).astype(np.int32), span) + x
    xf = x.astype(np.float32)
    bary = np.empty((3, total), dtype=np.float32)
    for k, slope, offset in ((1, a1, offsets[0]), (2, a2, offsets[1])):
        np.multiply(np.take(slope.astype(np.float32), span), xf, out=bary[k])
        bary[k] += np.take(offset.astype(np.float32), span)
    np.subtract(1.0, bary[1], out=bary[0])
    bary[0] -= bary[2]
    return flat, np.take(tri.astype(np.int32), span), bary
