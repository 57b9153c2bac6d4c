"""Tasks "project_image" (project existing images from cameras onto objects and bake them into each object's
UV map) and "project_texture" (generate one image per view with depth / normal ControlNets, then bake them
the same way). Inputs: one surface mesh per object (``contract.formats.surface``) and the views file
(``contract.formats.views``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..schema import ParamError, bounded, relative
from .base import TaskOutputs, TaskParams, check_generation, output_file
from .options import ModelOptions
from .render import MAX_CONTROL_WEIGHT, NORMAL_ENCODINGS

MIN_TEXTURE_SIZE = 16
MAX_TEXTURE_SIZE = 4096  # a 4096 x 4096 bake holds ~17 M texels of float32 positions, normals and colours
MAX_PADDING = 64
MAX_BLEND_EXPONENT = 32.0
MAX_VIEWS = 32
VIEWS_FILE = "inputs/views.json"


def mesh_inputs(count: int) -> list[str]:
    """Where the add-on writes the surface of object i (in the order given) in the job folder."""
    return [f"inputs/meshes/{index:02d}.npz" for index in range(count)]


@dataclass(frozen=True)
class ObjectCoverage:
    name: str
    seen_fraction: float  # of the object's UV-island texels, how many some view saw
    view_texels: list[int]  # per view: island texels it contributed to


@dataclass(frozen=True)
class ProjectImageOutputs(TaskOutputs):
    """Per object, in the order given: ``textures`` (EXR, size x size RGBA float32, scene-linear, alpha 1 on
    the UV islands and their padding, provenance in the header) and ``textures_png`` (8-bit sRGB + alpha)."""

    textures: list[str] = output_file([])
    textures_png: list[str] = output_file([])
    objects: list[ObjectCoverage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a view without passes, a view that sees none of an object


@dataclass(frozen=True)
class BakeSettingsMixin:
    """The bake fields both projection tasks share, with their bounds."""

    size: int = bounded(1024, MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE, "texture size")
    blend_exponent: float = bounded(4.0, 0.0, MAX_BLEND_EXPONENT, "blend exponent")
    padding: int = bounded(8, 0, MAX_PADDING, "seam padding")
    # A texel is occluded in a view when it lies more than this fraction of its depth (plus one pixel's
    # footprint) behind the scene's depth pass there.
    depth_tolerance: float = 0.01
    fill_unseen: bool = True  # island texels no view saw: filled from the nearest seen ones (else alpha 0)


def check_bake(params: ProjectImageParams | ProjectTextureParams) -> None:
    if not isinstance(params.meshes, list) or not params.meshes:
        raise ParamError("no objects to bake onto: select one or more mesh objects")
    for path in params.meshes:
        relative("mesh", path)
    relative("views", params.views)
    if not 0.0 < params.depth_tolerance <= 1.0:
        raise ParamError(f"depth tolerance must be above 0 and at most 1, got {params.depth_tolerance}")


@dataclass(frozen=True)
class ProjectImageParams(BakeSettingsMixin, TaskParams):
    task = "project_image"
    outputs = ProjectImageOutputs

    meshes: list[str] = field(default_factory=list)
    views: str = VIEWS_FILE

    def validate(self) -> None:
        check_bake(self)


@dataclass(frozen=True)
class ViewGeneration:
    name: str
    seed: int
    kept_fraction: float  # sequential: share of the view's pixels kept from the views before it


@dataclass(frozen=True)
class ProjectTextureOutputs(ProjectImageOutputs):
    view_images: list[str] = output_file([])  # per view: the generated image, 8-bit sRGB PNG
    view_images_exr: list[str] = output_file([])  # ... and as scene-linear EXR with provenance
    views: list[ViewGeneration] = field(default_factory=list)
    seed: int = 0
    width: int = 0
    height: int = 0
    sequential: bool = True


@dataclass(frozen=True)
class ProjectTextureParams(ModelOptions, BakeSettingsMixin, TaskParams):
    """``sequential``: after the first view, each view starts from the texture baked so far rendered into it;
    pixels showing texels an earlier view saw are kept and the rest is inpainted, so the views agree where
    they overlap. Off: every view is generated on its own from its passes. The views carry passes, no images."""

    task = "project_texture"
    outputs = ProjectTextureOutputs

    prompt: str = ""
    meshes: list[str] = field(default_factory=list)
    views: str = VIEWS_FILE
    negative_prompt: str = ""
    seed: int = -1  # -1: random; view k uses seed + k (recorded in job.json)
    steps: int = 20
    guidance: float = 7.5
    width: int = 512  # generation size of every view
    height: int = 512
    model: str = ""
    depth_weight: float = bounded(1.0, 0.0, MAX_CONTROL_WEIGHT)
    normal_weight: float = bounded(0.0, 0.0, MAX_CONTROL_WEIGHT)  # above 0: also a normal ControlNet
    normal_encoding: str = "bae"
    sequential: bool = True
    preview_every: int = 2

    def validate(self) -> None:
        check_generation(self, "describe the texture to project")
        self.check_options()
        check_bake(self)
        if self.normal_encoding not in NORMAL_ENCODINGS:
            raise ParamError(f"normal_encoding must be one of {', '.join(NORMAL_ENCODINGS)}")
        if self.depth_weight == 0 and self.normal_weight == 0:
            raise ParamError("give the depth or the normal control a weight above 0")

    def bake_params(self) -> ProjectImageParams:
        return ProjectImageParams(meshes=self.meshes, views=self.views, size=self.size,
                                  blend_exponent=self.blend_exponent, padding=self.padding,
                                  depth_tolerance=self.depth_tolerance, fill_unseen=self.fill_unseen)
