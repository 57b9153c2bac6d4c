"""What both projection tasks do with their objects: bake each one with the views, in order, and write its
texture (EXR and PNG) under a file name made safe from the object's name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from backend.errors import TaskError
from backend.imaging.color import linear_to_srgb
from backend.imaging.exr import write_exr
from backend.imaging.image_io import write_png
from backend.projection.bake import BakeError, BakeResult, BakeSettings, BakeView, bake
from contract import messages
from contract.formats.surface import BakeMesh
from contract.tasks.project import BakeSettingsMixin, ObjectCoverage

if TYPE_CHECKING:
    from backend.tasks.context import JobContext

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 80


def settings(params: BakeSettingsMixin) -> BakeSettings:
    """BakeSettings from either projection task's parameters (they share the bake fields)."""
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
            raise TaskError(messages.INVALID_PARAMS, f"object '{mesh.name}': {exc}") from None
        for view, texels in zip(views, result.view_texels, strict=True):
            if texels == 0:
                warnings.append(f"view '{view.name}' sees none of object '{mesh.name}'; it was ignored")
        results.append(result)
        ctx.progress(offset + index + 1, total, message=f"baked '{mesh.name}'")
    return results


def coverage(meshes: Sequence[BakeMesh], results: Sequence[BakeResult]) -> list[ObjectCoverage]:
    return [ObjectCoverage(mesh.name, round(result.seen_fraction, 4), [int(n) for n in result.view_texels])
            for mesh, result in zip(meshes, results, strict=True)]


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
                   attributes: dict[str, str]) -> tuple[list[str], list[str]]:
    """Per object: ``textures/<object>.exr`` (RGBA float32, scene-linear) and ``.png`` (8-bit sRGB + alpha);
    returns the two lists of job-relative paths."""
    exrs: list[str] = []
    pngs: list[str] = []
    for mesh, result, stem in zip(meshes, results, file_names([m.name for m in meshes]), strict=True):
        texture = result.texture
        exr = write_exr(ctx.output(f"textures/{stem}.exr"), {"": texture},
                        attributes={**attributes, "object": mesh.name})
        display = np.concatenate([np.clip(linear_to_srgb(texture[:, :, :3]), 0.0, 1.0), texture[:, :, 3:4]], axis=2)
        exrs.append(ctx.relative(exr))
        pngs.append(ctx.relative(write_png(ctx.output(f"textures/{stem}.png"), display)))
    return exrs, pngs
