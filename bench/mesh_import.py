"""Mesh import: our foreach_set path against its floor, and against Mesh.from_pydata, on a 1-million-vertex mesh.

    python bench/mesh_import.py [--side 1000] [--repeat 5]

A side x side grid of quads with vertex colours (side 1000: 1,000,000 vertices, 998,001 faces).

- Ours: addon/scene_import/mesh.build_mesh (MeshArrays.check, foreach_set through the generic
  attributes, loop starts from the face sizes, colour attribute, edges, smooth shading).
- Floor: what any valid mesh from these arrays pays and nothing else: vertices/loops/polygons.add,
  foreach_set of positions, corner vertices and loop starts (the starts computed before the clock,
  each write in the fastest form this Blender takes), then Blender's own edge calculation
  (``update(calc_edges=True)``). Goal: ours within 1.3x of it.
- from_pydata: given plain Python lists prepared before the clock starts (its best case), and given
  the numpy arrays; colours and shading set the same fast way, so the ratio is the geometry path alone.

Median of --repeat runs each, in one process, ours and the floor interleaved (after one untimed
warm-up of each) so that drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools import extension  # noqa: E402

GOAL = 1.3  # ours / floor, at most


def grid(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    vertices = np.stack([xs, ys, np.sin(xs * 0.1) * np.cos(ys * 0.1)], axis=2).reshape(-1, 3)
    ids = np.arange(side * side, dtype=np.int32).reshape(side, side)
    quads = np.stack([ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]], axis=2).reshape(-1, 4)
    colors = np.concatenate([vertices / max(side, 1), np.ones((len(vertices), 1), np.float32)], axis=1)
    return vertices, np.full(len(quads), 4, np.int32), quads.ravel(), np.clip(colors, 0, 1).astype(np.float32)


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    extension.prepare_user_dir(Path(tempfile.mkdtemp(prefix="scene_diffusion_bench_")))
    zip_path = extension.build(Path(tempfile.mkdtemp()))
    import bpy

    mesh_import = importlib.import_module(f"{extension.install(zip_path)}.addon.scene_import.mesh")
    vertices, sizes, loops, colors = grid(args.side)
    vertex_list = vertices.tolist()
    face_list = loops.reshape(-1, 4).tolist()
    flat_vertices = vertices.ravel()
    starts = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    starts_u32 = starts.astype(np.uint32)  # the form Blender 5.0 copies in one go (int32 goes face by face)

    def ours_mesh() -> Any:
        return mesh_import.build_mesh("ours", vertices, sizes, loops, colors)

    def floor_mesh() -> Any:
        mesh: Any = bpy.data.meshes.new("floor")
        mesh.vertices.add(len(vertices))
        mesh.attributes["position"].data.foreach_set("vector", flat_vertices)
        mesh.loops.add(len(loops))
        mesh.attributes[".corner_vert"].data.foreach_set("value", loops)
        mesh.polygons.add(len(sizes))
        mesh.polygons.foreach_set("loop_start", starts_u32)
        mesh.update(calc_edges=True)
        return mesh

    def from_pydata(vertex_data: object, face_data: object) -> None:
        mesh = bpy.data.meshes.new("theirs")
        mesh.from_pydata(vertex_data, [], face_data)
        attribute = mesh.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
        attribute.data.foreach_set("color", colors.ravel())  # the fast way, to time from_pydata itself
        mesh.shade_smooth()
        bpy.data.meshes.remove(mesh)

    # Warm-up, and the two meshes must be the same mesh for the floor to be one.
    ours, floor = ours_mesh(), floor_mesh()
    counts = [(len(m.vertices), len(m.edges), len(m.loops), len(m.polygons)) for m in (ours, floor)]
    assert counts[0] == counts[1] and not ours.validate() and not floor.validate(), counts
    bpy.data.meshes.remove(ours)
    bpy.data.meshes.remove(floor)

    times: dict[str, list[float]] = {"ours": [], "floor": []}
    runs = {"ours": lambda: bpy.data.meshes.remove(ours_mesh()), "floor": lambda: bpy.data.meshes.remove(floor_mesh())}
    for round_ in range(args.repeat):
        for name in ("ours", "floor") if round_ % 2 == 0 else ("floor", "ours"):
            times[name].append(seconds(runs[name]))
    lists = [seconds(lambda: from_pydata(vertex_list, face_list)) for _ in range(args.repeat)]
    arrays = [seconds(lambda: from_pydata(vertices, loops.reshape(-1, 4))) for _ in range(args.repeat)]
    ours_s, floor_s = statistics.median(times["ours"]), statistics.median(times["floor"])
    lists_s, arrays_s = statistics.median(lists), statistics.median(arrays)
    ratio = ours_s / floor_s

    print(f"mesh import, {len(vertices):,} vertices, {len(sizes):,} quads, {counts[0][1]:,} edges, vertex colours, "
          f"median of {args.repeat}, Blender {bpy.app.version_string}")
    print(f"{'floor (foreach_set + calc_edges)':<34} {floor_s:8.3f} s")
    print(f"{'ours (build_mesh)':<34} {ours_s:8.3f} s   ratio {ratio:4.1f}x of the floor ({ratio:.3f})")
    print(f"{'from_pydata, Python lists':<34} {lists_s:8.3f} s   ratio {lists_s / ours_s:4.1f}x of ours")
    print(f"{'from_pydata, numpy arrays':<34} {arrays_s:8.3f} s   ratio {arrays_s / ours_s:4.1f}x of ours")
    verdict = "met" if ratio <= GOAL else "NOT met"
    print(f"goal: ours within {GOAL}x of the floor: {verdict} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
