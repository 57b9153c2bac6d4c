"""Project images from cameras onto objects and bake them into each object's UV map (task "bake").

Inputs (``BakeParams``): one MESH.npz per object (``backend/geometry/bake_mesh.py``) and the views file
(``backend/tasks/bake_inputs.py``: cameras, passes, images). Outputs, for object i in the order given:
``texture_<i>``: ``textures/<object>.exr``, size x size RGBA float32, scene-linear, alpha 1 on the UV islands
and their padding, provenance in the header; ``texture_<i>_png``: the same as 8-bit sRGB PNG with alpha.
The info (also in job.json) lists per object the fraction of its UV islands some view saw and how many
texels each view contributed, and the warnings (a view without passes, a view that sees none of an object).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from backend import protocol
from backend.geometry.bake_mesh import BakeMesh
from backend.imaging.bake import BakeError, BakeResult, BakeSettings, BakeView, bake
from backend.imaging.color import linear_to_srgb
from backend.imaging.exr import write_exr
from backend.imaging.image_io import write_png
from backend.params import BakeParams, ParamError
from backend.tasks.bake_inputs import bake_views, load_meshes, load_views
from backend.tasks.context import JobContext, TaskError, TaskOutput
from backend.tasks.maps import provenance

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 80


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = BakeParams.from_dict(ctx.params)
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    started = time.perf_counter()
    meshes = load_meshes(ctx.job_dir, params.meshes)
    views, warnings = bake_views(load_views(ctx.job_dir / params.views, need_image=True, need_depth=False))
    loaded = time.perf_counter()
    ctx.record(timings={"load_s": round(loaded - started, 3)})

    results = bake_objects(ctx, meshes, views, settings(params), warnings)
    baked = time.perf_counter()
    ctx.record(timings={"bake_s": round(baked - loaded, 3)})
    attributes = provenance(views=",".join(v.name for v in views), size=params.size,
                            blend_exponent=params.blend_exponent, padding=params.padding)
    outputs = write_textures(ctx, meshes, results, attributes)
    ctx.record(timings={"write_s": round(time.perf_counter() - baked, 3)})
    info = bake_info(meshes, results, warnings)
    ctx.record(**info)
    return TaskOutput(outputs, info=info)


def settings(params: Any) -> BakeSettings:
    """BakeSettings from BakeParams or ProjectTextureParams (they share the bake fields)."""
    return BakeSettings(size=params.size, blend_exponent=params.blend_exponent, padding=params.padding,
                        depth_tolerance=params.depth_tolerance, fill_unseen=params.fill_unseen)


def bake_objects(ctx: JobContext, meshes: Sequence[BakeMesh], views: Sequence[BakeView], bake_settings: BakeSettings,
                 warnings: list[str], offset: int = 0, total: int | None = None) -> list[BakeResult]:
    """Bake every object with every view, in order; progress ``offset + i`` of ``total`` (default: one step
    per object), a cancel stops between objects. A view contributing no texel to an object adds a warning."""
    total = total if total is not None else offset + len(meshes)
    results: list[BakeResult] = []
    ctx.progress(offset, total, message=f"baking {len(meshes)} object(s)")
    for index, mesh in enumerate(meshes):
        ctx.check_cancelled()
        try:
            result = bake(mesh, views, bake_settings)
        except BakeError as exc:
            raise TaskError(protocol.INVALID_PARAMS, f"object '{mesh.name}': {exc}") from None
        for view, texels in zip(views, result.view_texels, strict=True):
            if texels == 0:
                warnings.append(f"view '{view.name}' sees none of object '{mesh.name}'; it was ignored")
        results.append(result)
        ctx.progress(offset + index + 1, total, message=f"baked '{mesh.name}'")
    return results


def bake_info(meshes: Sequence[BakeMesh], results: Sequence[BakeResult], warnings: list[str]) -> dict[str, Any]:
    return {"objects": [{"name": mesh.name, "seen_fraction": round(result.seen_fraction, 4),
                         "view_texels": [int(n) for n in result.view_texels]}
                        for mesh, result in zip(meshes, results, strict=True)],
            "warnings": list(warnings)}


def file_names(names: Sequence[str]) -> list[str]:
    """Object names -> distinct file stems: unsafe characters become "_"; a stem already taken (ignoring
    case, as Windows and macOS do) gets "-<n>" with n the object's number (from 1)."""
    stems: list[str] = []
    taken: set[str] = set()
    for index, name in enumerate(names):
        stem = _UNSAFE.sub("_", name).strip("._")[:MAX_NAME] or "object"
        if stem.lower() in taken:
            stem = f"{stem}-{index + 1}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def write_textures(ctx: JobContext, meshes: Sequence[BakeMesh], results: Sequence[BakeResult],
                   attributes: dict[str, str]) -> dict[str, str]:
    """``texture_<i>`` (EXR, RGBA float32, scene-linear) and ``texture_<i>_png`` (8-bit sRGB + alpha) per object."""
    outputs: dict[str, str] = {}
    for index, (mesh, result, stem) in enumerate(zip(meshes, results, file_names([m.name for m in meshes]),
                                                      strict=True)):
        texture = result.texture
        exr = write_exr(ctx.output(f"textures/{stem}.exr"), {"": texture},
                        attributes={**attributes, "object": mesh.name})
        display = np.concatenate([np.clip(linear_to_srgb(texture[:, :, :3]), 0.0, 1.0), texture[:, :, 3:4]], axis=2)
        png = write_png(ctx.output(f"textures/{stem}.png"), display)
        outputs[f"texture_{index}"] = ctx.relative(exr)
        outputs[f"texture_{index}_png"] = ctx.relative(png)
    return outputs
