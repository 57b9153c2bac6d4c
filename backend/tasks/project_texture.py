"""Texture objects from a prompt (task "project_texture"): one image per view, generated with depth (and
optionally normal) ControlNets from the view's passes, then projected and baked into each object's UV map
exactly as task "bake" does.

Inputs (``ProjectTextureParams``): the objects' MESH.npz files and the views file
(``backend/tasks/bake_inputs.py``) whose views carry a camera and passes (Depth; Normal when normal_weight > 0),
no images. The conditioning is the render task's (``backend.tasks.render.control_images``), at the generation
size (width x height, stretched over each camera's frame). View k uses seed + k.

Sequential (the default): view 0 is generated from its passes alone. Before view k >= 1, every object is baked
with views 0 .. k-1 and the bakes are rendered into view k (``render_into_view``); the pixels showing texels an
earlier view saw are KNOWN (for overlapping objects, the first object claiming a pixel gives its colour). The
ControlNet inpaint pipeline then repaints the rest (mask = not known, strength 1, the rendering as the start
image) and the known pixels are pasted back exactly, so where views overlap they agree. Independent: every view
is generated on its own by the ControlNet text-to-image pipeline.

Outputs: those of task "bake" (``texture_<i>``, ``texture_<i>_png`` per object) plus ``view_<k>``, the image
generated for view k (8-bit sRGB PNG, width x height), and ``view_<k>_exr``, the same scene-linear as it was
baked (float EXR, the view's seed in the header). Progress counts the denoising steps of every view, then
one step per object for the final bake; a cancel stops at the next denoising step or between objects.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from backend import protocol
from backend.geometry.bake_mesh import BakeMesh
from backend.imaging.bake import BakeSettings, bake, render_into_view
from backend.imaging.color import linear_to_srgb, srgb_to_linear
from backend.imaging.exr import write_exr
from backend.imaging.image_io import write_png
from backend.imaging.passes import ScenePasses, conditioning_rgb
from backend.models import controlnet_role
from backend.params import ParamError, ProjectTextureParams
from backend.tasks.bake import bake_info, bake_objects, settings, write_textures
from backend.tasks.bake_inputs import ViewInput, load_meshes, load_views
from backend.tasks.context import JobContext, TaskError, TaskOutput
from backend.tasks.maps import provenance
from backend.tasks.render import control_images
from backend.tasks.steps import step_callback


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = ProjectTextureParams.from_dict(ctx.params)
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    started = time.perf_counter()
    meshes = load_meshes(ctx.job_dir, params.meshes)
    views = load_views(ctx.job_dir / params.views, need_image=False, need_depth=True,
                       need_normal=params.normal_weight > 0)
    controls = [(kind, weight) for kind, weight in (("depth", params.depth_weight), ("normal", params.normal_weight))
                if weight > 0]
    conditions = [_conditioning(view, [kind for kind, _ in controls], params) for view in views]

    base = ctx.registry.resolve("text_to_image", params.model or None)
    control_specs = [ctx.registry.resolve(controlnet_role(kind, base.family)) for kind, _ in controls]
    seed = params.seed if params.seed >= 0 else random.randrange(2**32)
    ctx.record(seed=seed, models={"text_to_image": {"name": base.name, "source": base.source, "family": base.family},
                                  "controlnets": [{"name": s.name, "source": s.source} for s in control_specs]})
    pipe = ctx.models.controlnet_pipeline(base, control_specs)
    inpaint = (ctx.models.controlnet_pipeline(base, control_specs, inpaint=True)
               if params.sequential and len(views) > 1 else None)
    loaded = time.perf_counter()
    ctx.record(timings={"load_s": round(loaded - started, 3)})
    ctx.check_cancelled()

    bake_settings = settings(params)
    total = len(views) * params.steps + len(meshes)
    generated: list[np.ndarray] = []  # per view: H x W x 3 float32 sRGB in [0, 1]
    kept: list[float] = []
    for k, view in enumerate(views):
        call = _call_arguments(ctx, params, controls, conditions[k], seed + k, base.family, total, k)
        if inpaint is None or k == 0:
            image = pipe(image=call.pop("control"), **call).images[0]
            kept.append(0.0)
        else:
            start, known = known_pixels(ctx, meshes, views[:k], generated, view, bake_settings, params,
                                        k * params.steps, total)
            image = inpaint(image=start[None], mask_image=(~known).astype(np.float32)[None, :, :, None],
                            control_image=call.pop("control"), strength=1.0, **call).images[0]
            image = np.where(known[:, :, None], start, image)  # kept pixels exactly as rendered
            kept.append(round(float(known.mean()), 4))
        generated.append(np.ascontiguousarray(image, dtype=np.float32))
    generate_done = time.perf_counter()
    ctx.record(timings={"generate_s": round(generate_done - loaded, 3)})

    warnings: list[str] = []
    final_views = [view.bake_view(srgb_to_linear(image)) for view, image in zip(views, generated, strict=True)]
    results = bake_objects(ctx, meshes, final_views, bake_settings, warnings, len(views) * params.steps, total)
    baked = time.perf_counter()
    ctx.record(timings={"bake_s": round(baked - generate_done, 3)})

    attributes = provenance(prompt=params.prompt, negative_prompt=params.negative_prompt, seed=seed, model=base.source,
                            steps=params.steps, guidance=params.guidance,
                            controls=",".join(f"{kind}={weight:g}" for kind, weight in controls),
                            sequential=params.sequential, views=",".join(v.name for v in views), size=params.size)
    outputs = write_textures(ctx, meshes, results, attributes)
    for k, (baked_view, image) in enumerate(zip(final_views, generated, strict=True)):
        outputs[f"view_{k}"] = ctx.relative(write_png(ctx.output(f"views/view_{k:02d}.png"), image))
        exr = write_exr(ctx.output(f"views/view_{k:02d}.exr"), {"": baked_view.image},
                        attributes={**attributes, "seed": str(seed + k), "view_name": baked_view.name})
        outputs[f"view_{k}_exr"] = ctx.relative(exr)
    ctx.record(timings={"write_s": round(time.perf_counter() - baked, 3)})
    info = bake_info(meshes, results, warnings)
    info.update(seed=seed, width=params.width, height=params.height, sequential=params.sequential,
                views=[{"name": view.name, "seed": seed + k, "kept_fraction": kept[k]} for k, view in enumerate(views)])
    ctx.record(objects=info["objects"], warnings=warnings)
    return TaskOutput(outputs, info=info)


def _conditioning(view: ViewInput, kinds: list[str], params: ProjectTextureParams) -> list[np.ndarray]:
    """The view's control images (1 x H x W x 3 each, in the order of ``kinds``) at the generation size."""
    passes = ScenePasses(depth=view.depth, normal=view.normal)
    images = control_images(passes, kinds, lambda: view.camera, params.width, params.height, params.normal_encoding)
    # 1 x H x W x 3 each: diffusers reads a bare H x W x 3 array as a batch of H images.
    return [conditioning_rgb(images[kind])[None] for kind in kinds]


def _call_arguments(ctx: JobContext, params: ProjectTextureParams, controls: list[tuple[str, float]],
                    images: list[np.ndarray], seed: int, family: str, total: int, k: int) -> dict[str, Any]:
    """The keyword arguments both pipelines share, plus "control": the control image(s) of view k."""
    single = len(controls) == 1  # a single ControlNet takes plain values, not lists
    return dict(
        prompt=params.prompt, negative_prompt=params.negative_prompt or None, width=params.width,
        height=params.height, num_inference_steps=params.steps, guidance_scale=params.guidance,
        generator=torch.Generator(device="cpu").manual_seed(seed), output_type="np",
        controlnet_conditioning_scale=controls[0][1] if single else [weight for _, weight in controls],
        control=images[0] if single else images,
        callback_on_step_end=step_callback(ctx, family, total, params.preview_every,
                                           prefix=f"previews/view{k:02d}-step", offset=k * params.steps),
        callback_on_step_end_tensor_inputs=["latents"],
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
