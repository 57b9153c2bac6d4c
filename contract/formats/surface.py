"""One object's evaluated surface for the projection tasks, as the add-on exports it (``MESH.npz``).

The add-on writes one file per object from ``Object.evaluated_get(depsgraph).to_mesh()``: modifiers
applied, coordinates in WORLD space (``matrix_world`` with parents and non-uniform scale applied to the
vertices, its inverse transpose to the normals), Blender's loop triangles. Arrays (uncompressed npz,
``allow_pickle=False``):

- ``positions``  float32 V x 3   world-space vertex positions
- ``triangles``  int32   T x 3   vertex indices of each loop triangle, Blender's corner order
- ``uvs``        float32 T x 3 x 2  the chosen UV map at each triangle corner (UV (0, 0) = the texture's
                                  bottom-left corner, Blender's convention)
- ``normals``    float32 T x 3 x 3  world-space corner normals (Blender's ``corner_normals``: smooth,
                                  flat and custom split normals as Blender shades them), unit length
- ``name``       str (0-d array)  the object's name, for messages and output names (optional)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import FormatError, read_npz, write_npz

ARRAYS = ("positions", "triangles", "uvs", "normals")


class BakeMeshError(FormatError):
    """A mesh file that cannot be baked onto; the message names the object and says why."""


@dataclass
class BakeMesh:
    positions: np.ndarray  # V x 3 float32, world space
    triangles: np.ndarray  # T x 3 int32
    uvs: np.ndarray  # T x 3 x 2 float32
    normals: np.ndarray  # T x 3 x 3 float32, world space, unit
    name: str = "object"

    def __post_init__(self) -> None:
        self.positions = np.ascontiguousarray(self.positions, dtype=np.float32)
        self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int32)
        self.uvs = np.ascontiguousarray(self.uvs, dtype=np.float32)
        self.normals = np.ascontiguousarray(self.normals, dtype=np.float32)
        self.check()

    def check(self) -> None:
        """Shapes, index ranges and finite values; raises BakeMeshError naming the problem."""
        who = f"object '{self.name}'"
        count = len(self.triangles)
        expected = {"positions": (None, 3), "triangles": (count, 3), "uvs": (count, 3, 2), "normals": (count, 3, 3)}
        for key, shape in expected.items():
            array = getattr(self, key)
            if array.ndim != len(shape) or any(want is not None and got != want
                                               for got, want in zip(array.shape, shape, strict=True)):
                raise BakeMeshError(f"{who}: {key} has shape {array.shape}, expected {shape} (None: any)")
        if count == 0:
            raise BakeMeshError(f"{who} has no faces to bake onto")
        if self.triangles.min() < 0 or self.triangles.max() >= len(self.positions):
            raise BakeMeshError(f"{who}: triangle vertex indices outside 0..{len(self.positions) - 1}")
        for key in ("positions", "uvs", "normals"):
            if not np.all(np.isfinite(getattr(self, key))):
                raise BakeMeshError(f"{who}: {key} holds NaN or infinite values")

    @property
    def corner_positions(self) -> np.ndarray:
        """T x 3 x 3 float32: the world position at each triangle corner."""
        return self.positions[self.triangles]


def save_bake_mesh(path: str | os.PathLike[str], mesh: BakeMesh) -> Path:
    return write_npz(path, {"positions": mesh.positions, "triangles": mesh.triangles, "uvs": mesh.uvs,
                            "normals": mesh.normals, "name": np.array(mesh.name)})


def load_bake_mesh(path: str | os.PathLike[str]) -> BakeMesh:
    data = read_npz(path, ARRAYS, "mesh file for baking", BakeMeshError)
    name = str(data["name"]) if "name" in data else Path(path).stem
    return BakeMesh(data["positions"], data["triangles"], data["uvs"], data["normals"], name)
