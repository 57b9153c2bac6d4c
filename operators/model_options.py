"""Rows of the Model Options lists: LoRAs in the Texture, Render and Project panels, checkpoints in the
preferences."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..addon import preferences
from ..contract.model_sources import CHECKPOINT_SUFFIXES
from ..contract.tasks import MAX_LORAS

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

TARGETS = [("texture", "Texture", ""), ("render", "Render", ""), ("project", "Project Texture", "")]


def _options(context: bpy.types.Context, target: str) -> Any:
    scene: Any = context.scene
    return getattr(scene.scene_diffusion, target).options


class SCENE_DIFFUSION_OT_add_lora(bpy.types.Operator):
    """Add a LoRA row (choose its .safetensors file in the row)"""

    bl_idname = "scene_diffusion.add_lora"
    bl_label = "Add LoRA"
    bl_options = {"REGISTER", "UNDO"}

    target: EnumProperty(name="Panel", items=TARGETS, default="texture")  # type: ignore[valid-type]
    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    weight: bpy.props.FloatProperty(name="Weight", default=1.0, options={"SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        loras = _options(context, self.target).loras
        if len(loras) >= MAX_LORAS:
            self.report({"ERROR"}, f"A job takes at most {MAX_LORAS} LoRAs: remove one first")
            return {"CANCELLED"}
        entry = loras.add()
        entry.filepath, entry.weight = self.filepath, self.weight
        return {"FINISHED"}


class SCENE_DIFFUSION_OT_remove_lora(bpy.types.Operator):
    """Remove this LoRA row"""

    bl_idname = "scene_diffusion.remove_lora"
    bl_label = "Remove LoRA"
    bl_options = {"REGISTER", "UNDO"}

    target: EnumProperty(name="Panel", items=TARGETS, default="texture")  # type: ignore[valid-type]
    index: IntProperty(name="Index", min=0)  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        loras = _options(context, self.target).loras
        if self.index >= len(loras):
            self.report({"ERROR"}, f"There is no LoRA row {self.index + 1}")
            return {"CANCELLED"}
        loras.remove(self.index)
        return {"FINISHED"}


class SCENE_DIFFUSION_OT_add_checkpoint(bpy.types.Operator):
    """Add a single-file checkpoint (.safetensors or .ckpt): its name then works in every Model field"""

    bl_idname = "scene_diffusion.add_checkpoint"
    bl_label = "Add Checkpoint"
    bl_options = {"REGISTER"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.safetensors;*.ckpt", options={"HIDDEN"})  # type: ignore[valid-type]
    name: StringProperty(  # type: ignore[valid-type]
        name="Name", options={"SKIP_SAVE"}, description="Empty: the file's name without its suffix")
    family: EnumProperty(  # type: ignore[valid-type]
        name="Family", default="auto", options={"SKIP_SAVE"},
        items=[("auto", "Automatic", ""), ("sd15", "SD 1.5", ""), ("sdxl", "SDXL", "")])

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        path = Path(bpy.path.abspath(self.filepath))
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            suffixes = ", ".join(CHECKPOINT_SUFFIXES)
            self.report({"ERROR"}, f"{path.name or 'No file'}: choose a checkpoint file ({suffixes})")
            return {"CANCELLED"}
        if not path.is_file():
            self.report({"ERROR"}, f"No such checkpoint file: {path}")
            return {"CANCELLED"}
        checkpoints = preferences.get().checkpoints
        taken = {entry.name for entry in checkpoints}
        base = self.name.strip() or path.stem
        name, count = base, 2
        while name in taken:  # names are what Model fields use: keep them unique
            name, count = f"{base}-{count}", count + 1
        entry = checkpoints.add()
        entry.name, entry.filepath, entry.family = name, str(path), self.family
        self.report({"INFO"}, f"Checkpoint '{name}' added: type it in a Model field (the backend restarts)")
        return {"FINISHED"}


class SCENE_DIFFUSION_OT_remove_checkpoint(bpy.types.Operator):
    """Remove this checkpoint from the list (the file stays where it is)"""

    bl_idname = "scene_diffusion.remove_checkpoint"
    bl_label = "Remove Checkpoint"
    bl_options = {"REGISTER"}

    index: IntProperty(name="Index", min=0)  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        checkpoints = preferences.get().checkpoints
        if self.index >= len(checkpoints):
            self.report({"ERROR"}, f"There is no checkpoint row {self.index + 1}")
            return {"CANCELLED"}
        checkpoints.remove(self.index)
        return {"FINISHED"}


classes = (SCENE_DIFFUSION_OT_add_lora, SCENE_DIFFUSION_OT_remove_lora, SCENE_DIFFUSION_OT_add_checkpoint,
           SCENE_DIFFUSION_OT_remove_checkpoint)
