"""3D View > Sidebar > Diffusion > Render: ControlNet-guided renders of the scene."""

from __future__ import annotations

import bpy

from ..addon import render_animation
from ..addon.jobs import service
from ..contract.tasks import RenderParams
from .job_status import draw_job, draw_seed, latest_job
from .model_options import draw_model_options


class SCENE_DIFFUSION_PT_render(bpy.types.Panel):
    bl_label = "Render"
    bl_idname = "SCENE_DIFFUSION_PT_render"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Diffusion"

    def draw(self, context: bpy.types.Context) -> None:
        service.schedule_prewarm()
        layout = self.layout
        assert layout is not None
        settings = context.scene.scene_diffusion.render
        layout.use_property_split = True
        layout.use_property_decorate = False
        if context.scene.camera is None:
            layout.label(text="No active camera", icon="ERROR")
        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "negative_prompt", text="Negative")
        for kind in ("depth", "normal", "canny"):
            control = getattr(settings, kind)
            box = layout.box()
            box.prop(settings, f"use_{kind}")
            col = box.column(align=True)
            col.enabled = getattr(settings, f"use_{kind}")
            col.prop(control, "weight")
            row = col.row(align=True)
            row.prop(control, "start")
            row.prop(control, "end")
            if kind == "canny":
                col.prop(settings, "canny_low")
                col.prop(settings, "canny_high")
        row = layout.row(heading="Img2Img")
        row.prop(settings, "img2img", text="")
        sub = row.row()
        sub.enabled = settings.img2img
        sub.prop(settings, "strength")
        layout.prop(settings, "use_scene_resolution")
        if not settings.use_scene_resolution:
            col = layout.column(align=True)
            col.prop(settings, "width")
            col.prop(settings, "height")
        layout.prop(settings, "steps")
        layout.prop(settings, "guidance")
        draw_seed(layout, settings)
        layout.prop(settings, "model", placeholder="registry default")
        draw_model_options(layout, settings.options, "render")
        col = layout.column(align=True)
        col.prop(settings, "engine")
        col.prop(settings, "samples")
        layout.prop(settings, "animation")
        if settings.animation:
            col = layout.column(align=True)
            col.prop(settings, "frame_start")
            col.prop(settings, "frame_end")
            col.prop(settings, "seed_per_frame")
            col.prop(settings, "output_dir")
            sequence = render_animation.current()
            if sequence is not None:
                done, total = sequence.progress
                state = "cancelled" if sequence.cancelled else ("failed" if sequence.error else
                                                                 ("done" if sequence.finished else "rendering"))
                layout.progress(factor=done / total if total else 0.0, type="BAR",
                                text=f"Frames {done}/{total} ({state})")
        layout.operator("scene_diffusion.render_controlnet", icon="RENDER_STILL")
        draw_job(layout, latest_job(RenderParams))


classes = (SCENE_DIFFUSION_PT_render,)
