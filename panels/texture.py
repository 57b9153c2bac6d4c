"""3D View > Sidebar > Diffusion > Texture."""

from __future__ import annotations

import bpy

from ..addon.jobs import service
from ..contract.tasks import TextureParams
from .job_status import draw_job, draw_seed, latest_job
from .model_options import draw_model_options


class SCENE_DIFFUSION_PT_texture(bpy.types.Panel):
    bl_label = "Texture"
    bl_idname = "SCENE_DIFFUSION_PT_texture"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Diffusion"

    def draw(self, context: bpy.types.Context) -> None:
        service.schedule_prewarm()  # a one-shot timer starts the backend early
        settings = context.scene.scene_diffusion.texture
        layout = self.layout
        assert layout is not None
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "negative_prompt", text="Negative")
        col = layout.column(align=True)
        col.prop(settings, "width")
        col.prop(settings, "height")
        row = layout.row(heading="Seamless", align=True)
        row.prop(settings, "seamless_x", text="X", toggle=True)
        row.prop(settings, "seamless_y", text="Y", toggle=True)
        layout.prop(settings, "steps")
        layout.prop(settings, "guidance")
        draw_seed(layout, settings)
        layout.prop(settings, "model", placeholder="registry default")
        draw_model_options(layout, settings.options, "texture")
        layout.prop(settings, "assign_material")
        row = layout.row(heading="PBR")
        row.prop(settings, "pbr", text="Maps")
        sub = row.row()
        sub.enabled = settings.pbr
        sub.prop(settings, "height_mode", text="")
        layout.operator("scene_diffusion.generate_texture", icon="TEXTURE")
        draw_job(layout, latest_job(TextureParams))


classes = (SCENE_DIFFUSION_PT_texture,)
