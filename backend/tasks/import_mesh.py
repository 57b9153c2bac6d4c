"""Task "import_mesh": a mesh made by another image-to-3D tool (GLB / glTF, OBJ, PLY): read, clean, and hand it to
the add-on as outputs/mesh.npz, the same arrays a generated mesh arrives as (Blender's axes, linear
vertex colours; see backend/geometry/mesh_io.py)."""

from __future__ import annotations

from backend.geometry.mesh_data import clean
from backend.geometry.mesh_files import MeshFileError, read_mesh, save_npz
from backend.tasks.context import JobContext, invalid
from contract.tasks import ImportMeshParams, MeshOutputs

HINT = "export the mesh as GLB, glTF, OBJ or PLY with its faces (a point cloud cannot become a surface)"


def run(ctx: JobContext, params: ImportMeshParams) -> MeshOutputs:
    path = ctx.input(params.source)
    name = params.name or path.name
    ctx.record(imported={"name": name, "format": path.suffix.lower().lstrip(".")})
    ctx.progress(0, 1, message=f"reading {name}")
    try:
        mesh, removed = clean(read_mesh(path))
    except MeshFileError as exc:
        raise invalid(str(exc).replace(path.name, name), HINT) from None
    ctx.check_cancelled()
    if mesh.face_count == 0:
        raise invalid(f"{name} has no usable faces: every face was degenerate or used invalid vertices", HINT)
    output = save_npz(ctx.output("mesh.npz"), mesh)
    ctx.progress(1, 1)
    return MeshOutputs(mesh=ctx.relative(output), vertices=mesh.vertex_count, faces=mesh.face_count, removed=removed,
                       colors="scene-linear RGBA" if mesh.colors is not None else "",
                       triangles_only=mesh.triangles_only, source=name)
