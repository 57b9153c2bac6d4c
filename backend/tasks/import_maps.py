"""An EXR holding maps (layers named albedo, normal, roughness, ...) -> one float EXR per
map in the job folder, which Blender loads into a material."""

from __future__ import annotations

from pathlib import Path

from backend import protocol
from backend.imaging.exr import ExrError, read_exr, write_exr
from backend.params import MAP_NAMES, ImportMapsParams, ParamError
from backend.tasks.context import JobContext, TaskError, TaskOutput
from backend.tasks.export_maps import flip_green
from backend.tasks.maps import as_rgb


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = ImportMapsParams.from_dict(ctx.params)
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    try:
        exr = read_exr(Path(params.path))
    except (ExrError, OSError) as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    found = [name for name in MAP_NAMES if name in exr.layers]
    if not found:
        raise TaskError(protocol.INVALID_PARAMS,
                        f"{Path(params.path).name} has none of the layers {', '.join(MAP_NAMES)} "
                        f"(it has: {', '.join(sorted(exr.layers)) or 'no layers'})",
                        "export maps with Scene Diffusion, or name the layers albedo.R/G/B, normal.X/Y/Z, "
                        "roughness.Y, metallic.Y, ao.Y, height.Y")
    outputs: dict[str, str] = {}
    for name in found:
        image = exr.layers[name]
        if name == "normal" and params.normal_convention == "directx":
            image = flip_green(image)
        path = write_exr(ctx.output(f"maps/{name}.exr"), {"": as_rgb(image)}, attributes=exr.attributes)
        outputs[name] = ctx.relative(path)
    return TaskOutput(outputs, info={"layers": found, "attributes": exr.attributes})
