"""Scene settings: one PropertyGroup per capability under ``scene.scene_diffusion``."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from ..backend.params import MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE, TextureParams


class TextureSettings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What the texture shows")  # type: ignore[valid-type]
    negative_prompt: StringProperty(  # type: ignore[valid-type]
        name="Negative Prompt", description="What the texture must not show")
    seed: IntProperty(name="Seed", default=0, min=0, max=min(MAX_SEED, 2**31 - 1))  # type: ignore[valid-type]
    random_seed: BoolProperty(  # type: ignore[valid-type]
        name="Random Seed", default=True, description="Pick a new seed for every job (it is recorded)")
    steps: IntProperty(name="Steps", default=20, min=1, max=MAX_STEPS, soft_max=60)  # type: ignore[valid-type]
    guidance: FloatProperty(name="Guidance", default=7.5, min=0.0, max=30.0, soft_max=15.0)  # type: ignore[valid-type]
    # Bounds are deliberately wider than TextureParams allows, so a script that asks for a
    # size out of range gets a clear error instead of a silently clamped value.
    width: IntProperty(name="Width", default=512, min=8, soft_min=MIN_SIZE, soft_max=MAX_SIZE,  # type: ignore[valid-type]
                       step=64, subtype="PIXEL")
    height: IntProperty(name="Height", default=512, min=8, soft_min=MIN_SIZE, soft_max=MAX_SIZE,  # type: ignore[valid-type]
                        step=64, subtype="PIXEL")
    seamless_x: BoolProperty(name="Seamless X", default=True, description="Tile horizontally")  # type: ignore[valid-type]
    seamless_y: BoolProperty(name="Seamless Y", default=True, description="Tile vertically")  # type: ignore[valid-type]
    model: StringProperty(  # type: ignore[valid-type]
        name="Model", description="Registry model name; empty: the registry's text-to-image model")
    assign_material: BoolProperty(  # type: ignore[valid-type]
        name="Assign Material", default=True,
        description="Put the texture in a material on the selected mesh objects")

    def to_params(self) -> TextureParams:
        """Validated parameters; raises backend.params.ParamError with a readable message."""
        return TextureParams(
            prompt=self.prompt, negative_prompt=self.negative_prompt,
            seed=-1 if self.random_seed else self.seed, steps=self.steps, guidance=self.guidance,
            width=self.width, height=self.height, seamless_x=self.seamless_x,
            seamless_y=self.seamless_y, model=self.model.strip())


class SceneDiffusionSettings(bpy.types.PropertyGroup):
    texture: PointerProperty(type=TextureSettings)  # type: ignore[valid-type]


classes = (TextureSettings, SceneDiffusionSettings)


def register() -> None:
    bpy.types.Scene.scene_diffusion = PointerProperty(type=SceneDiffusionSettings)  # type: ignore[attr-defined]


def unregister() -> None:
    del bpy.types.Scene.scene_diffusion  # type: ignore[attr-defined]
