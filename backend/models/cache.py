"""Loading diffusers pipelines with ``from_pretrained`` and keeping them warm: :class:`PipelineCache`.

Loading is offline first, safetensors only unless the user opts in, and every model folder's family
and kind are checked from its JSON config before any weights load. torch, diffusers and
huggingface_hub are imported inside functions.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.models.checkpoint import checkpoint_config, load_checkpoint
from backend.models.errors import ModelError
from backend.models.families import (
    _ARTICLES,
    CONTROLS,
    FAMILY_NAMES,
    MARIGOLD_PIPELINES,
    SHAP_E_IMG2IMG_ID,
    ModelSpec,
    _family_phrase,
    check_components,
    check_family,
    check_kind,
    controlnet_pipeline_class,
    controlnet_role,
    variant_class,
    weights_problem,
)
from backend.models.family_traits import TRAITS
from backend.models.registry import ENV_REGISTRY, MAKE_TINY, _not_here, is_local_source, locate
from contract import messages
from contract.model_sources import is_checkpoint_file

if TYPE_CHECKING:
    import torch

    from backend.diffusion.memory import MemoryPlan


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def free_memory(device: str) -> None:
    gc.collect()  # pipelines hold reference cycles; collect before emptying device caches
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.startswith("mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()


@dataclass
class _Loaded:
    spec: ModelSpec
    pipeline: Any  # a diffusers pipeline, or a ControlNetModel (kind controlnet)


class PipelineCache:
    """Loaded pipelines (and ControlNets) kept warm between jobs, one family on the device at a time.

    Pipelines and ControlNet models are cached by model name. Loading a model of another family
    first releases every loaded model of a different family: SD 1.5, SDXL, Marigold and Shap-E
    never share the device, so a PBR job (Marigold) after a texture job (SD 1.5) reloads, and the
    reverse. The two Marigold models (intrinsics and normals) are one family and stay loaded
    together; so do an SD 1.5 base model and its SD 1.5 ControlNets.

    ControlNet pipelines are not cached: :meth:`controlnet_pipeline` wires the cached base
    pipeline's components and the cached ControlNets into a new pipeline object on every call
    (object wiring only, no weights copied), so nothing but the models themselves holds memory
    and :meth:`release` needs no second list to clear.
    """

    def __init__(self, device: str, dtype: torch.dtype, allow_download: bool = False,
                 allow_unsafe: bool = False) -> None:
        self.device = device
        self.dtype = dtype
        self.allow_download = allow_download
        self.allow_unsafe = allow_unsafe
        self.memory_plan: MemoryPlan | None = None  # the VRAM budget's mode (backend.diffusion.memory)
        self._loaded: dict[str, _Loaded] = {}

    def text_to_image(self, spec: ModelSpec) -> Any:
        """A StableDiffusionPipeline or StableDiffusionXLPipeline, by ``spec.family``."""
        if spec.kind != "text_to_image":
            raise ModelError(messages.INVALID_PARAMS,
                             f"Model '{spec.name}' is a {spec.kind} model, not text_to_image.",
                             "Choose a text_to_image model for this role in the registry.")
        return self._get(spec)

    def marigold(self, spec: ModelSpec) -> Any:
        """A MarigoldIntrinsicsPipeline (kind ``intrinsics``) or MarigoldNormalsPipeline (``normals``).

        Same rules as :meth:`text_to_image`: offline first, safetensors only, the family and the
        pipeline class checked before any weights load, one pipeline per model name kept warm.
        """
        if spec.kind not in MARIGOLD_PIPELINES:
            raise ModelError(messages.INVALID_PARAMS,
                             f"Model '{spec.name}' is a {spec.kind} model, not a Marigold "
                             f"{' or '.join(MARIGOLD_PIPELINES)} model.",
                             "Choose an intrinsics or normals model (a Marigold pipeline) for "
                             "this role in the registry.")
        return self._get(spec)

    def image_to_3d(self, spec: ModelSpec) -> Any:
        """A ShapEImg2ImgPipeline (kind ``image_to_3d``, family ``shap_e``).

        Same rules as :meth:`marigold`: offline first, safetensors only, the family and the pipeline
        class checked before any weights load, kept warm by model name, and loading it releases the
        models of every other family (a Shap-E job after a texture job unloads SD 1.5).
        """
        if spec.kind != "image_to_3d":
            raise ModelError(messages.INVALID_PARAMS,
                             f"Model '{spec.name}' is a {spec.kind} model, not an image_to_3d model.",
                             f"Choose an image_to_3d model (a Shap-E image-to-3D pipeline such as "
                             f"{SHAP_E_IMG2IMG_ID}) for this role in the registry.")
        return self._get(spec)

    def controlnet_pipeline(self, base: ModelSpec, controls: list[ModelSpec], img2img: bool = False,
                            inpaint: bool = False) -> Any:
        """The ControlNet pipeline of ``base`` (a text_to_image model) guided by ``controls``.

        SD 1.5: ``StableDiffusionControlNetPipeline`` (``img2img``:
        ``StableDiffusionControlNetImg2ImgPipeline``, ``inpaint``: ``StableDiffusionControlNetInpaintPipeline``);
        SDXL: ``StableDiffusionXLControlNetPipeline`` (``StableDiffusionXLControlNetImg2ImgPipeline``,
        ``StableDiffusionXLControlNetInpaintPipeline``). The inpaint pipelines take ``image`` (the start
        image), ``mask_image`` (white: repaint) and ``control_image``. With the 4-channel UNet of an ordinary
        text-to-image model (diffusers 0.42, checked in its source) they re-noise the start image's latents to
        each step's noise level and blend them in outside the mask after every step, ending on the clean
        latents there; a 9-channel inpainting UNet gets the mask and masked-image latents as extra input
        channels instead. Either way pixels outside the mask come back through the VAE, close to but not
        equal to the start image: paste them back where they must match exactly. With one control the pipeline's
        ``controlnet`` is that ControlNetModel (a call takes one control image and float scale,
        start and end); with several a ``MultiControlNetModel`` of them in the order given (a call
        takes lists of those, one entry per control, in the same order).

        Every control must be a ``controlnet`` model of the base's family, by its registry entry
        and by its folder's config: all of that is checked before any weights load (a mismatch is
        MODEL_FAMILY, a wrong kind INVALID_PARAMS, a missing model MODEL_MISSING). The base
        pipeline is the one :meth:`text_to_image` returns, so its UNet, VAE and text encoders are
        shared, not copied; the ControlNet pipeline gets its own scheduler (schedulers hold
        per-run state) of the base scheduler's class and config.
        """
        if base.kind != "text_to_image":
            raise ModelError(messages.INVALID_PARAMS,
                             f"Model '{base.name}' is a {base.kind} model; a ControlNet guides a "
                             "text_to_image model.",
                             "Choose a text_to_image model as the base model.")
        if not controls:
            raise ModelError(messages.INVALID_PARAMS,
                             f"No ControlNet given for the ControlNet pipeline of '{base.name}'.",
                             "Enable at least one control (depth, normal or canny).")
        for control in controls:
            if control.kind != "controlnet":
                raise ModelError(messages.INVALID_PARAMS,
                                 f"Model '{control.name}' is a {control.kind} model, not a "
                                 "controlnet.",
                                 f"Give '{control.name}' \"kind\": \"controlnet\" in the "
                                 "registry, or choose a ControlNet for this control.")
            if control.family != base.family:
                raise self._family_clash(
                    base, control, f"ControlNet '{control.name}' is {_family_phrase(control.family)} "
                                   f"and cannot guide '{base.name}', {_family_phrase(base.family)}: a "
                                   "ControlNet must be of its base model's family.")
        # Locate and check every folder (JSON configs only) before any weights load or free.
        sources = {}
        for spec in (base, *controls):
            if self._cached(spec) is not None or spec.name in sources:
                continue
            try:
                sources[spec.name] = self._source(spec)
            except ModelError as exc:
                if spec is base or exc.code != messages.MODEL_FAMILY:
                    raise
                raise self._family_clash(
                    base, spec, f"ControlNet '{spec.name}' cannot guide '{base.name}' "
                                f"({_family_phrase(base.family)}): {exc.message}", exc.hint) from None
        cls = controlnet_pipeline_class(base.family, img2img, inpaint)  # MODEL_FAMILY before loading when none
        if len(controls) > 1 and not TRAITS[base.family].multi_control:
            raise ModelError(messages.INVALID_PARAMS,
                             f"{TRAITS[base.family].name} ControlNet pipelines take one control at a time, "
                             f"got {len(controls)}.", "Keep one control (depth or canny) and turn the others off.")
        base_pipe = self._get(base, sources.get(base.name))
        nets = [self._get(control, sources.get(control.name)) for control in controls]
        return self._assemble(base_pipe, cls, nets, base.family)

    def variant_pipeline(self, base: ModelSpec, variant: str) -> Any:
        """``base``'s img2img or inpaint pipeline (no control) wired from the cached text-to-image pipeline's
        components (object wiring only, as :meth:`controlnet_pipeline`). MODEL_FAMILY before loading when
        diffusers has no such pipeline for the family."""
        cls = variant_class(base.family, variant)
        return self._assemble(self.text_to_image(base), cls, [], base.family)

    def _family_clash(self, base: ModelSpec, control: ModelSpec, message: str, hint: str = "") -> ModelError:
        """MODEL_FAMILY for a ControlNet that cannot guide ``base``; the hint names the right roles."""
        roles = ", ".join(controlnet_role(c, base.family) for c in CONTROLS)
        advice = (f"use {_ARTICLES.get(base.family, 'a')} {FAMILY_NAMES.get(base.family, base.family)} "
                  f"ControlNet with '{base.name}' (roles {roles})")
        if hint:
            return ModelError(messages.MODEL_FAMILY, message, f"{hint} Otherwise {advice}.")
        return ModelError(messages.MODEL_FAMILY, message,
                          f"{advice[:1].upper()}{advice[1:]}, or a base model of the family of "
                          f"'{control.name}'.")

    def _assemble(self, base_pipe: Any, cls: Any, nets: list[Any], family: str) -> Any:
        import inspect

        import diffusers

        params = inspect.signature(cls.__init__).parameters
        # vae, text encoders, tokenizers, unet / transformer (+ safety_checker, feature_extractor, image_encoder)
        parts = {k: v for k, v in base_pipe.components.items() if k in params}
        scheduler = base_pipe.scheduler
        parts["scheduler"] = type(scheduler).from_config(scheduler.config)
        # Constructor flags the base pipeline keeps in its config (SD: requires_safety_checker; SDXL:
        # force_zeros_for_empty_prompt; FLUX.2 klein: is_distilled) or as an attribute (SDXL's invisible watermark).
        options = {k: base_pipe.config[k] for k in ("requires_safety_checker", "force_zeros_for_empty_prompt",
                                                    "is_distilled")
                   if k in params and k in base_pipe.config}
        if "add_watermarker" in params:
            options["add_watermarker"] = getattr(base_pipe, "watermark", None) is not None
        if nets:
            multi = getattr(diffusers, TRAITS[family].multi_control) if len(nets) > 1 else None
            options["controlnet"] = nets[0] if multi is None else multi(nets)
        pipeline = cls(**parts, **options)
        pipeline.set_progress_bar_config(disable=True)
        if self.memory_plan is not None and self.memory_plan.offloads:
            from backend.diffusion.memory import apply_memory_plan

            # Offload hooks run per pipeline, in its order of models: the new one (ControlNets too) needs its own.
            pipeline = apply_memory_plan(pipeline, self.memory_plan, self.device)
        return pipeline

    def _cached(self, spec: ModelSpec) -> Any:
        hit = self._loaded.get(spec.name)
        return hit.pipeline if hit is not None and hit.spec == spec else None

    def _get(self, spec: ModelSpec, source: tuple[str, bool] | None = None) -> Any:
        """The cached model, else loaded (``source``: what :meth:`_source` gave, when known)."""
        hit = self._cached(spec)
        if hit is not None:
            return hit
        # locate + family check: cheap, before any freeing
        path, local = source if source is not None else self._source(spec)
        self._drop(lambda s: s.family != spec.family or s.name == spec.name)
        pipeline = self._from_pretrained(spec, path, local)
        self._loaded[spec.name] = _Loaded(spec, pipeline)
        return pipeline

    def loaded(self) -> list[str]:
        """Names of the loaded models: pipelines and ControlNets, in loading order."""
        return list(self._loaded)

    def speedups(self) -> list[str]:
        """The CUDA speed settings the loaded models run with (backend/diffusion/speedups.py; [] off CUDA)."""
        from backend.diffusion.speedups import applied_speedups

        found = [name for item in self._loaded.values() for name in applied_speedups(item.pipeline)]
        return list(dict.fromkeys(found))

    def release(self) -> None:
        self._drop(lambda s: True)

    def _drop(self, which: Callable[[ModelSpec], bool]) -> None:
        names = [n for n, item in self._loaded.items() if which(item.spec)]
        for name in names:
            del self._loaded[name]
        if names:
            free_memory(self.device)

    def _source(self, spec: ModelSpec) -> tuple[str, bool]:
        """(what to hand from_pretrained, whether it is local), family already checked."""
        if spec.quantization or spec.transformer_file:  # GGUF / bnb 4-bit: their own checks, before anything loads
            from backend.models.quantized import check_quantization

            check_quantization(spec, self.device)
        folder = locate(spec)
        if folder is not None and is_checkpoint_file(spec.source):
            checkpoint_config(spec, folder, self.allow_unsafe)  # header, family, config folder: or raise
            return str(folder), True
        if folder is not None:
            check_family(spec, folder)
            check_kind(spec, folder)
            check_components(spec, folder)
            return str(folder), True
        if is_local_source(spec) or not self.allow_download or hub_offline():
            raise ModelError(messages.MODEL_MISSING,
                             f"Model '{spec.name}' is not available: {_not_here(spec)}"
                             f"{self._why_no_download(spec)}.", self._missing_hint(spec))
        index = self._download_index(spec)
        check_family(spec, index)
        check_kind(spec, index)
        return spec.source, False

    def _why_no_download(self, spec: ModelSpec) -> str:
        if is_local_source(spec):
            return ""
        if not self.allow_download:
            return ", and downloads are turned off"
        return ", and HF_HUB_OFFLINE is set"

    def _missing_hint(self, spec: ModelSpec) -> str:
        if is_checkpoint_file(spec.source):
            return (f"Put the checkpoint at {spec.source}, fix the source of '{spec.name}' in the registry, or "
                    f"run `{MAKE_TINY}`.")
        if is_local_source(spec):
            return (f"Create the folder {spec.source} (a diffusers save_pretrained folder), "
                    f"fix the source of '{spec.name}' in the registry, or run `{MAKE_TINY}`.")
        return (f"Download it once with `hf download {spec.source}`, allow downloads in the "
                f"add-on preferences, point '{spec.name}' at a local folder in the registry "
                f"(or set {ENV_REGISTRY}), or run `{MAKE_TINY}` for small test models.")

    def _load_hint(self, problem: str | None) -> str:
        if problem and problem.startswith("no safetensors"):
            return ("Re-save the model with save_pretrained(..., safe_serialization=True), or turn on "
                    "Allow Pickle Weights in the add-on preferences (--allow-unsafe on the command line).")
        return "The model files look incomplete or damaged: download or rebuild them."

    def _download_index(self, spec: ModelSpec) -> Path:
        """Fetch only model_index.json (a ControlNet: config.json) so the family is checked
        before weights download."""
        from huggingface_hub import hf_hub_download

        index = "config.json" if spec.kind == "controlnet" else "model_index.json"
        try:
            return Path(hf_hub_download(spec.source, index)).parent
        except Exception as exc:  # network, auth, missing repo: all mean "cannot get it"
            raise ModelError(messages.MODEL_MISSING,
                             f"Cannot download {spec.source} for model '{spec.name}': {exc}",
                             self._missing_hint(spec)) from None

    def _from_pretrained(self, spec: ModelSpec, source: str, local: bool) -> Any:
        # Looked up on the package at call time, so that replacing backend.models.pipeline_class
        # (tests do, to prove that nothing loads) reaches this call as it did before the split.
        from backend import models

        cls = models.pipeline_class(spec.family, spec.kind)
        if is_checkpoint_file(source):  # a single file: diffusers' from_single_file, configs from a folder
            config = checkpoint_config(spec, Path(source), self.allow_unsafe)
            return self._ready(load_checkpoint(cls, spec, Path(source), config, self.dtype))
        if spec.quantization:
            from backend.models.quantized import load_quantized

            return self._ready(load_quantized(cls, spec, Path(source), self.dtype, local))
        try:
            pipeline = cls.from_pretrained(
                source,
                dtype=self.dtype,  # diffusers 0.42 deprecates torch_dtype for dtype
                use_safetensors=None if self.allow_unsafe else True,
                local_files_only=local,
            )
        except (OSError, ValueError) as exc:  # missing / incomplete files, pickle-only weights
            problem = weights_problem(Path(source), self.allow_unsafe) if local else None
            raise ModelError(messages.MODEL_MISSING,
                             f"Cannot load model '{spec.name}' from {source}: {problem or exc}",
                             self._load_hint(problem)) from None
        return self._ready(pipeline)

    def _ready(self, pipeline: Any) -> Any:
        from backend.diffusion.memory import apply_memory_plan

        # On the device, or offloaded / tiled as the VRAM budget says (no plan: all on the device).
        pipeline = (apply_memory_plan(pipeline, self.memory_plan, self.device) if self.memory_plan is not None
                    else pipeline.to(self.device))
        if hasattr(pipeline, "set_progress_bar_config"):  # a pipeline, not a ControlNetModel
            pipeline.set_progress_bar_config(disable=True)
        return pipeline
