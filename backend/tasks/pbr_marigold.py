"""PBR maps from Marigold: learned albedo, roughness and metallic (role intrinsics) and
normals (role normals); height and AO, which Marigold does not predict, from the filters.

Marigold pipelines take no step callback, so progress and cancel hook the UNet: a forward
pre-hook runs before every denoising step, reports it, and raises at the next step once the
job is cancelled.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.diffusion.steps import forwards_reported
from backend.imaging.color import linear_to_srgb, srgb_to_linear
from backend.imaging.pbr import PbrFilterSettings, PbrMaps, derive_maps, encode_normal
from backend.tasks.context import JobContext
from contract.tasks import PbrParams


def _named(registry_names: str) -> tuple[str | None, str | None]:
    """PbrParams.model: "intrinsics_model,normals_model", either part may be empty."""
    parts = [p.strip() or None for p in registry_names.split(",")] if registry_names else []
    return (parts + [None, None])[0], (parts + [None, None])[1]


def marigold_maps(ctx: JobContext, color_linear: np.ndarray, params: PbrParams,
                  settings: PbrFilterSettings) -> PbrMaps:
    intrinsics_name, normals_name = _named(params.model)
    intrinsics_spec = ctx.registry.resolve("intrinsics", intrinsics_name)
    normals_spec = ctx.registry.resolve("normals", normals_name)
    ctx.record_models(commercial=params.commercial, intrinsics=intrinsics_spec, normals=normals_spec)
    intrinsics = ctx.models.marigold(intrinsics_spec)
    normals = ctx.models.marigold(normals_spec)
    # Marigold was trained on ordinary (sRGB-encoded) photographs.
    srgb = np.clip(linear_to_srgb(color_linear), 0.0, 1.0)
    total = 2 * params.steps
    with forwards_reported(ctx, intrinsics.unet, total):
        out = intrinsics(srgb, num_inference_steps=params.steps, output_type="np",
                         generator=torch.Generator("cpu").manual_seed(params.seed))
    targets = intrinsics.target_properties
    prediction = out.prediction
    albedo = prediction[targets["target_names"].index("albedo")]
    material = prediction[targets["target_names"].index("material")]
    sub = targets["material"]["sub_target_names"]
    with forwards_reported(ctx, normals.unet, total, params.steps):
        normal = normals(srgb, num_inference_steps=params.steps, output_type="np",
                         generator=torch.Generator("cpu").manual_seed(params.seed)).prediction[0]
    # Marigold's normals have X right and Y up the image: OpenGL tangent space for a face-on texture.
    filtered = derive_maps(color_linear, settings)
    return PbrMaps(albedo=np.clip(srgb_to_linear(albedo.astype(np.float32)), 0.0, 1.0),
                   height=filtered.height, normal=encode_normal(normal),
                   roughness=np.clip(material[:, :, sub.index("roughness")], 0.0, 1.0).astype(np.float32),
                   ao=filtered.ao,
                   metallic=np.clip(material[:, :, sub.index("metallicity")], 0.0, 1.0).astype(np.float32))
