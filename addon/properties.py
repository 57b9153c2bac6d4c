"""Scene settings: one PropertyGroup per capability under ``scene.scene_diffusion``."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from ..contract.tasks import (
    MAX_BLEND_EXPONENT,
    MAX_CANNY_THRESHOLD,
    MAX_CONTROL_WEIGHT,
    MAX_PADDING,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MAX_TEXTURE_SIZE,
    MAX_VIEWS,
    MIN_SIZE,
    MIN_TEXTURE_SIZE,
    ControlParams,
    PbrParams,
    ProjectImageParams,
    ProjectTextureParams,
    RenderParams,
    TextureParams,
)
from .model_options import ModelOptionsSettings, commercial, model_search

HEIGHT_MODE_ITEMS = [
    ("BUMP", "Bump", "Height drives a Bump node: shading only, any render engine"),
    ("DISPLACEMENT", "Displacement", "Height drives real displacement (Cycles; needs a subdivided mesh)"),
]


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
        name="Model", description="Registry model name; empty: the registry's text-to-image model",
        search=model_search, search_options={"SUGGESTION", "SORT"})
    options: PointerProperty(type=ModelOptionsSettings)  # type: ignore[valid-type]
    assign_material: BoolProperty(  # type: ignore[valid-type]
        name="Assign Material", default=True,
        description="Put the texture in a material on the selected mesh objects")
    pbr: BoolProperty(  # type: ignore[valid-type]
        name="PBR Material", default=False,
        description="Also derive normal, roughness, AO and height maps and build a full PBR material")
    height_mode: EnumProperty(name="Height", items=HEIGHT_MODE_ITEMS, default="BUMP")  # type: ignore[valid-type]

    def to_params(self) -> TextureParams:
        """Validated parameters; raises contract ParamError with a readable message."""
        return TextureParams(
            prompt=self.prompt, negative_prompt=self.negative_prompt,
            seed=-1 if self.random_seed else self.seed, steps=self.steps, guidance=self.guidance,
            width=self.width, height=self.height, seamless_x=self.seamless_x,
            seamless_y=self.seamless_y, model=self.model.strip(), pbr=self.pbr, **self.options.param_fields())


class PbrSettings(bpy.types.PropertyGroup):
    image: PointerProperty(  # type: ignore[valid-type]
        name="Image", type=bpy.types.Image,
        description="Colour image to derive maps from; empty: the base colour image of the active material")
    method: EnumProperty(  # type: ignore[valid-type]
        name="Method", default="filters",
        items=[("filters", "Image Filters", "Fast, deterministic filters on the colour image"),
               ("marigold", "Marigold (learned)", "Diffusion models estimating albedo, roughness, "
                                                  "metallic and normals (roles intrinsics, normals)")])
    normal_strength: FloatProperty(name="Normal Strength", default=1.0, min=0.0, max=100.0,  # type: ignore[valid-type]
                                   soft_max=10.0)
    detail_radius: FloatProperty(name="Detail Radius", default=16.0, min=0.0, max=512.0,  # type: ignore[valid-type]
                                 subtype="PIXEL", description="Height keeps detail smaller than this")
    invert_height: BoolProperty(name="Invert Height", default=False)  # type: ignore[valid-type]
    roughness_base: FloatProperty(name="Roughness", default=0.6, min=0.0, max=1.0)  # type: ignore[valid-type]
    roughness_contrast: FloatProperty(name="Roughness Contrast", default=1.0, min=0.0,  # type: ignore[valid-type]
                                      max=10.0, soft_max=4.0)
    ao_radius: FloatProperty(name="AO Radius", default=12.0, min=0.0, max=512.0, subtype="PIXEL")  # type: ignore[valid-type]
    ao_strength: FloatProperty(name="AO Strength", default=1.0, min=0.0, max=10.0, soft_max=2.0)  # type: ignore[valid-type]
    seamless: BoolProperty(  # type: ignore[valid-type]
        name="Seamless", default=True, description="The image tiles: filters wrap so the maps tile too")
    steps: IntProperty(name="Steps", default=4, min=1, max=MAX_STEPS, soft_max=50)  # type: ignore[valid-type]
    height_mode: EnumProperty(name="Height", items=HEIGHT_MODE_ITEMS, default="BUMP")  # type: ignore[valid-type]

    def to_params(self, colorspace: str, attributes: dict[str, str]) -> PbrParams:
        return PbrParams(source_colorspace=colorspace, method=self.method, normal_strength=self.normal_strength,
                         detail_radius=self.detail_radius, invert_height=self.invert_height,
                         roughness_base=self.roughness_base, roughness_contrast=self.roughness_contrast,
                         ao_radius=self.ao_radius, ao_strength=self.ao_strength, seamless=self.seamless,
                         steps=self.steps, attributes=attributes, commercial=commercial())


class ExportSettings(bpy.types.PropertyGroup):
    directory: StringProperty(name="Folder", subtype="DIR_PATH", default="//maps/")  # type: ignore[valid-type]
    basename: StringProperty(  # type: ignore[valid-type]
        name="Name", description="File name stem; empty: the material's name")
    layout: EnumProperty(  # type: ignore[valid-type]
        name="Layout", default="multilayer",
        items=[("multilayer", "One Multilayer File", "albedo.R/G/B, normal.X/Y/Z, roughness.Y, ... in one EXR"),
               ("multipart", "One Multi-Part File", "One EXR part per map"),
               ("separate", "One File per Map", "")])
    format: EnumProperty(  # type: ignore[valid-type]
        name="Format", default="exr",
        items=[("exr", "OpenEXR", "Float data for compositors and engines"),
               ("png16", "16-bit PNG", "For engines that do not read EXR (one file per map)")])
    half: BoolProperty(name="Half Float", default=True, description="16-bit half floats; off: 32-bit")  # type: ignore[valid-type]
    compression: EnumProperty(  # type: ignore[valid-type]
        name="Compression", default="zip",
        items=[("zip", "ZIP", "Lossless"), ("piz", "PIZ", "Lossless, good for grainy images"),
               ("dwaa", "DWAA", "Lossy, for colour only: data maps in the file stay ZIP"),
               ("none", "None", "")])
    normal_convention: EnumProperty(  # type: ignore[valid-type]
        name="Normals", default="opengl",
        items=[("opengl", "OpenGL (Y+)", "Blender, Unity, Godot"), ("directx", "DirectX (Y-)", "Unreal, 3ds Max")])
    import_path: StringProperty(name="EXR File", subtype="FILE_PATH")  # type: ignore[valid-type]


class ControlSettings(bpy.types.PropertyGroup):
    weight: FloatProperty(name="Weight", default=1.0, min=0.0, max=MAX_CONTROL_WEIGHT)  # type: ignore[valid-type]
    start: FloatProperty(name="Start", default=0.0, min=0.0, max=1.0, subtype="FACTOR",  # type: ignore[valid-type]
                         description="Fraction of the denoising at which this control starts")
    end: FloatProperty(name="End", default=1.0, min=0.0, max=1.0, subtype="FACTOR",  # type: ignore[valid-type]
                       description="Fraction of the denoising at which this control stops")
    model: StringProperty(  # type: ignore[valid-type]
        name="Model", description="Registry ControlNet name; empty: the role for the base model's family")

    def to_params(self, kind: str, enabled: bool) -> ControlParams:
        return ControlParams(kind=kind, weight=self.weight if enabled else 0.0, start=self.start, end=self.end,
                             model=self.model.strip())


class RenderSettings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What the render should show")  # type: ignore[valid-type]
    negative_prompt: StringProperty(name="Negative Prompt")  # type: ignore[valid-type]
    seed: IntProperty(name="Seed", default=0, min=0, max=min(MAX_SEED, 2**31 - 1))  # type: ignore[valid-type]
    random_seed: BoolProperty(name="Random Seed", default=False)  # type: ignore[valid-type]
    seed_per_frame: BoolProperty(  # type: ignore[valid-type]
        name="New Seed per Frame", default=False,
        description="Animation: seed + frame number; off: the same seed for every frame")
    steps: IntProperty(name="Steps", default=20, min=1, max=MAX_STEPS, soft_max=60)  # type: ignore[valid-type]
    guidance: FloatProperty(name="Guidance", default=7.5, min=0.0, max=30.0, soft_max=15.0)  # type: ignore[valid-type]
    use_scene_resolution: BoolProperty(  # type: ignore[valid-type]
        name="Scene Resolution", default=True, description="Use the scene's output size (rounded to 8 pixels)")
    width: IntProperty(name="Width", default=512, min=8, soft_min=MIN_SIZE, soft_max=MAX_SIZE,  # type: ignore[valid-type]
                       step=64, subtype="PIXEL")
    height: IntProperty(name="Height", default=512, min=8, soft_min=MIN_SIZE, soft_max=MAX_SIZE,  # type: ignore[valid-type]
                        step=64, subtype="PIXEL")
    use_depth: BoolProperty(name="Depth", default=True, description="Follow the depth pass")  # type: ignore[valid-type]
    use_normal: BoolProperty(name="Normal", default=False, description="Follow the normal pass")  # type: ignore[valid-type]
    use_canny: BoolProperty(name="Canny", default=False, description="Follow edges of the render")  # type: ignore[valid-type]
    depth: PointerProperty(type=ControlSettings)  # type: ignore[valid-type]
    normal: PointerProperty(type=ControlSettings)  # type: ignore[valid-type]
    canny: PointerProperty(type=ControlSettings)  # type: ignore[valid-type]
    canny_low: IntProperty(name="Low Threshold", default=100, min=0, max=MAX_CANNY_THRESHOLD * 2)  # type: ignore[valid-type]
    canny_high: IntProperty(name="High Threshold", default=200, min=0, max=MAX_CANNY_THRESHOLD * 2)  # type: ignore[valid-type]
    img2img: BoolProperty(  # type: ignore[valid-type]
        name="Start from Render", default=False, description="Start from the Combined pass instead of noise")
    strength: FloatProperty(name="Strength", default=0.75, min=0.01, max=1.0, subtype="FACTOR")  # type: ignore[valid-type]
    model: StringProperty(  # type: ignore[valid-type]
        name="Model", description="Base model (registry name); empty: text_to_image",
        search=model_search, search_options={"SUGGESTION", "SORT"})
    options: PointerProperty(type=ModelOptionsSettings)  # type: ignore[valid-type]
    engine: EnumProperty(  # type: ignore[valid-type]
        name="Pass Engine", default="CYCLES",
        items=[("CYCLES", "Cycles", "Exact depth and normals; 1 sample is enough for the passes"),
               ("BLENDER_EEVEE", "EEVEE", "Needs a GPU to be fast"),
               ("BLENDER_WORKBENCH", "Workbench", "Fastest; no normal pass")])
    samples: IntProperty(name="Pass Samples", default=1, min=1, max=4096, soft_max=64)  # type: ignore[valid-type]
    animation: BoolProperty(name="Animation", default=False, description="Render a frame range")  # type: ignore[valid-type]
    frame_start: IntProperty(name="Start", default=1)  # type: ignore[valid-type]
    frame_end: IntProperty(name="End", default=3)  # type: ignore[valid-type]
    output_dir: StringProperty(  # type: ignore[valid-type]
        name="Output", subtype="DIR_PATH", default="//diffusion_render/",
        description="Animation: folder for the numbered PNG and EXR files (frames already there are skipped)")

    def size(self, scene: bpy.types.Scene) -> tuple[int, int]:
        if not self.use_scene_resolution:
            return self.width, self.height
        scale = scene.render.resolution_percentage / 100.0
        return (round(scene.render.resolution_x * scale / 8) * 8,
                round(scene.render.resolution_y * scale / 8) * 8)

    def to_params(self, scene: bpy.types.Scene) -> RenderParams:
        """Validated; raises contract ParamError with a readable message."""
        width, height = self.size(scene)
        controls = [self.depth.to_params("depth", self.use_depth), self.normal.to_params("normal", self.use_normal),
                    self.canny.to_params("canny", self.use_canny)]
        return RenderParams(
            prompt=self.prompt, controls=controls, negative_prompt=self.negative_prompt,
            seed=-1 if self.random_seed else self.seed, steps=self.steps, guidance=self.guidance,
            width=width, height=height, canny_low=self.canny_low, canny_high=self.canny_high,
            img2img=self.img2img, strength=self.strength, model=self.model.strip(), **self.options.param_fields())


class MeshSettings(bpy.types.PropertyGroup):
    source: EnumProperty(  # type: ignore[valid-type]
        name="Source", default="IMAGE",
        items=[("IMAGE", "Image", "An image datablock (a generated concept, a render, a loaded picture)"),
               ("FILE", "File", "An image file on disk")])
    image: PointerProperty(name="Image", type=bpy.types.Image)  # type: ignore[valid-type]
    filepath: StringProperty(name="Image File", subtype="FILE_PATH")  # type: ignore[valid-type]
    background: EnumProperty(  # type: ignore[valid-type]
        name="Background", default="auto",
        items=[("auto", "Automatic", "Use the alpha channel when there is one, else remove a plain background "
                                     "coloured like the image border"),
               ("alpha", "Alpha", "Use the alpha channel"),
               ("none", "Keep", "Use the whole image as it is")])
    tolerance: FloatProperty(name="Tolerance", default=0.08, min=0.0, max=1.0,  # type: ignore[valid-type]
                             description="How far from the border colour a pixel may be and still be background")
    steps: IntProperty(name="Steps", default=64, min=1, max=MAX_STEPS)  # type: ignore[valid-type]
    guidance: FloatProperty(name="Guidance", default=3.0, min=0.0, max=30.0)  # type: ignore[valid-type]
    seed: IntProperty(name="Seed", default=0, min=0, max=min(MAX_SEED, 2**31 - 1))  # type: ignore[valid-type]
    random_seed: BoolProperty(name="Random Seed", default=True)  # type: ignore[valid-type]
    frame_size: IntProperty(  # type: ignore[valid-type]
        name="Mesh Resolution", default=64, min=16, max=256,
        description="Resolution of the grid the surface is extracted on: higher is finer and slower")
    target_size: FloatProperty(name="Size", default=1.0, min=0.001, soft_max=100.0,  # type: ignore[valid-type]
                               unit="LENGTH", description="Largest dimension of the imported object")
    bake_texture: BoolProperty(  # type: ignore[valid-type]
        name="Bake Texture", default=False,
        description="Also bake the vertex colours into a texture on an automatic UV map (for export to engines)")
    texture_size: IntProperty(name="Texture Size", default=1024, min=64, max=8192, subtype="PIXEL")  # type: ignore[valid-type]
    import_path: StringProperty(name="Mesh File", subtype="FILE_PATH")  # type: ignore[valid-type]


def _is_camera(_settings: object, obj: bpy.types.Object) -> bool:
    return obj.type == "CAMERA"


class ProjectSettings(bpy.types.PropertyGroup):
    """Projection onto meshes: an existing image (project_image) or images generated per view
    (project_texture), baked into each object's UV map."""

    image: PointerProperty(  # type: ignore[valid-type]
        name="Image", type=bpy.types.Image, description="The image to project (Project Image)")
    camera: PointerProperty(  # type: ignore[valid-type]
        name="Camera", type=bpy.types.Object, poll=_is_camera,
        description="Project Image: the camera the image was seen from; empty: the scene's camera")
    uv_map: StringProperty(  # type: ignore[valid-type]
        name="UV Map", description="The UV map to bake into; empty: each object's active render UV map")
    # Bounds wider than ProjectImageParams allows (soft limits only), so a script asking for a size out of
    # range gets a clear error instead of a silently clamped value.
    texture_size: IntProperty(  # type: ignore[valid-type]
        name="Texture Size", default=1024, min=1, soft_min=MIN_TEXTURE_SIZE, soft_max=MAX_TEXTURE_SIZE,
        subtype="PIXEL", description="Width and height of each object's baked texture")
    blend_exponent: FloatProperty(  # type: ignore[valid-type]
        name="Blend Exponent", default=4.0, min=0.0, soft_max=MAX_BLEND_EXPONENT,
        description="Where views overlap, each weighs cos(angle to the surface) to this power: "
                    "higher favours the view facing the surface")
    padding: IntProperty(  # type: ignore[valid-type]
        name="Seam Padding", default=8, min=0, soft_max=MAX_PADDING, subtype="PIXEL",
        description="Texels grown around every UV island, so no black seams show when mipmapped")
    new_material: BoolProperty(  # type: ignore[valid-type]
        name="New Material", default=False,
        description="Give each object a new material '<object> Projected'; off: add the image to the Base "
                    "Color of its material when that has a Principled BSDF")
    unwrap: BoolProperty(  # type: ignore[valid-type]
        name="Unwrap objects without UVs", default=False,
        description="Smart UV Project the objects that have no UV map (else they are refused)")
    views: EnumProperty(  # type: ignore[valid-type]
        name="Views", default="ACTIVE",
        items=[("ACTIVE", "Active Camera", "One view from the scene's camera"),
               ("SELECTED", "Selected Cameras", "One view from each selected camera, in name order"),
               ("AUTO", "Automatic", "Views evenly around the selection (temporary cameras, removed afterwards)")])
    view_count: IntProperty(name="View Count", default=4, min=1, soft_max=MAX_VIEWS)  # type: ignore[valid-type]
    elevation: FloatProperty(  # type: ignore[valid-type]
        name="Elevation", default=20.0, min=-89.0, max=89.0,
        description="Automatic views: degrees above the centre of the selection")
    distance: FloatProperty(  # type: ignore[valid-type]
        name="Distance", default=0.0, min=0.0, unit="LENGTH",
        description="Automatic views: distance from the centre of the selection; 0: fit the selection in frame")
    prompt: StringProperty(name="Prompt", description="What the projected texture shows")  # type: ignore[valid-type]
    negative_prompt: StringProperty(name="Negative Prompt")  # type: ignore[valid-type]
    seed: IntProperty(name="Seed", default=0, min=0, max=min(MAX_SEED, 2**31 - 1))  # type: ignore[valid-type]
    random_seed: BoolProperty(  # type: ignore[valid-type]
        name="Random Seed", default=True, description="Pick a new seed for every job (view k uses seed + k)")
    steps: IntProperty(name="Steps", default=20, min=1, max=MAX_STEPS, soft_max=60)  # type: ignore[valid-type]
    guidance: FloatProperty(name="Guidance", default=7.5, min=0.0, max=30.0, soft_max=15.0)  # type: ignore[valid-type]
    width: IntProperty(name="Width", default=512, min=8, soft_min=MIN_SIZE, soft_max=MAX_SIZE,  # type: ignore[valid-type]
                       step=64, subtype="PIXEL", description="Generation width of each view")
    height: IntProperty(name="Height", default=512, min=8, soft_min=MIN_SIZE, soft_max=MAX_SIZE,  # type: ignore[valid-type]
                        step=64, subtype="PIXEL", description="Generation height of each view")
    depth_weight: FloatProperty(name="Depth", default=1.0, min=0.0, max=MAX_CONTROL_WEIGHT,  # type: ignore[valid-type]
                                description="Weight of the depth ControlNet")
    normal_weight: FloatProperty(name="Normal", default=0.0, min=0.0, max=MAX_CONTROL_WEIGHT,  # type: ignore[valid-type]
                                 description="Weight of the normal ControlNet (0: not used)")
    sequential: BoolProperty(  # type: ignore[valid-type]
        name="Sequential", default=True,
        description="Each view continues from what earlier views baked, so overlaps agree; off: independent views")
    model: StringProperty(  # type: ignore[valid-type]
        name="Model", description="Base model (registry name); empty: text_to_image",
        search=model_search, search_options={"SUGGESTION", "SORT"})
    options: PointerProperty(type=ModelOptionsSettings)  # type: ignore[valid-type]

    def to_image_params(self, meshes: list[str]) -> ProjectImageParams:
        """Validated (task "project_image"); raises contract ParamError with a readable message."""
        return ProjectImageParams(meshes=meshes, size=self.texture_size, blend_exponent=self.blend_exponent,
                          padding=self.padding)

    def to_texture_params(self, meshes: list[str]) -> ProjectTextureParams:
        """Validated (task "project_texture"); raises contract ParamError with a readable message."""
        return ProjectTextureParams(
            prompt=self.prompt, meshes=meshes, negative_prompt=self.negative_prompt,
            seed=-1 if self.random_seed else self.seed, steps=self.steps, guidance=self.guidance,
            width=self.width, height=self.height, model=self.model.strip(), depth_weight=self.depth_weight,
            normal_weight=self.normal_weight, sequential=self.sequential, size=self.texture_size,
            blend_exponent=self.blend_exponent, padding=self.padding, **self.options.param_fields())


class SceneDiffusionSettings(bpy.types.PropertyGroup):
    texture: PointerProperty(type=TextureSettings)  # type: ignore[valid-type]
    mesh: PointerProperty(type=MeshSettings)  # type: ignore[valid-type]
    render: PointerProperty(type=RenderSettings)  # type: ignore[valid-type]
    pbr: PointerProperty(type=PbrSettings)  # type: ignore[valid-type]
    export: PointerProperty(type=ExportSettings)  # type: ignore[valid-type]
    project: PointerProperty(type=ProjectSettings)  # type: ignore[valid-type]


classes = (TextureSettings, PbrSettings, ExportSettings, ControlSettings, RenderSettings, MeshSettings,
           ProjectSettings, SceneDiffusionSettings)


def register() -> None:
    bpy.types.Scene.scene_diffusion = PointerProperty(type=SceneDiffusionSettings)  # type: ignore[attr-defined]


def unregister() -> None:
    del bpy.types.Scene.scene_diffusion  # type: ignore[attr-defined]
