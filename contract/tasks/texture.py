"""Task "texture": a (seamless) texture from a prompt with the text-to-image model."""

from __future__ import annotations

from dataclasses import dataclass

from .base import TaskOutputs, TaskParams, check_generation, output_file
from .options import ModelOptions


@dataclass(frozen=True)
class TextureOutputs(TaskOutputs):
    image: str = output_file()  # outputs/texture.png, 8-bit sRGB
    image_exr: str = output_file()  # outputs/texture.exr, scene-linear float, provenance in the header
    maps: dict[str, str] = output_file({})  # with ``pbr``: map name -> one float EXR each
    maps_exr: str = output_file("")  # with ``pbr``: every map in one multilayer EXR
    seed: int = 0
    model: str = ""
    width: int = 0
    height: int = 0
    seam_ratio_x: float = 0.0  # seam contrast / interior contrast: near 1 when the texture tiles
    seam_ratio_y: float = 0.0


@dataclass(frozen=True)
class TextureParams(ModelOptions, TaskParams):
    task = "texture"
    outputs = TextureOutputs

    prompt: str
    negative_prompt: str = ""
    seed: int = -1  # -1: pick one at random (the one used is recorded in job.json)
    steps: int = 20
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    seamless_x: bool = True
    seamless_y: bool = True
    model: str = ""  # a registry model name; empty: the registry's text_to_image model
    preview_every: int = 2  # write a preview PNG every N steps (0: never)
    pbr: bool = False  # also derive PBR maps (image filters) from the texture

    def validate(self) -> None:
        check_generation(self, "describe the texture to generate")
        self.check_options()
