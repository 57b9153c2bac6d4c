"""PBR material maps derived from one colour image: albedo, height, normal, roughness, AO, metallic.

Heuristics, not measurement: a photo or a generated texture has no depth, so height is the
image's lightness detail, and the other maps follow from height and colour. Every filter is
written so that a seamless input gives seamless maps (``wrap=True``): images are padded with
their own opposite edges before filtering and cropped after, so the result is exactly periodic
and ``derive_maps(np.roll(img)) == np.roll(derive_maps(img))`` up to float rounding.

Coordinates and the normal convention
-------------------------------------
Row 0 of every array is the TOP row of the image (as stored in PNG and EXR files). Tangent
space is x to the right (increasing column), y UP the image (decreasing row), z out of the
surface toward the viewer. For a height field h(row, col) in height units::

    n = normalize(-s * dh/dx, -s * dh/dy, 1)   with dh/dx = dh/dcol and dh/dy = -dh/drow

so a ramp rising to the right tilts the normal to -x, and a ramp rising toward the top of the
image tilts it to -y. That is the OpenGL convention (green = up, Blender's and glTF's). DirectX
(Unreal, Substance's "DirectX" preset) stores the same vectors with y negated (green = down).
Encoded maps hold (n + 1) / 2 per component.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import cv2
import numpy as np

from backend.imaging.color import linear_to_srgb, luminance

NORMAL_CONVENTIONS = ("opengl", "directx")  # OpenGL: +Y up (green up, Blender's); DirectX: green flipped

# Height is standardised so that +-3 standard deviations of lightness detail span [0, 1].
_HEIGHT_SIGMAS = 3.0
# Roughness moves by this much per standard deviation of lightness (times roughness_contrast).
_ROUGHNESS_PER_SIGMA = 0.25


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"PBR setting {name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"PBR setting {name} must be between {low:g} and {high:g}, got {value:g}")


@dataclass(frozen=True)
class PbrFilterSettings:
    """How the maps are derived. Distances are in pixels of the source image."""

    normal_strength: float = 1.0  # slope multiplier: normals tilt by strength * height_depth * dh/dpx (0: flat)
    detail_radius: float = 16.0  # px; height = lightness high-passed by a Gaussian of this sigma (0: no high-pass)
    invert_height: bool = False  # dark = high instead of bright = high (e.g. for embossed dark paint)
    roughness_contrast: float = 1.0  # how strongly lightness moves roughness; negative: brighter is rougher
    roughness_base: float = 0.6  # roughness of a pixel of average lightness
    ao_radius: float = 12.0  # px; largest distance AO looks for occluders (0: no AO, all ones)
    ao_strength: float = 1.0  # 1: physically motivated estimate; more exaggerates, 0 disables
    normal_convention: str = "opengl"  # one of NORMAL_CONVENTIONS
    wrap: bool = True  # seamless source: every filter wraps around the edges
    height_depth: float = 16.0  # px; how deep the full 0..1 height range is, for normals and AO

    def __post_init__(self) -> None:
        _check_range("normal_strength", self.normal_strength, 0.0, 100.0)
        _check_range("detail_radius", self.detail_radius, 0.0, 1024.0)
        _check_range("roughness_contrast", self.roughness_contrast, -10.0, 10.0)
        _check_range("roughness_base", self.roughness_base, 0.0, 1.0)
        _check_range("ao_radius", self.ao_radius, 0.0, 1024.0)
        _check_range("ao_strength", self.ao_strength, 0.0, 10.0)
        _check_range("height_depth", self.height_depth, 1e-6, 1e6)
        if self.normal_convention not in NORMAL_CONVENTIONS:
            raise ValueError(
                f"PBR setting normal_convention must be one of {', '.join(NORMAL_CONVENTIONS)}, "
                f"got {self.normal_convention!r}"
            )
        for name in ("invert_height", "wrap"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PBR setting {name} must be True or False, got {getattr(self, name)!r}")


DEFAULT_SETTINGS = PbrFilterSettings()


@dataclass
class PbrMaps:
    """One material's maps, all H x W (x 3) float32 with row 0 at the top."""

    albedo: np.ndarray  # H x W x 3, scene-linear, clipped to [0, 1]
    height: np.ndarray  # H x W in [0, 1], 0.5 = average
    normal: np.ndarray  # H x W x 3, unit tangent-space vectors encoded as (n + 1) / 2 in the chosen convention
    roughness: np.ndarray  # H x W in [0, 1]
    ao: np.ndarray  # H x W in [0, 1], 1 = unoccluded
    metallic: np.ndarray  # H x W, zeros: lightness says nothing about metal

    def as_layers(self) -> dict[str, np.ndarray]:
        """Layer name -> array, always in this order (albedo, normal, roughness, ao, height, metallic)."""
        return {
            "albedo": self.albedo,
            "normal": self.normal,
            "roughness": self.roughness,
            "ao": self.ao,
            "height": self.height,
            "metallic": self.metallic,
        }


