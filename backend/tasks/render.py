"""Task "render": the scene's own passes (depth, normal, edges of the Combined pass) condition a
text-to-image model through ControlNets, optionally starting from the Combined pass (img2img)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from backend.diffusion.conditioning import control_images, load_camera, load_passes, resized
from backend.diffusion.family_calls import Prompting, prompt_kwargs, step_kwargs
from backend.diffusion.guided_call import guided_call
from backend.imaging.color import linear_to_srgb, srgb_to_linear
from backend.imaging.control import conditioning_rgb
from backend.imaging.exr import write_exr
from backend.imaging.image_io import write_png
from backend.imaging.map_files import provenance
from backend.imaging.passes import ScenePasses
from backend.models import check_size
from backend.tasks import job_options
from backend.tasks.context import JobContext
from contract.tasks import RenderOutputs, RenderParams


def run(ctx: JobContext, params: RenderParams) -> RenderOutputs:
    controls = params.active_controls()
    kinds = [c.kind for c in controls]
    passes = load_passes(ctx.input(params.passes), params.passes, kinds, params.img2img)
    conditions = control_images(passes, kinds, lambda: load_camera(ctx.input(params.camera)), params.width,
                                params.height, params.normal_encoding, params.canny_low, params.canny_high)

    base = ctx.registry.resolve("text_to_image", params.model or None)
    check_size(base.family, params.width, params.height)
    control_specs = [ctx.registry.control(c.kind, base.family, c.model or None) for c in controls]
    plan = guided_call(base.family, controls, control_specs, params.img2img)  # before anything loads
    seed = ctx.seed(params.seed)
    ctx.record_models(commercial=params.commercial, text_to_image=base, controlnets=control_specs)
    options = job_options.prepare(ctx, base, params, params.negative_prompt)
    with ctx.timed("load_s"):
        if control_specs:
            pipe = job_options.controlnet_pipeline(ctx, options, base, control_specs, img2img=params.img2img)
        else:  # img2img from the render alone
            options.attach(ctx.models.text_to_image(base))
            pipe = ctx.models.variant_pipeline(base, plan.variant)
    ctx.check_cancelled()

    # 1 x H x W x 3 each: diffusers reads a bare H x W x 3 array as a batch of H images.
    images = [conditioning_rgb(conditions[kind])[None] for kind in kinds]
    total = max(1, int(params.steps * params.strength)) if params.img2img else params.steps
    kwargs: dict[str, Any] = dict(
        **prompt_kwargs(pipe, base.family, Prompting(params.prompt, params.negative_prompt, params.guidance)),
        num_inference_steps=params.steps, width=params.width, height=params.height,
        generator=torch.Generator(device="cpu").manual_seed(seed), output_type="np",
        **step_kwargs(ctx, base.family, total, params.preview_every, (params.width, params.height)),
    )
    if controls:
        kwargs.update(plan.control_kwargs(controls, control_specs, images))
    if params.img2img:
        assert passes.combined is not None
        start = np.clip(linear_to_srgb(resized(passes.combined[:, :, :3], params.width, params.height)), 0, 1)
        kwargs.update(image=start[None], strength=params.strength)
        if plan.variant == "inpaint":  # no img2img pipeline: the whole frame is repainted from the start image
            kwargs["mask_image"] = np.ones((1, params.height, params.width, 1), np.float32)
    torch.manual_seed(seed)  # SD 3.5's ControlNet pipeline samples the control latents from torch's own generator
    with ctx.timed("generate_s"), options.running([pipe], seed) as extra:
        result = pipe(**plan.accepted(kwargs), **extra).images[0]
    return _write_outputs(ctx, params, seed, base.source, result, passes, conditions, options.scheduler)


def _write_outputs(ctx: JobContext, params: RenderParams, seed: int, model: str, result: np.ndarray,
                   passes: ScenePasses, conditions: dict[str, np.ndarray], scheduler: str) -> RenderOutputs:
    png = write_png(ctx.output("render.png"), result)
    control_pngs = {kind: ctx.relative(write_png(ctx.output(f"control_{kind}.png"), conditioning_rgb(image)))
                    for kind, image in conditions.items()}
    layers: dict[str, np.ndarray] = {"": srgb_to_linear(result)}
    for name, array in (("combined", passes.combined), ("depth", passes.depth), ("normal", passes.normal)):
        if array is not None and array.shape[:2] == result.shape[:2]:
            layers[name] = array
    layers.update({f"control_{kind}": image for kind, image in conditions.items()})
    attributes = provenance(prompt=params.prompt, negative_prompt=params.negative_prompt, seed=seed, model=model,
                            steps=params.steps, guidance=params.guidance,
                            controls=",".join(f"{c.kind}={c.weight:g}" for c in params.active_controls()),
                            scheduler=scheduler, models=ctx.provenance_models())
    exr = write_exr(ctx.output("render.exr"), layers, attributes=attributes)
    return RenderOutputs(image=ctx.relative(png), image_exr=ctx.relative(exr), control_images=control_pngs,
                         seed=seed, width=params.width, height=params.height, controls=list(conditions))
