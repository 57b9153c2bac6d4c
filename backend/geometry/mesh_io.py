"""Meshes as arrays, and the files they come from and go to: GLB / glTF, OBJ, PLY and ``mesh.npz``.

Conventions (one place):

- **Axes**: a :class:`MeshData` is in Blender's axes, Z up, -Y the front, in the source's units
  (Shap-E: its [-1, 1] volume). Shap-E's own coordinates are already these (its preview cameras orbit
  the Z axis, starting at -Y). Files are converted as Blender's importers do by default: glTF is
  Y up by specification and OBJ by custom (Blender's OBJ importer: up Y, forward -Z), both read as
  ``(x, y, z) -> (x, -z, y)`` and GLB written back the other way; PLY is taken and written as it is
  (Blender's PLY importer: up Z). So ``mesh.glb`` and ``mesh.ply`` open in Blender, or any viewer,
  the same way up as ``mesh.npz``, and the add-on applies nothing but ``foreach_set``.
- **Colours**: ``colors`` are scene-linear RGBA float32 per vertex. glTF ``COLOR_0`` is linear by
  specification and taken as it is; glTF base-colour textures, PLY vertex colours (8-bit) and OBJ
  vertex colours (``v x y z r g b``) are sRGB-encoded and decoded to linear. Written files follow the
  same rules: GLB ``COLOR_0`` linear (8-bit normalised), PLY 8-bit sRGB.
- **Faces**: polygons of any size, as Blender stores them: ``face_sizes`` (corners per face) and
  ``face_vertices`` (the vertex of each corner, faces one after another, counter-clockwise seen from
  outside). OBJ n-gons are kept; GLB holds triangles only (written as fans); PLY written with n-gons.

``mesh.npz`` (:func:`save_npz`, read by the Blender add-on with numpy alone) holds exactly the arrays
``vertices`` (float32 N x 3), ``face_sizes`` (int32 M), ``face_vertices`` (int32, sum of face_sizes)
and, when the mesh has colours, ``colors`` (float32 N x 4, scene-linear RGBA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.imaging.color import linear_to_srgb, srgb_to_linear
from backend.jobfolder import atomic_write_bytes, atomic_write_with

SUPPORTED = (".glb", ".gltf", ".obj", ".ply")
FORMAT_NAMES = {".glb": "GLB", ".gltf": "glTF", ".obj": "OBJ", ".ply": "PLY"}
NPZ_ARRAYS = ("vertices", "face_sizes", "face_vertices", "colors")  # "colors" optional
# A face whose area is below this fraction of the mesh's squared extent has no area.
DEGENERATE_AREA = 1e-12


class MeshFileError(ValueError):
    """A mesh file that cannot be used; the message names the file and says why."""


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


# --- axes and colours --------------------------------------------------------------------


def y_up_to_z_up(points: np.ndarray) -> np.ndarray:
    """glTF / OBJ (Y up, +Z front) -> Blender (Z up, -Y front): (x, y, z) -> (x, -z, y)."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1) + np.float32(0.0)  # + 0: no negative zeros


