"""3D View > Sidebar > Diffusion > Mesh: image to 3D, and importing other tools' meshes."""

from __future__ import annotations

import bpy

from ..addon.jobs import service
from ..contract.tasks import MeshParams
from .job_status import draw_job, draw_seed, latest_job


class SCENE_DIFFUSION_PT_mesh(bpy.types.Panel):
    bl_label = "Image to Mesh"
    bl_idname = "SCENE_DIFFUSION_PT_mesh"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Diffusion"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        service.schedule_prewarm()
        layout = self.layout
        assert layout is not None
        settings = context.scene.scene_diffusion.mesh
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "source", expand=True)
        if settings.source == "IMAGE":
            layout.template_ID(settings, "image", open="image.open")
        else:
            layout.prop(settings, "filepath")
        layout.prop(settings, "background")
        if settings.background == "auto":
            layout.prop(settings, "tolerance")
        col = layout.column(align=True)
        col.prop(settings, "steps")
        col.prop(settings, "guidance")
        col.prop(settings, "frame_size")
        draw_seed(layout, settings)
        layout.prop(settings, "target_size")
        row = layout.row(heading="Bake")
        row.prop(settings, "bake_texture", text="")
        sub = row.row()
        sub.enabled = settings.bake_texture
        sub.prop(settings, "texture_size", text="")
        layout.operator("scene_diffusion.image_to_mesh", icon="MESH_MONKEY")
        layout.operator("scene_diffusion.import_mesh", icon="IMPORT")
        draw_job(layout, latest_job(MeshParams))


classes = (SCENE_DIFFUSION_PT_mesh,)
