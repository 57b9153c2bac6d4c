"""Texture objects from a prompt (task "project_texture"): one image per view, generated with depth (and
optionally normal) ControlNets from the view's passes, then projected and baked into each object's UV map
exactly as task "project_image" does.

Inputs (``ProjectTextureParams``): the objects' MESH.npz files and the views file
(``contract/formats/views.py``) whose views carry a camera and passes (Depth; Normal when normal_weight > 0),
no images. The conditioning is the render task's (``backend.diffusion.conditioning.control_images``), at the generation
size (width x height, stretched over each camera's frame). View k uses seed + k.

Sequential (the default): view 0 is generated from its passes alone. Before view k >= 1, every object is baked
with views 0 .. k-1 and the bakes are rendered into view k (``render_into_view``); the pixels showing texels an
earlier view saw are KNOWN (for overlapping objects, the first object claiming a pixel gives its colour). The
ControlNet inpaint pipeline then repaints the rest (mask = not known, strength 1, the rendering as the start
image) and the known pixels are pasted back exactly, so where views overlap they agree. Independent: every view
is generated on its own by the ControlNet text-to-image pipeline.

Outputs (``ProjectTextureOutputs``): those of task "project_image" plus, per view k, the image generated for it
(``view_images``: 8-bit sRGB PNG, width x height) and the same scene-linear as it was baked (``view_images_exr``:
float EXR, the view's seed in the header). Progress counts the denoising steps of every view, then
one step per object for the final bake; a cancel stops at the next denoising step or between objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from backend.diffusion.conditioning import control_images
from backend.diffusion.family_calls import Prompting, prompt_kwargs, step_kwargs
from backend.diffusion.guided_call import GuidedCall, guided_call
from backend.imaging.color import linear_to_srgb, srgb_to_linear
from backend.imaging.control import conditioning_rgb
from backend.imaging.exr import write_exr
from backend.imaging.image_io import write_png
from backend.imaging.map_files import provenance
from backend.imaging.passes import ScenePasses
from backend.models import ModelSpec, check_size
from backend.projection.bake import BakeSettings, bake, render_into_view
from backend.projection.objects import bake_objects, coverage, settings, write_textures
from backend.projection.views import ViewInput, load_meshes, load_views
from backend.tasks import job_options
from backend.tasks.context import JobContext
from contract.formats.surface import BakeMesh
from contract.tasks import ControlParams, ProjectTextureOutputs, ProjectTextureParams
from contract.tasks.project import ViewGeneration


def run(ctx: JobContext, params: ProjectTextureParams) -> ProjectTextureOutputs:
    meshes = load_meshes(ctx.job_dir, params.meshes)
    views = load_views(ctx.input(params.views), need_image=False, need_depth=True,
                       need_normal=params.normal_weight > 0)
    controls = [(kind, weight) for kind, weight in (("depth", params.depth_weight), ("normal", params.normal_weight))
                if weight > 0]
    conditions = [_conditioning(view, [kind for kind, _ in controls], params) for view in views]

    base = ctx.registry.resolve("text_to_image", params.model or None)
    check_size(base.family, params.width, params.height)
    control_specs = [ctx.registry.control(kind, base.family) for kind, _ in controls]
    as_params = [ControlParams(kind, weight) for kind, weight in controls]
    sequential = params.sequential and len(views) > 1
    plans = (guided_call(base.family, as_params, control_specs, img2img=False),
             guided_call(base.family, as_params, control_specs, img2img=False, inpaint=True) if sequential else None)
    seed = ctx.seed(params.seed)
    ctx.record_models(commercial=params.commercial, text_to_image=base, controlnets=control_specs)
    options = job_options.prepare(ctx, base, params, params.negative_prompt)
    with ctx.timed("load_s"):
        pipe = job_options.controlnet_pipeline(ctx, options, base, control_specs)
        inpaint = ctx.models.controlnet_pipeline(base, control_specs, inpaint=True) if sequential else None
    ctx.check_cancelled()

    # The same reference image (and LoRAs, and sampler) for every view keeps the views one style.
    with ctx.timed("generate_s"), options.running([p for p in (pipe, inpaint) if p is not None], seed) as extra:
        generated, kept = _generate(ctx, params, meshes, views, conditions, (as_params, control_specs), (pipe, inpaint),
                                    plans, seed, base.family, extra)
    warnings: list[str] = []
    final_views = [view.bake_view(srgb_to_linear(image)) for view, image in zip(views, generated, strict=True)]
    steps = len(views) * params.steps
    with ctx.timed("bake_s"):
        results = bake_objects(ctx, meshes, final_views, settings(params), warnings, steps, steps + len(meshes))

    attributes = provenance(prompt=params.prompt, negative_prompt=params.negative_prompt, seed=seed, model=base.source,
                            steps=params.steps, guidance=params.guidance,
                            controls=",".join(f"{kind}={weight:g}" for kind, weight in controls),
                            sequential=params.sequential, views=",".join(v.name for v in views), size=params.size,
                            scheduler=options.scheduler, models=ctx.provenance_models())
    with ctx.timed("write_s"):
        textures, pngs = write_textures(ctx, meshes, results, attributes)
        view_pngs, view_exrs = [], []
        for k, (baked_view, image) in enumerate(zip(final_views, generated, strict=True)):
            view_pngs.append(ctx.relative(write_png(ctx.output(f"views/view_{k:02d}.png"), image)))
            exr = write_exr(ctx.output(f"views/view_{k:02d}.exr"), {"": baked_view.image},
                            attributes={**attributes, "seed": str(seed + k), "view_name": baked_view.name})
            view_exrs.append(ctx.relative(exr))
    outputs = ProjectTextureOutputs(
        textures=textures, textures_png=pngs, objects=coverage(meshes, results), warnings=warnings,
        view_images=view_pngs, view_images_exr=view_exrs, seed=seed, width=params.width, height=params.height,
        sequential=params.sequential,
        views=[ViewGeneration(view.name, seed + k, kept[k]) for k, view in enumerate(views)])
    ctx.record(objects=outputs.info()["objects"], warnings=warnings)
    return outputs


def _generate(ctx: JobContext, params: ProjectTextureParams, meshes: Sequence[BakeMesh], views: Sequence[ViewInput],
              conditions: list[list[np.ndarray]], controls: tuple[list[ControlParams], list[ModelSpec]],
              pipes: tuple[Any, Any], plans: tuple[GuidedCall, GuidedCall | None], seed: int, family: str,
              extra: dict[str, Any]) -> tuple[list[np.ndarray], list[float]]:
    """Each view's image (H x W x 3 float32 sRGB in [0, 1]) and the share of its pixels kept from earlier views."""
    bake_settings = settings(params)
    total = len(views) * params.steps + len(meshes)
    generated: list[np.ndarray] = []
    kept: list[float] = []
    pipe, inpaint = pipes
    for k, view in enumerate(views):
        call = {**_call_arguments(ctx, params, pipe, seed + k, family, total, k), **extra}
        torch.manual_seed(seed + k)  # SD 3.5's ControlNet pipeline samples control latents from torch's generator
        if inpaint is None or k == 0:
            call.update(plans[0].control_kwargs(*controls, conditions[k]))
            image = pipe(**plans[0].accepted(call)).images[0]
            kept.append(0.0)
        else:
            assert plans[1] is not None
            start, known = known_pixels(ctx, meshes, views[:k], generated, view, bake_settings, params,
                                        k * params.steps, total)
            call.update(plans[1].control_kwargs(*controls, conditions[k]), image=start[None],
                        mask_image=(~known).astype(np.float32)[None, :, :, None], strength=1.0)
            image = inpaint(**plans[1].accepted(call)).images[0]
            image = np.where(known[:, :, None], start, image)  # kept pixels exactly as rendered
            kept.append(round(float(known.mean()), 4))
        generated.append(np.ascontiguousarray(image, dtype=np.float32))
    return generated, kept


