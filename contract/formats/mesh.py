"""``mesh.npz``: a mesh for Blender to import (tasks "mesh" and "import_mesh" write it, the add-on reads it).

Arrays (uncompressed npz, ``allow_pickle=False``):

- ``vertices``       float32 N x 3   Blender's axes (Z up)
- ``face_sizes``     int32   M       corners per face (3 or more)
- ``face_vertices``  int32   sum(face_sizes)  vertex indices, face after face
- ``colors``         float32 N x 4   scene-linear RGBA per vertex, only when the mesh has colours

``check`` catches what ``Mesh.validate()`` would: Blender's ``foreach_set`` takes indices on trust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import FormatError, read_npz, write_npz

ARRAYS = ("vertices", "face_sizes", "face_vertices")


@dataclass
class MeshArrays:
    vertices: np.ndarray
    face_sizes: np.ndarray
    face_vertices: np.ndarray
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.face_sizes = np.ascontiguousarray(self.face_sizes, dtype=np.int32)
        self.face_vertices = np.ascontiguousarray(self.face_vertices, dtype=np.int32)
        if self.colors is not None:
            self.colors = np.ascontiguousarray(self.colors, dtype=np.float32)

    def check(self) -> None:
        """Raise FormatError for arrays that would make a broken mesh."""
        vertices, sizes, corners, colors = self.vertices, self.face_sizes, self.face_vertices, self.colors
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not len(vertices) or not np.isfinite(vertices).all():
            raise FormatError(f"vertices must be a non-empty, finite N x 3 array, got shape {vertices.shape}")
        if not len(sizes) or sizes.min() < 3 or int(sizes.sum()) != len(corners):
            raise FormatError("faces must have at least 3 corners each, and their sizes must add up to the corners")
        if corners.min() < 0 or corners.max() >= len(vertices):
            raise FormatError("a face refers to a vertex that does not exist")
        if colors is not None and colors.shape != (len(vertices), 4):
            raise FormatError(f"colors must be N x 4 (one RGBA per vertex), got shape {colors.shape}")


def write_mesh_arrays(path: str | os.PathLike[str], mesh: MeshArrays) -> Path:
    """Write ``mesh`` atomically (uncompressed: it loads at memory speed)."""
    arrays = {"vertices": mesh.vertices, "face_sizes": mesh.face_sizes, "face_vertices": mesh.face_vertices}
    if mesh.colors is not None:
        arrays["colors"] = mesh.colors
    return write_npz(path, arrays)


def read_mesh_arrays(path: str | os.PathLike[str]) -> MeshArrays:
    """Read and check a ``mesh.npz``; FormatError naming the file when it is not one."""
    path = Path(path)
    data = read_npz(path, ARRAYS, "mesh.npz")
    mesh = MeshArrays(data["vertices"], data["face_sizes"], data["face_vertices"], data.get("colors"))
    try:
        mesh.check()
    except FormatError as exc:
        raise FormatError(f"{path.name}: {exc}") from None
    return mesh
