"""Sidebar > Diffusion > PBR, in the 3D View and the Image Editor: derive, export, import maps."""

from __future__ import annotations

import bpy

from ..addon.jobs import service
from ..contract.tasks import ExportMapsParams, ImportMapsParams, PbrParams
from .job_status import draw_job, latest_job


def draw_pbr(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    service.schedule_prewarm()
    settings = context.scene.scene_diffusion.pbr
    layout.use_property_split = True
    layout.use_property_decorate = False
    layout.template_ID(settings, "image", open="image.open")
    layout.prop(settings, "method")
    col = layout.column(align=True)
    col.prop(settings, "normal_strength")
    col.prop(settings, "detail_radius")
    col.prop(settings, "invert_height")
    col = layout.column(align=True)
    col.prop(settings, "roughness_base")
    col.prop(settings, "roughness_contrast")
    col = layout.column(align=True)
    col.prop(settings, "ao_radius")
    col.prop(settings, "ao_strength")
    layout.prop(settings, "seamless")
    if settings.method == "marigold":
        layout.prop(settings, "steps")
    layout.prop(settings, "height_mode")
    layout.operator("scene_diffusion.derive_pbr", icon="MATERIAL")

    export = context.scene.scene_diffusion.export
    box = layout.box()
    box.label(text="Export / Import", icon="EXPORT")
    box.prop(export, "directory")
    box.prop(export, "basename", placeholder="material name")
    box.prop(export, "format")
    if export.format == "exr":
        box.prop(export, "layout")
        box.prop(export, "half")
        box.prop(export, "compression")
    box.prop(export, "normal_convention")
    row = box.row(align=True)
    row.operator("scene_diffusion.export_maps", icon="EXPORT")
    row.operator("scene_diffusion.import_maps", icon="IMPORT")
    draw_job(layout, latest_job(PbrParams, ExportMapsParams, ImportMapsParams))


class SCENE_DIFFUSION_PT_pbr(bpy.types.Panel):
    bl_label = "PBR Maps"
    bl_idname = "SCENE_DIFFUSION_PT_pbr"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Diffusion"

    def draw(self, context: bpy.types.Context) -> None:
        assert self.layout is not None
        draw_pbr(self.layout, context)


class SCENE_DIFFUSION_PT_pbr_image(bpy.types.Panel):
    bl_label = "PBR Maps"
    bl_idname = "SCENE_DIFFUSION_PT_pbr_image"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Diffusion"

    def draw(self, context: bpy.types.Context) -> None:
        assert self.layout is not None
        draw_pbr(self.layout, context)


classes = (SCENE_DIFFUSION_PT_pbr, SCENE_DIFFUSION_PT_pbr_image)
