"""Maps from Blender (inputs/<map>.npy) -> EXR files (one per map, multilayer or multipart)
or 16-bit PNGs in a folder of the artist's choosing, each written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from backend import protocol
from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import MAP_CHANNELS, write_exr, write_png16
from backend.params import ExportMapsParams, ParamError
from backend.tasks.context import JobContext, TaskError, TaskOutput
from backend.tasks.maps import provenance

COLOUR_MAPS = {"albedo"}  # DWAA is lossy: fine for colour, never for data maps


def flip_green(normal: np.ndarray) -> np.ndarray:
    """OpenGL <-> DirectX: the same tangent-space normal with Y pointing the other way."""
    out = normal.copy()
    out[:, :, 1] = 1.0 - out[:, :, 1]
    return out


def load_maps(ctx: JobContext, params: ExportMapsParams) -> dict[str, np.ndarray]:
    maps: dict[str, np.ndarray] = {}
    for name in params.maps:
        path = ctx.job_dir / "inputs" / f"{name}.npy"
        if not path.is_file():
            raise TaskError(protocol.INVALID_PARAMS, f"map {name!r} was not written to {path}")
        array = np.load(path).astype(np.float32, copy=False)
        if params.colorspaces.get(name) == "srgb":
            array = srgb_to_linear(array)  # EXR holds scene-linear values
        channels = len(MAP_CHANNELS[name])
        maps[name] = array[:, :, 0] if channels == 1 and array.ndim == 3 else array[:, :, :channels]
    if "normal" in maps and params.normal_convention == "directx":
        maps["normal"] = flip_green(maps["normal"])
    return maps


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = ExportMapsParams.from_dict(ctx.params)
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    folder = Path(params.directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TaskError(protocol.INVALID_PARAMS, f"cannot create {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise TaskError(protocol.INVALID_PARAMS, f"{folder} is not writable", "choose another folder")
    maps = load_maps(ctx, params)
    attributes = provenance(normal_convention=params.normal_convention, **params.attributes)
    written = [str(p) for p in _write(folder, params, maps, attributes)]
    return TaskOutput(outputs={}, info={"files": written, "folder": str(folder)})


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
