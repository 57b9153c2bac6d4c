"""Reading a job's box out of screenshots of Blender's sidebar (numpy only: used inside Blender by the
driver and on the host by the tests).

A capability panel draws its job as a box under its button: a progress row (the bar, then the Cancel
icon) and the step preview below it. Comparing a screenshot taken mid-job with one taken just before the
job started, with the same settings, the first changed row of the sidebar is the top of that box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROW_BAND = 34  # the box's top border and its progress row, in pixels at UI scale 1
PREVIEW_BAND = 200  # the preview under the row (template_icon at scale 8 is 160 px)
PREVIEW_SEEN = 2000  # strongly coloured pixels that make a step preview (of 160 x 160)


@dataclass(frozen=True)
class JobBox:
    top: int  # screen row of the box's first changed line
    cancel: tuple[int, int]  # screen x, y of the Cancel icon's centre
    progress_pixels: int  # pixels of the theme's progress colour in the progress row
    preview_pixels: int  # strongly coloured pixels under it (the noisy or painted step preview)


def crop(screen: np.ndarray, rect: dict[str, int]) -> np.ndarray:
    """``screen`` H x W x 3 (0-255, rows from the top) cut to a rect from the driver's report."""
    return screen[rect["top"]:rect["top"] + rect["height"], rect["left"]:rect["left"] + rect["width"]].astype(float)


def job_box(idle: np.ndarray, mid: np.ndarray, sidebar: dict[str, int],
            progress_colour: list[int]) -> JobBox | None:
    before, after = crop(idle, sidebar), crop(mid, sidebar)
    changed = np.nonzero(np.abs(after - before).max(axis=(1, 2)) > 30)[0]
    if changed.size == 0:
        return None
    top = int(changed[0])
    band = after[top:top + ROW_BAND]
    # The Cancel icon is the rightmost near-white drawing of the row (the bar's text is centred in the bar).
    rows, cols = np.nonzero(band.min(axis=2) >= 190)
    if cols.size == 0:
        return None
    icon = cols >= cols.max() - 16
    x = int(round(cols[icon].mean())) + sidebar["left"]
    y = int(round(rows[icon].mean())) + top + sidebar["top"]
    progress = int((np.abs(band - np.array(progress_colour, dtype=float)).max(axis=2) <= 6).sum())
    below = after[top + ROW_BAND:top + ROW_BAND + PREVIEW_BAND]
    preview = int((below.max(axis=2) - below.min(axis=2) >= 120).sum())
    return JobBox(top + sidebar["top"], (x, y), progress, preview)


def changed_pixels(before: np.ndarray, after: np.ndarray, rect: dict[str, int]) -> int:
    """How many pixels of ``rect`` differ clearly between two screenshots."""
    return int((np.abs(crop(after, rect) - crop(before, rect)).max(axis=2) > 30).sum())
