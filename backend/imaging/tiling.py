"""How well an image tiles: the jump across its wrap-around edge against its own texture."""

from __future__ import annotations

import numpy as np


def seam_ratio(image: np.ndarray, axis: int) -> float:
    """Mean absolute step across the wrap seam divided by the mean step between
    neighbouring interior rows/columns along ``axis`` (1: horizontal tiling, 0: vertical).
    About 1 for a texture that tiles; well above 1 where a seam shows."""
    img = np.asarray(image, dtype=np.float64)
    steps = np.abs(np.diff(img, axis=axis)).mean()
    first = np.take(img, 0, axis=axis)
    last = np.take(img, -1, axis=axis)
    seam = np.abs(first - last).mean()
    return float(seam / steps) if steps > 0 else (0.0 if seam == 0 else float("inf"))
