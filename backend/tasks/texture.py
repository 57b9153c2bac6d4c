"""Task "texture": a (seamless) image from a prompt with the text-to-image model."""

from __future__ import annotations

import torch

from backend.diffusion.family_calls import Prompting, prompt_kwargs, step_kwargs
from backend.diffusion.seamless import pipeline_modules, seamless
from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import write_exr
from backend.imaging.image_io import write_png
from backend.imaging.map_files import provenance, write_map_set
from backend.imaging.pbr import PbrFilterSettings, derive_maps
from backend.imaging.tiling import seam_ratio
from backend.models import check_size
from backend.tasks import job_options
from backend.tasks.context import JobContext
from contract.tasks import TextureOutputs, TextureParams


def run(ctx: JobContext, params: TextureParams) -> TextureOutputs:
    spec = ctx.registry.resolve("text_to_image", params.model or None)
    check_size(spec.family, params.width, params.height)
    seed = ctx.seed(params.seed)
    ctx.record_models(commercial=params.commercial, text_to_image=spec)
    options = job_options.prepare(ctx, spec, params, params.negative_prompt)
    with ctx.timed("load_s"):
        pipe = ctx.models.text_to_image(spec)
        options.attach(pipe)
    ctx.check_cancelled()

    with (ctx.timed("generate_s"), seamless(pipeline_modules(pipe), params.seamless_x, params.seamless_y),
          options.running([pipe], seed) as extra):
        image = pipe(
            **prompt_kwargs(pipe, spec.family, Prompting(params.prompt, params.negative_prompt, params.guidance)),
            num_inference_steps=params.steps,
            width=params.width,
            height=params.height,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            output_type="np",
            **step_kwargs(ctx, spec.family, params.steps, params.preview_every, (params.width, params.height),
                          (params.seamless_x, params.seamless_y), seed),
            **extra,
        ).images[0]
    png = write_png(ctx.output("texture.png"), image)
    attributes = provenance(prompt=params.prompt, negative_prompt=params.negative_prompt, seed=seed,
                            model=spec.source, steps=params.steps, guidance=params.guidance,
                            scheduler=options.scheduler, models=ctx.provenance_models())
    linear = srgb_to_linear(image)
    exr = write_exr(ctx.output("texture.exr"), {"": linear}, attributes=attributes)
    maps: dict[str, str] = {}
    maps_exr = ""
    if params.pbr:
        ctx.progress(params.steps, params.steps, message="deriving PBR maps")
        # Wrap only when the texture tiles both ways: a filter wrapping across a seam smears it.
        settings = PbrFilterSettings(wrap=params.seamless_x and params.seamless_y)
        files, combined = write_map_set(ctx.output, derive_maps(linear, settings).as_layers(), attributes)
        maps, maps_exr = {name: ctx.relative(path) for name, path in files.items()}, ctx.relative(combined)
    return TextureOutputs(
        image=ctx.relative(png), image_exr=ctx.relative(exr), maps=maps, maps_exr=maps_exr, seed=seed,
        model=spec.source, width=params.width, height=params.height,
        seam_ratio_x=round(seam_ratio(image, axis=1), 4), seam_ratio_y=round(seam_ratio(image, axis=0), 4))
