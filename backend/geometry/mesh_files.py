"""The files meshes come from and go to: GLB / glTF, OBJ, PLY and the add-on's ``mesh.npz``.

Every file is turned into the conventions of backend/geometry/mesh_data.py (Blender's axes, linear
colours, n-gons) the way Blender's importers do by default:

- **Axes**: glTF is Y up by specification and OBJ by custom (Blender's OBJ importer: up Y, forward -Z),
  both read as ``(x, y, z) -> (x, -z, y)`` and GLB written back the other way; PLY is taken and
  written as it is (Blender's PLY importer: up Z). So ``mesh.glb`` and ``mesh.ply`` open in Blender, or
  any viewer, the same way up as ``mesh.npz``, and the add-on applies nothing but ``foreach_set``.
- **Colours**: glTF ``COLOR_0`` is linear by specification and taken as it is; glTF base-colour
  textures, PLY vertex colours (8-bit) and OBJ vertex colours (``v x y z r g b``) are sRGB-encoded and
  decoded to linear. Written files follow the same rules: GLB ``COLOR_0`` linear (8-bit normalised),
  PLY 8-bit sRGB.
- **Faces**: OBJ and PLY n-gons are kept; GLB holds triangles only (written as fans); PLY is written
  with n-gons.

trimesh does the reading and writing, except where it would triangulate n-gons: that part of OBJ and
PLY is in backend/geometry/obj_ply.py (see :func:`read_mesh`).

``mesh.npz`` (:func:`save_npz`, read by the Blender add-on with numpy alone) holds exactly the arrays
``vertices`` (float32 N x 3), ``face_sizes`` (int32 M), ``face_vertices`` (int32, sum of face_sizes)
and, when the mesh has colours, ``colors`` (float32 N x 4, scene-linear RGBA).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from backend.geometry.mesh_data import MeshData, linear_rgba, unit_bytes, unit_floats, y_up_to_z_up, z_up_to_y_up
from backend.geometry.obj_ply import ply_bytes, read_obj, read_ply
from contract.formats import FormatError
from contract.formats.mesh import MeshArrays, read_mesh_arrays, write_mesh_arrays
from contract.jobfolder import atomic_write_bytes

SUPPORTED = (".glb", ".gltf", ".obj", ".ply")
FORMAT_NAMES = {".glb": "GLB", ".gltf": "glTF", ".obj": "OBJ", ".ply": "PLY"}
NPZ_ARRAYS = ("vertices", "face_sizes", "face_vertices", "colors")  # "colors" optional


class MeshFileError(ValueError):
    """A mesh file that cannot be used; the message names the file and says why."""


# --- reading -------------------------------------------------------------------------------


def read_mesh(path: str | os.PathLike[str]) -> MeshData:
    """A GLB / glTF, OBJ or PLY file as a MeshData in Blender's axes with linear colours (or None).

    glTF: read by trimesh, every mesh of the scene with its node transform applied, then joined;
    colours from ``COLOR_0``, else sampled from the base-colour texture at each vertex's UV (times the
    base colour factor), else the material's base colour; points and lines are left out. OBJ: the
    ``v`` (with optional ``r g b``), ``vt`` and ``f`` lines (``v``, ``v/vt``, ``v//vn``, ``v/vt/vn``,
    negative indices) are read here, since trimesh triangulates n-gons and splits vertices at UV and
    normal seams; materials (``mtllib``, ``usemtl``) are read by trimesh and, when there are no vertex
    colours, give each face's corners its ``map_Kd`` texture at their UVs (or its ``Kd``). PLY: header
    and ASCII body read by trimesh, binary body here (trimesh's binary reader takes every face to be
    as long as the first, and Blender writes mixed n-gons); ``x y z``, optional ``red green blue
    [alpha]`` (bytes or floats), faces from ``vertex_indices`` (or ``vertex_index``); other elements
    and properties are skipped.

    Raises MeshFileError: unsupported format (naming the supported ones), missing or unreadable file,
    no faces.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        supported = ", ".join(f"{FORMAT_NAMES[s]} ({s})" for s in SUPPORTED)
        raise MeshFileError(f"{path.name}: unsupported format '{path.suffix or '(no extension)'}'; "
                            f"supported mesh formats: {supported}")
    if not path.is_file():
        raise MeshFileError(f"{path}: no such file")
    kind = FORMAT_NAMES[suffix]
    try:
        if suffix == ".obj":
            mesh = read_obj(path)
        elif suffix == ".ply":
            mesh = read_ply(path)
        else:
            mesh = _read_gltf(path)
    except MeshFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - parsers raise anything on a damaged file
        detail = str(exc).strip() or type(exc).__name__
        raise MeshFileError(f"{path.name} is not a readable {kind} file: {detail}") from None
    if mesh.face_count == 0:
        raise MeshFileError(f"{path.name} has no faces (only points or lines, or nothing): there is no "
                            "surface to import")
    return mesh


