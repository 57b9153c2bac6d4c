"""OBJ and PLY, the formats that hold n-gons: the parts trimesh would triangulate are read here.

Called by backend/geometry/mesh_files.py (``read_mesh``, ``write_ply``), which documents the axes and
colours. trimesh still reads OBJ materials and textures, PLY headers and ASCII PLY bodies.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from backend.geometry.mesh_data import MeshData, linear_rgba, unit_bytes, y_up_to_z_up
from backend.imaging.color import linear_to_srgb

# --- OBJ -------------------------------------------------------------------------------------


def _obj_index(token: str, count: int, line: int) -> int:
    index = int(token)
    if index == 0:
        raise ValueError(f"line {line}: index 0 (OBJ indices start at 1)")
    return index - 1 if index > 0 else count + index


def read_obj(path: Path) -> MeshData:
    """An OBJ file in Blender's axes, n-gons and file vertex order kept (see mesh_files.read_mesh)."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise ValueError("it is binary, not OBJ text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    positions: list[list[float]] = []
    vertex_colors: list[list[float]] = []  # r g b per vertex, white where a vertex has none
    uvs: list[list[float]] = []
    sizes: list[int] = []
    corners: list[int] = []
    corner_uvs: list[int] = []  # -1: none
    face_materials: list[str] = []
    libraries: list[str] = []
    material = ""
    colored = False
    for number, raw in enumerate(text.splitlines(), start=1):
        key, *values = raw.split("#", 1)[0].split() or [""]
        if key == "v":
            if len(values) < 3:
                raise ValueError(f"line {number}: a vertex needs x y z")
            numbers = [float(v) for v in values]
            positions.append(numbers[:3])
            colored |= len(numbers) >= 6
            vertex_colors.append(numbers[3:6] if len(numbers) >= 6 else [1.0, 1.0, 1.0])
        elif key == "vt":
            uvs.append(([float(v) for v in values[:2]] + [0.0, 0.0])[:2])
        elif key == "f" and len(values) >= 3:
            sizes.append(len(values))
            face_materials.append(material)
            for corner in values:
                vertex, _, rest = corner.partition("/")
                uv = rest.partition("/")[0]
                corners.append(_obj_index(vertex, len(positions), number))
                corner_uvs.append(_obj_index(uv, len(uvs), number) if uv else -1)
        elif key == "usemtl":
            material = " ".join(values)
        elif key == "mtllib":
            libraries.append(" ".join(values))
    vertices = np.asarray(positions, dtype=np.float32).reshape(-1, 3)
    face_vertices = np.asarray(corners, dtype=np.int64)
    if len(face_vertices) and (face_vertices.min() < 0 or face_vertices.max() >= len(vertices)):
        raise ValueError(f"a face refers to a vertex that does not exist ({len(vertices)} vertices)")
    colors: np.ndarray | None = None
    if colored:
        table = np.asarray(vertex_colors, dtype=np.float32)
        colors = linear_rgba(table / 255.0 if table.max() > 1.0 else table, srgb=True)  # some tools write 0-255
    elif libraries and sizes:
        colors = _obj_material_colors(path, libraries, len(vertices), np.asarray(sizes), face_vertices,
                                      np.asarray(corner_uvs), np.asarray(uvs, np.float32).reshape(-1, 2),
                                      face_materials)
    return MeshData(y_up_to_z_up(vertices), np.asarray(sizes, np.int32), face_vertices.astype(np.int32), colors)


def _obj_material_colors(path: Path, libraries: list[str], count: int, sizes: np.ndarray,
                         face_vertices: np.ndarray, corner_uvs: np.ndarray, uvs: np.ndarray,
                         face_materials: list[str]) -> np.ndarray | None:
    """Per-vertex colours from each face's material (MTL files and their textures read by trimesh):
    its diffuse texture at the corner's UV (sRGB), else its Kd (taken as linear, as Blender's OBJ
    importer does); the last corner seen wins. Missing material files give no colours, as in Blender."""
    from trimesh.exchange.obj import parse_mtl
    from trimesh.resolvers import FilePathResolver
    from trimesh.visual.color import uv_to_color

    resolver = FilePathResolver(str(path), allow_anywhere=True)  # like Blender: ../textures/ too
    materials: dict[str, dict[str, Any]] = {}
    for library in libraries:
        try:
            materials.update(parse_mtl(resolver.get(library), resolver=resolver))
        except OSError:
            continue
    if not materials:
        return None
    colors = np.ones((count, 4), np.float32)
    corner_material = np.repeat(np.asarray(face_materials, dtype=object), sizes)
    for name, material in materials.items():
        chosen = corner_material == name
        with_uv = chosen & (corner_uvs >= 0)
        image = material.get("image")
        if image is not None and with_uv.any():
            texture = uv_to_color(uv=uvs[corner_uvs[with_uv]], image=image)
            colors[face_vertices[with_uv], :3] = linear_rgba(texture, srgb=True)[:, :3]
        elif "diffuse" in material and chosen.any():
            colors[face_vertices[chosen], :3] = np.asarray(material["diffuse"], np.float32).reshape(-1)[:3]
    return colors


# --- PLY -------------------------------------------------------------------------------------


_PLY_COLOURS = (("red", "green", "blue", "alpha"), ("r", "g", "b", "a"),
                ("diffuse_red", "diffuse_green", "diffuse_blue", "diffuse_alpha"))
_PLY_LIST = ", ($LIST,)"  # trimesh's header reader types a list "<count dtype>, ($LIST,)<value dtype>"


