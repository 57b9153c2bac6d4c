"""Task "project_image": project images from cameras onto objects and bake them into each object's UV map.

Inputs (``ProjectImageParams``): one surface file per object (``contract/formats/surface.py``) and the views
file (``contract/formats/views.py``: cameras, passes, images). Outputs (``ProjectImageOutputs``): per object,
in the order given, its texture as EXR (size x size RGBA float32, scene-linear, alpha 1 on the UV islands and
their padding, provenance in the header) and as 8-bit sRGB PNG; per object the fraction of its UV islands some
view saw and how many texels each view contributed; the warnings (a view without passes, a view that sees
none of an object).
"""

from __future__ import annotations

from backend.imaging.map_files import provenance
from backend.projection.objects import bake_objects, coverage, settings, write_textures
from backend.projection.views import bake_views, load_meshes, load_views
from backend.tasks.context import JobContext
from contract.tasks import ProjectImageOutputs, ProjectImageParams


def run(ctx: JobContext, params: ProjectImageParams) -> ProjectImageOutputs:
    with ctx.timed("load_s"):
        meshes = load_meshes(ctx.job_dir, params.meshes)
        views, warnings = bake_views(load_views(ctx.input(params.views), need_image=True, need_depth=False))
    with ctx.timed("bake_s"):
        results = bake_objects(ctx, meshes, views, settings(params), warnings)
    attributes = provenance(views=",".join(v.name for v in views), size=params.size,
                            blend_exponent=params.blend_exponent, padding=params.padding)
    with ctx.timed("write_s"):
        textures, pngs = write_textures(ctx, meshes, results, attributes)
    outputs = ProjectImageOutputs(textures=textures, textures_png=pngs, objects=coverage(meshes, results),
                                  warnings=warnings)
    ctx.record(**outputs.info())
    return outputs
