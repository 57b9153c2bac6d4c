"""An object's texels in world space: its UV map rasterized at the texture size, with the world position and
normal of every covered texel interpolated from the evaluated mesh's corners (step 1 of ``bake``).

A surface depends on the mesh and the texture size alone, not on the views, so it is cached by the mesh's
content: the later bakes of sequential generation (the same objects once per view) rasterize nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from backend.projection.uv_raster import UVRaster, rasterize_uv
from contract.formats.surface import BakeMesh

if TYPE_CHECKING:  # a type only: releasing the cache (Engine.release) needs no OpenCV
    from backend.projection.fill import PaddingPlan

_T = TypeVar("_T")
CHUNK = 1 << 18  # texels handled at once: each temporary array of a chunk is 1 MB, not 16


@dataclass
class Surface:
    """An object's texels with the world position and unit normal at each texel centre."""

    raster: UVRaster
    positions: np.ndarray  # 3 x N float32 (rows x, y, z: one array per axis keeps every step element-wise)
    normals: np.ndarray  # 3 x N float32, unit length
    corner_positions: np.ndarray  # T x 3 x 3 float32: the mesh's triangles, for culling whole triangles
    corner_normals: np.ndarray  # T x 3 x 3 float32
    island: np.ndarray = field(init=False, repr=False)  # size x size bool: the raster's mask
    # T x 3 x 3 float64, [t, i, j] = n_i . p_j of triangle t: the view-independent half of _culled's test
    normal_dot_corner: np.ndarray = field(init=False, repr=False)
    padding_plans: dict[int, PaddingPlan] = field(init=False, repr=False, default_factory=dict)  # by padding
    kept: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)  # by camera (_kept)

    def __post_init__(self) -> None:
        self.island = self.raster.mask()
        self.normal_dot_corner = np.matmul(self.corner_normals.astype(np.float64),
                                           self.corner_positions.astype(np.float64).transpose(0, 2, 1))


def surface(mesh: BakeMesh, size: int) -> Surface:
    """The mesh's texels at ``size`` (see ``Surface``), cached: the surface depends on the mesh's content and
    the size only, not on the views, so sequential generation (which bakes the same objects once per view)
    rasterizes each object once. The least recently used surfaces are dropped beyond
    ``SURFACE_CACHE_BYTES``, the newest always kept; ``clear_surface_cache`` frees them all."""
    key = _surface_key(mesh, size)
    with _CACHE_LOCK:
        cached = _SURFACES.pop(key, None)
        if cached is not None:
            _SURFACES[key] = cached  # most recently used last
            return cached
    made = make_surface(mesh, size)
    # Shared by every bake of this mesh: nobody may change them (corner_normals is the mesh's own array).
    for array in (made.raster.texels, made.raster.triangles, made.raster.bary, made.positions, made.normals,
                  made.corner_positions, made.island, made.normal_dot_corner):
        array.setflags(write=False)
    with _CACHE_LOCK:
        _SURFACES[key] = made
        while len(_SURFACES) > 1 and sum(_surface_bytes(s) for s in _SURFACES.values()) > SURFACE_CACHE_BYTES:
            _SURFACES.pop(next(iter(_SURFACES)))
    return made


SURFACE_CACHE_BYTES = 512 << 20  # a 2048^2 surface takes about 190 MB, a 4096^2 one 760 MB (kept alone)
_SURFACES: dict[tuple[int, str], Surface] = {}
_CACHE_LOCK = threading.Lock()


def clear_surface_cache() -> None:
    with _CACHE_LOCK:
        _SURFACES.clear()


def _surface_key(mesh: BakeMesh, size: int) -> tuple[int, str]:
    """The mesh's content (a hash of its arrays: about 10 ms for 100k triangles) and the texture size."""
    digest = hashlib.blake2b(digest_size=20)
    for array in (mesh.positions, mesh.triangles, mesh.uvs, mesh.normals):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    return size, digest.hexdigest()


def _surface_bytes(surf: Surface) -> int:
    raster = surf.raster
    return sum(a.nbytes for a in (raster.texels, raster.triangles, raster.bary, surf.positions, surf.normals,
                                  surf.island))


def make_surface(mesh: BakeMesh, size: int) -> Surface:
    """Rasterize the mesh's UV map at ``size`` and interpolate each texel's position and normal (no cache)."""
    raster = rasterize_uv(mesh.uvs, size)
    count = len(raster.triangles)
    positions = np.empty((3, count), dtype=np.float32)
    normals = np.empty((3, count), dtype=np.float32)
    mesh_corners = mesh.corner_positions  # a property that gathers: once
    corner_positions = [[np.ascontiguousarray(mesh_corners[:, k, axis]) for axis in range(3)] for k in range(3)]
    corner_normals = [[np.ascontiguousarray(mesh.normals[:, k, axis]) for axis in range(3)] for k in range(3)]

    # rasterize_uv lists the texels triangle by triangle (``triangles`` never decreases), so a chunk's
    # per-texel corner values are each triangle's value repeated over its run: np.repeat, faster than
    # np.take here although it holds the GIL.
    runs = bool(count) and bool(np.all(raster.triangles[1:] >= raster.triangles[:-1]))

    def fill(first: int) -> None:
        part = slice(first, min(first + CHUNK, count))
        triangles = raster.triangles[part]
        weights = [raster.bary[k, part] for k in range(3)]
        low = int(triangles[0])
        lengths = np.bincount(triangles - low) if runs else np.zeros(0, np.int64)
        span = slice(low, low + len(lengths))

        def spread(values: np.ndarray) -> np.ndarray:
            return np.repeat(values[span], lengths) if runs else np.take(values, triangles)

        for out, corners in ((positions, corner_positions), (normals, corner_normals)):
            for axis in range(3):  # barycentric interpolation: exact on a flat triangle
                row = out[axis, part]
                np.multiply(spread(corners[0][axis]), weights[0], out=row)
                row += spread(corners[1][axis]) * weights[1]
                row += spread(corners[2][axis]) * weights[2]
        n = normals[:, part]
        n /= np.maximum(np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), np.float32(1e-12))

    in_chunks(fill, count)
    return Surface(raster, positions, normals, mesh_corners, mesh.normals)


def in_chunks(work: Callable[[int], _T], count: int) -> list[_T]:
    """``work(first)`` for first = 0, CHUNK, 2 CHUNK, ... < count, on two threads (numpy and OpenCV release the
    GIL). Chunks keep the temporaries of every element-wise step at a few MB: 4 views over 4.2 M texels on one
    thread took 0.80 s in chunks of 2^14 texels, 0.56 s of 2^16, 0.51 s of 2^18, 0.67 s of 2^20. Each chunk
    writes only its own slice of the outputs, so the threads never write the same memory."""
    starts = range(0, count, CHUNK)
    if len(starts) <= 1:
        return [work(first) for first in starts]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(work, starts))
