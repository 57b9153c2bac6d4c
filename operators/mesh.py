"""Meshes from images (Shap-E in the backend job) and from other image-to-3D tools' files (Blender's importers,
in Blender: no job)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy

from ..addon.jobs import service
from ..addon.jobs.supervisor import Job
from ..addon.model_options import commercial
from ..addon.overrides import with_overrides
from ..addon.properties import MeshSettings
from ..contract.tasks import MeshOutputs, MeshParams, ParamError, TaskOutputs
from . import job_report

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

    from ..addon.scene_import.mesh import MeshImported

IMAGE_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _importer(settings: Any, name: str, location: tuple[float, float, float]
              ) -> Callable[[Job, TaskOutputs], MeshImported]:
    """on_result: bring outputs/mesh.npz in, with the settings as they were at submit time."""
    target_size, bake = settings.target_size, settings.texture_size if settings.bake_texture else 0

    def on_result(job: Job, outputs: TaskOutputs) -> MeshImported:
        from ..addon.scene_import import mesh  # numpy: imported when used, not at register()

        assert isinstance(outputs, MeshOutputs)
        return mesh.import_mesh(job.job_dir / outputs.mesh, name, target_size, location, bake_size=bake)

    return on_result


@with_overrides(MeshSettings, skip=("import_path",))
class SCENE_DIFFUSION_OT_image_to_mesh(bpy.types.Operator):
    """Generate a textured mesh from an image and place it at the 3D cursor"""

    bl_idname = "scene_diffusion.image_to_mesh"
    bl_label = "Image to Mesh"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        from ..addon.scene_export import pixels  # numpy: imported when used, not at register()

        scene: Any = context.scene
        settings = job_report.scene_settings(self, scene.scene_diffusion.mesh)
        if settings is None:
            return {"CANCELLED"}
        try:
            params = MeshParams(background=settings.background, tolerance=settings.tolerance, steps=settings.steps,
                                guidance=settings.guidance, seed=-1 if settings.random_seed else settings.seed,
                                frame_size=settings.frame_size, commercial=commercial())
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if settings.source == "FILE":
            path = Path(bpy.path.abspath(settings.filepath))
            if not path.is_file():
                self.report({"ERROR"}, f"No such image file: {path}")
                return {"CANCELLED"}
            if path.suffix.lower() not in IMAGE_FORMATS:
                self.report({"ERROR"}, f"{path.name}: not an image format ({', '.join(IMAGE_FORMATS)})")
                return {"CANCELLED"}
            name = path.stem
        elif settings.image is None:
            self.report({"ERROR"}, "Choose an image (or switch the source to a file)")
            return {"CANCELLED"}
        else:
            name = settings.image.name
        job_dir = service.new_job_folder(params.task)
        try:
            if settings.source == "FILE":
                source = f"inputs/image{path.suffix.lower()}"
                shutil.copyfile(path, job_dir / source)
            else:
                source = "inputs/image.npy"
                colorspace = pixels.save_npy(settings.image, job_dir / source, need_colour=True)
                params = params.replace(source_colorspace=colorspace)
        except (pixels.ImageDataError, OSError) as exc:
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        location = tuple(scene.cursor.location)
        job = service.submit(params.replace(source=source), on_result=_importer(settings, name, location),
                             job_dir=job_dir)
        return job_report.finish(self, job)


class SCENE_DIFFUSION_OT_import_mesh(bpy.types.Operator):
    """Import a mesh from an image-to-3D tool (GLB, glTF, OBJ, PLY) with Blender's own importer, keeping its
    materials, UVs and textures, normalised to Size and placed at the 3D cursor like generated ones"""

    bl_idname = "scene_diffusion.import_mesh"
    bl_label = "Import Generated Mesh"
    bl_options = {"REGISTER", "UNDO"}  # synchronous: no job, so one undo step takes it all back

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")  # type: ignore[valid-type]
    filter_glob: bpy.props.StringProperty(default="*.glb;*.gltf;*.obj;*.ply", options={"HIDDEN"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        from ..addon.scene_import import external_mesh  # numpy: imported when used, not at register()

        scene: Any = context.scene
        settings = scene.scene_diffusion.mesh
        path = Path(bpy.path.abspath(self.filepath or settings.import_path))
        try:
            imported = external_mesh.import_external_mesh(path, settings.target_size, tuple(scene.cursor.location))
        except external_mesh.ExternalMeshError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, imported.summary())
        return {"FINISHED"}


classes = (SCENE_DIFFUSION_OT_image_to_mesh, SCENE_DIFFUSION_OT_import_mesh)