# --- filters -------------------------------------------------------------------------------------------------------


def _half_width(sigma: float) -> int:
    """Gaussian kernels stop at 3 sigma: 0.3% of the weight, invisible in these maps, and a third
    faster than OpenCV's default of 4 sigma."""
    return max(1, math.ceil(3.0 * sigma))


def _blur_into(source: np.ndarray, pad: int, sigma: float, wrap: bool, scratch: np.ndarray) -> np.ndarray:
    """Gaussian blur of sigma px; returns the H x W result as a view of ``scratch`` (same shape as source).

    wrap: ``source`` is the image with ``pad`` px of its opposite edges around it (at least the
    kernel's half width), so the centre is blurred exactly periodically (OpenCV's filters do not
    support BORDER_WRAP). Else ``source`` is the image itself and the border is mirrored."""
    half = _half_width(sigma)
    ksize = (2 * half + 1, 2 * half + 1)
    if not wrap:
        cv2.GaussianBlur(source, ksize, sigma, dst=scratch, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        return scratch
    rows, cols = source.shape[0] - 2 * pad, source.shape[1] - 2 * pad
    start = pad - half  # only as much padding as this kernel needs: less work for the small ones
    window = np.s_[start:start + rows + 2 * half, start:start + cols + 2 * half]
    cv2.GaussianBlur(source[window], ksize, sigma, dst=scratch[window], sigmaY=sigma,
                     borderType=cv2.BORDER_REFLECT_101)
    return scratch[pad:pad + rows, pad:pad + cols]


def _blur(image: np.ndarray, sigma: float, wrap: bool) -> np.ndarray:
    """Gaussian blur of an H x W float32 image into a new array (a view of it when wrapping)."""
    if sigma <= 0:
        return image.copy()
    pad = _half_width(sigma) if wrap else 0
    work = np.pad(image, pad, mode="wrap") if wrap else image.copy()
    return _blur_into(work, pad, sigma, wrap, work)  # in place: one full-size allocation, not two


def _column_differences(h: np.ndarray, out: np.ndarray, wrap: bool) -> None:
    """Central differences along axis 1 into ``out``; slices instead of a padded copy of the image."""
    cols = h.shape[1]
    np.subtract(h[:, 2:], h[:, :-2], out=out[:, 1:-1])
    if wrap:  # the neighbour across the edge is the opposite edge
        np.subtract(h[:, 1 % cols], h[:, -1], out=out[:, 0])
        np.subtract(h[:, 0], h[:, -2 % cols], out=out[:, -1])
    else:  # linear extrapolation past the edge: one-sided difference, doubled against the * 0.5 below
        np.subtract(h[:, 1 % cols], h[:, 0], out=out[:, 0])
        out[:, 0] *= np.float32(2.0)
        np.subtract(h[:, -1], h[:, -2 % cols], out=out[:, -1])
        out[:, -1] *= np.float32(2.0)
    out *= np.float32(0.5)


def _gradients(height: np.ndarray, wrap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Central differences (d/dcol, d/drow) in height units per pixel. wrap: across the opposite edge;
    else one-sided differences on the border pixels."""
    d_col = np.empty_like(height)
    d_row = np.empty_like(height)
    _column_differences(height, d_col, wrap)
    _column_differences(height.T, d_row.T, wrap)
    return d_col, d_row


def _standardise(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(values - mean) / std as float32, into ``out`` if given (may be ``values``); zeros for a
    constant image. OpenCV accumulates the statistics in double precision."""
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(values))
    if out is None:
        out = np.empty(values.shape, dtype=np.float32)
    if not std > 1e-12 * max(1.0, abs(mean)):
        out[...] = 0.0
        return out
    np.subtract(values, np.float32(mean), out=out)
    out *= np.float32(1.0 / std)
    return out


# --- maps ----------------------------------------------------------------------------------------------------------


def _checked_color(color_linear: np.ndarray) -> np.ndarray:
    color = np.asarray(color_linear)
    if color.ndim == 2 or (color.ndim == 3 and color.shape[2] == 1):
        raise ValueError(f"PBR maps need a colour image (H x W x 3 or x 4), got a single-channel one {color.shape}")
    if color.ndim != 3 or color.shape[2] not in (3, 4):
        raise ValueError(f"PBR maps need an H x W x 3 or H x W x 4 colour image, got shape {color.shape}")
    if color.shape[0] == 0 or color.shape[1] == 0:
        raise ValueError(f"PBR maps need a non-empty image, got shape {color.shape}")
    if not np.issubdtype(color.dtype, np.number) or np.issubdtype(color.dtype, np.complexfloating):
        raise ValueError(f"PBR maps need a real-valued image, got dtype {color.dtype}")
    rgb = color[:, :, :3].astype(np.float32, copy=False)
    # One float64 sum is cheaper than an H x W x 3 boolean mask; any NaN or inf makes it non-finite.
    if not np.isfinite(rgb.sum(dtype=np.float64)):
        raise ValueError("PBR maps need finite colour values; the image holds NaN or infinity")
    return rgb


def _lightness(rgb: np.ndarray) -> np.ndarray:
    """Perceptual lightness in [0, 1]: Rec.709 luminance, clipped, sRGB-encoded. Height and roughness
    work on this rather than on linear luminance, which would crush every dark detail to nothing."""
    y = luminance(rgb)
    np.clip(y, 0.0, 1.0, out=y)
    return linear_to_srgb(y)


def _height_from_lightness(lightness: np.ndarray, detail_radius: float, invert: bool, wrap: bool) -> np.ndarray:
    if detail_radius > 0:
        detail = _blur(lightness, detail_radius, wrap)
        np.subtract(lightness, detail, out=detail)  # in place: the blur's buffer becomes the detail
    else:
        detail = lightness
    height = _standardise(detail)  # a fresh contiguous array, whatever detail is a view of
    height *= np.float32(0.5 / _HEIGHT_SIGMAS)
    height += np.float32(0.5)
    np.clip(height, 0.0, 1.0, out=height)
    if invert:
        np.subtract(np.float32(1.0), height, out=height)
    return height


def height_from_color(color_linear: np.ndarray, detail_radius: float = 16.0, invert: bool = False,
                      wrap: bool = True) -> np.ndarray:
    """H x W height in [0, 1] from scene-linear colour: lightness minus its Gaussian blur of sigma
    ``detail_radius`` (the broad shading that is lighting rather than relief), standardised so that
    +-3 standard deviations span [0, 1] with the average at 0.5, clipped beyond. Bright is high
    unless ``invert``. A constant image gives 0.5 everywhere."""
    return _height_from_lightness(_lightness(_checked_color(color_linear)), detail_radius, invert, wrap)


def normal_from_height(height: np.ndarray, strength: float, convention: str = "opengl",
                       wrap: bool = True) -> np.ndarray:
    """H x W x 3 UNIT tangent-space normals (not encoded) of an H x W height field.

    ``n = normalize(-s * dh/dx, -s * dh/dy, 1)`` with x = column (right) and y = UP the image, i.e.
    dh/dy = -dh/drow since row 0 is the top row; s = ``strength``, slopes in height units per pixel.
    A height rising to the right gives n.x < 0; rising toward the top gives n.y < 0 in "opengl"
    and n.y > 0 in "directx" (y negated). Derivatives are central differences (wrapping when
    ``wrap``, one-sided on the border pixels otherwise)."""
    if convention not in NORMAL_CONVENTIONS:
        raise ValueError(f"normal convention must be one of {', '.join(NORMAL_CONVENTIONS)}, got {convention!r}")
    h = np.asarray(height, dtype=np.float32)
    if h.ndim != 2 or h.size == 0:
        raise ValueError(f"normal_from_height needs a non-empty H x W height field, got shape {h.shape}")
    nx, ny = _gradients(h, wrap)  # d/dcol, d/drow; scaled in place below
    s = np.float32(strength)
    nx *= -s
    # OpenGL: n.y = -s * dh/dy = +s * dh/drow. DirectX stores the negated y.
    ny *= s if convention == "opengl" else -s
    inv_len: np.ndarray = cv2.magnitude(nx, ny)  # 1 / sqrt(nx^2 + ny^2 + 1), built in place
    np.multiply(inv_len, inv_len, out=inv_len)
    inv_len += np.float32(1.0)
    np.sqrt(inv_len, out=inv_len)
    np.divide(np.float32(1.0), inv_len, out=inv_len)
    nx *= inv_len
    ny *= inv_len
    return cv2.merge((nx, ny, inv_len))


def _encode_in_place(n: np.ndarray) -> np.ndarray:
    n += np.float32(1.0)
    n *= np.float32(0.5)
    return np.clip(n, 0.0, 1.0, out=n)


def encode_normal(n: np.ndarray) -> np.ndarray:
    """Unit vectors in [-1, 1] -> colours in [0, 1] as (n + 1) / 2 (flat = (0.5, 0.5, 1))."""
    return _encode_in_place(np.array(n, dtype=np.float32))


def decode_normal(rgb: np.ndarray) -> np.ndarray:
    """Colours (n + 1) / 2 -> unit vectors, renormalised (quantisation and filtering shorten them).
    A zero-length vector decodes to (0, 0, 1), the flat normal."""
    n = np.asarray(rgb, dtype=np.float32) * np.float32(2.0)
    n -= np.float32(1.0)
    length = np.sqrt(np.einsum("...c,...c->...", n, n))
    flat = length < 1e-12
    n /= np.where(flat, np.float32(1.0), length)[..., None]
    n[flat] = (0.0, 0.0, 1.0)
    return n


def _roughness_from_lightness(lightness: np.ndarray, base: float, contrast: float) -> np.ndarray:
    rough = _standardise(lightness)
    rough *= np.float32(-_ROUGHNESS_PER_SIGMA * contrast)
    rough += np.float32(base)
    return np.clip(rough, 0.0, 1.0, out=rough)


def roughness_from_color(color_linear: np.ndarray, base: float = 0.6, contrast: float = 1.0) -> np.ndarray:
    """H x W roughness in [0, 1]: ``base`` at the image's average lightness, 0.25 * ``contrast``
    smoother per standard deviation brighter (bright areas of a texture photo are mostly the
    glossy ones catching light; dark ones are pores, cracks and dirt). Pointwise, so it needs no wrap."""
    return _roughness_from_lightness(_lightness(_checked_color(color_linear)), base, contrast)


def ao_from_height(height: np.ndarray, radius: float = 12.0, strength: float = 1.0, depth: float = 16.0,
                   wrap: bool = True) -> np.ndarray:
    """H x W ambient occlusion in [0, 1] (1 = open) from a height field whose 0..1 range is ``depth`` px deep.

    At distances r = radius, radius/2, radius/4 (none below 1 px, except a radius under 1 itself) the
    surrounding surface is taken as the Gaussian mean of height at sigma r; where it stands above the
    pixel, the horizon rises to tan(theta) = (mean - h) * depth / r. The steepest horizon over the
    scales counts (a narrow crack is dark even inside a flat area); for a horizon at elevation theta
    all around, the cosine-weighted sky still visible is cos^2(theta), so AO = 1 - strength * sin^2(theta)."""
    h = np.asarray(height, dtype=np.float32)
    if h.ndim != 2 or h.size == 0:
        raise ValueError(f"ao_from_height needs a non-empty H x W height field, got shape {h.shape}")
    if radius <= 0 or strength <= 0:
        return np.ones_like(h)
    sigmas = [s for s in (radius, radius / 2, radius / 4) if s >= 1.0] or [radius]
    # Pad once for the widest kernel; every scale blurs a window of it into one scratch buffer.
    pad = _half_width(max(sigmas)) if wrap else 0
    source = np.pad(h, pad, mode="wrap") if wrap else h
    scratch = np.empty_like(source)
    tan2 = np.zeros_like(h)
    for sigma in sigmas:
        rise = _blur_into(source, pad, sigma, wrap, scratch)
        rise -= h
        np.maximum(rise, 0.0, out=rise)
        rise *= np.float32(depth / sigma)
        np.multiply(rise, rise, out=rise)
        np.maximum(tan2, rise, out=tan2)
    # 1 - strength * sin^2 = 1 - strength + strength * cos^2, with cos^2 = 1 / (1 + tan^2); in place.
    ao = tan2
    ao += np.float32(1.0)
    np.divide(np.float32(strength), ao, out=ao)
    ao += np.float32(1.0 - strength)
    return np.clip(ao, 0.0, 1.0, out=ao)


def derive_maps(color_linear: np.ndarray, settings: PbrFilterSettings = DEFAULT_SETTINGS) -> PbrMaps:
    """All maps from one H x W x 3 (or x 4, alpha ignored) scene-linear colour image.

    Raises ValueError for an empty image, a single-channel one, or NaN / infinite values."""
    rgb = _checked_color(color_linear)
    # A fresh C-ordered copy, whatever the caller's layout: EXR and Blender writers want contiguous planes.
    albedo = np.clip(rgb, 0.0, 1.0, out=np.empty(rgb.shape, dtype=np.float32))
    lightness = _lightness(rgb)
    height = _height_from_lightness(lightness, settings.detail_radius, settings.invert_height, settings.wrap)
    normal = _encode_in_place(normal_from_height(
        height, settings.normal_strength * settings.height_depth, settings.normal_convention, settings.wrap))
    roughness = _roughness_from_lightness(lightness, settings.roughness_base, settings.roughness_contrast)
    ao = ao_from_height(height, settings.ao_radius, settings.ao_strength, settings.height_depth, settings.wrap)
    return PbrMaps(albedo=albedo, height=height, normal=normal, roughness=roughness, ao=ao,
                   metallic=np.zeros(height.shape, dtype=np.float32))


def flip_green(normal: np.ndarray) -> np.ndarray:
    """OpenGL <-> DirectX: the same tangent-space normal with Y pointing the other way."""
    out = normal.copy()
    out[:, :, 1] = 1.0 - out[:, :, 1]
    return out
