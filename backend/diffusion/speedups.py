"""CUDA speed settings for diffusion models, applied where a pipeline is placed on its device.

:func:`apply_speedups` does nothing off CUDA (CPU and MPS keep diffusers' defaults) and returns what it applied,
for the log and the job's provenance. Each step is idempotent (a ControlNet pipeline assembled from a cached base
pipeline passes its shared UNet through again) and leaves alone what another feature set up:

- ``sdpa``: attention processors that are diffusers' legacy ``AttnProcessor`` become ``AttnProcessor2_0``
  (PyTorch's scaled-dot-product attention: flash / memory-efficient kernels). diffusers already picks it on
  PyTorch 2, so this usually changes nothing; sliced, IP-Adapter and fused processors are kept.
- ``channels-last``: UNet, ControlNet and VAE weights in NHWC, which cuDNN's fp16/bf16 tensor-core convolutions
  prefer (NCHW inputs then run NHWC too). Done before offload hooks are added: the hooks' copies keep the format.
- ``fused-qkv``: self-attention q/k/v (cross-attention k/v) projections as one matmul. LoRAs are loaded later
  (backend/models/lora.py) into ``to_q`` / ``to_k`` / ``to_v``, which a fused projection would bypass, silently
  dropping the LoRA's q/k/v part; our processor therefore falls back to the unfused projections on any
  attention whose q/k/v hold a PEFT layer, so LoRA loading, switching and unloading stay exact. The unfused
  weights stay for that fallback, so fusing costs memory (SD 1.5 UNet +56M parameters, 107 MiB in fp16; SDXL
  +648M, 1.2 GiB): it is skipped when the VRAM plan saves memory (12/8/6 GB modes; the 6 GB mode's attention
  slicing would replace the fused processor anyway). An IP-Adapter, when loaded, puts its own processors in.
- ``cudnn-benchmark``: cuDNN times its convolution algorithms once per shape (process-wide).
- ``vae-no-upcast``: SDXL's VAE overflows in fp16, so its config asks the pipelines to decode in fp32
  (``force_upcast``); we keep that in fp16 (madebyollin's fp16-fix VAE would avoid it, but it is other weights)
  and turn it off only in bf16, whose range is fp32's.
- ``compile``: ``torch.compile`` of UNet and ControlNet, off by default (minutes of compiling on the first job,
  again for each new image size); ``SCENE_DIFFUSION_COMPILE=1`` turns it on. Skipped with sequential offload,
  whose per-layer hooks move weights during the forward.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

ENV_SPEEDUPS = "SCENE_DIFFUSION_SPEEDUPS"  # "0": none (diffusers' defaults on CUDA too)
ENV_COMPILE = "SCENE_DIFFUSION_COMPILE"  # "1": torch.compile UNet and ControlNet
ENV_COMPILE_MODE = "SCENE_DIFFUSION_COMPILE_MODE"  # torch.compile mode; default "max-autotune-no-cudagraphs"
APPLIED_ATTR = "_scene_diffusion_speedups"  # on a placed pipeline: what apply_speedups applied
_CONV_MODELS = ("unet", "controlnet", "vae")
_COMPILED_MODELS = ("unet", "controlnet")


@dataclass(frozen=True)
class Speedups:
    sdpa: bool = True
    channels_last: bool = True
    fuse_qkv: bool = True
    cudnn_benchmark: bool = True
    vae_no_upcast_bf16: bool = True
    compile: bool = False
    # Autotuned kernels without CUDA graphs: graphs need static input addresses, which pipelines do not keep.
    compile_mode: str = "max-autotune-no-cudagraphs"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Speedups:
        values = os.environ if env is None else env
        if values.get(ENV_SPEEDUPS, "1").strip() == "0":
            return cls(sdpa=False, channels_last=False, fuse_qkv=False, cudnn_benchmark=False,
                       vae_no_upcast_bf16=False, compile=False)
        mode = values.get(ENV_COMPILE_MODE, "").strip() or cls.compile_mode
        return cls(compile=values.get(ENV_COMPILE, "0").strip() == "1", compile_mode=mode)


def is_cuda(device: str) -> bool:
    return device.split(":")[0] == "cuda"


def models_of(target: Any, names: tuple[str, ...] = _CONV_MODELS) -> list[Any]:
    """The diffusers models named ``names`` in a pipeline, or ``target`` itself when it is a bare model
    (a ControlNetModel placed alone); a MultiControlNetModel counts as its nets."""
    from diffusers import ModelMixin

    if isinstance(target, ModelMixin):
        found = [target]
    else:
        found = [model for name in names if isinstance(model := getattr(target, name, None), ModelMixin)]
    out: list[Any] = []
    for model in found:
        nets = getattr(model, "nets", None)  # MultiControlNetModel
        out.extend(nets if nets is not None else [model])
    return out


def apply_speedups(pipeline: Any, device: str, dtype: torch.dtype | None, settings: Speedups, *,
                   sequential_offload: bool = False, memory_saving: bool = False) -> list[str]:
    """Apply ``settings`` to ``pipeline`` (or a bare model) if ``device`` is CUDA; what was applied, in order.

    Call it before the pipeline is placed (offload hooks copy the weights as they are then).
    ``memory_saving``: the VRAM plan trades speed for memory (tiling, offload, slicing): no fused copies.
    """
    if not is_cuda(device):
        return []
    applied: list[str] = []
    if settings.sdpa and use_sdpa(pipeline):
        applied.append("sdpa")
    if settings.channels_last and to_channels_last(pipeline):
        applied.append("channels-last")
    if settings.fuse_qkv and not memory_saving and fuse_qkv(pipeline):
        applied.append("fused-qkv")
    if settings.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
        applied.append("cudnn-benchmark")
    if settings.vae_no_upcast_bf16 and dtype == torch.bfloat16 and vae_no_upcast(pipeline):
        applied.append("vae-no-upcast")
    if settings.compile and sequential_offload:
        log.info("torch.compile skipped: sequential offload moves weights layer by layer during the forward")
    elif settings.compile and compile_models(pipeline, settings.compile_mode):
        applied.append(f"compile({settings.compile_mode})")
    return applied


def applied_speedups(pipeline: Any) -> list[str]:
    """What :func:`apply_speedups` applied when ``pipeline`` was placed ([] when nothing, or never placed)."""
    return list(getattr(pipeline, APPLIED_ATTR, None) or [])


def use_sdpa(target: Any) -> bool:
    """Legacy ``AttnProcessor`` -> ``AttnProcessor2_0``; other processors are kept. Whether any changed."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    changed = False
    for module in _attentions(target):
        if type(module.processor) is AttnProcessor:
            module.set_processor(AttnProcessor2_0())
            changed = True
    return changed


