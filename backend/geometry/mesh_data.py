"""Meshes as arrays: :class:`MeshData`, the axes it is in, cleaning, orientation.

Conventions (one place; backend/geometry/mesh_files.py converts every file format to them):

- **Axes**: a :class:`MeshData` is in Blender's axes, Z up, -Y the front, in the source's units
  (Shap-E: its [-1, 1] volume). Shap-E's own coordinates are already these (its preview cameras orbit
  the Z axis, starting at -Y). Y-up sources (glTF, OBJ) are turned by :func:`y_up_to_z_up`.
- **Colours**: ``colors`` are scene-linear RGBA float32 per vertex, or None; file colours (bytes or
  floats, sRGB or linear) are turned by :func:`linear_rgba`.
- **Faces**: polygons of any size, as Blender stores them: ``face_sizes`` (corners per face) and
  ``face_vertices`` (the vertex of each corner, faces one after another, counter-clockwise seen from
  outside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.imaging.color import srgb_to_linear

# A face whose area is below this fraction of the mesh's squared extent has no area.
DEGENERATE_AREA = 1e-12


@dataclass
class MeshData:
    vertices: np.ndarray  # N x 3 float32, Blender axes (Z up)
    face_sizes: np.ndarray  # M int32: corners per face (3 for triangles)
    face_vertices: np.ndarray  # sum(face_sizes) int32: vertex index per corner, faces consecutive
    colors: np.ndarray | None = None  # N x 4 float32 scene-linear RGBA, or None

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(np.asarray(self.vertices, dtype=np.float32).reshape(-1, 3))
        self.face_sizes = np.ascontiguousarray(np.asarray(self.face_sizes, dtype=np.int32).reshape(-1))
        self.face_vertices = np.ascontiguousarray(np.asarray(self.face_vertices, dtype=np.int32).reshape(-1))
        if self.colors is not None:
            colors = np.asarray(self.colors, dtype=np.float32).reshape(len(self.vertices), -1)
            if colors.shape[1] == 3:
                colors = np.concatenate([colors, np.ones((len(colors), 1), np.float32)], axis=1)
            if colors.shape[1] != 4:
                raise ValueError(f"colors must be N x 3 or N x 4, got {colors.shape}")
            self.colors = np.ascontiguousarray(colors)
        if int(self.face_sizes.sum()) != len(self.face_vertices):
            raise ValueError(f"face_sizes add up to {int(self.face_sizes.sum())} corners but face_vertices "
                             f"has {len(self.face_vertices)}")

    @property
    def vertex_count(self) -> int:
        return len(self.vertices)

    @property
    def face_count(self) -> int:
        return len(self.face_sizes)

    @property
    def triangles_only(self) -> bool:
        return bool(np.all(self.face_sizes == 3))

    @property
    def face_starts(self) -> np.ndarray:
        """Index into face_vertices of each face's first corner."""
        starts = np.zeros(len(self.face_sizes), dtype=np.int64)
        np.cumsum(self.face_sizes[:-1], out=starts[1:])
        return starts

    def triangles(self) -> np.ndarray:
        """K x 3 int32: every face as a fan of triangles from its first corner (n-2 per n-gon)."""
        if self.triangles_only:
            return self.face_vertices.reshape(-1, 3)
        sizes = self.face_sizes.astype(np.int64)
        fans = np.maximum(sizes - 2, 0)
        first = np.repeat(self.face_starts, fans)
        offset = np.arange(int(fans.sum())) - np.repeat(np.cumsum(fans) - fans, fans)  # 0 .. n-3 per face
        corners = np.stack([first, first + offset + 1, first + offset + 2], axis=1)
        return self.face_vertices[corners].astype(np.int32)

    @classmethod
    def from_triangles(cls, vertices: np.ndarray, triangles: np.ndarray,
                       colors: np.ndarray | None = None) -> MeshData:
        triangles = np.asarray(triangles).reshape(-1, 3)
        return cls(vertices, np.full(len(triangles), 3, np.int32), triangles.reshape(-1), colors)


