"""Tasks "mesh" (image to 3D with Shap-E) and "import_mesh" (another image-to-3D tool's GLB, glTF, OBJ or
PLY file, copied into the job folder), both ending as the mesh arrays of ``contract.formats.mesh``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..schema import ParamError, bounded, choice, relative
from .base import MAX_STEPS, TaskOutputs, TaskParams, check_seed, output_file
from .options import LicencePolicy

MESH_BACKGROUNDS = ("auto", "alpha", "none")
MIN_MESH_RESOLUTION = 16
MAX_MESH_RESOLUTION = 256
MESH_FORMATS = (".glb", ".gltf", ".obj", ".ply")
MESH_FILE = "outputs/mesh.npz"


@dataclass(frozen=True)
class MeshOutputs(TaskOutputs):
    mesh: str = output_file()  # the arrays Blender imports (contract.formats.mesh)
    subject: str = output_file("")  # mesh: what the model saw, the subject centred on white
    glb: str = output_file("")  # mesh: the same mesh for other tools
    ply: str = output_file("")
    vertices: int = 0
    faces: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # what cleaning dropped, by kind
    seed: int = 0
    model: str = ""
    flipped_normals: bool = False
    frame_size: int = 0
    subject_pixels: int = 0
    axes: str = "Z up (Blender)"
    colors: str = ""  # "scene-linear RGBA", or "" when the mesh has no vertex colours
    triangles_only: bool = False
    source: str = ""  # import_mesh: the file's name as the artist chose it


@dataclass(frozen=True)
class MeshParams(LicencePolicy, TaskParams):
    """Image to 3D: a mesh with vertex colours from one picture of a subject (Shap-E).

    ``background``: "auto" uses the alpha channel when the image has one that is not fully opaque,
    else removes a plain background coloured like the image border; "alpha" requires the alpha
    channel; "none" uses the whole image. ``tolerance``: how far (Euclidean RGB distance, values in
    [0, 1], display-encoded) a pixel may be from the border colour and still be background.
    ``frame_size``: the mesh resolution, cells per side of the grid the surface is extracted on
    (the renderer's marching-cubes ``grid_size``; diffusers' own default for meshes is 128).
    """

    task = "mesh"
    outputs = MeshOutputs

    source: str = "inputs/image.png"  # relative to the job folder: an image file, or .npy (H x W x C float)
    source_colorspace: str = "srgb"  # .npy only: "srgb" (display-encoded values) or "linear" (scene-linear)
    background: str = "auto"
    tolerance: float = bounded(0.08, 0.0, 1.0)
    steps: int = bounded(64, 1, MAX_STEPS)
    guidance: float = bounded(3.0, 0.0, 30.0)
    seed: int = -1  # -1: pick one at random (the one used is recorded in job.json)
    frame_size: int = bounded(64, MIN_MESH_RESOLUTION, MAX_MESH_RESOLUTION, "frame_size (mesh resolution)")
    model: str = ""  # a registry model name; empty: the registry's image_to_3d model

    def validate(self) -> None:
        relative("source", self.source)
        choice("source_colorspace", self.source_colorspace, ("srgb", "linear"))
        choice("background", self.background, MESH_BACKGROUNDS)
        check_seed(self.seed)


@dataclass(frozen=True)
class ImportMeshParams(TaskParams):
    """A GLB, glTF, OBJ or PLY file in the job folder (the add-on copies it there, with a glTF's buffers)."""

    task = "import_mesh"
    outputs = MeshOutputs

    source: str
    name: str = ""  # the file's name as the artist chose it, for messages

    def validate(self) -> None:
        relative("source", self.source)
        if not self.source.lower().endswith(MESH_FORMATS):
            raise ParamError(f"{self.name or self.source}: unsupported format; use {', '.join(MESH_FORMATS)}")
