"""Render passes from Blender, found in its multilayer EXR: Combined, Depth and Normal as numpy arrays.
The ControlNet conversions of these passes are in ``backend.imaging.control``.

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

"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from backend.imaging.exr import ExrImage

PASS_NAMES = ("combined", "depth", "normal")
CAMERA_TYPES = ("PERSP", "ORTHO")
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")

# Cycles and Workbench write this Z where a pixel sees no geometry; any Z at or beyond BACKGROUND_DEPTH_MIN
# counts as background. EEVEE writes about clip_end instead: pass clip_end to background_mask for it.
BACKGROUND_DEPTH = 1.0e10
BACKGROUND_DEPTH_MIN = 1.0e9
CLIP_END_TOLERANCE = 1.0e-3  # depth >= clip_end * (1 - this) is background when clip_end is given

_NORMAL_EPS = 1e-6


class PassError(ValueError):
    """A render pass, a camera description or an argument that cannot be used; the message says which."""


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
