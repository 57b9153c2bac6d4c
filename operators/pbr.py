"""PBR maps: derive them from a colour image, export them as EXR / 16-bit PNG, import them back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy

from ..addon import paths, pbr_material, service
from ..addon.supervisor import Job
from ..addon.texture_result import PROVENANCE_KEY
from ..backend.params import ExportMapsParams, ImportMapsParams, ParamError
from . import job_report

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

EXR_MAGIC = b"\x76\x2f\x31\x01"


def _mesh_names(context: bpy.types.Context) -> list[str]:
    return [o.name for o in context.selected_objects if o.type == "MESH"]


def _provenance(image: bpy.types.Image) -> dict[str, str]:
    data = image.get(PROVENANCE_KEY)
    return {str(k): str(v) for k, v in data.items()} if data is not None else {}


class SCENE_DIFFUSION_OT_derive_pbr(bpy.types.Operator):
    """Derive normal, roughness, metallic, AO and height maps from a colour image and build a PBR material"""

    bl_idname = "scene_diffusion.derive_pbr"
    bl_label = "Derive PBR Material"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        from ..addon import image_data  # numpy: imported when used, not at register()

        settings = context.scene.scene_diffusion.pbr
        obj = context.active_object
        image = settings.image or pbr_material.base_color_image(obj.active_material if obj else None)
        if image is None:
            self.report({"ERROR"}, "No colour image: choose one in the PBR panel, or make active an object "
                                   "whose material has an image on Base Color")
            return {"CANCELLED"}
        provenance = _provenance(image)  # read now: datablocks may be replaced before the result lands
        try:
            params = settings.to_params("linear", provenance)
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job_dir = service.new_job_folder("pbr")
        try:
            colorspace = image_data.save_npy(image, job_dir / params.source, need_colour=True)
        except image_data.ImageDataError as exc:
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        request = {**params.to_dict(), "source_colorspace": colorspace}
        targets, base, height_mode = _mesh_names(context), image.name, settings.height_mode

        def on_result(job: Job, result: Any) -> None:
            job.applied = pbr_material.apply_maps(job.job_dir, result.outputs, base, targets, height_mode,
                                                  provenance)

        job = service.submit("pbr", request, on_result=on_result, job_dir=job_dir)
        return job_report.finish(self, job, lambda j: f"PBR material '{j.applied.material}' with "
                                                      f"{len(j.applied.images)} maps")


class SCENE_DIFFUSION_OT_export_maps(bpy.types.Operator):
    """Export the active material's maps as OpenEXR (or 16-bit PNG) with provenance in the header"""

    bl_idname = "scene_diffusion.export_maps"
    bl_label = "Export Maps"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        from ..addon import image_data  # numpy: imported when used, not at register()

        settings = context.scene.scene_diffusion.export
        obj = context.active_object
        material = obj.active_material if obj else None
        maps = pbr_material.find_maps(material) if material else {}
        if not maps:
            self.report({"ERROR"}, "The active object's material has no image maps on a Principled BSDF "
                                   "(Base Color, Roughness, Metallic, Normal Map, Bump)")
            return {"CANCELLED"}
        folder = Path(bpy.path.abspath(settings.directory or "//"))
        problem = paths.unwritable(folder)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        albedo = maps.get("albedo")
        try:
            params = ExportMapsParams(
                maps=list(maps), directory=str(folder), basename=settings.basename or material.name,
                layout=settings.layout, format=settings.format, half=settings.half,
                compression=settings.compression, normal_convention=settings.normal_convention,
                attributes={"material": material.name, **(_provenance(albedo) if albedo else {})})
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job_dir = service.new_job_folder("export_maps")
        colorspaces = {}
        try:
            for name, image in maps.items():
                colorspaces[name] = image_data.save_npy(image, job_dir / "inputs" / f"{name}.npy")
        except image_data.ImageDataError as exc:
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        request = {**params.to_dict(), "colorspaces": colorspaces}
        job = service.submit("export_maps", request, job_dir=job_dir)
        return job_report.finish(self, job, lambda j: f"Exported {', '.join(j.result.info['files'])}")


class SCENE_DIFFUSION_OT_import_maps(bpy.types.Operator):
    """Build a PBR material from an EXR with layers albedo, normal, roughness, metallic, ao, height"""

    bl_idname = "scene_diffusion.import_maps"
    bl_label = "Import Maps"
    bl_options = {"REGISTER"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")  # type: ignore[valid-type]
    filter_glob: bpy.props.StringProperty(default="*.exr", options={"HIDDEN"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        settings = context.scene.scene_diffusion.export
        path = Path(bpy.path.abspath(self.filepath or settings.import_path))
        if not path.is_file():
            self.report({"ERROR"}, f"No such file: {path}")
            return {"CANCELLED"}
        with open(path, "rb") as handle:
            if handle.read(4) != EXR_MAGIC:
                self.report({"ERROR"}, f"{path.name} is not an OpenEXR file")
                return {"CANCELLED"}
        params = ImportMapsParams(path=str(path), normal_convention=settings.normal_convention)
        targets, base = _mesh_names(context), path.stem

        def on_result(job: Job, result: Any) -> None:
            job.applied = pbr_material.apply_maps(job.job_dir, result.outputs, base, targets,
                                                  provenance=result.info.get("attributes"))

        job = service.submit("import_maps", params.to_dict(), on_result=on_result)
        return job_report.finish(self, job, lambda j: f"Material '{j.applied.material}' from {path.name}")


classes = (SCENE_DIFFUSION_OT_derive_pbr, SCENE_DIFFUSION_OT_export_maps, SCENE_DIFFUSION_OT_import_maps)
