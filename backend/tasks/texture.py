"""Text to texture: a (seamless) image from a prompt with the text-to-image model."""

from __future__ import annotations

import random
import time

import torch

from backend import protocol
from backend.imaging.color import srgb_to_linear
from backend.imaging.exr import write_exr
from backend.imaging.image_io import write_png
from backend.imaging.pbr import PbrSettings, derive_maps
from backend.imaging.tiling import seam_ratio
from backend.params import ParamError, TextureParams
from backend.seamless import pipeline_modules, set_seamless
from backend.tasks.context import JobContext, TaskError, TaskOutput
from backend.tasks.maps import provenance, write_map_set
from backend.tasks.steps import step_callback


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = TextureParams.from_dict(ctx.params)
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    spec = ctx.registry.resolve("text_to_image", params.model or None)
    seed = params.seed if params.seed >= 0 else random.randrange(2**32)
    ctx.record(seed=seed, models={"text_to_image": {"name": spec.name, "source": spec.source,
                                                    "family": spec.family, "tiny": spec.tiny}})
    started = time.perf_counter()
    pipe = ctx.models.text_to_image(spec)
    loaded = time.perf_counter()
    ctx.record(timings={"load_s": round(loaded - started, 3)})
    ctx.check_cancelled()

    set_seamless(pipeline_modules(pipe), params.seamless_x, params.seamless_y)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    total = params.steps

    result = pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt or None,
        num_inference_steps=params.steps,
        guidance_scale=params.guidance,
        width=params.width,
        height=params.height,
        generator=generator,
        output_type="np",
        callback_on_step_end=step_callback(ctx, spec.family, total, params.preview_every),
        callback_on_step_end_tensor_inputs=["latents"],
    )
    image = result.images[0]
    ctx.record(timings={"generate_s": round(time.perf_counter() - loaded, 3)})
    path = write_png(ctx.output("texture.png"), image)
    attributes = provenance(prompt=params.prompt, negative_prompt=params.negative_prompt, seed=seed,
                            model=spec.source, steps=params.steps, guidance=params.guidance)
    linear = srgb_to_linear(image)
    outputs = {"image": ctx.relative(path),
               "image_exr": ctx.relative(write_exr(ctx.output("texture.exr"), {"": linear}, attributes=attributes))}
    if params.pbr:
        ctx.progress(total, total, message="deriving PBR maps")
        # Wrap only when the texture tiles both ways: a filter wrapping across a seam smears it.
        settings = PbrSettings(wrap=params.seamless_x and params.seamless_y)
        outputs.update(write_map_set(ctx, derive_maps(linear, settings).as_layers(), attributes))
    return TaskOutput(
        outputs=outputs,
        info={"seed": seed, "model": spec.source, "width": params.width, "height": params.height,
              "seam_ratio_x": round(seam_ratio(image, axis=1), 4),
              "seam_ratio_y": round(seam_ratio(image, axis=0), 4)},
    )
