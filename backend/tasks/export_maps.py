"""Task "export_maps": maps from Blender (inputs/<map>.npy) -> EXR files (one per map, multilayer or multipart)
or 16-bit PNGs in outputs/export/, each written atomically; the add-on moves them to the artist's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import MAP_CHANNELS, write_exr, write_png16
from backend.imaging.map_files import provenance
from backend.imaging.pbr import flip_green
from backend.tasks.context import JobContext, invalid
from contract.tasks import ExportMapsOutputs, ExportMapsParams
from contract.tasks.pbr import EXPORT_FOLDER

COLOUR_MAPS = {"albedo"}  # DWAA is lossy: fine for colour, never for data maps


def load_maps(ctx: JobContext, params: ExportMapsParams) -> dict[str, np.ndarray]:
    maps: dict[str, np.ndarray] = {}
    for name in params.maps:
        path = ctx.input(params.map_input(name))
        if not path.is_file():
            raise invalid(f"map {name!r} was not written to {path}")
        array = np.load(path).astype(np.float32, copy=False)
        if params.colorspaces.get(name) == "srgb":
            array = srgb_to_linear(array)  # EXR holds scene-linear values
        channels = len(MAP_CHANNELS[name])
        maps[name] = array[:, :, 0] if channels == 1 and array.ndim == 3 else array[:, :, :channels]
    if "normal" in maps and params.normal_convention == "directx":
        maps["normal"] = flip_green(maps["normal"])
    return maps


def run(ctx: JobContext, params: ExportMapsParams) -> ExportMapsOutputs:
    """The files land in outputs/export/ under their final names; the add-on moves them to the artist's folder."""
    folder = ctx.input(EXPORT_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    maps = load_maps(ctx, params)
    attributes = provenance(normal_convention=params.normal_convention, **params.attributes)
    return ExportMapsOutputs(exported=[ctx.relative(p) for p in _write(folder, params, maps, attributes)])


def _write(folder: Path, params: ExportMapsParams, maps: dict[str, np.ndarray],
           attributes: dict[str, str]) -> list[Path]:
    half = params.half
    if params.format == "png16":
        return [write_png16(folder / f"{params.basename}_{name}.png", image) for name, image in maps.items()]
    if params.layout == "separate":
        return [write_exr(folder / f"{params.basename}_{name}.exr", {name: image}, half=half,
                          compression=_compression(params.compression, {name}), attributes=attributes)
                for name, image in maps.items()]
    return [write_exr(folder / f"{params.basename}.exr", maps, half=half,
                      compression=_compression(params.compression, set(maps)), attributes=attributes,
                      multipart=params.layout == "multipart")]


def _compression(chosen: str, names: set[str]) -> str:
    """DWAA only where every map in the file is colour; data maps fall back to lossless ZIP."""
    return "zip" if chosen == "dwaa" and not names <= COLOUR_MAPS else chosen
