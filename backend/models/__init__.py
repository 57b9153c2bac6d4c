"""Model registry, families, loading and caching of pipelines.

A registry maps roles (``text_to_image``, ``intrinsics``, ``normals``, the ControlNets
``controlnet_depth`` ..., ``image_to_3d``) to named models; a model is a Hugging Face repo
id or a local diffusers folder. Loading goes through diffusers' real ``from_pretrained``,
offline first, safetensors only unless the user opts in. The family of a folder is read from
its JSON config before any weights load, so mixing SD 1.5 and SDXL parts is a clear error
instead of a shape mismatch deep inside a pipeline.

Kinds and families: ``text_to_image`` models are SD 1.5 or SDXL pipelines; ``intrinsics`` and
``normals`` models are Marigold pipelines (family ``marigold``: an SD-2-style UNet fine-tuned
to map an image to albedo / material maps or to camera-space normals), loaded as diffusers'
``MarigoldIntrinsicsPipeline`` and ``MarigoldNormalsPipeline``. ``controlnet`` models are a
single diffusers ``ControlNetModel`` (a folder with ``config.json``, no ``model_index.json``) of
family SD 1.5 or SDXL; :meth:`PipelineCache.controlnet_pipeline` wires one or several of them
into the ControlNet pipeline of their base ``text_to_image`` model, which must be the same family.
``image_to_3d`` models are diffusers' ``ShapEImg2ImgPipeline`` (family ``shap_e``: a CLIP image
encoder, a prior transformer denoising a latent, and a renderer turning that latent into the weights
of a small signed-distance / colour MLP that marching cubes turns into a mesh).

torch, diffusers and huggingface_hub are imported inside functions: reading and listing the
registry stays light.

The package's modules, each importing only those before it (this package re-exports their public
names, so ``from backend.models import ...`` and ``models.X`` work as before the split):

- :mod:`backend.models.errors`: :class:`ModelError`.
- :mod:`backend.models.families`: families and kinds, :class:`ModelSpec`, the folder checks
  (:func:`detect_family`, :func:`check_family`, :func:`check_kind`, :func:`weights_problem`),
  :func:`controlnet_role` and the diffusers class lookups.
- :mod:`backend.models.registry`: :class:`Registry`, :func:`load_registry`, :func:`locate`,
  :func:`describe` and :func:`check`.
- :mod:`backend.models.cache`: :class:`PipelineCache` (loading with ``from_pretrained``),
  :func:`free_memory`.
"""

from __future__ import annotations

from backend.models.cache import PipelineCache, free_memory, hub_offline
from backend.models.errors import ModelError
from backend.models.families import (
    CONTROLNET_CLASS,
    CONTROLNET_IDS,
    CONTROLS,
    EXAMPLE_IDS,
    FAMILIES,
    FAMILY_NAMES,
    IP_ADAPTER_ID,
    KIND_FAMILIES,
    KINDS,
    MARIGOLD_INTRINSICS_ID,
    MARIGOLD_NORMALS_ID,
    MARIGOLD_PIPELINES,
    PIPELINE_CLASSES,
    SD2_CROSS_ATTENTION_DIM,
    SHAP_E_IMG2IMG_ID,
    ModelSpec,
    check_components,
    check_family,
    check_kind,
    check_size,
    controlnet_pipeline_class,
    controlnet_role,
    detect_family,
    pipeline_class,
    variant_class,
    weights_problem,
)
from backend.models.registry import (
    ENV_REGISTRY,
    MAKE_TINY,
    REGISTRY_FILE,
    REGISTRY_FORMAT,
    Registry,
    check,
    default_registry,
    describe,
    hf_cache_dir,
    is_local_source,
    load_registry,
    locate,
    missing_detail,
)

__all__ = [
    # errors
    "ModelError",
    # families
    "CONTROLNET_CLASS", "CONTROLNET_IDS", "CONTROLS", "EXAMPLE_IDS", "FAMILIES", "FAMILY_NAMES",
    "IP_ADAPTER_ID", "KIND_FAMILIES", "KINDS", "MARIGOLD_INTRINSICS_ID", "MARIGOLD_NORMALS_ID", "MARIGOLD_PIPELINES",
    "PIPELINE_CLASSES", "SD2_CROSS_ATTENTION_DIM", "SHAP_E_IMG2IMG_ID", "ModelSpec", "check_family",
    "check_kind", "controlnet_pipeline_class", "controlnet_role", "detect_family", "pipeline_class",
    "weights_problem", "check_components", "check_size", "variant_class",
    # registry
    "ENV_REGISTRY", "MAKE_TINY", "REGISTRY_FILE", "REGISTRY_FORMAT", "Registry", "check",
    "default_registry", "describe", "hf_cache_dir", "is_local_source", "load_registry", "locate",
    "missing_detail",
    # cache
    "PipelineCache", "free_memory", "hub_offline",
]