def z_up_to_y_up(points: np.ndarray) -> np.ndarray:
    """Blender (Z up) -> glTF (Y up): (x, y, z) -> (x, z, -y)."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([p[:, 0], p[:, 2], -p[:, 1]], axis=1) + np.float32(0.0)


def _bytes_to_float(colors: np.ndarray) -> np.ndarray:
    c = np.asarray(colors)
    if np.issubdtype(c.dtype, np.integer):
        return c.astype(np.float32) / np.float32(255.0)
    return c.astype(np.float32)


def _rgba(colors: np.ndarray, srgb: bool) -> np.ndarray:
    """N x 3 or N x 4 (bytes or floats) -> N x 4 float32 linear RGBA (alpha never decoded)."""
    c = _bytes_to_float(colors)
    if c.shape[1] == 3:
        c = np.concatenate([c, np.ones((len(c), 1), np.float32)], axis=1)
    if srgb:
        c = np.concatenate([srgb_to_linear(c[:, :3]), c[:, 3:4]], axis=1)
    return np.ascontiguousarray(c[:, :4], dtype=np.float32)


def _to_bytes(values: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(values), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --- reading -------------------------------------------------------------------------------


def read_mesh(path: str | os.PathLike[str]) -> MeshData:
    """A GLB / glTF, OBJ or PLY file as a MeshData in Blender's axes with linear colours (or None).

    glTF goes through trimesh: every mesh of the scene with its node transform applied, then joined;
    colours from ``COLOR_0``, else sampled from the base-colour texture at each vertex's UV (times the
    base colour factor), else the material's base colour; points and lines are left out. OBJ and PLY
    are read here, to keep their n-gons (trimesh triangulates them, and cannot read binary PLY with
    mixed face sizes, which Blender writes). OBJ: positions, optional ``v x y z r g b`` colours, faces
    (``f`` with ``v``, ``v/vt``, ``v//vn``, ``v/vt/vn``, negative indices), and, when there are no
    vertex colours, the ``map_Kd`` texture of each face's material sampled at its UVs (or its ``Kd``).
    PLY: ASCII or binary, ``x y z``, optional ``red green blue [alpha]`` (bytes or floats), faces from
    ``vertex_indices`` (or ``vertex_index``); other elements and properties are skipped.

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
            mesh = _read_obj(path)
        elif suffix == ".ply":
            mesh = _read_ply(path)
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
    gltf = True
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for geometry in scene.dump(concatenate=False):  # type: ignore[attr-defined]
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            continue  # point clouds, paths
        vertices = np.asarray(geometry.vertices, dtype=np.float32)
        faces = np.asarray(geometry.faces, dtype=np.int64)
        parts.append((vertices, faces, _trimesh_colors(geometry, gltf)))
    if not parts:
        return MeshData(np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    offsets = np.cumsum([0] + [len(v) for v, _, _ in parts[:-1]])
    vertices = np.concatenate([v for v, _, _ in parts])
    triangles = np.concatenate([f + o for (_, f, _), o in zip(parts, offsets, strict=True)])
    colors = None
    if any(c is not None for _, _, c in parts):
        colors = np.concatenate([c if c is not None else np.ones((len(v), 4), np.float32) for v, _, c in parts])
    if gltf:
        vertices = y_up_to_z_up(vertices)
    return MeshData.from_triangles(vertices, triangles, colors)


def _trimesh_colors(geometry: Any, gltf: bool) -> np.ndarray | None:
    """Linear RGBA per vertex from a trimesh geometry's visuals, or None when it has none."""
    visual = geometry.visual
    kind = getattr(visual, "kind", None)
    if kind in ("vertex", "face"):
        # glTF COLOR_0 is linear; PLY colours are sRGB bytes (face colours are spread to vertices)
        return _rgba(np.asarray(visual.vertex_colors), srgb=not gltf)
    if kind != "texture":
        return None
    attributes = getattr(visual, "vertex_attributes", {})
    if "color" in attributes and len(attributes["color"]) == len(geometry.vertices):  # COLOR_0 beside a texture
        return _rgba(np.asarray(attributes["color"]), srgb=False)
    material = visual.material
    texture = getattr(material, "baseColorTexture", None) if gltf else getattr(material, "image", None)
    if texture is not None and visual.uv is not None and len(visual.uv) == len(geometry.vertices):
        from trimesh.visual.color import uv_to_color

        colors = _rgba(np.asarray(uv_to_color(uv=visual.uv, image=texture)), srgb=True)
        factor = getattr(material, "baseColorFactor", None)
        if gltf and factor is not None:  # linear, multiplies the texture
            colors = colors * _bytes_to_float(np.asarray(factor)).reshape(1, -1)[:, :4]
        return np.ascontiguousarray(colors, dtype=np.float32)
    factor = getattr(material, "baseColorFactor", None) if gltf else getattr(material, "diffuse", None)
    if factor is None:
        return None
    colour = _rgba(np.asarray(factor).reshape(1, -1), srgb=False)  # glTF factor: linear by specification
    return np.repeat(colour, len(geometry.vertices), axis=0)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_COLOURS = (("red", "green", "blue", "alpha"), ("r", "g", "b", "a"),
                ("diffuse_red", "diffuse_green", "diffuse_blue", "diffuse_alpha"))


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str, str | None]]  # name, value type, list count type (None: scalar)


