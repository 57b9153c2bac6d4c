"""Tasks "pbr" (maps from a colour image), "export_maps" (maps to EXR / 16-bit PNG files) and
"import_maps" (an EXR holding maps back into float maps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import ParamError, bounded, choice, relative
from .base import MAX_STEPS, TaskOutputs, TaskParams, output_file
from .options import LicencePolicy

PBR_METHODS = ("filters", "marigold")
NORMAL_CONVENTIONS = ("opengl", "directx")
MAP_NAMES = ("albedo", "normal", "roughness", "metallic", "ao", "height")
EXR_COMPRESSIONS = ("zip", "piz", "dwaa", "none")
EXPORT_LAYOUTS = ("separate", "multilayer", "multipart")
EXPORT_FORMATS = ("exr", "png16")
COLORSPACES = ("srgb", "linear")
MAX_MAP_SIZE = 8192
EXPORT_FOLDER = "outputs/export"  # export_maps writes here; the add-on moves the files to the artist's folder


@dataclass(frozen=True)
class MapsOutputs(TaskOutputs):
    """A set of PBR maps in the job folder (tasks "pbr" and "import_maps")."""

    maps: dict[str, str] = output_file({})  # map name -> one float EXR each (outputs/maps/<name>.exr)
    maps_exr: str = output_file("")  # every map in one multilayer EXR (albedo.R/G/B, normal.X/Y/Z, roughness.Y...)


@dataclass(frozen=True)
class PbrOutputs(MapsOutputs):
    method: str = ""
    width: int = 0
    height: int = 0
    roughness_mean: float = 0.0


@dataclass(frozen=True)
class PbrParams(LicencePolicy, TaskParams):
    """Derive PBR maps from a colour image in the job folder."""

    task = "pbr"
    outputs = PbrOutputs

    source: str = "inputs/color.npy"  # relative to the job folder: .npy (H x W x C float) or an image file
    source_colorspace: str = "srgb"  # "srgb": display-encoded values (8-bit textures); "linear": scene-linear
    method: str = "filters"  # "filters": image filters; "marigold": learned intrinsics + normals
    normal_strength: float = bounded(1.0, 0.0, 100.0)
    detail_radius: float = bounded(16.0, 0.0, 512.0)
    invert_height: bool = False
    roughness_base: float = bounded(0.6, 0.0, 1.0)
    roughness_contrast: float = bounded(1.0, 0.0, 10.0)
    ao_radius: float = bounded(12.0, 0.0, 512.0)
    ao_strength: float = bounded(1.0, 0.0, 10.0)
    seamless: bool = True  # every filter wraps around, so every map tiles like the source
    steps: int = bounded(4, 1, MAX_STEPS)  # marigold only
    seed: int = 0  # marigold only
    model: str = ""  # marigold only: registry names "intrinsics_model,normals_model"; empty: the roles
    attributes: dict[str, str] = field(default_factory=dict)  # provenance for the EXR headers

    def validate(self) -> None:
        choice("method", self.method, PBR_METHODS)
        choice("source_colorspace", self.source_colorspace, COLORSPACES)
        relative("source", self.source)


@dataclass(frozen=True)
class ExportMapsOutputs(TaskOutputs):
    exported: list[str] = output_file([])  # under outputs/export/, named as they should be in the chosen folder


@dataclass(frozen=True)
class ExportMapsParams(TaskParams):
    """Write maps (inputs/<map>.npy in the job folder) as EXR or 16-bit PNG files into outputs/export/."""

    task = "export_maps"
    outputs = ExportMapsOutputs

    maps: list[str]
    basename: str = "material"
    layout: str = "multilayer"
    format: str = "exr"
    half: bool = True
    compression: str = "zip"
    normal_convention: str = "opengl"  # the maps arrive in Blender's (OpenGL) convention
    attributes: dict[str, str] = field(default_factory=dict)
    colorspaces: dict[str, str] = field(default_factory=dict)  # map -> "srgb" (byte images) or "linear"

    def validate(self) -> None:
        if not self.maps:
            raise ParamError("no maps to export")
        for name in self.maps:
            choice("map", name, MAP_NAMES)
        choice("layout", self.layout, EXPORT_LAYOUTS)
        choice("format", self.format, EXPORT_FORMATS)
        choice("compression", self.compression, EXR_COMPRESSIONS)
        choice("normal_convention", self.normal_convention, NORMAL_CONVENTIONS)
        for name, space in self.colorspaces.items():
            choice(f"colour space of {name}", space, COLORSPACES)
        if self.format == "png16" and self.layout != "separate":
            raise ParamError("16-bit PNG holds one map per file: use the 'separate' layout")
        if not self.basename.strip() or any(c in self.basename for c in '/\\:*?"<>|'):
            raise ParamError(f"basename {self.basename!r} is not a usable file name")

    @staticmethod
    def map_input(name: str) -> str:
        """Where the add-on writes map ``name`` (H x W x C float32 .npy) in the job folder."""
        return f"inputs/{name}.npy"


@dataclass(frozen=True)
class ImportMapsOutputs(MapsOutputs):
    layers: list[str] = field(default_factory=list)  # the map names found, in MAP_NAMES order
    attributes: dict[str, Any] = field(default_factory=dict)  # the file's header attributes


@dataclass(frozen=True)
class ImportMapsParams(TaskParams):
    """Read an EXR holding maps (ours, or anyone's with the same layer names), copied into the job folder."""

    task = "import_maps"
    outputs = ImportMapsOutputs

    source: str = "inputs/maps.exr"
    name: str = ""  # the file's name as the artist chose it, for messages
    normal_convention: str = "opengl"  # the file's convention; converted to Blender's (OpenGL)

    def validate(self) -> None:
        choice("normal_convention", self.normal_convention, NORMAL_CONVENTIONS)
        relative("source", self.source)
