"""What one job adds to its base model: LoRAs, a sampler and a reference image (IP-Adapter).

Everything is checked before any weights load (:func:`prepare`: the files exist, each LoRA is of the base
model's family, the IP-Adapter of that family is on this machine, licences allow the job), then put on the
cached base pipeline for the job (:meth:`JobOptions.attach`) and taken off again when it ends
(:meth:`JobOptions.running`), so the next job starts from the plain model without reloading it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.models import ModelError, ModelSpec, Registry, locate
from backend.tasks.context import JobContext, invalid
from contract import messages
from contract.tasks import ModelOptions


@dataclass
class JobOptions:
    family: str
    scheduler: str  # resolved: never "" (the family's default is filled in)
    loras: list[Any] = field(default_factory=list)  # backend.models.lora.LoraFile
    reference: np.ndarray | None = None  # H x W x 3 float32 sRGB in [0, 1]
    strength: float = 0.0
    ip_spec: ModelSpec | None = None
    ip_folder: Path | None = None
    slice_attention: bool = False  # the VRAM budget's attention slicing (backend.diffusion.memory)
    _base: Any = None  # the base pipeline the options were attached to

    def attach(self, base_pipe: Any) -> None:
        """Put the LoRAs and the IP-Adapter on the (cached) base pipeline; a job without them takes them off."""
        from backend.models.ip_adapter import use_reference
        from backend.models.lora import apply_loras

        self._base = base_pipe
        if getattr(base_pipe, "unet", None) is None:  # a transformer family: no LoRAs or adapters (checked in prepare)
            return
        apply_loras(base_pipe, self.family, self.loras)
        # The VRAM budget's attention slicing and an IP-Adapter exclude each other in diffusers (it cannot load
        # an adapter over sliced attention, and slicing replaces the adapter's): with a reference the attention
        # runs unsliced, and slicing goes on again once the adapter is unloaded.
        if self.ip_spec is not None and _sliced(base_pipe):
            base_pipe.disable_attention_slicing()
        use_reference(base_pipe, self.ip_spec, self.ip_folder)
        if self.slice_attention and self.ip_spec is None and not _sliced(base_pipe):
            base_pipe.enable_attention_slicing()

    @contextmanager
    def running(self, pipes: list[Any], seed: int) -> Iterator[dict[str, Any]]:
        """The job's sampler on each pipeline it calls; yields the extra call arguments (the reference image).
        Afterwards the pipelines have their own samplers back and the LoRAs are switched off. ``seed``: the job's,
        for samplers that draw noise of their own (DPM++ SDE's Brownian tree)."""
        from backend.diffusion.schedulers import job_scheduler
        from backend.models.ip_adapter import reference_call_kwargs
        from backend.models.lora import clear_loras

        try:
            with job_scheduler(pipes, self.scheduler, self.family, seed):
                extra = (reference_call_kwargs(pipes[0], self.reference, self.strength)
                         if self.reference is not None else {})
                yield extra
        finally:
            if self._base is not None and self.loras:
                clear_loras(self._base)


def _sliced(pipe: Any) -> bool:
    if getattr(pipe, "unet", None) is None:
        return False
    return any(type(p).__name__.startswith("Sliced") for p in pipe.unet.attn_processors.values())


def prepare(ctx: JobContext, base: ModelSpec, params: ModelOptions, negative_prompt: str = "") -> JobOptions:
    """Check the job's options against ``base`` and record them in job.json; loads nothing."""
    from backend.diffusion.family_calls import negative_prompt_unused
    from backend.diffusion.schedulers import resolve_name
    from backend.models.lora import LoraFile, check_lora, inspect_lora
    from backend.models.provenance import check_commercial, file_digest

    scheduler = resolve_name(params.scheduler, base.family)
    loras = params.active_loras()
    _check_family_options(base, scheduler, bool(loras))
    plan = ctx.models.memory_plan
    unet = base.family in ("sd15", "sdxl")  # attention slicing is the UNet pipelines' (diffusers' sliced processors)
    options = JobOptions(base.family, scheduler, slice_attention=unet and plan is not None and plan.attention_slicing)
    records: list[dict[str, Any]] = []
    widths = known_widths(ctx.registry) if loras else {}  # reads every pipeline's UNet config: only for LoRAs
    for lora in loras:
        path = ctx.input(lora.file)
        name = lora.name or Path(lora.file).name
        if not path.is_file():
            raise invalid(f"LoRA {name} is not in the job folder ({lora.file})",
                          "the add-on or the command line puts LoRA files there; submit the job again")
        info = inspect_lora(path, widths, name=name)
        check_lora(info, base.family, base.name)
        check_commercial(f"LoRA '{name}'", info.licence, params.commercial)
        digest = file_digest(path)
        options.loras.append(LoraFile(path=path, weight=lora.weight, key=digest, name=name))
        records.append({"role": "lora", "name": name, "sha256": digest, "weight": lora.weight,
                        "family": info.family or base.family, "licence": info.licence})
    if params.reference:
        options.reference = _reference_image(ctx, params.reference, params.reference_colorspace)
        options.strength = params.reference_strength
        options.ip_spec, options.ip_folder = _ip_adapter(ctx, base)
        ctx.record_models(commercial=params.commercial, ip_adapter=options.ip_spec)
    if records:
        ctx.record_extra_models("loras", records)
    ctx.record(options={"scheduler": scheduler, "reference": params.reference,
                        "reference_strength": params.reference_strength if params.reference else None,
                        **({"negative_prompt_unused": True} if negative_prompt_unused(base.family, negative_prompt)
                           else {})})
    return options


def _check_family_options(base: ModelSpec, scheduler: str, loras: bool) -> None:
    """What the transformer families do not take (yet): SD samplers and LoRAs. Before anything loads."""
    from backend.models.family_traits import TRAITS

    traits = TRAITS.get(base.family)
    if traits is None:
        return
    if traits.flow_matching and scheduler != "model":
        raise invalid(f"{traits.name} samples with its own flow-matching scheduler; the sampler '{scheduler}' is "
                      "for SD 1.5 and SDXL models", "leave the sampler empty or choose 'As the model ships'")
    if loras and not traits.loras:
        raise invalid(f"LoRAs on {traits.name} models are not supported yet", "remove the LoRAs from the job, or use "
                      "an SD 1.5 or SDXL model with them")


def _reference_image(ctx: JobContext, relative: str, colorspace: str) -> np.ndarray:
    """H x W x 3 sRGB in [0, 1]: what a viewer shows is what the adapter sees."""
    from backend.imaging.color import linear_to_srgb
    from backend.imaging.exr import ExrError, read_exr
    from backend.tasks.mesh import load_picture

    path = ctx.input(relative)
    if not path.is_file():
        raise invalid(f"the reference image is not in the job folder ({relative})", "submit the job again")
    if path.suffix.lower() == ".exr":  # scene-linear
        try:
            image = linear_to_srgb(next(iter(read_exr(path).layers.values())))
        except (OSError, ExrError, StopIteration) as exc:
            raise invalid(f"cannot read the reference image {relative}: {exc}",
                          "use a PNG, JPEG or EXR image as the reference") from None
    else:  # PNG, JPEG ... or the .npy of a Blender image's pixels
        image = load_picture(path, colorspace)
    if image.shape[2] < 3:  # grey (+ alpha)
        image = np.repeat(image[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(np.clip(image[:, :, :3], 0.0, 1.0), dtype=np.float32)


def _ip_adapter(ctx: JobContext, base: ModelSpec) -> tuple[ModelSpec, Path]:
    from backend.models.ip_adapter import check_ip_adapter, ip_adapter_role

    spec = ctx.registry.resolve(ip_adapter_role(base.family))
    folder = locate(spec)
    if folder is None:
        raise ModelError(messages.MODEL_MISSING,
                         f"A reference image needs the IP-Adapter '{spec.name}' ({spec.source}), which is not on "
                         "this machine.",
                         f"Download it once with `hf download {spec.source}`, point the registry's "
                         f"'{spec.name}' at a local folder, or clear the reference image.")
    check_ip_adapter(spec, folder, base.family, allow_unsafe=ctx.models.allow_unsafe)
    return spec, folder


def known_widths(registry: Registry) -> dict[int, str]:
    """Cross-attention width -> family for the registry's local base models (read from their UNet configs):
    what tells a tiny or unusual LoRA's family, beside the real models' widths the LoRA module knows."""
    from backend.models.checkpoint import locate_config
    from backend.models.lora import base_width

    widths: dict[int, str] = {}
    for spec in registry.models.values():
        if spec.kind != "text_to_image":
            continue
        folder = locate(spec)
        if folder is not None and folder.is_file():  # a single-file checkpoint: its config folder says
            folder = locate_config(spec)
        width = base_width(folder) if folder is not None else None
        if width is not None:
            widths.setdefault(width, spec.family)
    return widths


def controlnet_pipeline(ctx: JobContext, options: JobOptions, base: ModelSpec, controls: list[ModelSpec],
                        img2img: bool = False) -> Any:
    """The ControlNet pipeline of ``base`` with the job's options on its base model. Loading first checks every
    folder and loads the models; the options then go on the base pipeline, and the ControlNet pipeline is wired
    again from its components (object wiring only) so that it has the IP-Adapter's image encoder, or no longer
    has one."""
    ctx.models.controlnet_pipeline(base, controls, img2img=img2img)
    options.attach(ctx.models.text_to_image(base))
    return ctx.models.controlnet_pipeline(base, controls, img2img=img2img)