# --- axes and colours ----------------------------------------------------------------------


def y_up_to_z_up(points: np.ndarray) -> np.ndarray:
    """glTF / OBJ (Y up, +Z front) -> Blender (Z up, -Y front): (x, y, z) -> (x, -z, y)."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1) + np.float32(0.0)  # + 0: no negative zeros


def z_up_to_y_up(points: np.ndarray) -> np.ndarray:
    """Blender (Z up) -> glTF (Y up): (x, y, z) -> (x, z, -y)."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([p[:, 0], p[:, 2], -p[:, 1]], axis=1) + np.float32(0.0)


def unit_floats(colors: np.ndarray) -> np.ndarray:
    """Colour channels as float32 in [0, 1]: bytes divided by 255, floats as they are."""
    c = np.asarray(colors)
    if np.issubdtype(c.dtype, np.integer):
        return c.astype(np.float32) / np.float32(255.0)
    return c.astype(np.float32)


def linear_rgba(colors: np.ndarray, srgb: bool) -> np.ndarray:
    """N x 3 or N x 4 (bytes or floats) -> N x 4 float32 linear RGBA, decoded from sRGB when ``srgb``
    (alpha never decoded; missing alpha is 1)."""
    c = unit_floats(colors)
    if c.shape[1] == 3:
        c = np.concatenate([c, np.ones((len(c), 1), np.float32)], axis=1)
    if srgb:
        c = np.concatenate([srgb_to_linear(c[:, :3]), c[:, 3:4]], axis=1)
    return np.ascontiguousarray(c[:, :4], dtype=np.float32)


def unit_bytes(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8, rounded, clipped (NaN as 0)."""
    return (np.clip(np.nan_to_num(values), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --- cleaning ------------------------------------------------------------------------------


def clean(mesh: MeshData) -> tuple[MeshData, dict[str, int]]:
    """Drop what a mesh importer would choke on; returns the mesh and how much of each was removed.

    In order: vertices with NaN or infinite coordinates (``nonfinite_vertices``) and the faces using
    them or a vertex index out of range (``invalid_faces``); vertices at exactly the same position are
    merged, the first one's colour kept (``merged_vertices``; generators and glTF exporters split
    vertices at UV seams, which would shade as creases); repeated consecutive corners are dropped and
    faces left with fewer than 3 corners, with a vertex twice, or without area are removed
    (``degenerate_faces``); finally vertices no face uses (``unreferenced_vertices``). Vertex order is
    kept otherwise.
    """
    vertices = mesh.vertices
    sizes = mesh.face_sizes.astype(np.int64)
    corners = mesh.face_vertices.astype(np.int64)
    colors = mesh.colors
    counts = dict.fromkeys(("nonfinite_vertices", "invalid_faces", "merged_vertices", "degenerate_faces",
                            "unreferenced_vertices"), 0)
    if colors is not None:
        colors = np.nan_to_num(colors, nan=0.0, posinf=1.0, neginf=0.0)

    finite = np.isfinite(vertices).all(axis=1)
    counts["nonfinite_vertices"] = int((~finite).sum())
    face_of = np.repeat(np.arange(len(sizes)), sizes)
    bad_corner = (corners < 0) | (corners >= len(vertices))
    bad_corner[~bad_corner] = ~finite[corners[~bad_corner]]
    bad_face = np.zeros(len(sizes), bool)
    bad_face[face_of[bad_corner]] = True
    counts["invalid_faces"] = int(bad_face.sum())
    sizes, corners = _keep_faces(sizes, corners, ~bad_face)

    # Merge identical positions (only among finite vertices; the others are unreferenced by now).
    index = np.arange(len(vertices))
    finite_index = np.flatnonzero(finite)
    if len(finite_index):
        _, first, inverse = np.unique(vertices[finite_index] + np.float32(0.0), axis=0, return_index=True,
                                      return_inverse=True)
        representative = finite_index[first[inverse.reshape(-1)]]
        counts["merged_vertices"] = int((representative != finite_index).sum())
        index[finite_index] = representative
    corners = index[corners]

    sizes, corners, degenerate = _drop_degenerate(vertices, sizes, corners)
    counts["degenerate_faces"] = degenerate

    used = np.zeros(len(vertices), bool)
    used[corners] = True
    # every removed vertex is non-finite, merged into another, or used by no face
    counts["unreferenced_vertices"] = int((~used).sum()) - counts["merged_vertices"] - counts["nonfinite_vertices"]
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(int(used.sum()))
    cleaned = MeshData(vertices[used], sizes, remap[corners], colors[used] if colors is not None else None)
    return cleaned, counts


def signed_volume(mesh: MeshData) -> float:
    """The volume a closed mesh encloses: positive when its faces are counter-clockwise seen from outside
    (normals out), negative when they all point in. Meaningless for an open mesh."""
    triangles = mesh.triangles()
    if len(triangles) == 0:
        return 0.0
    p = mesh.vertices.astype(np.float64)[triangles]
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)


def flipped(mesh: MeshData) -> MeshData:
    """The same mesh with every face's corners in reverse order (normals the other way)."""
    sizes = mesh.face_sizes.astype(np.int64)
    starts = np.repeat(mesh.face_starts, sizes)
    position = np.arange(len(mesh.face_vertices)) - starts
    reverse = starts + np.repeat(sizes, sizes) - 1 - position
    return MeshData(mesh.vertices, mesh.face_sizes, mesh.face_vertices[reverse], mesh.colors)


