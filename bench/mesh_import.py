"""Mesh import: our foreach_set path against Mesh.from_pydata, on a 1-million-vertex mesh.

    python bench/mesh_import.py [--side 1000]

A side x side grid of quads with vertex colours (side 1000: 1,000,000 vertices, 998,001 faces).
Ours: addon/scene_import/mesh.build_mesh (numpy checks, foreach_set through the generic attributes,
colour attribute, edges, smooth shading). Theirs: from_pydata given plain Python lists prepared
before the clock starts (its best case), and given the numpy arrays; colours and shading set the
same fast way, so the ratio is the geometry path alone. Best of 3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pbr import best_of  # noqa: E402  (bench/pbr.py)

from devtools import extension  # noqa: E402


def grid(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    vertices = np.stack([xs, ys, np.sin(xs * 0.1) * np.cos(ys * 0.1)], axis=2).reshape(-1, 3)
    ids = np.arange(side * side, dtype=np.int32).reshape(side, side)
    quads = np.stack([ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]], axis=2).reshape(-1, 4)
    colors = np.concatenate([vertices / max(side, 1), np.ones((len(vertices), 1), np.float32)], axis=1)
    return vertices, np.full(len(quads), 4, np.int32), quads.ravel(), np.clip(colors, 0, 1).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    extension.prepare_user_dir(Path(tempfile.mkdtemp(prefix="scene_diffusion_bench_")))
    zip_path = extension.build(Path(tempfile.mkdtemp()))
    import bpy

    mesh_import = importlib.import_module(f"{extension.install(zip_path)}.addon.scene_import.mesh")
    vertices, sizes, loops, colors = grid(args.side)
    vertex_list = vertices.tolist()
    face_list = loops.reshape(-1, 4).tolist()

    def ours() -> None:
        bpy.data.meshes.remove(mesh_import.build_mesh("ours", vertices, sizes, loops, colors))

    def from_pydata(vertex_data: object, face_data: object) -> None:
        mesh = bpy.data.meshes.new("theirs")
        mesh.from_pydata(vertex_data, [], face_data)
        attribute = mesh.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
        attribute.data.foreach_set("color", colors.ravel())  # the fast way, to time from_pydata itself
        mesh.shade_smooth()
        bpy.data.meshes.remove(mesh)

    ours_s = best_of(args.repeat, ours)
    lists_s = best_of(args.repeat, lambda: from_pydata(vertex_list, face_list))
    arrays_s = best_of(args.repeat, lambda: from_pydata(vertices, loops.reshape(-1, 4)))
    print(f"mesh import, {len(vertices):,} vertices, {len(sizes):,} quads, vertex colours, best of {args.repeat}, "
          f"Blender {bpy.app.version_string}")
    print(f"{'foreach_set (ours)':<34} {ours_s:8.3f} s")
    print(f"{'from_pydata, Python lists':<34} {lists_s:8.3f} s   ratio {lists_s / ours_s:5.1f}x")
    print(f"{'from_pydata, numpy arrays':<34} {arrays_s:8.3f} s   ratio {arrays_s / ours_s:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