def _attentions(target: Any) -> list[Any]:
    """diffusers ``Attention`` modules of the models (typed Any: their processor annotations are too narrow)."""
    from diffusers.models.attention_processor import Attention

    return [module for model in models_of(target) for module in model.modules() if isinstance(module, Attention)]


def to_channels_last(target: Any) -> bool:
    """UNet / ControlNet / VAE weights in channels-last format. Whether any model was converted."""
    changed = False
    for model in models_of(target):
        if not getattr(model, "_scene_channels_last", False):
            model.to(memory_format=torch.channels_last)
            model._scene_channels_last = True  # a plain attribute: the format is not visible on the module
            changed = True
    return changed


def fuse_qkv(target: Any) -> bool:
    """Fused q/k/v projections on every attention that runs diffusers' plain SDPA processor (not sliced, not
    IP-Adapter). Whether any was fused."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    changed = False
    for module in _attentions(target):
        if type(module.processor) is not AttnProcessor2_0:
            continue
        if getattr(module, "add_q_proj", None) is not None:  # added KV projections: not for SD UNets
            continue
        with torch.no_grad():
            module.fuse_projections(fuse=True)
        module.set_processor(LoraSafeFusedProcessor())
        changed = True
    return changed


def vae_no_upcast(target: Any) -> bool:
    """Decode in the pipeline's bf16 instead of fp32 (``force_upcast`` off). Whether it was on."""
    vae = getattr(target, "vae", None)
    if vae is None or not getattr(vae.config, "force_upcast", False):
        return False
    vae.register_to_config(force_upcast=False)
    return True


def compile_models(target: Any, mode: str) -> bool:
    """``torch.compile`` UNet and ControlNet in place (compiled on first call). Whether any was compiled."""
    changed = False
    for model in models_of(target, _COMPILED_MODELS):
        if getattr(model, "_compiled_call_impl", None) is None:
            model.compile(mode=mode)
            changed = True
    return changed


def _has_lora(layer: Any) -> bool:
    return hasattr(layer, "lora_A")  # a PEFT LoRA layer wrapping the projection


class LoraSafeFusedProcessor:
    """diffusers' ``FusedAttnProcessor2_0``, except on attentions whose q/k/v projections hold a LoRA (PEFT
    layers injected after fusing): those run the unfused ``AttnProcessor2_0``, which goes through the LoRA."""

    def __init__(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

        self._fused = FusedAttnProcessor2_0()
        self._plain = AttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        lora = _has_lora(attn.to_q) or _has_lora(attn.to_k) or _has_lora(attn.to_v)
        processor = self._plain if lora else self._fused
        return processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
