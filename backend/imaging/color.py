"""Colour transfer functions: the exact piecewise sRGB curves (IEC 61966-2-1) and Rec.709 luminance.

Float32 in, float32 out. Values outside [0, 1] are not clipped: the linear segment continues
below zero and the power segment above one, so scene-linear HDR values survive a round trip.
"""

from __future__ import annotations

import numpy as np

# Rec.709 / sRGB primaries, D65: Y from linear R, G, B.
REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

_SRGB_KNEE = np.float32(0.04045)  # encoded value where the linear segment ends
_LINEAR_KNEE = np.float32(0.0031308)  # the same point on the linear side


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values -> scene-linear (x / 12.92 below the knee, ((x + 0.055) / 1.055) ** 2.4 above)."""
    x = np.asarray(x, dtype=np.float32)
    # The power runs on max(x, knee) so negative inputs never reach it (no NaN warnings); in place,
    # because fresh full-size temporaries cost more (page faults) than the arithmetic.
    out = np.maximum(x, _SRGB_KNEE, out=np.empty_like(x))
    out += np.float32(0.055)
    out *= np.float32(1 / 1.055)
    np.power(out, np.float32(2.4), out=out)
    np.multiply(x, np.float32(1 / 12.92), out=out, where=x <= _SRGB_KNEE)
    return out


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Scene-linear -> sRGB-encoded (12.92 x below the knee, 1.055 x ** (1 / 2.4) - 0.055 above)."""
    x = np.asarray(x, dtype=np.float32)
    out = np.maximum(x, _LINEAR_KNEE, out=np.empty_like(x))
    np.power(out, np.float32(1 / 2.4), out=out)
    out *= np.float32(1.055)
    out -= np.float32(0.055)
    np.multiply(x, np.float32(12.92), out=out, where=x <= _LINEAR_KNEE)
    return out


def luminance(linear_rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 (or x 4, alpha ignored) scene-linear RGB -> H x W relative luminance Y (Rec.709 weights)."""
    rgb = np.asarray(linear_rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"luminance needs an H x W x 3 or H x W x 4 image, got shape {rgb.shape}")
    # A matrix-vector product: one pass over the pixels, no per-channel temporaries.
    return rgb[:, :, :3] @ REC709_LUMA