def _ply_header(data: bytes) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise ValueError("it does not start with 'ply'")
    end = data.find(b"end_header")
    if end < 0:
        raise ValueError("its header has no end_header")
    body = data.index(b"\n", end) + 1
    fmt = ""
    elements: list[_PlyElement] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append(_PlyElement(words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1].properties.append((words[4], _PLY_TYPES[words[3]], _PLY_TYPES[words[2]]))
            else:
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]], None))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unknown PLY format {fmt!r}")
    return fmt, elements, body


def _read_ply(path: Path) -> MeshData:
    data = path.read_bytes()
    fmt, elements, offset = _ply_header(data)
    vertices: dict[str, np.ndarray] = {}
    sizes = np.zeros(0, np.int64)
    corners = np.zeros(0, np.int64)
    tokens: list[bytes] = data[offset:].split() if fmt == "ascii" else []
    cursor = 0  # into tokens (ascii) or bytes (binary)
    order = "<" if fmt == "binary_little_endian" else ">"
    if fmt != "ascii":
        cursor = offset
    for element in elements:
        lists = [p for p in element.properties if p[2] is not None]
        if not lists:  # scalars only: one fixed-size record each
            names = [p[0] for p in element.properties]
            if fmt == "ascii":
                width = len(names)
                values = np.asarray(tokens[cursor:cursor + width * element.count], dtype=np.float64)
                if len(values) != width * element.count:
                    raise ValueError(f"the {element.name} element is shorter than its header says")
                table = {n: values[i::width] for i, n in enumerate(names)}
                cursor += width * element.count
            else:
                dtype = np.dtype([(n, order + t) for n, t, _ in element.properties])
                raw = np.frombuffer(data, dtype=dtype, count=element.count, offset=cursor)
                table = {n: raw[n] for n in names}
                cursor += dtype.itemsize * element.count
            if element.name == "vertex":
                vertices = table
            continue
        parsed, cursor = _ply_list_element(data, tokens, cursor, element, fmt, order)
        if element.name == "face":
            name = next((n for n, _, _ in lists if n in ("vertex_indices", "vertex_index")), lists[0][0])
            sizes, corners = parsed[name]
    if not all(axis in vertices for axis in "xyz"):
        raise ValueError("its vertices have no x, y, z")
    points = np.stack([vertices[a] for a in "xyz"], axis=1).astype(np.float32)
    colors = None
    for colour_names in _PLY_COLOURS:
        if all(n in vertices for n in colour_names[:3]):
            channels = [vertices[n] for n in colour_names if n in vertices]
            raw_colors = np.stack(channels, axis=1)
            if np.issubdtype(raw_colors.dtype, np.integer) or raw_colors.max(initial=0) > 1.0:
                raw_colors = raw_colors.astype(np.float32) / np.float32(255.0)
            colors = _rgba(raw_colors.astype(np.float32), srgb=True)
            break
    if len(corners) and (corners.min() < 0 or corners.max() >= len(points)):
        raise ValueError(f"a face refers to a vertex that does not exist ({len(points)} vertices)")
    return MeshData(points, sizes, corners, colors)


