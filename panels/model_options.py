"""The collapsible "Model Options" box the Texture, Render and Project panels draw: LoRAs, sampler, reference."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import bpy


def draw_model_options(layout: bpy.types.UILayout, options: Any, target: str) -> None:
    """``target``: which settings group ``options`` belongs to ("texture", "render" or "project")."""
    box = layout.box()
    box.prop(options, "show", icon="TRIA_DOWN" if options.show else "TRIA_RIGHT", emboss=False)
    if not options.show:
        return
    row = box.row()
    row.label(text="LoRAs", icon="MODIFIER")
    add = row.operator("scene_diffusion.add_lora", text="Add", icon="ADD")
    add.target = target
    for index, lora in enumerate(options.loras):
        # The path on a row of its own (the sidebar is narrow), the weight under it named by the file.
        col = box.column(align=True)
        row = col.row(align=True)
        row.prop(lora, "enabled", text="")
        sub = row.row(align=True)
        sub.active = lora.enabled
        sub.prop(lora, "filepath", text="")
        remove = row.operator("scene_diffusion.remove_lora", text="", icon="X")
        remove.target, remove.index = target, index
        weight = col.row(align=True)
        weight.active = lora.enabled
        weight.prop(lora, "weight", text=PurePath(lora.filepath).stem or "Weight")
    box.prop(options, "scheduler")
    box.template_ID(options, "reference", open="image.open")
    row = box.row()
    row.active = options.reference is not None
    row.prop(options, "reference_strength")