def _keep_faces(sizes: np.ndarray, corners: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return sizes[keep], corners[np.repeat(keep, sizes)]


def _drop_degenerate(vertices: np.ndarray, sizes: np.ndarray,
                     corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove repeated consecutive corners, then faces with < 3 corners, a repeated vertex or no area."""
    if len(sizes) == 0:
        return sizes, corners, 0
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    face_of = np.repeat(np.arange(len(sizes)), sizes)
    position = np.arange(len(corners)) - starts[face_of]
    following = np.where(position + 1 < sizes[face_of], np.arange(len(corners)) + 1, starts[face_of])
    repeated = corners == corners[following]
    keep_corner = ~repeated
    new_sizes = sizes - np.bincount(face_of[repeated], minlength=len(sizes))
    corners = corners[keep_corner]
    face_of = face_of[keep_corner]
    good = new_sizes >= 3
    # a vertex twice in one face (not next to itself): sort (face, vertex) pairs, look for neighbours
    order = np.lexsort((corners, face_of))
    twice = (face_of[order][1:] == face_of[order][:-1]) & (corners[order][1:] == corners[order][:-1])
    good[face_of[order][1:][twice]] = False
    # area: half the length of the Newell normal
    starts = np.concatenate([[0], np.cumsum(new_sizes)[:-1]])
    position = np.arange(len(corners)) - starts[face_of]
    following = np.where(position + 1 < new_sizes[face_of], np.arange(len(corners)) + 1, starts[face_of])
    p = vertices[corners].astype(np.float64)
    q = vertices[corners[following]].astype(np.float64)
    cross = np.cross(p, q)
    normal = np.stack([np.bincount(face_of, cross[:, k], minlength=len(new_sizes)) for k in range(3)], axis=1)
    area = 0.5 * np.linalg.norm(normal, axis=1)
    used = vertices[np.unique(corners)] if len(corners) else np.zeros((1, 3), np.float32)
    extent = float(np.max(used.max(axis=0) - used.min(axis=0))) if len(used) else 0.0
    good &= area > DEGENERATE_AREA * max(extent, 1e-30) ** 2
    removed = int((~good).sum())
    new_sizes, corners = _keep_faces(new_sizes, corners, good)
    return new_sizes, corners, removed