def _read_gltf(path: Path) -> MeshData:
    import trimesh

    scene = trimesh.load(str(path), force="scene", process=False)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for geometry in scene.dump(concatenate=False):  # type: ignore[attr-defined]
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            continue  # point clouds, paths
        vertices = np.asarray(geometry.vertices, dtype=np.float32)
        faces = np.asarray(geometry.faces, dtype=np.int64)
        parts.append((vertices, faces, _gltf_colors(geometry)))
    if not parts:
        return MeshData(np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    offsets = np.cumsum([0] + [len(v) for v, _, _ in parts[:-1]])
    vertices = np.concatenate([v for v, _, _ in parts])
    triangles = np.concatenate([f + o for (_, f, _), o in zip(parts, offsets, strict=True)])
    colors = None
    if any(c is not None for _, _, c in parts):
        colors = np.concatenate([c if c is not None else np.ones((len(v), 4), np.float32) for v, _, c in parts])
    return MeshData.from_triangles(y_up_to_z_up(vertices), triangles, colors)


def _gltf_colors(geometry: Any) -> np.ndarray | None:
    """Linear RGBA per vertex from a glTF geometry's visuals (as trimesh loads them), or None."""
    visual = geometry.visual
    kind = getattr(visual, "kind", None)
    if kind in ("vertex", "face"):  # COLOR_0: linear
        return linear_rgba(np.asarray(visual.vertex_colors), srgb=False)
    if kind != "texture":
        return None
    attributes = getattr(visual, "vertex_attributes", {})
    if "color" in attributes and len(attributes["color"]) == len(geometry.vertices):  # COLOR_0 beside a texture
        return linear_rgba(np.asarray(attributes["color"]), srgb=False)
    material = visual.material
    texture = getattr(material, "baseColorTexture", None)
    factor = getattr(material, "baseColorFactor", None)  # linear by specification
    if texture is not None and visual.uv is not None and len(visual.uv) == len(geometry.vertices):
        from trimesh.visual.color import uv_to_color

        colors = linear_rgba(np.asarray(uv_to_color(uv=visual.uv, image=texture)), srgb=True)
        if factor is not None:  # multiplies the texture
            colors = colors * unit_floats(np.asarray(factor)).reshape(1, -1)[:, :4]
        return np.ascontiguousarray(colors, dtype=np.float32)
    if factor is None:
        return None
    return np.repeat(linear_rgba(np.asarray(factor).reshape(1, -1), srgb=False), len(geometry.vertices), axis=0)


# --- writing -------------------------------------------------------------------------------


def write_glb(path: str | os.PathLike[str], mesh: MeshData) -> Path:
    """Binary glTF, atomically: Y up (converted from Blender's Z up), triangles (n-gons as fans),
    ``COLOR_0`` linear RGBA as normalised bytes when the mesh has colours."""
    import trimesh

    path = Path(path)
    colors = unit_bytes(mesh.colors) if mesh.colors is not None else None
    shape = trimesh.Trimesh(vertices=z_up_to_y_up(mesh.vertices), faces=mesh.triangles(), vertex_colors=colors,
                            process=False, validate=False)
    data = shape.export(file_type="glb")
    if not isinstance(data, bytes):
        raise TypeError(f"trimesh exported GLB as {type(data).__name__}, not bytes")
    atomic_write_bytes(path, data)
    return path


def write_ply(path: str | os.PathLike[str], mesh: MeshData) -> Path:
    """Binary little-endian PLY, atomically: Blender's axes (Z up), n-gons kept, colours as 8-bit sRGB
    ``red green blue alpha`` (alpha not encoded); see obj_ply.ply_bytes."""
    path = Path(path)
    atomic_write_bytes(path, ply_bytes(mesh))
    return path


# --- mesh.npz --------------------------------------------------------------------------------


def save_npz(path: str | os.PathLike[str], mesh: MeshData) -> Path:
    """``mesh.npz`` for the add-on (``contract/formats/mesh.py``), atomically."""
    return write_mesh_arrays(path, MeshArrays(mesh.vertices, mesh.face_sizes, mesh.face_vertices, mesh.colors))


def load_npz(path: str | os.PathLike[str]) -> MeshData:
    try:
        arrays = read_mesh_arrays(path)
    except FormatError as exc:
        raise MeshFileError(str(exc)) from None
    return MeshData(arrays.vertices, arrays.face_sizes, arrays.face_vertices, arrays.colors)
