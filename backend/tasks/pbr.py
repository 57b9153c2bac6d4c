"""Colour image -> PBR maps (albedo, normal, roughness, metallic, AO, height), by image
filters or by Marigold's learned intrinsics and normals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import read_exr
from backend.imaging.image_io import is_greyscale, read_image
from backend.imaging.map_files import provenance, write_map_set
from backend.imaging.pbr import PbrFilterSettings, PbrMaps, derive_maps
from backend.tasks.context import JobContext, invalid
from contract.tasks import PbrOutputs, PbrParams


def load_color(path: Path, colorspace: str) -> np.ndarray:
    """The source as scene-linear H x W x 3 float32, with a clear error for what is not colour."""
    if not path.is_file():
        raise invalid(f"source image {path} does not exist")
    try:
        if path.suffix == ".npy":
            pixels = np.load(path)
        elif path.suffix.lower() == ".exr":
            pixels = read_exr(path).layers.get("")
            if pixels is None:
                raise ValueError("it has no plain R, G, B channels")
        else:
            if is_greyscale(path):
                raise ValueError("it has a single (grey) channel")
            pixels = read_image(path)
    except (OSError, ValueError) as exc:
        raise invalid(f"{path.name} is not a readable image: {exc}") from None
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] < 3 or 0 in pixels.shape:
        raise invalid(f"{path.name} is {'x'.join(map(str, pixels.shape))}: PBR maps need a colour "
                      "(RGB) image with at least one pixel",
                      "use a colour image; a single-channel image has no colour to derive from")
    rgb = pixels[:, :, :3]
    return srgb_to_linear(rgb) if colorspace == "srgb" else rgb


def settings_from(params: PbrParams) -> PbrFilterSettings:
    return PbrFilterSettings(normal_strength=params.normal_strength, detail_radius=params.detail_radius,
                       invert_height=params.invert_height, roughness_base=params.roughness_base,
                       roughness_contrast=params.roughness_contrast, ao_radius=params.ao_radius,
                       ao_strength=params.ao_strength, wrap=params.seamless)


def run(ctx: JobContext, params: PbrParams) -> PbrOutputs:
    color = load_color(ctx.input(params.source), params.source_colorspace)
    ctx.progress(0, 1, message="deriving maps")
    if params.method == "marigold":
        from backend.tasks.pbr_marigold import marigold_maps

        maps = marigold_maps(ctx, color, params, settings_from(params))
    else:
        maps = derive_maps(color, settings_from(params))
    ctx.check_cancelled()
    attributes = provenance(**{**params.attributes, "method": params.method, "models": ctx.provenance_models()})
    files, combined = write_map_set(ctx.output, maps.as_layers(), attributes)
    ctx.progress(1, 1)
    return outputs(ctx, maps, files, combined, params.method)


def outputs(ctx: JobContext, maps: PbrMaps, files: dict[str, Path], combined: Path, method: str) -> PbrOutputs:
    height, width = maps.height.shape
    return PbrOutputs(maps={name: ctx.relative(path) for name, path in files.items()},
                      maps_exr=ctx.relative(combined), method=method, width=width, height=height,
                      roughness_mean=round(float(maps.roughness.mean()), 4))
