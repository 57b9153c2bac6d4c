"""Task parameters with their bounds, validated on both sides of the pipe.

Standard library only: the add-on validates with the same code before it starts a job, so
an out-of-range size is a clear message in Blender rather than an error from the backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

MIN_SIZE = 64
MAX_SIZE = 2048
MAX_STEPS = 200
MAX_SEED = 2**32 - 1


class ParamError(ValueError):
    """Invalid parameters; the message says which one and what is allowed."""


def check_size(name: str, value: int) -> None:
    if not MIN_SIZE <= value <= MAX_SIZE or value % 8:
        raise ParamError(
            f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} pixels, got {value}")


def check_generation(params: Any, what: str) -> None:
    """The bounds every text-conditioned generation shares: prompt, size, steps, guidance, seed."""
    if not params.prompt.strip():
        raise ParamError(f"prompt is empty: {what}")
    check_size("width", params.width)
    check_size("height", params.height)
    if not 1 <= params.steps <= MAX_STEPS:
        raise ParamError(f"steps must be between 1 and {MAX_STEPS}, got {params.steps}")
    if not 0.0 <= params.guidance <= 30.0:
        raise ParamError(f"guidance must be between 0 and 30, got {params.guidance}")
    if not -1 <= params.seed <= MAX_SEED:
        raise ParamError(f"seed must be -1 (random) or between 0 and {MAX_SEED}, got {params.seed}")


@dataclass(frozen=True)
class TextureParams:
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

    def __post_init__(self) -> None:
        check_generation(self, "describe the texture to generate")
        if self.preview_every < 0:
            raise ParamError("preview_every must be 0 (no previews) or a positive step interval")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextureParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": (int, float), "bool": bool,
    "list[str]": list, "dict[str, str]": dict, "list[dict[str, Any]]": list,
}


def _from_dict(cls: Any, data: dict[str, Any]) -> Any:
    """Build a params dataclass from JSON, naming unknown or mistyped fields."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ParamError(f"unknown parameter(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = known[name].type
        expected = _JSON_TYPES.get(str(kind))
        if expected is not None and (not isinstance(value, expected) or
                                     (expected is int and isinstance(value, bool))):
            raise ParamError(f"{name} must be {kind}, got {value!r}")
        values[name] = float(value) if kind == "float" else value
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ParamError(str(exc)) from None


PBR_METHODS = ("filters", "marigold")
NORMAL_CONVENTIONS = ("opengl", "directx")
MAP_NAMES = ("albedo", "normal", "roughness", "metallic", "ao", "height")
EXR_COMPRESSIONS = ("zip", "piz", "dwaa", "none")
EXPORT_LAYOUTS = ("separate", "multilayer", "multipart")
EXPORT_FORMATS = ("exr", "png16")
MAX_MAP_SIZE = 8192


@dataclass(frozen=True)
class PbrParams:
    """Derive PBR maps from a colour image in the job folder."""

    source: str = "inputs/color.npy"  # relative to the job folder: .npy (H x W x C float) or an image file
    source_colorspace: str = "srgb"  # "srgb": display-encoded values (8-bit textures); "linear": scene-linear
    method: str = "filters"  # "filters": image filters; "marigold": learned intrinsics + normals
    normal_strength: float = 1.0
    detail_radius: float = 16.0
    invert_height: bool = False
    roughness_base: float = 0.6
    roughness_contrast: float = 1.0
    ao_radius: float = 12.0
    ao_strength: float = 1.0
    seamless: bool = True  # every filter wraps around, so every map tiles like the source
    steps: int = 4  # marigold only
    seed: int = 0  # marigold only
    model: str = ""  # marigold only: registry names "intrinsics_model,normals_model"; empty: the roles
    attributes: dict[str, str] = field(default_factory=dict)  # provenance for the EXR headers

    def __post_init__(self) -> None:
        _choice("method", self.method, PBR_METHODS)
        _choice("source_colorspace", self.source_colorspace, ("srgb", "linear"))
        for name, low, high in (("normal_strength", 0.0, 100.0), ("detail_radius", 0.0, 512.0),
                                ("roughness_base", 0.0, 1.0), ("roughness_contrast", 0.0, 10.0),
                                ("ao_radius", 0.0, 512.0), ("ao_strength", 0.0, 10.0)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ParamError(f"{name} must be between {low:g} and {high:g}, got {value}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ParamError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        _relative("source", self.source)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PbrParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportMapsParams:
    """Write maps (inputs/<map>.npy in the job folder) as EXR or 16-bit PNG into ``directory``."""

    maps: list[str]
    directory: str
    basename: str = "material"
    layout: str = "multilayer"
    format: str = "exr"
    half: bool = True
    compression: str = "zip"
    normal_convention: str = "opengl"  # the maps arrive in Blender's (OpenGL) convention
    attributes: dict[str, str] = field(default_factory=dict)
    colorspaces: dict[str, str] = field(default_factory=dict)  # map -> "srgb" (byte images) or "linear"

    def __post_init__(self) -> None:
        if not self.maps:
            raise ParamError("no maps to export")
        for name in self.maps:
            _choice("map", name, MAP_NAMES)
        _choice("layout", self.layout, EXPORT_LAYOUTS)
        _choice("format", self.format, EXPORT_FORMATS)
        _choice("compression", self.compression, EXR_COMPRESSIONS)
        _choice("normal_convention", self.normal_convention, NORMAL_CONVENTIONS)
        for name, space in self.colorspaces.items():
            _choice(f"colour space of {name}", space, ("srgb", "linear"))
        if self.format == "png16" and self.layout != "separate":
            raise ParamError("16-bit PNG holds one map per file: use the 'separate' layout")
        if not self.basename.strip() or any(c in self.basename for c in '/\\:*?"<>|'):
            raise ParamError(f"basename {self.basename!r} is not a usable file name")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportMapsParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportMapsParams:
    """Read an EXR holding maps (ours, or anyone's with the same layer names)."""

    path: str
    normal_convention: str = "opengl"  # the file's convention; converted to Blender's (OpenGL)

    def __post_init__(self) -> None:
        _choice("normal_convention", self.normal_convention, NORMAL_CONVENTIONS)
        if not self.path:
            raise ParamError("no EXR file given")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportMapsParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ParamError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _relative(name: str, value: str) -> None:
    if not value or value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/"):
        raise ParamError(f"{name} must be a path inside the job folder, got {value!r}")


CONTROL_KINDS = ("depth", "normal", "canny")
MAX_CONTROL_WEIGHT = 2.0
MAX_CANNY_THRESHOLD = 1000


@dataclass(frozen=True)
class ControlParams:
    """One ControlNet: which pass it follows, how strongly, and over which part of denoising."""

    kind: str
    weight: float = 1.0
    start: float = 0.0  # fraction of the denoising steps at which the control starts
    end: float = 1.0  # ... and stops
    model: str = ""  # a registry name; empty: the role controlnet_<kind> of the base model's family

    def __post_init__(self) -> None:
        _choice("control", self.kind, CONTROL_KINDS)
        if not 0.0 <= self.weight <= MAX_CONTROL_WEIGHT:
            raise ParamError(f"{self.kind} weight must be between 0 and {MAX_CONTROL_WEIGHT:g}, got {self.weight}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ParamError(f"{self.kind} start and end must satisfy 0 <= start < end <= 1, "
                             f"got {self.start} and {self.end}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlParams:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class RenderParams:
    """A ControlNet-guided render of the passes in the job folder (one frame)."""

    prompt: str
    controls: list[dict[str, Any]]  # ControlParams as dicts; those of weight 0 are left out
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    canny_low: int = 100
    canny_high: int = 200
    img2img: bool = False  # start from the Combined pass instead of noise
    strength: float = 0.75  # img2img: how far from the Combined pass the result may go
    model: str = ""  # base text-to-image model; empty: the registry's text_to_image role
    normal_encoding: str = "bae"
    passes: str = "inputs/passes.exr"
    camera: str = "inputs/camera.json"
    preview_every: int = 2

    def __post_init__(self) -> None:
        check_generation(self, "describe what the render should show")
        if not 0 <= self.canny_low < self.canny_high <= MAX_CANNY_THRESHOLD:
            raise ParamError(f"canny thresholds must satisfy 0 <= low < high <= {MAX_CANNY_THRESHOLD}, "
                             f"got {self.canny_low} and {self.canny_high}")
        if not 0.0 < self.strength <= 1.0:
            raise ParamError(f"strength must be above 0 and at most 1, got {self.strength}")
        controls = self.active_controls()
        if not controls:
            raise ParamError("all control weights are zero: give depth, normal or canny a weight above 0")
        kinds = [c.kind for c in controls]
        if len(set(kinds)) != len(kinds):
            raise ParamError(f"each control may appear once, got {', '.join(kinds)}")
        _relative("passes", self.passes)
        _relative("camera", self.camera)

    def active_controls(self) -> list[ControlParams]:
        if not isinstance(self.controls, list) or not all(isinstance(c, dict) for c in self.controls):
            raise ParamError("controls must be a list of objects such as {\"kind\": \"depth\", \"weight\": 1.0}")
        return [c for c in (ControlParams.from_dict(d) for d in self.controls) if c.weight > 0]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MESH_BACKGROUNDS = ("auto", "alpha", "none")
MIN_MESH_RESOLUTION = 16
MAX_MESH_RESOLUTION = 256


@dataclass(frozen=True)
class MeshParams:
    """Image to 3D: a mesh with vertex colours from one picture of a subject (Shap-E).

    ``background``: "auto" uses the alpha channel when the image has one that is not fully opaque,
    else removes a plain background coloured like the image border; "alpha" requires the alpha
    channel; "none" uses the whole image. ``tolerance``: how far (Euclidean RGB distance, values in
    [0, 1], display-encoded) a pixel may be from the border colour and still be background.
    ``frame_size``: the mesh resolution, cells per side of the grid the surface is extracted on
    (the renderer's marching-cubes ``grid_size``; diffusers' own default for meshes is 128), between
    MIN_MESH_RESOLUTION and MAX_MESH_RESOLUTION.
    """

    source: str = "inputs/image.png"  # relative to the job folder: an image file, or .npy (H x W x C float)
    source_colorspace: str = "srgb"  # .npy only: "srgb" (display-encoded values) or "linear" (scene-linear)
    background: str = "auto"
    tolerance: float = 0.08
    steps: int = 64
    guidance: float = 3.0
    seed: int = -1  # -1: pick one at random (the one used is recorded in job.json)
    frame_size: int = 64
    model: str = ""  # a registry model name; empty: the registry's image_to_3d model

    def __post_init__(self) -> None:
        _relative("source", self.source)
        _choice("source_colorspace", self.source_colorspace, ("srgb", "linear"))
        _choice("background", self.background, MESH_BACKGROUNDS)
        if not 0.0 <= self.tolerance <= 1.0:
            raise ParamError(f"tolerance must be between 0 and 1, got {self.tolerance}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ParamError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not 0.0 <= self.guidance <= 30.0:
            raise ParamError(f"guidance must be between 0 and 30, got {self.guidance}")
        if not -1 <= self.seed <= MAX_SEED:
            raise ParamError(f"seed must be -1 (random) or between 0 and {MAX_SEED}, got {self.seed}")
        if not MIN_MESH_RESOLUTION <= self.frame_size <= MAX_MESH_RESOLUTION:
            raise ParamError(f"frame_size (mesh resolution) must be between {MIN_MESH_RESOLUTION} and "
                             f"{MAX_MESH_RESOLUTION}, got {self.frame_size}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeshParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportMeshParams:
    """Bring in a mesh made by another image-to-3D tool: the absolute path of a GLB, glTF, OBJ or PLY
    file (the backend names the supported formats when the file is something else)."""

    path: str

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ParamError("no mesh file given")
        if not (self.path.startswith(("/", "\\")) or (len(self.path) > 2 and self.path[1] == ":")):
            raise ParamError(f"the mesh file must be an absolute path, got {self.path!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportMeshParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_TEXTURE_SIZE = 16
MAX_TEXTURE_SIZE = 4096  # a 4096 x 4096 bake holds ~17 M texels of float32 positions, normals and colours
MAX_PADDING = 64
MAX_BLEND_EXPONENT = 32.0
MAX_VIEWS = 32


@dataclass(frozen=True)
class BakeParams:
    """Project images from cameras onto objects and bake them into each object's UV map (task "bake").

    ``meshes``: one MESH.npz per object (``backend/geometry/bake_mesh.py``), relative to the job folder.
    ``views``: the views JSON (``backend/tasks/bake_inputs.py``), relative to the job folder.
    ``depth_tolerance``: a texel is occluded in a view when it lies more than this fraction of its depth
    (plus one pixel's footprint) behind the scene's depth pass there.
    """

    meshes: list[str]
    views: str = "inputs/views.json"
    size: int = 1024
    blend_exponent: float = 4.0
    padding: int = 8
    depth_tolerance: float = 0.01
    fill_unseen: bool = True  # island texels no view saw: filled from the nearest seen ones (else alpha 0)

    def __post_init__(self) -> None:
        check_bake(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BakeParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_bake(params: Any) -> None:
    """The bounds every projection bake shares: objects, views file, texture size, blending, padding."""
    if not isinstance(params.meshes, list) or not params.meshes:
        raise ParamError("no objects to bake onto: select one or more mesh objects")
    for path in params.meshes:
        _relative("mesh", path)
    _relative("views", params.views)
    if not MIN_TEXTURE_SIZE <= params.size <= MAX_TEXTURE_SIZE:
        raise ParamError(f"texture size must be between {MIN_TEXTURE_SIZE} and {MAX_TEXTURE_SIZE} pixels, "
                         f"got {params.size}")
    if not 0.0 <= params.blend_exponent <= MAX_BLEND_EXPONENT:
        raise ParamError(f"blend exponent must be between 0 and {MAX_BLEND_EXPONENT:g}, got {params.blend_exponent}")
    if not 0 <= params.padding <= MAX_PADDING:
        raise ParamError(f"seam padding must be between 0 and {MAX_PADDING} pixels, got {params.padding}")
    if not 0.0 < params.depth_tolerance <= 1.0:
        raise ParamError(f"depth tolerance must be above 0 and at most 1, got {params.depth_tolerance}")


@dataclass(frozen=True)
class ProjectTextureParams:
    """Generate one image per view with depth (and optionally normal) ControlNets, then bake them onto the
    objects like BakeParams (task "project_texture"). The views carry passes, no images.

    ``sequential``: after the first view, each view starts from the texture baked so far rendered into it;
    pixels showing texels an earlier view saw are kept and the rest is inpainted, so the views agree where
    they overlap. Off: every view is generated on its own from its passes.
    """

    prompt: str
    meshes: list[str]
    views: str = "inputs/views.json"
    negative_prompt: str = ""
    seed: int = -1  # -1: random; view k uses seed + k (recorded in job.json)
    steps: int = 20
    guidance: float = 7.5
    width: int = 512  # generation size of every view
    height: int = 512
    model: str = ""
    depth_weight: float = 1.0
    normal_weight: float = 0.0  # above 0: also a normal ControlNet (the views' passes need a normal layer)
    normal_encoding: str = "bae"
    sequential: bool = True
    preview_every: int = 2
    size: int = 1024
    blend_exponent: float = 4.0
    padding: int = 8
    depth_tolerance: float = 0.01
    fill_unseen: bool = True

    def __post_init__(self) -> None:
        check_generation(self, "describe the texture to project")
        check_bake(self)
        for name in ("depth_weight", "normal_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_CONTROL_WEIGHT:
                raise ParamError(f"{name} must be between 0 and {MAX_CONTROL_WEIGHT:g}, got {value}")
        if self.depth_weight == 0 and self.normal_weight == 0:
            raise ParamError("give the depth or the normal control a weight above 0")
        if self.preview_every < 0:
            raise ParamError("preview_every must be 0 (no previews) or a positive step interval")

    def bake_params(self) -> BakeParams:
        return BakeParams(meshes=self.meshes, views=self.views, size=self.size, blend_exponent=self.blend_exponent,
                          padding=self.padding, depth_tolerance=self.depth_tolerance, fill_unseen=self.fill_unseen)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectTextureParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