def _conditioning(view: ViewInput, kinds: list[str], params: ProjectTextureParams) -> list[np.ndarray]:
    """The view's control images (1 x H x W x 3 each, in the order of ``kinds``) at the generation size."""
    passes = ScenePasses(depth=view.depth, normal=view.normal)
    images = control_images(passes, kinds, lambda: view.camera, params.width, params.height, params.normal_encoding)
    # 1 x H x W x 3 each: diffusers reads a bare H x W x 3 array as a batch of H images.
    return [conditioning_rgb(images[kind])[None] for kind in kinds]


def _call_arguments(ctx: JobContext, params: ProjectTextureParams, pipe: Any, seed: int, family: str, total: int,
                    k: int) -> dict[str, Any]:
    """The keyword arguments both pipelines share (the controls are added by the view's GuidedCall)."""
    return dict(
        **prompt_kwargs(pipe, family, Prompting(params.prompt, params.negative_prompt, params.guidance)),
        width=params.width, height=params.height, num_inference_steps=params.steps,
        generator=torch.Generator(device="cpu").manual_seed(seed), output_type="np",
        **step_kwargs(ctx, family, total, params.preview_every, (params.width, params.height),
                      prefix=f"previews/view{k:02d}-step", offset=k * params.steps),
    )


def known_pixels(ctx: JobContext, meshes: Sequence[BakeMesh], earlier: Sequence[ViewInput],
                 generated: Sequence[np.ndarray], view: ViewInput, bake_settings: BakeSettings,
                 params: ProjectTextureParams, step: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Bake every object with the earlier views' images and render the bakes into ``view`` at the generation
    size: (H x W x 3 float32 sRGB in [0, 1], H x W bool known). Where several objects claim a pixel, the first
    one in ``meshes`` gives its colour."""
    ctx.progress(step, total, message=f"view '{view.name}': baking the {len(earlier)} view(s) before it")
    so_far = [v.bake_view(srgb_to_linear(image)) for v, image in zip(earlier, generated, strict=True)]
    target = view.bake_view(np.zeros((params.height, params.width, 3), np.float32))  # only its camera and depth
    rendering = np.zeros((params.height, params.width, 3), np.float32)
    known = np.zeros((params.height, params.width), bool)
    for mesh in meshes:
        ctx.check_cancelled()
        result = bake(mesh, so_far, bake_settings)
        image, seen = render_into_view(mesh, result, target, params.width, params.height, params.depth_tolerance)
        claim = seen & ~known
        rendering[claim] = image[claim]
        known |= seen
    return np.clip(linear_to_srgb(rendering), 0.0, 1.0), known
