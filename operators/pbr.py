"""PBR maps: derive them from a colour image, export them as EXR / 16-bit PNG, import them back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import bpy

from ..addon import paths
from ..addon.jobs import service
from ..addon.jobs.supervisor import Job
from ..addon.overrides import with_overrides
from ..addon.properties import ExportSettings, PbrSettings
from ..addon.scene_import import pbr
from ..addon.scene_import.materials import PROVENANCE_KEY
from ..contract.tasks import (
    ExportMapsOutputs,
    ExportMapsParams,
    ImportMapsOutputs,
    ImportMapsParams,
    ParamError,
    PbrOutputs,
    TaskOutputs,
)
from . import job_report

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

EXR_MAGIC = b"\x76\x2f\x31\x01"


def _mesh_names(context: bpy.types.Context) -> list[str]:
    return [o.name for o in context.selected_objects if o.type == "MESH"]


def _provenance(image: bpy.types.Image) -> dict[str, str]:
    data = image.get(PROVENANCE_KEY)
    return {str(k): str(v) for k, v in data.items()} if data is not None else {}


@with_overrides(PbrSettings)
class SCENE_DIFFUSION_OT_derive_pbr(bpy.types.Operator):
    """Derive normal, roughness, metallic, AO and height maps from a colour image and build a PBR material"""

    bl_idname = "scene_diffusion.derive_pbr"
    bl_label = "Derive PBR Material"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        from ..addon.scene_export import pixels  # numpy: imported when used, not at register

        settings = job_report.scene_settings(self, context.scene.scene_diffusion.pbr)
        if settings is None:
            return {"CANCELLED"}
        obj = context.active_object
        image = settings.image or pbr.base_color_image(obj.active_material if obj else None)
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
        job_dir = service.new_job_folder(params.task)
        try:
            colorspace = pixels.save_npy(image, job_dir / params.source, need_colour=True)
        except pixels.ImageDataError as exc:
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        targets, base, height_mode = _mesh_names(context), image.name, settings.height_mode

        def on_result(job: Job, outputs: TaskOutputs) -> pbr.PbrApplied:
            assert isinstance(outputs, PbrOutputs)
            return pbr.apply_maps(job.job_dir, outputs.maps, base, targets, height_mode, provenance)

        job = service.submit(params.replace(source_colorspace=colorspace), on_result=on_result, job_dir=job_dir)
        return job_report.finish(self, job)


@with_overrides(ExportSettings, skip=("import_path",))
class SCENE_DIFFUSION_OT_export_maps(bpy.types.Operator):
    """Export the active material's maps as OpenEXR (or 16-bit PNG) with provenance in the header"""

    bl_idname = "scene_diffusion.export_maps"
    bl_label = "Export Maps"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        from ..addon.scene_export import pixels  # numpy: imported when used, not at register

        settings = job_report.scene_settings(self, context.scene.scene_diffusion.export)
        if settings is None:
            return {"CANCELLED"}
        obj = context.active_object
        material = obj.active_material if obj else None
        maps = pbr.find_maps(material) if material else {}
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
                maps=list(maps), basename=settings.basename or material.name,
                layout=settings.layout, format=settings.format, half=settings.half,
                compression=settings.compression, normal_convention=settings.normal_convention,
                attributes={"material": material.name, **(_provenance(albedo) if albedo else {})})
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job_dir = service.new_job_folder(params.task)
        colorspaces = {}
        try:
            for name, image in maps.items():
                colorspaces[name] = pixels.save_npy(image, job_dir / params.map_input(name))
        except pixels.ImageDataError as exc:
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}

        def on_result(job: Job, outputs: TaskOutputs) -> pbr.ExportedMaps:
            assert isinstance(outputs, ExportMapsOutputs)
            return pbr.move_exported(job.job_dir, outputs.exported, folder)

        job = service.submit(params.replace(colorspaces=colorspaces), on_result=on_result, job_dir=job_dir)
        return job_report.finish(self, job)


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
        params = ImportMapsParams(name=path.name, normal_convention=settings.normal_convention)
        targets, base = _mesh_names(context), path.stem
        try:
            job_dir = service.job_folder_with(params.task, [(path, params.source)])
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot copy {path.name} into the job folder: {exc}")
            return {"CANCELLED"}

        def on_result(job: Job, outputs: TaskOutputs) -> pbr.PbrApplied:
            assert isinstance(outputs, ImportMapsOutputs)
            provenance = {str(k): str(v) for k, v in outputs.attributes.items()}
            applied = pbr.apply_maps(job.job_dir, outputs.maps, base, targets, provenance=provenance)
            return replace(applied, source=path.name)

        job = service.submit(params, on_result=on_result, job_dir=job_dir)
        return job_report.finish(self, job)


classes = (SCENE_DIFFUSION_OT_derive_pbr, SCENE_DIFFUSION_OT_export_maps, SCENE_DIFFUSION_OT_import_maps)
