"""Render passes -> ControlNet conditioning images (depth, normal, Canny). Pure numpy + OpenCV.

Each conversion is one function with its convention written down; ``tests/unit/test_passes.py`` checks them
against analytic scenes. What Blender writes into the passes is documented in ``backend.imaging.passes``.

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

import cv2
import numpy as np

from backend.imaging.color import linear_to_srgb
from backend.imaging.passes import PassError, background_mask, unit_normals
from contract.formats.camera import CameraInfo

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
