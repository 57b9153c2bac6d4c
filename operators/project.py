"""Projection onto meshes, baked into their UV maps: an existing image from a camera
(scene_diffusion.project_image), or images generated per view with ControlNets
(scene_diffusion.project_texture). Settings: ``scene.scene_diffusion.project``."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import bpy

from ..addon.jobs import service
from ..addon.overrides import with_overrides
from ..addon.properties import ProjectSettings
from ..addon.scene_export import project
from ..addon.scene_export.passes import PassRenderError
from ..addon.scene_import import project as project_result
from ..contract.tasks import ParamError
from ..contract.tasks.project import mesh_inputs
from . import job_report

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


_EXPORT_ERRORS = (PassRenderError, ValueError, OSError)


def _skipped_note(op: bpy.types.Operator, skipped: list[str]) -> None:
    if skipped:
        op.report({"INFO"}, f"Not meshes, left as they are: {', '.join(skipped)}")


@with_overrides(ProjectSettings)
class SCENE_DIFFUSION_OT_project_image(bpy.types.Operator):
    """Project an image from a camera onto the selected meshes and bake it into their UV maps"""

    bl_idname = "scene_diffusion.project_image"
    bl_label = "Project Image"
    bl_options = {"REGISTER"}  # the result gets its own undo step when it lands

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        scene: Any = context.scene
        settings = job_report.scene_settings(self, scene.scene_diffusion.project)
        if settings is None:
            return {"CANCELLED"}
        try:
            meshes, skipped = project.selected_meshes(context)
            camera = settings.camera or scene.camera
            if camera is None or camera.type != "CAMERA":
                raise project.BakeExportError("No camera to project from: choose one in the Project panel, or give "
                                              "the scene an active camera (Ctrl+Numpad 0)")
            if settings.image is None:
                raise project.BakeExportError("Choose an image to project (Image in the Project panel)")
            params = settings.to_image_params(mesh_inputs(len(meshes)))
            targets = project.plan_targets(meshes, settings.uv_map.strip(), settings.unwrap)
        except (project.BakeExportError, ParamError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job_dir = service.new_job_folder(params.task)
        width, height = project.render_size(scene)
        try:
            project.export_inputs(context, job_dir, targets, settings.padding, settings.texture_size,
                                  lambda: project.export_views(
                                      scene, job_dir / "inputs", [camera], width, height, image=settings.image))
        except _EXPORT_ERRORS as exc:  # ImageDataError and BakeExportError are ValueErrors
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        on_result = project_result.applier([(t.name, t.uv_map) for t in targets], settings.new_material)
        job = service.submit(params, on_result=on_result, job_dir=job_dir)
        _skipped_note(self, skipped)
        return job_report.finish(self, job)


@with_overrides(ProjectSettings)
class SCENE_DIFFUSION_OT_project_texture(bpy.types.Operator):
    """Generate a texture from the prompt in one or more views with depth ControlNets, project it onto
    the selected meshes and bake it into their UV maps"""

    bl_idname = "scene_diffusion.project_texture"
    bl_label = "Project Texture"
    bl_options = {"REGISTER"}  # the result gets its own undo step when it lands

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        scene: Any = context.scene
        settings = job_report.scene_settings(self, scene.scene_diffusion.project)
        if settings is None:
            return {"CANCELLED"}
        try:
            cameras_too = ("CAMERA",) if settings.views == "SELECTED" else ()
            meshes, skipped = project.selected_meshes(context, also_fine=cameras_too)
            cameras = project.view_cameras(context, settings.views, settings.view_count)
            params = settings.to_texture_params(mesh_inputs(len(meshes)))
            files = settings.options.files()
            targets = project.plan_targets(meshes, settings.uv_map.strip(), settings.unwrap)
        except (project.BakeExportError, ParamError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job_dir = service.new_job_folder(params.task)
        view_names: list[str] = []

        def render_views() -> None:
            views = (project.auto_cameras(scene, meshes, settings.view_count, settings.elevation,
                                              settings.distance, params.width, params.height)
                     if settings.views == "AUTO" else nullcontext(cameras))
            with views as chosen:  # temporary cameras are removed here, whatever happens
                view_names.extend(c.name for c in chosen)
                # Only a normal control reads the Normal pass: without it the passes render depth-only (Workbench)
                project.export_views(scene, job_dir / "inputs", chosen, params.width, params.height,
                                     normal=params.normal_weight > 0)

        try:
            files.write(job_dir)
            project.export_inputs(context, job_dir, targets, settings.padding, settings.texture_size, render_views)
        except _EXPORT_ERRORS as exc:  # ImageDataError and BakeExportError are ValueErrors
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        on_result = project_result.applier([(t.name, t.uv_map) for t in targets], settings.new_material, view_names)
        job = service.submit(params, on_result=on_result, job_dir=job_dir)
        _skipped_note(self, skipped)
        return job_report.finish(self, job)


classes = (SCENE_DIFFUSION_OT_project_image, SCENE_DIFFUSION_OT_project_texture)
