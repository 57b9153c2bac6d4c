"""ControlNet-guided render: the scene's own passes (depth, normal, edges of the Combined pass)
condition a text-to-image model, optionally starting from the Combined pass (img2img)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from backend import protocol
from backend.imaging.color import linear_to_srgb, srgb_to_linear
from backend.imaging.exr import ExrError, read_exr, write_exr
from backend.imaging.image_io import write_png
from backend.imaging.passes import (
    CameraInfo,
    PassError,
    ScenePasses,
    background_mask,
    canny_edges,
    conditioning_rgb,
    depth_to_control,
    find_passes,
    normals_to_control,
    require_passes,
)
from backend.models import controlnet_role
from backend.params import ControlParams, ParamError, RenderParams
from backend.tasks.context import JobContext, TaskError, TaskOutput
from backend.tasks.maps import provenance
from backend.tasks.steps import step_callback

# Which passes each control (and img2img) reads.
NEEDS = {"depth": {"depth"}, "normal": {"normal", "depth"}, "canny": {"combined"}}


def load_passes(ctx: JobContext, params: RenderParams, controls: list[ControlParams]) -> ScenePasses:
    path = ctx.job_dir / params.passes
    try:
        passes = find_passes(read_exr(path))
        needed = set().union(*(NEEDS[c.kind] for c in controls)) | ({"combined"} if params.img2img else set())
        require_passes(passes, needed, params.passes)
    except (ExrError, PassError, OSError) as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc),
                        "render the passes with Cycles or EEVEE (Workbench has no normal pass), "
                        "or give an EXR with Combined, Depth and Normal layers") from None
    return passes


def load_camera(ctx: JobContext, params: RenderParams) -> CameraInfo:
    path = ctx.job_dir / params.camera
    try:
        return CameraInfo.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskError(protocol.INVALID_PARAMS, f"camera file {params.camera} is missing or unreadable: {exc}",
                        "the normal control needs the camera the passes were rendered from") from None


def conditioning(ctx: JobContext, params: RenderParams, controls: list[ControlParams],
                 passes: ScenePasses) -> dict[str, np.ndarray]:
    """Control kind -> H x W (x 3) image in [0, 1], at the output size."""
    return control_images(passes, [c.kind for c in controls], lambda: load_camera(ctx, params), params.width,
                          params.height, params.normal_encoding, params.canny_low, params.canny_high)


def control_images(passes: ScenePasses, kinds: Sequence[str], camera: Callable[[], CameraInfo], width: int,
                   height: int, normal_encoding: str = "bae", canny_low: int = 100,
                   canny_high: int = 200) -> dict[str, np.ndarray]:
    """Control kind ("depth", "normal", "canny") -> H x W (x 3) image in [0, 1], stretched to width x height.

    The passes must hold what each kind reads (``NEEDS``); ``camera`` is called only for the normal control
    (normals go to the camera's space). A pass that cannot be converted is a TaskError."""
    images: dict[str, np.ndarray] = {}
    mask = background_mask(passes.depth) if passes.depth is not None else None
    for kind in kinds:
        try:
            if kind == "depth":
                assert passes.depth is not None
                images["depth"] = depth_to_control(passes.depth, mask)
            elif kind == "normal":
                assert passes.normal is not None
                images["normal"] = normals_to_control(passes.normal, camera(), normal_encoding, mask)
            else:
                assert passes.combined is not None
                images["canny"] = canny_edges(passes.combined, canny_low, canny_high)
        except PassError as exc:
            raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    return {kind: _resized(image, width, height) for kind, image in images.items()}


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image.astype(np.float32, copy=False)
    return cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = RenderParams.from_dict(ctx.params)
        controls = params.active_controls()
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    passes = load_passes(ctx, params, controls)
    control_images = conditioning(ctx, params, controls, passes)

    base = ctx.registry.resolve("text_to_image", params.model or None)
    control_specs = [ctx.registry.resolve(controlnet_role(c.kind, base.family), c.model or None) for c in controls]
    seed = params.seed if params.seed >= 0 else random.randrange(2**32)
    ctx.record(seed=seed, models={"text_to_image": {"name": base.name, "source": base.source, "family": base.family},
                                  "controlnets": [{"name": s.name, "source": s.source} for s in control_specs]})
    started = time.perf_counter()
    pipe = ctx.models.controlnet_pipeline(base, control_specs, img2img=params.img2img)
    loaded = time.perf_counter()
    ctx.record(timings={"load_s": round(loaded - started, 3)})
    ctx.check_cancelled()

    # 1 x H x W x 3 each: diffusers reads a bare H x W x 3 array as a batch of H images.
    images = [conditioning_rgb(control_images[c.kind])[None] for c in controls]
    total = max(1, int(params.steps * params.strength)) if params.img2img else params.steps
    kwargs: dict[str, Any] = dict(
        prompt=params.prompt, negative_prompt=params.negative_prompt or None,
        num_inference_steps=params.steps, guidance_scale=params.guidance,
        generator=torch.Generator(device="cpu").manual_seed(seed), output_type="np",
        controlnet_conditioning_scale=[c.weight for c in controls],
        control_guidance_start=[c.start for c in controls], control_guidance_end=[c.end for c in controls],
        callback_on_step_end=step_callback(ctx, base.family, total, params.preview_every),
        callback_on_step_end_tensor_inputs=["latents"],
    )
    if params.img2img:
        assert passes.combined is not None
        start = np.clip(linear_to_srgb(_resized(passes.combined[:, :, :3], params.width, params.height)), 0, 1)
        kwargs.update(image=start, control_image=images, strength=params.strength)
    else:
        kwargs.update(image=images, width=params.width, height=params.height)
    if len(controls) == 1:  # a single ControlNet takes plain values, not lists
        for key in ("controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end"):
            kwargs[key] = kwargs[key][0]
        kwargs["control_image" if params.img2img else "image"] = images[0]
    result = pipe(**kwargs).images[0]
    ctx.record(timings={"generate_s": round(time.perf_counter() - loaded, 3)})
    return TaskOutput(_write_outputs(ctx, params, seed, base.source, result, passes, control_images),
                      info={"seed": seed, "width": params.width, "height": params.height,
                            "controls": [c.kind for c in controls]})


def _write_outputs(ctx: JobContext, params: RenderParams, seed: int, model: str, result: np.ndarray,
                   passes: ScenePasses, control_images: dict[str, np.ndarray]) -> dict[str, str]:
    outputs = {"image": ctx.relative(write_png(ctx.output("render.png"), result))}
    for kind, image in control_images.items():
        outputs[f"control_{kind}"] = ctx.relative(write_png(ctx.output(f"control_{kind}.png"),
                                                            conditioning_rgb(image)))
    layers: dict[str, np.ndarray] = {"": srgb_to_linear(result)}
    for name, array in (("combined", passes.combined), ("depth", passes.depth), ("normal", passes.normal)):
        if array is not None and array.shape[:2] == result.shape[:2]:
            layers[name] = array
    layers.update({f"control_{kind}": image for kind, image in control_images.items()})
    attributes = provenance(prompt=params.prompt, negative_prompt=params.negative_prompt, seed=seed, model=model,
                            steps=params.steps, guidance=params.guidance,
                            controls=",".join(f"{c.kind}={c.weight:g}" for c in params.active_controls()))
    outputs["image_exr"] = ctx.relative(write_exr(ctx.output("render.exr"), layers, attributes=attributes))
    return outputs
