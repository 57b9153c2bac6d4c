"""Import a mesh made by another image-to-3D tool (GLB / glTF, OBJ, PLY): read, clean, and hand it to
the add-on as outputs/mesh.npz, the same arrays a generated mesh arrives as (Blender's axes, linear
vertex colours; see backend/geometry/mesh_io.py)."""

from __future__ import annotations

from pathlib import Path

from backend import protocol
from backend.geometry.mesh_io import MeshFileError, clean, read_mesh, save_npz
from backend.params import ImportMeshParams, ParamError
from backend.tasks.context import JobContext, TaskError, TaskOutput

HINT = "export the mesh as GLB, glTF, OBJ or PLY with its faces (a point cloud cannot become a surface)"


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = ImportMeshParams.from_dict(ctx.params)
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    path = Path(params.path)
    ctx.record(imported={"path": str(path), "format": path.suffix.lower().lstrip(".")})
    ctx.progress(0, 1, message=f"reading {path.name}")
    try:
        mesh, removed = clean(read_mesh(path))
    except MeshFileError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc), HINT) from None
    ctx.check_cancelled()
    if mesh.face_count == 0:
        raise TaskError(protocol.INVALID_PARAMS,
                        f"{path.name} has no usable faces: every face was degenerate or used invalid vertices",
                        HINT)
    output = save_npz(ctx.output("mesh.npz"), mesh)
    ctx.progress(1, 1)
    return TaskOutput({"mesh": ctx.relative(output)},
                      info={"vertices": mesh.vertex_count, "faces": mesh.face_count, "removed": removed,
                            "colors": mesh.colors is not None, "triangles_only": mesh.triangles_only,
                            "source": str(path)})