def _ply_list_element(data: bytes, tokens: list[bytes], cursor: int, element: _PlyElement, fmt: str,
                      order: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """An element with list properties: per list, (sizes, concatenated values); scalars are skipped.

    Binary records differ in length, so they are walked one by one, except in the common case of
    a single list of constant length (all triangles), which is checked and read in one go.
    """
    props = element.properties
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if fmt != "ascii" and len(props) == 1 and element.count:
        _, value_type, count_type = props[0]
        assert count_type is not None
        count_dtype, value_dtype = np.dtype(order + count_type), np.dtype(order + value_type)
        first = int(np.frombuffer(data, count_dtype, count=1, offset=cursor)[0])
        record = count_dtype.itemsize + first * value_dtype.itemsize
        if cursor + record * element.count <= len(data):
            rows = np.frombuffer(data, np.uint8, count=record * element.count, offset=cursor).reshape(element.count,
                                                                                                    record)
            counts = rows[:, :count_dtype.itemsize].copy().view(count_dtype).reshape(-1)
            if np.all(counts == first):
                indices = rows[:, count_dtype.itemsize:].copy().view(value_dtype).reshape(-1)
                out[props[0][0]] = (np.full(element.count, first, np.int64), indices.astype(np.int64))
                return out, cursor + record * element.count
    collected: dict[str, tuple[list[int], list[int]]] = {p[0]: ([], []) for p in props if p[2] is not None}
    for _ in range(element.count):
        for name, value_type, count_type in props:
            if fmt == "ascii":
                if count_type is None:
                    cursor += 1
                    continue
                n = int(tokens[cursor])
                values = [int(float(t)) for t in tokens[cursor + 1:cursor + 1 + n]]
                cursor += 1 + n
            else:
                if count_type is None:
                    cursor += np.dtype(value_type).itemsize
                    continue
                count_dtype = np.dtype(order + count_type)
                n = int(np.frombuffer(data, count_dtype, count=1, offset=cursor)[0])
                cursor += count_dtype.itemsize
                values = np.frombuffer(data, np.dtype(order + value_type), count=n, offset=cursor).tolist()
                cursor += n * np.dtype(value_type).itemsize
            if len(values) != n:
                raise ValueError(f"the {element.name} element is shorter than its header says")
            collected[name][0].append(n)
            collected[name][1].extend(values)
    for name, (counts_list, values_list) in collected.items():
        out[name] = (np.asarray(counts_list, np.int64), np.asarray(values_list, np.int64))
    return out, cursor


def _obj_index(token: str, count: int, line: int) -> int:
    index = int(token)
    if index == 0:
        raise ValueError(f"line {line}: index 0 (OBJ indices start at 1)")
    return index - 1 if index > 0 else count + index


def _read_obj(path: Path) -> MeshData:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_bytes().decode("latin-1")
        if "\x00" in text:
            raise ValueError("it is binary, not OBJ text") from None
    positions: list[list[float]] = []
    vertex_colors: dict[int, list[float]] = {}
    uvs: list[tuple[float, float]] = []
    sizes: list[int] = []
    corners: list[int] = []
    corner_uvs: list[int] = []  # -1: none
    face_materials: list[str] = []
    libraries: list[str] = []
    material = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        parts = raw.split("#", 1)[0].split()
        if not parts:
            continue
        key, values = parts[0], parts[1:]
        if key == "v":
            if len(values) < 3:
                raise ValueError(f"line {number}: a vertex needs x y z")
            numbers = [float(v) for v in values]
            positions.append(numbers[:3])
            if len(numbers) >= 6:
                vertex_colors[len(positions) - 1] = numbers[3:6]
        elif key == "vt":
            uvs.append((float(values[0]), float(values[1]) if len(values) > 1 else 0.0))
        elif key == "f":
            face = [v.split("/") for v in values]
            if len(face) < 3:
                continue
            sizes.append(len(face))
            for item in face:
                corners.append(_obj_index(item[0], len(positions), number))
                has_uv = len(item) > 1 and item[1] != ""
                corner_uvs.append(_obj_index(item[1], len(uvs), number) if has_uv else -1)
            face_materials.append(material)
        elif key == "usemtl":
            material = " ".join(values)
        elif key == "mtllib":
            libraries.append(" ".join(values))
    vertices = np.asarray(positions, dtype=np.float32).reshape(-1, 3)
    face_vertices = np.asarray(corners, dtype=np.int64)
    if len(face_vertices) and (face_vertices.min() < 0 or face_vertices.max() >= len(vertices)):
        raise ValueError(f"a face refers to a vertex that does not exist ({len(vertices)} vertices)")
    colors: np.ndarray | None = None
    if vertex_colors:
        table = np.ones((len(vertices), 3), np.float32)
        for index, rgb in vertex_colors.items():
            table[index] = rgb
        if table.max() > 1.0:  # some tools write 0-255
            table /= 255.0
        colors = _rgba(table, srgb=True)
    elif libraries and sizes:
        colors = _obj_material_colors(path.parent, libraries, len(vertices), np.asarray(sizes), face_vertices,
                                      np.asarray(corner_uvs), np.asarray(uvs, np.float32).reshape(-1, 2),
                                      face_materials)
    return MeshData(y_up_to_z_up(vertices), np.asarray(sizes, np.int32), face_vertices.astype(np.int32), colors)


def _read_mtl(folder: Path, libraries: list[str]) -> dict[str, dict[str, Any]]:
    materials: dict[str, dict[str, Any]] = {}
    for library in libraries:
        file = folder / library
        if not file.is_file():
            continue
        current: dict[str, Any] | None = None
        for raw in file.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = raw.split("#", 1)[0].split()
            if not parts:
                continue
            if parts[0] == "newmtl":
                current = materials.setdefault(" ".join(parts[1:]), {})
            elif current is not None and parts[0] == "Kd" and len(parts) >= 4:
                current["Kd"] = [float(v) for v in parts[1:4]]
            elif current is not None and parts[0] == "map_Kd" and len(parts) >= 2:
                current["map_Kd"] = folder / parts[-1]  # options (-s, -o ...) come before the file name
    return materials


def _obj_material_colors(folder: Path, libraries: list[str], count: int, sizes: np.ndarray,
                         face_vertices: np.ndarray, corner_uvs: np.ndarray, uvs: np.ndarray,
                         face_materials: list[str]) -> np.ndarray | None:
    """Per-vertex colours from each face's material: its diffuse texture at the corner's UV (sRGB),
    else its Kd (taken as linear, as Blender's OBJ importer does); the last corner seen wins."""
    from PIL import Image

    materials = _read_mtl(folder, libraries)
    if not materials:
        return None
    colors = np.ones((count, 4), np.float32)
    corner_material = np.repeat(np.asarray(face_materials, dtype=object), sizes)
    for name, material in materials.items():
        chosen = corner_material == name
        if not chosen.any():
            continue
        texture = material.get("map_Kd")
        with_uv = chosen & (corner_uvs >= 0)
        if texture is not None and Path(texture).is_file() and with_uv.any():
            with Image.open(texture) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            uv = uvs[corner_uvs[with_uv]]
            height, width = pixels.shape[:2]
            x = np.clip(np.mod(uv[:, 0], 1.0) * width, 0, width - 1).astype(np.int64)
            y = np.clip((1.0 - np.mod(uv[:, 1], 1.0)) * height, 0, height - 1).astype(np.int64)
            colors[face_vertices[with_uv], :3] = srgb_to_linear(pixels[y, x])
        elif "Kd" in material:
            colors[face_vertices[chosen], :3] = np.asarray(material["Kd"], np.float32)
    return colors


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


# --- writing -------------------------------------------------------------------------------


def write_glb(path: str | os.PathLike[str], mesh: MeshData) -> Path:
    """Binary glTF, atomically: Y up (converted from Blender's Z up), triangles (n-gons as fans),
    ``COLOR_0`` linear RGBA as normalised bytes when the mesh has colours."""
    import trimesh

    path = Path(path)
    colors = _to_bytes(mesh.colors) if mesh.colors is not None else None
    triangles = mesh.triangles()
    shape = trimesh.Trimesh(vertices=z_up_to_y_up(mesh.vertices), faces=triangles, vertex_colors=colors,
                            process=False, validate=False)
    data = shape.export(file_type="glb")
    if not isinstance(data, bytes):
        raise TypeError(f"trimesh exported GLB as {type(data).__name__}, not bytes")
    atomic_write_bytes(path, data)
    return path


def write_ply(path: str | os.PathLike[str], mesh: MeshData) -> Path:
    """Binary little-endian PLY, atomically: Blender's axes (Z up), n-gons kept, colours as 8-bit sRGB
    ``red green blue alpha`` (alpha not encoded)."""
    path = Path(path)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if mesh.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    table = np.zeros(mesh.vertex_count, dtype=fields)
    table["x"], table["y"], table["z"] = mesh.vertices[:, 0], mesh.vertices[:, 1], mesh.vertices[:, 2]
    if mesh.colors is not None:
        srgb = _to_bytes(linear_to_srgb(mesh.colors[:, :3]))
        table["red"], table["green"], table["blue"] = srgb[:, 0], srgb[:, 1], srgb[:, 2]
        table["alpha"] = _to_bytes(mesh.colors[:, 3])
    count_type, count_dtype = ("uchar", np.uint8) if mesh.face_count == 0 or mesh.face_sizes.max() < 256 \
        else ("int", np.dtype("<i4"))
    count_bytes = np.dtype(count_dtype).itemsize
    sizes = mesh.face_sizes.astype(np.int64)
    # each face: its corner count, then its vertex indices as little-endian int32
    offsets = np.arange(len(sizes)) * count_bytes + 4 * (np.cumsum(sizes) - sizes)
    faces = np.zeros(len(sizes) * count_bytes + 4 * int(sizes.sum()), np.uint8)
    counts_view = np.asarray(sizes, dtype=count_dtype).view(np.uint8).reshape(-1, count_bytes)
    faces[offsets[:, None] + np.arange(count_bytes)] = counts_view
    corner_at = np.repeat(offsets + count_bytes, sizes) + 4 * (np.arange(len(mesh.face_vertices))
                                                              - np.repeat(np.cumsum(sizes) - sizes, sizes))
    faces[corner_at[:, None] + np.arange(4)] = mesh.face_vertices.astype("<i4").view(np.uint8).reshape(-1, 4)
    header = ["ply", "format binary_little_endian 1.0",
              "comment Scene Diffusion: Z up (Blender axes), colours 8-bit sRGB",
              f"element vertex {mesh.vertex_count}"]
    header += [f"property {'float' if kind == '<f4' else 'uchar'} {name}" for name, kind in fields]
    header += [f"element face {mesh.face_count}", f"property list {count_type} int vertex_indices", "end_header"]
    data = ("\n".join(header) + "\n").encode("ascii") + table.tobytes() + faces.tobytes()
    atomic_write_bytes(path, data)
    return path


# --- mesh.npz --------------------------------------------------------------------------------


def save_npz(path: str | os.PathLike[str], mesh: MeshData) -> Path:
    """``mesh.npz`` for the add-on, atomically (uncompressed: it loads at memory speed). Arrays:
    ``vertices`` float32 N x 3 (Blender axes), ``face_sizes`` int32 M, ``face_vertices`` int32
    sum(face_sizes), and ``colors`` float32 N x 4 scene-linear RGBA only when the mesh has colours."""
    path = Path(path)
    arrays = {"vertices": mesh.vertices, "face_sizes": mesh.face_sizes, "face_vertices": mesh.face_vertices}
    if mesh.colors is not None:
        arrays["colors"] = mesh.colors
    return atomic_write_with(path, lambda handle: np.savez(handle, **arrays))


def load_npz(path: str | os.PathLike[str]) -> MeshData:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in NPZ_ARRAYS[:3] if name not in data.files]
            if missing:
                raise MeshFileError(f"{path.name} lacks the array(s) {', '.join(missing)}")
            colors = data["colors"] if "colors" in data.files else None
            return MeshData(data["vertices"], data["face_sizes"], data["face_vertices"], colors)
    except (OSError, ValueError) as exc:
        if isinstance(exc, MeshFileError):
            raise
        raise MeshFileError(f"{path.name} is not a readable mesh.npz: {exc}") from None
