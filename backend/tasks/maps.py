"""PBR map sets in a job folder: one float EXR per map for Blender to load, and one
multilayer EXR (albedo.R/G/B, normal.X/Y/Z, roughness.Y, ...) that leaves for compositors and
engines with its provenance in the header."""

from __future__ import annotations

from typing import Any

import numpy as np

from backend import __version__
from backend.imaging.exr import write_exr
from backend.tasks.context import JobContext

SOFTWARE = f"Scene Diffusion {__version__}"


def provenance(**facts: Any) -> dict[str, str]:
    """Header attributes: every fact as text, empty ones dropped, the software always named."""
    attributes = {k: str(v) for k, v in facts.items() if v not in (None, "")}
    attributes["software"] = SOFTWARE
    return attributes


def as_rgb(array: np.ndarray) -> np.ndarray:
    """Scalar maps become grey RGB so every image loader shows them the same way."""
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array[:, :, :3]


def write_map_set(ctx: JobContext, layers: dict[str, np.ndarray], attributes: dict[str, str]) -> dict[str, str]:
    """Write ``layers`` (name -> H x W or H x W x 3) and return output name -> relative path."""
    outputs: dict[str, str] = {}
    for name, array in layers.items():
        path = write_exr(ctx.output(f"maps/{name}.exr"), {"": as_rgb(array)}, attributes=attributes)
        outputs[name] = ctx.relative(path)
    combined = write_exr(ctx.output("maps.exr"), layers, half=True, attributes=attributes)
    outputs["maps"] = ctx.relative(combined)
    return outputs
