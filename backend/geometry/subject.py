"""The subject of a picture, centred on white: what an image-to-3D model such as Shap-E expects.

:func:`subject_image` separates the subject from its background (by the alpha channel, or as the
pixels unlike a plain border-coloured background), crops to it with a margin and pads to a square.
Values are display-encoded (sRGB) floats in [0, 1]: the distance to the border colour is measured in
those, and the result goes to the model as an ordinary picture. Pure numpy (and OpenCV's connected
components).
"""

from __future__ import annotations

import cv2
import numpy as np

MODES = ("auto", "alpha", "none")
OPAQUE = 1.0 - 0.5 / 255.0  # alpha at or above this is opaque in an 8-bit image
VISIBLE = 0.5 / 255.0  # alpha below this is fully transparent
MARGIN = 0.1  # around the subject, as a fraction of its larger side
MIN_PART = 0.1  # a separate part of the subject is kept when it has this fraction of the largest's area


class SubjectError(ValueError):
    """No subject to be found; the message says why and what to change."""


def subject_image(image: np.ndarray, mode: str = "auto", tolerance: float = 0.08,
                  margin: float = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb_on_white, mask)`` for an H x W x C image (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA).

    ``mode``:

    - ``"alpha"``: the alpha channel is the subject's coverage (straight alpha); the colours are
      composited over white.
    - ``"auto"``: alpha when the image has an alpha channel that is not fully opaque; otherwise the
      background is the plain colour of the image's border (the median of its outermost pixels):
      pixels within ``tolerance`` of it (Euclidean RGB distance) that connect to the border are
      background, so background-coloured details inside the subject stay. Of the rest, the largest
      connected part is the subject, with any other part at least MIN_PART of its size (specks go).
    - ``"none"``: the whole image (composited over white when it has alpha).

    The result is cropped to the subject's bounding box plus ``margin`` of its larger side and padded
    with white to a square, the subject centred: ``rgb_on_white`` S x S x 3 float32 in [0, 1] and
    ``mask`` S x S bool (True on the subject) in that frame.

    Raises SubjectError for an image with no pixels, a fully transparent one, "alpha" without an
    alpha channel, and an image that is background everywhere.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.size == 0 or pixels.shape[2] == 0:
        raise SubjectError(f"the image is empty ({'x'.join(map(str, pixels.shape))}): it has no pixels")
    channels = pixels.shape[2]
    if channels > 4:
        raise SubjectError(f"the image has {channels} channels; expected grey, grey + alpha, RGB or RGBA")
    has_alpha = channels in (2, 4)
    colour = pixels[:, :, :channels - 1] if has_alpha else pixels
    rgb = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour
    rgb = np.clip(np.nan_to_num(rgb), 0.0, 1.0)
    alpha = np.clip(np.nan_to_num(pixels[:, :, -1]), 0.0, 1.0) if has_alpha else None

    if mode == "alpha" and alpha is None:
        raise SubjectError("the image has no alpha channel: choose the automatic background removal, "
                           "or keep the whole image")
    use_alpha = alpha is not None and (mode == "alpha" or (mode == "auto" and float(alpha.min()) < OPAQUE))
    if use_alpha:
        assert alpha is not None
        if float(alpha.max()) < VISIBLE:
            raise SubjectError("the image is fully transparent: there is no subject to see")
        coverage = alpha
        mask = alpha >= 0.5 if float(alpha.max()) >= 0.5 else alpha >= VISIBLE
        box = _bounds(alpha >= VISIBLE)
    elif mode == "none":
        coverage = alpha if alpha is not None else np.ones(rgb.shape[:2], np.float32)
        mask = np.ones(rgb.shape[:2], bool)
        box = (0, rgb.shape[0], 0, rgb.shape[1])
    else:
        mask = _foreground(rgb, tolerance)
        coverage = mask.astype(np.float32)
        box = _bounds(mask)
    on_white = rgb * coverage[:, :, None] + (1.0 - coverage[:, :, None])
    return _square(on_white.astype(np.float32), mask, box, margin if mode != "none" else 0.0)


def border_colour(rgb: np.ndarray) -> np.ndarray:
    """The median colour of the outermost rows and columns."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]], axis=0)
    return np.median(border, axis=0).astype(np.float32)


def _foreground(rgb: np.ndarray, tolerance: float) -> np.ndarray:
    distance = np.linalg.norm(rgb - border_colour(rgb), axis=2)
    like_background = (distance <= tolerance).astype(np.uint8)
    # Background: the background-coloured regions that reach the border (label 0: all other pixels).
    _, labels = cv2.connectedComponents(like_background, connectivity=4)
    touching = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, touching[touching != 0])
    foreground = (~background).astype(np.uint8)
    parts, part_labels, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    if parts <= 1:
        raise SubjectError(f"no subject found: the whole image is within {tolerance:g} of its border colour; "
                           "lower the tolerance, give the image a transparent background, or keep the whole "
                           "image")
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= MIN_PART * areas.max()) + 1
    return np.isin(part_labels, keep)


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _square(rgb: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
            margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Crop to ``box`` (top, bottom, left, right) and pad with white to a square with ``margin``."""
    top, bottom, left, right = box
    crop, crop_mask = rgb[top:bottom, left:right], mask[top:bottom, left:right]
    height, width = crop.shape[:2]
    side = max(height, width) + 2 * int(round(margin * max(height, width)))
    out = np.ones((side, side, 3), np.float32)
    out_mask = np.zeros((side, side), bool)
    y, x = (side - height) // 2, (side - width) // 2
    out[y:y + height, x:x + width] = crop
    out_mask[y:y + height, x:x + width] = crop_mask
    return out, out_mask
