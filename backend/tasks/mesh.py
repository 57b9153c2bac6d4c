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

from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.diffusion.steps import forwards_reported
from backend.geometry.mesh_data import MeshData, clean, flipped, signed_volume
from backend.geometry.mesh_files import save_npz, write_glb, write_ply
from backend.geometry.subject import SubjectError, subject_image
from backend.imaging.color import linear_to_srgb
from backend.imaging.image_io import read_image, to_uint8, write_png
from backend.tasks.context import JobContext, invalid
from contract.tasks import MeshOutputs, MeshParams


def load_picture(path: Path, colorspace: str) -> np.ndarray:
    """The source as H x W x C float32, display-encoded (sRGB), alpha kept: PNG, JPEG and whatever
    Pillow reads (8-bit sRGB), or .npy (H x W x C float, ``colorspace`` "srgb" or "linear")."""
    if not path.is_file():
        raise invalid(f"source image {path.name} does not exist in the job folder")
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
        raise invalid(f"{path.name} is not a readable image: {exc}",
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


def run(ctx: JobContext, params: MeshParams) -> MeshOutputs:
    picture = load_picture(ctx.input(params.source), params.source_colorspace)
    try:
        subject, mask = subject_image(picture, params.background, params.tolerance)
    except SubjectError as exc:
        raise invalid(f"{Path(params.source).name}: {exc}") from None
    subject_png = write_png(ctx.output("subject.png"), subject)

    spec = ctx.registry.resolve("image_to_3d", params.model or None)
    seed = ctx.seed(params.seed)
    ctx.record_models(commercial=params.commercial, image_to_3d=spec)
    with ctx.timed("load_s"):
        pipe = ctx.models.image_to_3d(spec)
    ctx.check_cancelled()

    from PIL import Image

    total = prior_evaluations(pipe, params.steps) + 1  # + extracting the surface
    with ctx.timed("generate_s"):
        with forwards_reported(ctx, pipe.prior, total, message="denoising"):
            latents = pipe(Image.fromarray(to_uint8(subject)), num_inference_steps=params.steps,
                           guidance_scale=params.guidance, generator=torch.Generator(device="cpu").manual_seed(seed),
                           output_type="latent").images
        ctx.check_cancelled()
        ctx.progress(total - 1, total, message="extracting the surface")
        decoded = pipe.shap_e_renderer.decode_to_mesh(latents[0][None], pipe.device, grid_size=params.frame_size)
        ctx.check_cancelled()  # a cancel during the extraction (seconds on a fine grid) yields no mesh
        mesh, removed = clean(mesh_from_shap_e(decoded))
        # Marching cubes on a field padded with "outside" gives closed surfaces; their normals must point out
        # (the winding follows the checkpoint's lookup table, so check rather than trust it).
        turned = signed_volume(mesh) < 0
        if turned:
            mesh = flipped(mesh)
    if mesh.face_count == 0:
        raise invalid("the model found no surface in this picture (an empty mesh)",
                      "try another seed, more steps, or a picture with one clearly separated subject")
    outputs = MeshOutputs(
        mesh=ctx.relative(save_npz(ctx.output("mesh.npz"), mesh)), subject=ctx.relative(subject_png),
        glb=ctx.relative(write_glb(ctx.output("mesh.glb"), mesh)),
        ply=ctx.relative(write_ply(ctx.output("mesh.ply"), mesh)),
        seed=seed, model=spec.source, vertices=mesh.vertex_count, faces=mesh.face_count, removed=removed,
        flipped_normals=turned, frame_size=params.frame_size, subject_pixels=int(mask.sum()),
        colors="scene-linear RGBA" if mesh.colors is not None else "", triangles_only=mesh.triangles_only)
    ctx.progress(total, total)
    return outputs
