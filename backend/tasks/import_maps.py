"""Task "import_maps": an EXR holding maps (layers named albedo, normal, roughness, ...) -> one float EXR per
map in the job folder, which Blender loads into a material."""

from __future__ import annotations

from backend.imaging.exr import ExrError, read_exr, write_exr
from backend.imaging.map_files import as_rgb
from backend.imaging.pbr import flip_green
from backend.tasks.context import JobContext, invalid
from contract.tasks import MAP_NAMES, ImportMapsOutputs, ImportMapsParams


def run(ctx: JobContext, params: ImportMapsParams) -> ImportMapsOutputs:
    source = ctx.input(params.source)
    try:
        exr = read_exr(source)
    except (ExrError, OSError) as exc:
        raise invalid(str(exc)) from None
    found = [name for name in MAP_NAMES if name in exr.layers]
    if not found:
        raise invalid(f"{params.name or source.name} has none of the layers {', '.join(MAP_NAMES)} "
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
    return ImportMapsOutputs(maps=outputs, layers=found, attributes=exr.attributes)
