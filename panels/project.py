"""3D View > Sidebar > Diffusion > Project: project an image or generated views onto the selected
meshes and bake them into their UV maps."""

from __future__ import annotations

from typing import Any

import bpy

from ..addon.jobs import service
from ..contract.tasks import ProjectImageParams, ProjectTextureParams
from .job_status import draw_job, draw_seed, latest_job
from .model_options import draw_model_options


class SCENE_DIFFUSION_PT_project(bpy.types.Panel):
    bl_label = "Project"
    bl_idname = "SCENE_DIFFUSION_PT_project"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Diffusion"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        service.schedule_prewarm()
        layout = self.layout
        assert layout is not None
        scene: Any = context.scene
        settings = scene.scene_diffusion.project
        layout.use_property_split = True
        layout.use_property_decorate = False
        if not any(o.type == "MESH" for o in context.selected_objects):
            layout.label(text="Select the meshes to project onto", icon="INFO")

        box = layout.box()
        box.label(text="Bake", icon="UV")
        box.prop(settings, "uv_map", placeholder="active render UV map")
        box.prop(settings, "texture_size")
        col = box.column(align=True)
        col.prop(settings, "blend_exponent")
        col.prop(settings, "padding")
        box.prop(settings, "unwrap")
        box.prop(settings, "new_material")

        box = layout.box()
        box.label(text="Generate", icon="TEXTURE")
        box.prop(settings, "prompt", text="")
        box.prop(settings, "negative_prompt", text="Negative")
        box.prop(settings, "views")
        if settings.views == "ACTIVE" and scene.camera is None:
            box.label(text="No active camera", icon="ERROR")
        if settings.views == "AUTO":
            col = box.column(align=True)
            col.prop(settings, "view_count")
            col.prop(settings, "elevation")
            col.prop(settings, "distance")
        col = box.column(align=True)
        col.prop(settings, "width")
        col.prop(settings, "height")
        col = box.column(align=True)
        col.prop(settings, "depth_weight")
        col.prop(settings, "normal_weight")
        box.prop(settings, "sequential")
        box.prop(settings, "steps")
        box.prop(settings, "guidance")
        draw_seed(box, settings)
        box.prop(settings, "model", placeholder="registry default")
        draw_model_options(box, settings.options, "project")
        box.operator("scene_diffusion.project_texture", icon="TEXTURE_DATA")

        box = layout.box()
        box.label(text="Existing Image", icon="IMAGE_DATA")
        box.template_ID(settings, "image", open="image.open")
        box.prop(settings, "camera", placeholder="scene camera")
        box.operator("scene_diffusion.project_image", icon="MOD_UVPROJECT")

        job = latest_job(ProjectImageParams, ProjectTextureParams)
        draw_job(layout, job)
        warnings = getattr(job.applied, "warnings", []) if job is not None else []
        if warnings:
            col = layout.column(align=True)
            for line in warnings[:6]:
                col.label(text=line[:120], icon="ERROR")


classes = (SCENE_DIFFUSION_PT_project,)
