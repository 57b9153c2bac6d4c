"""Render passes from Blender -> ControlNet conditioning images (depth, normal, Canny). Pure numpy + OpenCV.

Blender renders the scene from the active camera into ONE multilayer EXR (Combined, Depth, Normal) and
writes the camera as ``camera.json`` (``CameraInfo``). Each conversion below is one function with its
convention written down; ``tests/unit/test_passes.py`` checks them against analytic scenes and
``tests/blender/test_passes_blender.py`` pins Blender's side of the conventions with real renders.

What Blender 5.0.1 (the ``bpy`` module, Cycles on the CPU) writes, measured with analytic scenes
-----------------------------------------------------------------------------------------------
- Layers as ``read_exr`` returns them, for a view layer named "ViewLayer" with ``use_pass_z`` and
  ``use_pass_normal`` (``image_settings.media_type = 'MULTI_LAYER_IMAGE'`` then
  ``file_format = 'OPEN_EXR_MULTILAYER'``): ``"ViewLayer.Combined"`` H x W x 4 (channels R, G, B, A),
  ``"ViewLayer.Depth"`` H x W (one channel, ``ViewLayer.Depth.Z``), ``"ViewLayer.Normal"`` H x W x 3
  (``X, Y, Z``). The prefix is the view layer's name.
- Z is PLANAR depth: the distance from the camera's plane along its view axis (-Z of the camera), not
  the distance along the ray. A plane facing a 50 mm / 36 mm perspective camera 5 m away reads 5.0 in
  every pixel, the corner pixels of 64 x 48 too (radial distance would be 5.467 there). Orthographic
  cameras: the same, measured from the camera's plane and independent of ``clip_start`` (camera 8 m
  above a plane: 8.0 everywhere, with clip_start 0.1 or 2.0). So world point = camera origin (or, for
  ortho, the point on the camera plane) + Z * (ray direction scaled to unit length along the view
  axis): ``camera_rays`` gives exactly those rays.
- Where no geometry is hit, Cycles and Workbench write Z = 1e10 (whatever ``clip_end``); EEVEE writes
  about ``clip_end`` (1000.07 for clip_end 1000). ``background_mask`` accepts both.
- Normal is WORLD space, unit length, the shading normal (smooth shading interpolates), always turned
  toward the viewer: a plane whose geometric normal points away from the camera reads the flipped
  normal, like its front face would. Background: (0, 0, 0).
- Combined is scene-linear, premultiplied RGBA. Background alpha is 1 with ``film_transparent`` off
  (colour = world, black without a world), 0 with it on (0, 0, 0, 0).
- Samples: Z comes from one sample, not an average, and reads as the pixel centre's depth: on a plane
  whose Z changes 0.06 per pixel, |Z - analytic at the centre| <= 5e-5 with the default 1.5 px filter,
  at 1 and at 16 samples, which cover the same pixels. So an edge pixel holds either the object's Z or
  1e10. Normal IS averaged over the samples and the pixel filter: at 16 samples a sphere's silhouette
  pixels have normals shorter than 1, and some where Z says background (787 non-zero normals vs 716
  covered Z pixels at 64 x 48); at 1 sample (or ``filter_width`` 0.01) the two agree. ``find_passes``
  renormalises.
- Pixel aspect other than 1: Blender 5.0.1 fails to write the multilayer EXR ("Conflicting attributes
  found for header :: ViewLayer.Depth 'pixelAspectRatio'"); the add-on must render passes at aspect 1.
  ``CameraInfo.view_plane`` follows Blender's rule for it, unchecked against a render for that reason.
- ``camera_rays`` agrees with Cycles' Z to 1e-5 (5e-5 with the default filter) and Normal to 2e-7 on a
  tilted plane, every pixel, for perspective and orthographic cameras, landscape and portrait, sensor
  fit AUTO / HORIZONTAL / VERTICAL, with and without lens shift.
- Engines: ``RenderSettings.engine``'s enum lists only 'BLENDER_EEVEE' when read through bl_rna, but
  'CYCLES' and 'BLENDER_WORKBENCH' are accepted. Workbench writes Combined and Depth (Z planar, 5.000013
  for the 5 m plane; background 1e10) but NO Normal pass, even with ``use_pass_normal`` on. EEVEE writes
  all three (Normal in world space; Z planar, background ~clip_end); with no GPU here it renders through
  software OpenGL (EGL), slowly.
- Timings on this machine (2 cores, import of bpy 0.9-1.0 s not included), 512 x 512, plane + smooth
  UV sphere + sun: Cycles CPU, 1 sample, Z + Normal 0.6-0.8 s per render; Workbench 0.95 s first render,
  0.3 s the next; EEVEE at its default 64 samples 76-78 s per render (52 s even at 64 x 48), with
  ``eevee.taa_render_samples = 1`` 5.6 s first, 2.8 s the next. Render
  passes with Cycles at 1 sample.

Conventions of the outputs
--------------------------
- Depth control (``depth_to_control``): normalised inverse depth, near bright, far dark, as MiDaS-style
  depth ControlNets were trained on; background 0.
- Normal control (``normals_to_control``): camera-space normals encoded as colour; "bae" is what
  ControlNet v1.1 normalbae was trained on, see ``NORMAL_ENCODINGS``.
- Canny (``canny_edges``): OpenCV's Canny on the 8-bit sRGB image, as controlnet_aux's detector does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from backend.imaging.color import linear_to_srgb
from backend.imaging.exr import ExrImage

PASS_NAMES = ("combined", "depth", "normal")
CAMERA_TYPES = ("PERSP", "ORTHO")
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")

# Cycles and Workbench write this Z where a pixel sees no geometry; any Z at or beyond BACKGROUND_DEPTH_MIN
# counts as background. EEVEE writes about clip_end instead: pass clip_end to background_mask for it.
BACKGROUND_DEPTH = 1.0e10
BACKGROUND_DEPTH_MIN = 1.0e9
CLIP_END_TOLERANCE = 1.0e-3  # depth >= clip_end * (1 - this) is background when clip_end is given

# Camera-space normal (x right, y up, z toward the viewer, Blender's camera axes) -> the vector a normal
# ControlNet's colours encode, colour = (sign * n + 1) / 2 per channel.
# "opengl": R = right, G = up, B = toward the viewer.
# "bae": R = LEFT, G = up, B = toward the viewer. NormalBaeDetector (controlnet_aux 0.0.10, as the ControlNet
#   v1.1 annotator) writes colour = (n + 1) / 2 of the network's raw output, channels in its order, so the
#   convention is that of its training normals. ControlNet v1.1's README describes that protocol as NYU-V2's
#   visualisation, "blue is front, red is left, green is top", and says rendered normal maps work when their
#   colours follow it (recalled from the README, not re-read here; the mapping was not checked against the
#   detector's output on a real image). The axis signs match ControlNet 1.0's normal-from-depth annotator
#   too: x from the rightward gradient of inverse depth (positive where the surface turns left), y from the
#   downward one (positive where it turns up) - though 1.0 stored them in reversed channel order. If
#   generated images look lit from the mirrored side, the red sign is the one to flip.
NORMAL_ENCODINGS: dict[str, tuple[float, float, float]] = {
    "bae": (-1.0, 1.0, 1.0),
    "opengl": (1.0, 1.0, 1.0),
}
# Pixels without geometry in a normal control image: the encoding of (0, 0, -1), a normal facing straight
# away from the viewer - no visible surface has it, so the colour means "nothing here" in both encodings.
NORMAL_BACKGROUND_COLOR = (0.5, 0.5, 0.0)

_NORMAL_EPS = 1e-6


class PassError(ValueError):
    """A render pass, a camera description or an argument that cannot be used; the message says which."""


# --- camera -----------------------------------------------------------------------------------------------------


def _number(d: Mapping[str, Any], key: str, *, positive: bool = False) -> float:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PassError(f"camera {key!r} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise PassError(f"camera {key!r} must be greater than 0, got {value!r}")
    return float(value)


def _integer(d: Mapping[str, Any], key: str) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PassError(f"camera {key!r} must be a whole number greater than 0, got {value!r}")
    return value


def _choice(d: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = d[key]
    if value not in allowed:
        raise PassError(f"camera {key!r} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _matrix(value: Any) -> list[list[float]]:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PassError(f"camera 'matrix_world' must be 4 rows of 4 numbers: {exc}") from exc
    if array.shape != (4, 4) or not np.all(np.isfinite(array)):
        raise PassError(f"camera 'matrix_world' must be 4 rows of 4 finite numbers, got shape {array.shape}")
    if np.any(np.linalg.norm(array[:3, :3], axis=0) < 1e-12):
        raise PassError("camera 'matrix_world' has a zero-length axis (scale 0)")
    return [[float(x) for x in row] for row in array]


@dataclass(frozen=True)
class CameraInfo:
    """A Blender camera as the add-on writes it to the job folder (``camera.json``).

    ``matrix_world``: the camera object's 4 x 4 camera-to-world matrix, row-major (``[list(row) for row in
    obj.matrix_world]``); the camera looks down its local -Z, +X is right, +Y up in the image. Lengths in
    Blender units, ``lens`` and sensor sizes in mm, shifts in units of the fitted image dimension (as in
    Blender's UI). ``resolution_x/y``: the rendered size in pixels, ``resolution_percentage`` applied.
    """

    matrix_world: list[list[float]]
    type: str  # "PERSP" | "ORTHO"
    lens: float
    sensor_width: float
    sensor_height: float
    sensor_fit: str  # "AUTO" | "HORIZONTAL" | "VERTICAL"
    shift_x: float
    shift_y: float
    ortho_scale: float
    clip_start: float
    clip_end: float
    resolution_x: int
    resolution_y: int
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CameraInfo:
        """Read the camera.json object; unknown keys are ignored, missing or invalid ones raise PassError."""
        if not isinstance(d, Mapping):
            raise PassError(f"a camera must be a JSON object, got {type(d).__name__}")
        required = ("matrix_world", "type", "lens", "sensor_width", "sensor_height", "sensor_fit", "shift_x",
                    "shift_y", "ortho_scale", "clip_start", "clip_end", "resolution_x", "resolution_y")
        missing = [key for key in required if key not in d]
        if missing:
            raise PassError(f"camera lacks {', '.join(repr(key) for key in missing)}")
        camera = cls(
            matrix_world=_matrix(d["matrix_world"]),
            type=_choice(d, "type", CAMERA_TYPES),
            lens=_number(d, "lens", positive=True),
            sensor_width=_number(d, "sensor_width", positive=True),
            sensor_height=_number(d, "sensor_height", positive=True),
            sensor_fit=_choice(d, "sensor_fit", SENSOR_FITS),
            shift_x=_number(d, "shift_x"),
            shift_y=_number(d, "shift_y"),
            ortho_scale=_number(d, "ortho_scale", positive=True),
            clip_start=_number(d, "clip_start", positive=True),
            clip_end=_number(d, "clip_end", positive=True),
            resolution_x=_integer(d, "resolution_x"),
            resolution_y=_integer(d, "resolution_y"),
            pixel_aspect_x=_number(d, "pixel_aspect_x", positive=True) if "pixel_aspect_x" in d else 1.0,
            pixel_aspect_y=_number(d, "pixel_aspect_y", positive=True) if "pixel_aspect_y" in d else 1.0,
        )
        if camera.clip_end <= camera.clip_start:
            raise PassError(f"camera 'clip_end' ({camera.clip_end}) must be beyond 'clip_start' ({camera.clip_start})")
        return camera

    def to_dict(self) -> dict[str, Any]:
        """The camera.json object (plain JSON types); ``from_dict(to_dict())`` gives the same camera."""
        return {
            "matrix_world": [[float(x) for x in row] for row in self.matrix_world],
            "type": self.type,
            "lens": self.lens,
            "sensor_width": self.sensor_width,
            "sensor_height": self.sensor_height,
            "sensor_fit": self.sensor_fit,
            "shift_x": self.shift_x,
            "shift_y": self.shift_y,
            "ortho_scale": self.ortho_scale,
            "clip_start": self.clip_start,
            "clip_end": self.clip_end,
            "resolution_x": self.resolution_x,
            "resolution_y": self.resolution_y,
            "pixel_aspect_x": self.pixel_aspect_x,
            "pixel_aspect_y": self.pixel_aspect_y,
        }

    def rotation(self) -> np.ndarray:
        """3 x 3 camera-to-world rotation: the columns of ``matrix_world``'s upper 3 x 3, scale removed."""
        linear = np.asarray(self.matrix_world, dtype=np.float64)[:3, :3]
        return linear / np.linalg.norm(linear, axis=0, keepdims=True)

    def location(self) -> np.ndarray:
        return np.asarray(self.matrix_world, dtype=np.float64)[:3, 3].copy()

    def view_plane(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) of the image in camera space: on the plane 1 unit in front of a
        perspective camera, on the camera's own plane for an orthographic one.

        Blender's rule (``BKE_camera_params_compute_viewplane``): the sensor (or ``ortho_scale``) spans the
        fitted dimension; AUTO fits the larger of width * pixel_aspect_x and height * pixel_aspect_y and
        then uses ``sensor_width`` whichever that is; VERTICAL uses ``sensor_height``. Shifts move the
        image by that many fitted-dimension widths.
        """
        width, height = float(self.resolution_x), float(self.resolution_y)
        aspect_x, aspect_y = self.pixel_aspect_x, self.pixel_aspect_y
        ycor = aspect_y / aspect_x
        fit = self.sensor_fit
        if fit == "AUTO":
            fit = "HORIZONTAL" if aspect_x * width >= aspect_y * height else "VERTICAL"
        size = self.ortho_scale if self.type == "ORTHO" else (
            (self.sensor_height if self.sensor_fit == "VERTICAL" else self.sensor_width) / self.lens)
        view = width if fit == "HORIZONTAL" else ycor * height
        pixel = size / view
        dx, dy = self.shift_x * view, self.shift_y * view
        return ((-0.5 * width + dx) * pixel, (0.5 * width + dx) * pixel,
                (-0.5 * ycor * height + dy) * pixel, (0.5 * ycor * height + dy) * pixel)


def camera_rays(camera: CameraInfo) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through the pixel centres: (origins, directions), each H x W x 3 float64, row 0 at the top.

    Directions have unit length ALONG THE VIEW AXIS (not unit length), so ``origin + Z * direction`` is the
    world point a pixel with Blender depth Z sees (Z planar, see the module docstring). Perspective: every
    origin is the camera location. Orthographic: origins lie on the camera's plane, directions all equal
    the view axis.
    """
    width, height = camera.resolution_x, camera.resolution_y
    left, right, bottom, top = camera.view_plane()
    xs = left + (right - left) * (np.arange(width, dtype=np.float64) + 0.5) / width
    ys = top - (top - bottom) * (np.arange(height, dtype=np.float64) + 0.5) / height
    local = np.empty((height, width, 3), dtype=np.float64)
    local[:, :, 0] = xs[None, :]
    local[:, :, 1] = ys[:, None]
    rotation = camera.rotation()
    location = camera.location()
    if camera.type == "ORTHO":
        local[:, :, 2] = 0.0
        origins = local @ rotation.T + location
        directions = np.broadcast_to(-rotation[:, 2], (height, width, 3)).copy()
    else:
        local[:, :, 2] = -1.0
        directions = local @ rotation.T
        origins = np.broadcast_to(location, (height, width, 3)).copy()
    return origins, directions


# --- finding passes in the EXR -------------------------------------------------------------------------------------


@dataclass
class ScenePasses:
    """The passes of one render, as numpy arrays with row 0 at the top (None where the file lacks one).

    combined: H x W x 4 float32, scene-linear premultiplied RGBA (alpha 1 where the file has none).
    depth:    H x W float32, Blender Z: PLANAR distance from the camera plane along the view axis; background
              1e10 (Cycles, Workbench) or about clip_end (EEVEE) - see ``background_mask``.
    normal:   H x W x 3 float32, world-space unit normals, facing the camera; (0, 0, 0) where background.
    """

    combined: np.ndarray | None = None
    depth: np.ndarray | None = None
    normal: np.ndarray | None = None

    def present(self) -> set[str]:
        return {name for name in PASS_NAMES if getattr(self, name) is not None}


# Last component of a layer name (case-insensitive) -> pass.
_PASS_ALIASES = {"combined": "combined", "depth": "depth", "z": "depth", "normal": "normal"}


def _layer_letters(exr: ExrImage) -> dict[str, list[str]]:
    """Layer -> its channel letters in array order, from ``exr.channels`` (which read_exr fills in layer order)."""
    letters: dict[str, list[str]] = {}
    names = list(exr.channels)
    index = 0
    for layer, pixels in exr.layers.items():
        count = 1 if pixels.ndim == 2 else pixels.shape[2]
        chunk = names[index:index + count]
        index += count
        if len(chunk) == count:
            letters[layer] = [name.rpartition(".")[2].upper() for name in chunk]
    return letters


def _channel(pixels: np.ndarray, letters: list[str] | None, wanted: str, default: int) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    index = letters.index(wanted) if letters and wanted in letters else default
    return pixels[:, :, index]


def _as_depth(pixels: np.ndarray, letters: list[str] | None) -> np.ndarray:
    return np.array(_channel(pixels, letters, "Z", 0), dtype=np.float32)


def _as_normal(pixels: np.ndarray, letters: list[str] | None, name: str, where: str) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        raise PassError(f"{where}: normal layer {name!r} needs 3 channels, has shape {pixels.shape}")
    if letters and all(axis in letters for axis in "XYZ"):
        normal = np.stack([pixels[:, :, letters.index(axis)] for axis in "XYZ"], axis=-1)
    else:
        normal = pixels[:, :, :3]
    return unit_normals(normal)


def _as_combined(pixels: np.ndarray, letters: list[str] | None, name: str, where: str) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        raise PassError(f"{where}: combined layer {name!r} needs R, G, B channels, has shape {pixels.shape}")
    if letters and all(c in letters for c in "RGB"):
        planes = [pixels[:, :, letters.index(c)] for c in "RGB"]
        alpha = pixels[:, :, letters.index("A")] if "A" in letters else None
    else:
        planes = [pixels[:, :, i] for i in range(3)]
        alpha = pixels[:, :, 3] if pixels.shape[2] >= 4 else None
    planes.append(alpha if alpha is not None else np.ones(pixels.shape[:2], dtype=np.float32))
    return np.stack(planes, axis=-1).astype(np.float32, copy=False)


def unit_normals(normals: np.ndarray) -> np.ndarray:
    """H x W x 3 -> float32 unit vectors; zero-length, tiny or non-finite vectors become (0, 0, 0).
    (Cycles averages the normals of its samples, so with several samples an edge pixel is shorter than 1.)"""
    n = np.asarray(normals, dtype=np.float32)
    if n.ndim < 1 or n.shape[-1] != 3:
        raise PassError(f"normals must be ... x 3, got shape {n.shape}")
    length = np.sqrt(np.einsum("...i,...i->...", n, n))
    valid = np.isfinite(length) & (length > _NORMAL_EPS)
    out = np.zeros(n.shape, dtype=np.float32)
    np.divide(n, length[..., None], out=out, where=valid[..., None])
    return out


def find_passes(exr: ExrImage, view_layer: str | None = None) -> ScenePasses:
    """The Combined, Depth and Normal passes of a render, by the names Blender writes.

    A layer is taken by its last name component, case-insensitive: "Combined", "Depth" or "Z", "Normal",
    with or without a view-layer prefix ("ViewLayer.Depth", "Depth"); the plain layer "" (R, G, B(, A))
    is the combined image and its "Z" channel, if any, the depth (single-layer EXR). A prefixed layer
    wins over an un-prefixed one. When passes of several view layers are present, ``view_layer`` names
    the one to use (else PassError). Passes the file lacks are None (see ``require_passes``).
    """
    where = str(exr.path) if exr.path is not None else "EXR image"
    letters = _layer_letters(exr)
    candidates: dict[str, list[tuple[str, str]]] = {name: [] for name in PASS_NAMES}  # pass -> [(prefix, layer)]
    for layer in exr.layers:
        prefix, _, last = layer.rpartition(".")
        kind = _PASS_ALIASES.get(last.lower()) if layer else None
        if kind is not None:
            candidates[kind].append((prefix, layer))
    prefixes = sorted({prefix for found in candidates.values() for prefix, _ in found if prefix})
    if view_layer is not None:
        if view_layer not in prefixes:
            raise PassError(f"{where} has no passes of view layer {view_layer!r}; "
                            f"view layers present: {', '.join(map(repr, prefixes)) or 'none'}")
        chosen = view_layer
    elif len(prefixes) > 1:
        raise PassError(f"{where} holds passes of several view layers ({', '.join(map(repr, prefixes))}); "
                        "say which one to use")
    else:
        chosen = prefixes[0] if prefixes else ""

    def pick(kind: str) -> str | None:
        found = candidates[kind]
        for wanted in (chosen, ""):
            for prefix, layer in found:
                if prefix == wanted:
                    return layer
        return None

    passes = ScenePasses()
    if (name := pick("combined")) is not None:
        passes.combined = _as_combined(exr.layers[name], letters.get(name), name, where)
    elif "" in exr.layers and exr.layers[""].ndim == 3:
        passes.combined = _as_combined(exr.layers[""], letters.get(""), "", where)
    if (name := pick("depth")) is not None:
        passes.depth = _as_depth(exr.layers[name], letters.get(name))
    elif "" in exr.layers and "Z" in (letters.get("") or []):
        passes.depth = _as_depth(exr.layers[""], letters.get(""))
    if (name := pick("normal")) is not None:
        passes.normal = _as_normal(exr.layers[name], letters.get(name), name, where)

    sizes = {kind: getattr(passes, kind).shape[:2] for kind in sorted(passes.present())}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{kind} {size[1]}x{size[0]}" for kind, size in sizes.items())
        raise PassError(f"{where}: the passes differ in size ({described})")
    return passes


def require_passes(passes: ScenePasses, needed: Iterable[str], source: str) -> None:
    """Raise PassError naming every pass in ``needed`` ("combined", "depth", "normal") that ``source`` lacks."""
    wanted = set(needed)
    unknown = sorted(wanted - set(PASS_NAMES))
    if unknown:
        raise PassError(f"unknown pass name(s) {', '.join(map(repr, unknown))}; known: {', '.join(PASS_NAMES)}")
    missing = [name for name in PASS_NAMES if name in wanted and getattr(passes, name) is None]
    if missing:
        hints = {"depth": "Z", "normal": "Normal", "combined": "Combined"}
        present = ", ".join(sorted(passes.present())) or "none"
        raise PassError(
            f"{source} lacks the {' and '.join(missing)} pass{'es' if len(missing) > 1 else ''} "
            f"(passes present: {present}); enable {', '.join(hints[m] for m in missing)} in the view layer's "
            "passes and render with Cycles (Workbench writes no Normal pass)")


# --- depth ---------------------------------------------------------------------------------------------------------


def background_mask(depth: np.ndarray, clip_end: float | None = None) -> np.ndarray:
    """H x W bool, True where the pixel sees no geometry.

    Background: Z not finite, Z <= 0, Z >= 1e9 (Cycles and Workbench write 1e10), and, when ``clip_end``
    is given, Z >= clip_end * (1 - 1e-3) (EEVEE writes about clip_end).
    """
    z = np.asarray(depth, dtype=np.float32)
    if z.ndim != 2:
        raise PassError(f"depth must be H x W, got shape {z.shape}")
    limit = BACKGROUND_DEPTH_MIN
    if clip_end is not None:
        if not (math.isfinite(clip_end) and clip_end > 0):
            raise PassError(f"clip_end must be a positive number, got {clip_end!r}")
        limit = min(limit, clip_end * (1.0 - CLIP_END_TOLERANCE))
    with np.errstate(invalid="ignore"):
        visible = np.isfinite(z) & (z > 0) & (z < limit)
    return ~visible


def depth_to_control(depth: np.ndarray, mask: np.ndarray | None = None, near_percentile: float = 1.0,
                     far_percentile: float = 99.0) -> np.ndarray:
    """Blender Z -> H x W float32 in [0, 1] for a depth ControlNet: inverse depth, near bright, far dark.

    Depth ControlNets (SD 1.5 depth, v1.1 depth, SDXL depth) were trained on MiDaS-style relative inverse
    depth normalised to the image. With ``visible = ~mask`` (``mask``: True for background; by default
    ``background_mask(depth)``) and percentiles over the visible pixels only (numpy's linear interpolation)::

        near = percentile(Z[visible], near_percentile)
        far  = percentile(Z[visible], far_percentile)
        control = clip((1 / Z - 1 / far) / (1 / near - 1 / far), 0, 1)   on visible pixels
        control = 0                                                       on background

    so the nearest ``near_percentile`` % of the geometry is 1, the farthest ``100 - far_percentile`` % is 0
    (like the background), and one stray pixel does not stretch the range. If near == far (every visible
    pixel at one depth, such as a wall facing the camera) the visible pixels are 1. No geometry: all 0.
    """
    z = np.asarray(depth, dtype=np.float32)
    if z.ndim != 2:
        raise PassError(f"depth must be H x W, got shape {z.shape}")
    if not (0.0 <= near_percentile < far_percentile <= 100.0):
        raise PassError(f"percentiles must satisfy 0 <= near ({near_percentile}) < far ({far_percentile}) <= 100")
    background = background_mask(z) if mask is None else np.asarray(mask, dtype=bool)
    if background.shape != z.shape:
        raise PassError(f"mask shape {background.shape} differs from the depth's {z.shape}")
    with np.errstate(invalid="ignore"):
        visible = ~background & np.isfinite(z) & (z > 0)
    out = np.zeros(z.shape, dtype=np.float32)
    values = z[visible].astype(np.float64)
    if values.size == 0:
        return out
    near, far = (float(v) for v in np.percentile(values, [near_percentile, far_percentile]))
    if far - near <= 1e-9 * far:
        out[visible] = 1.0
        return out
    inv_far = 1.0 / far
    scaled = (1.0 / values - inv_far) / (1.0 / near - inv_far)
    out[visible] = np.clip(scaled, 0.0, 1.0)
    return out


# --- normals -------------------------------------------------------------------------------------------------------


def normals_to_camera(world_normals: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """World-space normals (... x 3) -> Blender camera space: +X right, +Y up, +Z toward the viewer (the camera
    looks down -Z). A pure rotation by the transpose of ``camera.rotation()`` (scale removed); zeros stay zero."""
    n = np.asarray(world_normals, dtype=np.float32)
    if n.ndim < 1 or n.shape[-1] != 3:
        raise PassError(f"normals must be ... x 3, got shape {n.shape}")
    rotation = camera.rotation().astype(np.float32)
    return np.asarray(n @ rotation, dtype=np.float32)  # row vectors: n @ R == (R^T n)^T


def normals_to_control(world_normals: np.ndarray, camera: CameraInfo, encoding: str = "bae",
                       mask: np.ndarray | None = None) -> np.ndarray:
    """World-space normals -> H x W x 3 float32 colour in [0, 1] for a normal ControlNet.

    n = unit camera-space normal (``normals_to_camera``: x right, y up, z toward the viewer);
    colour = (sign * n + 1) / 2 with sign = ``NORMAL_ENCODINGS[encoding]``:
      "opengl": (x, y, z)  - R right, G up, B toward the viewer; a surface facing the camera is (0.5, 0.5, 1).
      "bae":    (-x, y, z) - R LEFT, G up, B toward the viewer ("blue is front, red is left, green is top"):
                ControlNet v1.1 normalbae's convention, see ``NORMAL_ENCODINGS`` for how sure that is.
    Background (``mask`` True; by default where the normal is zero or not finite) is
    ``NORMAL_BACKGROUND_COLOR`` = (0.5, 0.5, 0), the encoding of a normal facing straight away.
    """
    if encoding not in NORMAL_ENCODINGS:
        raise PassError(f"normal encoding must be one of {', '.join(NORMAL_ENCODINGS)}, got {encoding!r}")
    world = np.asarray(world_normals, dtype=np.float32)
    if world.ndim != 3 or world.shape[2] != 3:
        raise PassError(f"normals must be H x W x 3, got shape {world.shape}")
    n = unit_normals(normals_to_camera(world, camera))
    background = ~np.any(n != 0.0, axis=2)
    if mask is not None:
        extra = np.asarray(mask, dtype=bool)
        if extra.shape != background.shape:
            raise PassError(f"mask shape {extra.shape} differs from the normals' {background.shape}")
        background |= extra
    sign = np.asarray(NORMAL_ENCODINGS[encoding], dtype=np.float32)
    colour = np.clip((n * sign + 1.0) * 0.5, 0.0, 1.0).astype(np.float32)
    colour[background] = np.asarray(NORMAL_BACKGROUND_COLOR, dtype=np.float32)
    return colour


# --- Canny ---------------------------------------------------------------------------------------------------------


def canny_edges(combined_rgba: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Combined pass (H x W x 3 or x 4 scene-linear, premultiplied) -> H x W float32 edge map, 1 on edges, else 0.

    The colour is taken over black (premultiplied RGB as is), encoded to sRGB, clipped to [0, 1] and rounded
    to 8 bits, then ``cv2.Canny(rgb8, low, high)`` on the three channels - what controlnet_aux's Canny
    detector runs on an 8-bit RGB image (default thresholds 100 / 200, 3 x 3 Sobel, L1 gradient).
    Thresholds need 0 <= low < high <= 1000.
    """
    rgba = np.asarray(combined_rgba, dtype=np.float32)
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
        raise PassError(f"the combined image must be H x W x 3 or H x W x 4, got shape {rgba.shape}")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PassError(f"Canny {name} threshold must be a number, got {value!r}")
    if not (0 <= low < high <= 1000):
        raise PassError(f"Canny thresholds must satisfy 0 <= low < high <= 1000, got low {low}, high {high}")
    srgb = np.nan_to_num(linear_to_srgb(rgba[:, :, :3]), nan=0.0, posinf=1.0, neginf=0.0)
    rgb8 = (np.clip(srgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    edges = cv2.Canny(np.ascontiguousarray(rgb8), float(low), float(high))
    return (edges > 0).astype(np.float32)


def conditioning_rgb(image: np.ndarray) -> np.ndarray:
    """A control image as H x W x 3 float32 for a pipeline: H x W or H x W x 1 repeated to grey RGB,
    H x W x 3 as is, H x W x 4 without its alpha."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise PassError(f"a conditioning image must be H x W, or H x W x 1, 3 or 4, got shape {np.shape(image)}")
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])