def read_ply(path: Path) -> MeshData:
    """A PLY file as it is (Z up), n-gons kept (see mesh_files.read_mesh)."""
    from trimesh.exchange import ply

    data = path.read_bytes()
    if not data.startswith(b"ply"):
        raise ValueError("it does not start with 'ply'")
    if b"end_header" not in data:
        raise ValueError("its header has no end_header")
    stream = io.BytesIO(data)
    elements, is_ascii, _ = ply._parse_header(stream)  # trimesh's own header and ASCII readers (trimesh pinned)
    if is_ascii:
        ply._ply_ascii(elements, stream)
    else:
        _ply_binary_body(elements, data, stream.tell())
    vertex = elements.get("vertex", {"properties": {}})
    if not all(axis in vertex["properties"] for axis in "xyz"):
        raise ValueError("its vertices have no x, y, z")
    columns = vertex.get("data") or {name: np.zeros(0) for name in vertex["properties"]}

    def column(name: str) -> np.ndarray:
        return np.asarray(columns[name]).reshape(-1)

    points = np.stack([column(axis) for axis in "xyz"], axis=1).astype(np.float32)
    colors = None
    for names in _PLY_COLOURS:
        if all(name in columns for name in names[:3]):
            channels = np.stack([column(name) for name in names if name in columns], axis=1)
            if np.issubdtype(channels.dtype, np.integer) or channels.max(initial=0) > 1.0:
                channels = channels.astype(np.float32) / np.float32(255.0)
            colors = linear_rgba(channels.astype(np.float32), srgb=True)
            break
    face = elements.get("face", {}).get("data") or {}
    lists = next((face[name] for name in ("vertex_indices", "vertex_index") if name in face), None)
    if lists is None:
        sizes, corners = np.zeros(0, np.int64), np.zeros(0, np.int64)
    elif lists.dtype != object:  # every face as long: F x k
        lists = np.atleast_2d(lists)
        sizes, corners = np.full(len(lists), lists.shape[1]), lists.reshape(-1).astype(np.int64)
    else:  # F arrays
        sizes = np.asarray([len(face_corners) for face_corners in lists], np.int64)
        corners = np.concatenate([*lists, np.zeros(0, np.int64)]).astype(np.int64)
    if len(corners) and (corners.min() < 0 or corners.max() >= len(points)):
        raise ValueError(f"a face refers to a vertex that does not exist ({len(points)} vertices)")
    return MeshData(points, sizes, corners, colors)


def _ply_binary_body(elements: dict[str, Any], data: bytes, offset: int) -> None:
    """Fill each element of trimesh's PLY header with its ``data`` as trimesh's ASCII reader does:
    property name -> column; a list property F x k when every record has k values, else F arrays.

    Read here because trimesh's binary reader takes every list to be as long as the first one, and
    the PLY files Blender and :func:`ply_bytes` write mix triangles, quads and n-gons.
    """
    for name, element in elements.items():
        count, properties = element["length"], element["properties"]
        if not any(_PLY_LIST in kind for kind in properties.values()):  # fixed-size records: one read
            dtype = np.dtype(list(properties.items()))
            if offset + dtype.itemsize * count > len(data):
                raise ValueError(f"its {name} element is shorter than its header says")
            table = np.frombuffer(data, dtype, count, offset)
            element["data"] = {key: table[key] for key in properties}
            offset += dtype.itemsize * count
            continue
        layout = []  # (name, count dtype or None for a scalar, value dtype)
        for key, kind in properties.items():
            count_kind, _, value_kind = kind.rpartition(_PLY_LIST)
            layout.append((key, np.dtype(count_kind) if count_kind else None, np.dtype(value_kind)))
        if len(layout) == 1 and layout[0][1] is not None and count:  # one list, maybe of one length
            key, count_type, value_type = layout[0]
            assert count_type is not None
            first = int(np.frombuffer(data, count_type, 1, offset)[0])
            record = count_type.itemsize + first * value_type.itemsize
            if offset + record * count <= len(data):
                rows = np.frombuffer(data, np.uint8, record * count, offset).reshape(count, record)
                if np.all(rows[:, :count_type.itemsize].copy().view(count_type) == first):
                    element["data"] = {key: rows[:, count_type.itemsize:].copy().view(value_type)}
                    offset += record * count
                    continue
        columns = {key: np.empty(count, dtype=object) for key, _, _ in layout}
        for index in range(count):  # records differ in length: one by one
            for key, count_type, value_type in layout:
                size = 1
                if count_type is not None:
                    size = int(np.frombuffer(data, count_type, 1, offset)[0])
                    offset += count_type.itemsize
                columns[key][index] = np.frombuffer(data, value_type, size, offset)
                offset += size * value_type.itemsize
        element["data"] = columns


def ply_bytes(mesh: MeshData) -> bytes:
    """Binary little-endian PLY: Blender's axes (Z up), n-gons kept, colours as 8-bit sRGB
    ``red green blue alpha`` (alpha not encoded). Written here: trimesh's PLY writer takes triangles only."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if mesh.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    table = np.zeros(mesh.vertex_count, dtype=fields)
    table["x"], table["y"], table["z"] = mesh.vertices[:, 0], mesh.vertices[:, 1], mesh.vertices[:, 2]
    if mesh.colors is not None:
        srgb = unit_bytes(linear_to_srgb(mesh.colors[:, :3]))
        table["red"], table["green"], table["blue"] = srgb[:, 0], srgb[:, 1], srgb[:, 2]
        table["alpha"] = unit_bytes(mesh.colors[:, 3])
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
    return ("\n".join(header) + "\n").encode("ascii") + table.tobytes() + faces.tobytes()
