"""An object's texels in world space: its UV map rasterized at the texture size, with the world position and
normal of every covered texel interpolated from the evaluated mesh's corners (step 1 of ``bake``).

A surface depends on the mesh and the texture size alone, not on the views, so it is cached by the mesh's
content: the later bakes of sequential generation (the same objects once per view) rasterize nothing.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numba
import numpy as np

from backend.projection.uv_raster import UVRaster, rasterize_uv
from backend.projection.view_kernel import readonly
from contract.formats.surface import BakeMesh

if TYPE_CHECKING:  # a type only: releasing the cache (Engine.release) needs no OpenCV
    from backend.projection.fill import PaddingPlan


@dataclass
class Surface:
    """An object's texels with the world position and unit normal at each texel centre."""

    raster: UVRaster
    positions: np.ndarray  # 3 x N float32 (rows x, y, z: one array per axis keeps every step element-wise)
    normals: np.ndarray  # 3 x N float32, unit length
    corner_positions: np.ndarray  # T x 3 x 3 float32: the mesh's triangles, for culling whole triangles
    corner_normals: np.ndarray  # T x 3 x 3 float32
    island: np.ndarray = field(init=False, repr=False)  # size x size bool: the raster's mask
    padding_plans: dict[int, PaddingPlan] = field(init=False, repr=False, default_factory=dict)  # by padding
    kept: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)  # by camera (_kept)

    def __post_init__(self) -> None:
        self.island = self.raster.mask()


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
                  made.corner_positions, made.island):
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
    mesh_corners = np.ascontiguousarray(mesh.corner_positions, dtype=np.float32)  # a property that gathers: once
    corner_normals = np.ascontiguousarray(mesh.normals, dtype=np.float32)
    _interpolate(*(readonly(a) for a in (raster.triangles, raster.bary, mesh_corners, corner_normals)), positions,
                 normals)
    return Surface(raster, positions, normals, mesh_corners, mesh.normals)


@numba.njit(parallel=True, cache=True, nogil=True)
def _interpolate(triangles, bary, corner_positions, corner_normals, positions, normals):  # type: ignore[no-untyped-def]
    """Barycentric interpolation at every texel (exact on a flat triangle), normals then made unit length."""
    for i in numba.prange(len(triangles)):
        t = triangles[i]
        b0, b1, b2 = bary[0, i], bary[1, i], bary[2, i]
        for axis in range(3):
            positions[axis, i] = (corner_positions[t, 0, axis] * b0 + corner_positions[t, 1, axis] * b1
                                  + corner_positions[t, 2, axis] * b2)
            normals[axis, i] = (corner_normals[t, 0, axis] * b0 + corner_normals[t, 1, axis] * b1
                                + corner_normals[t, 2, axis] * b2)
        length = max(np.float32(math.sqrt(normals[0, i] ** 2 + normals[1, i] ** 2 + normals[2, i] ** 2)),
                     np.float32(1e-12))
        for axis in range(3):
            normals[axis, i] /= length
