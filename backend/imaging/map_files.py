"""PBR map sets on disk: one float EXR per map for Blender to load, and one multilayer EXR (albedo.R/G/B,
normal.X/Y/Z, roughness.Y, ...) that leaves for compositors and engines with its provenance in the header."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backend import __version__
from backend.imaging.exr import write_exr

SOFTWARE = f"Scene Diffusion {__version__}"


def provenance(**facts: Any) -> dict[str, str]:
    """Header attributes: every fact as text, empty ones dropped, the software always named."""
    attributes = {k: str(v) for k, v in facts.items() if v not in (None, "")}
    attributes["software"] = SOFTWARE
    return attributes


def as_rgb(array: np.ndarray) -> np.ndarray:
    """Scalar maps become grey RGB so every image loader shows them the same way."""
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array[:, :, :3]


def write_map_set(output: Callable[[str], Path], layers: dict[str, np.ndarray],
                  attributes: dict[str, str]) -> tuple[dict[str, Path], Path]:
    """Write ``layers`` (name -> H x W or H x W x 3) as ``maps/<name>.exr`` each and all of them as ``maps.exr``,
    at the paths ``output(name)`` gives; returns (map name -> file, the multilayer file)."""
    maps = {name: write_exr(output(f"maps/{name}.exr"), {"": as_rgb(array)}, attributes=attributes)
            for name, array in layers.items()}
    return maps, write_exr(output("maps.exr"), layers, half=True, attributes=attributes)
