"""Image to 3D: a mesh with vertex colours from one picture of a subject, by Shap-E.

The subject is separated from its background and centred on white (outputs/subject.png, what the
model saw); the Shap-E prior denoises a latent from the picture's CLIP features, and the renderer
turns the latent into a signed-distance and colour field whose surface marching cubes extracts on a
``frame_size``-cell grid. The mesh, cleaned, is written as outputs/mesh.npz (for the add-on),
mesh.glb and mesh.ply (see backend/geometry/mesh_io.py for axes and colour spaces: Shap-E's axes are
Blender's, Z up; colours scene-linear).

The Shap-E pipeline takes no step callback, so progress and cancel hook the prior: a forward pre-hook
runs before every evaluation (Heun's scheduler evaluates twice per step but the last), reports it and
raises at the next one once the job is cancelled. The pipeline's own ``output_type="mesh"`` extracts
on a fixed 128-cell grid, so the task asks it for the latent and calls the renderer's
``decode_to_mesh`` with the chosen resolution.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend import protocol
from backend.geometry.mesh_io import MeshData, clean, flipped, save_npz, signed_volume, write_glb, write_ply
from backend.geometry.subject import SubjectError, subject_image
from backend.imaging.color import linear_to_srgb
from backend.imaging.image_io import read_image, to_uint8, write_png
from backend.params import MeshParams, ParamError
from backend.tasks.context import JobContext, TaskError, TaskOutput


@contextmanager
def steps_reported(ctx: JobContext, module: torch.nn.Module, total: int) -> Iterator[list[int]]:
    """Report each forward of ``module`` as a step of ``total`` and raise JobCancelled before the
    next forward once the job is cancelled. Yields the count of forwards so far (a one-item list)."""
    count = [0]

    def before_forward(_module: Any, _args: Any) -> None:
        ctx.check_cancelled()
        count[0] += 1
        ctx.progress(min(count[0], total), total, message="denoising")

    handle = module.register_forward_pre_hook(before_forward)
    try:
        yield count
    finally:
        handle.remove()


def load_picture(path: Path, colorspace: str) -> np.ndarray:
    """The source as H x W x C float32, display-encoded (sRGB), alpha kept: PNG, JPEG and whatever
    Pillow reads (8-bit sRGB), or .npy (H x W x C float, ``colorspace`` "srgb" or "linear")."""
    if not path.is_file():
        raise TaskError(protocol.INVALID_PARAMS, f"source image {path.name} does not exist in the job folder")
    try:
        if path.suffix.lower() == ".npy":
            pixels = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
            if pixels.ndim == 2:
                pixels = pixels[:, :, None]
            if pixels.ndim != 3:
                raise ValueError(f"it holds a {pixels.ndim}-dimensional array, not an H x W x C image")
            if colorspace == "linear" and pixels.shape[2] >= 3:
                pixels = np.concatenate([linear_to_srgb(pixels[:, :, :3]), pixels[:, :, 3:]], axis=2)
            elif colorspace == "linear":  # grey (+ alpha)
                pixels = np.concatenate([linear_to_srgb(pixels[:, :, :1]), pixels[:, :, 1:]], axis=2)
            return pixels
        return read_image(path)
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises SyntaxError for some damaged files
        raise TaskError(protocol.INVALID_PARAMS, f"{path.name} is not a readable image: {exc}",
                        "use a PNG or JPEG picture of the subject") from None


def mesh_from_shap_e(decoded: Any) -> MeshData:
    """diffusers' MeshDecoderOutput (verts, faces, vertex_channels R G B, linear) as MeshData."""
    vertices = decoded.verts.detach().float().cpu().numpy()
    faces = decoded.faces.detach().cpu().numpy().astype(np.int64)
    channels = decoded.vertex_channels or {}
    colors = None
    if all(k in channels for k in "RGB"):
        rgb = np.stack([channels[k].detach().float().cpu().numpy() for k in "RGB"], axis=1)
        colors = np.concatenate([np.clip(rgb, 0.0, 1.0), np.ones((len(rgb), 1), np.float32)], axis=1)
    return MeshData.from_triangles(vertices, faces, colors)


def prior_evaluations(pipe: Any, steps: int) -> int:
    """How many times the prior runs for ``steps`` (Heun: 2 * steps - 1)."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device="cpu")
    return len(scheduler.timesteps)


def run(ctx: JobContext) -> TaskOutput:
    try:
        params = MeshParams.from_dict(ctx.params)
    except ParamError as exc:
        raise TaskError(protocol.INVALID_PARAMS, str(exc)) from None
    picture = load_picture(ctx.job_dir / params.source, params.source_colorspace)
    try:
        subject, mask = subject_image(picture, params.background, params.tolerance)
    except SubjectError as exc:
        raise TaskError(protocol.INVALID_PARAMS, f"{Path(params.source).name}: {exc}") from None
    outputs = {"subject": ctx.relative(write_png(ctx.output("subject.png"), subject))}

    spec = ctx.registry.resolve("image_to_3d", params.model or None)
    seed = params.seed if params.seed >= 0 else random.randrange(2**32)
    ctx.record(seed=seed, models={"image_to_3d": {"name": spec.name, "source": spec.source, "family": spec.family}})
    started = time.perf_counter()
    pipe = ctx.models.image_to_3d(spec)
    loaded = time.perf_counter()
    ctx.record(timings={"load_s": round(loaded - started, 3)})
    ctx.check_cancelled()

    from PIL import Image

    total = prior_evaluations(pipe, params.steps) + 1  # + extracting the surface
    with steps_reported(ctx, pipe.prior, total):
        latents = pipe(Image.fromarray(to_uint8(subject)), num_inference_steps=params.steps,
                       guidance_scale=params.guidance, generator=torch.Generator(device="cpu").manual_seed(seed),
                       output_type="latent").images
    ctx.check_cancelled()
    ctx.progress(total - 1, total, message="extracting the surface")
    decoded = pipe.shap_e_renderer.decode_to_mesh(latents[0][None], pipe.device, grid_size=params.frame_size)
    mesh, removed = clean(mesh_from_shap_e(decoded))
    # Marching cubes on a field padded with "outside" gives closed surfaces; their normals must point out
    # (the winding follows the checkpoint's lookup table, so check rather than trust it).
    turned = signed_volume(mesh) < 0
    if turned:
        mesh = flipped(mesh)
    generated = time.perf_counter()
    ctx.record(timings={"generate_s": round(generated - loaded, 3)})
    if mesh.face_count == 0:
        raise TaskError(protocol.INVALID_PARAMS, "the model found no surface in this picture (an empty mesh)",
                        "try another seed, more steps, or a picture with one clearly separated subject")
    outputs["mesh"] = ctx.relative(save_npz(ctx.output("mesh.npz"), mesh))
    outputs["glb"] = ctx.relative(write_glb(ctx.output("mesh.glb"), mesh))
    outputs["ply"] = ctx.relative(write_ply(ctx.output("mesh.ply"), mesh))
    ctx.progress(total, total)
    return TaskOutput(outputs, info={"seed": seed, "model": spec.source, "vertices": mesh.vertex_count,
                                     "faces": mesh.face_count, "removed": removed, "flipped_normals": turned,
                                     "frame_size": params.frame_size,
                                     "subject_pixels": int(mask.sum()), "axes": "Z up (Blender)",
                                     "colors": "scene-linear RGBA"})
