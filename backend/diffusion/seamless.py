"""Seamless tiling: circular padding in the convolutions of the UNet and the VAE.

A texture tiles when the network sees it as lying on a torus: every convolution pads its
input with the opposite edge instead of zeros. X and Y are independent, so a strip can
tile horizontally only. The patch is per-instance and reversible, because the same cached
pipeline serves seamless and ordinary jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_PATCH = "_scene_diffusion_seamless"


def _padded_conv(conv: nn.Conv2d, pad_y: int, pad_x: int, wrap_x: bool, wrap_y: bool):  # type: ignore[no-untyped-def]
    def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = F.pad(x, (pad_x, pad_x, 0, 0), mode="circular" if wrap_x else "constant")
        x = F.pad(x, (0, 0, pad_y, pad_y), mode="circular" if wrap_y else "constant")
        return F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation, conv.groups)

    return conv_forward


def _padded_convs(modules: Iterable[nn.Module]) -> Iterable[nn.Conv2d]:
    for root in modules:
        for module in root.modules():
            if isinstance(module, nn.Conv2d) and module.padding not in (0, (0, 0), "valid"):
                yield module


def _causal_convs(modules: Iterable[nn.Module]) -> Iterable[nn.Conv3d]:
    """Qwen-Image's VAE convolutions (QwenImageCausalConv3d): they pad in ``forward`` with zeros from their own
    ``_padding`` (W, W, H, H, frames before, after) and have ``padding`` 0, so the Conv2d patch misses them."""
    for root in modules:
        for module in root.modules():
            padding = getattr(module, "_padding", None)
            if isinstance(module, nn.Conv3d) and isinstance(padding, tuple) and len(padding) == 6 and any(padding[:4]):
                yield module


def _wrapped_causal_forward(conv: nn.Conv3d, wrap_x: bool, wrap_y: bool):  # type: ignore[no-untyped-def]
    """The causal convolution with its spatial padding done here, circular where it wraps; time stays causal."""
    pad_w, _, pad_h, _, *time = conv._padding  # type: ignore[misc]
    plain: Any = type(conv).forward  # QwenImageCausalConv3d.forward(x, cache_x)

    def spatial(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (pad_w, pad_w, 0, 0, 0, 0), mode="circular" if wrap_x else "constant")
        return F.pad(x, (0, 0, pad_h, pad_h, 0, 0), mode="circular" if wrap_y else "constant")

    def forward(x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        saved = conv._padding
        conv._padding = (0, 0, 0, 0, *time)  # type: ignore[assignment]
        try:
            return plain(conv, spatial(x), None if cache_x is None else spatial(cache_x))
        finally:
            conv._padding = saved  # type: ignore[assignment]

    return forward


def set_seamless(modules: Iterable[nn.Module], wrap_x: bool, wrap_y: bool) -> int:
    """Make every padded Conv2d under ``modules`` (and Qwen-Image's causal Conv3d) wrap in X and/or Y (or
    neither, which restores the original convolution). Returns how many convolutions were changed."""
    modules = list(modules)
    count = 0
    for causal in _causal_convs(modules):
        if wrap_x or wrap_y:
            causal.forward = _wrapped_causal_forward(causal, wrap_x, wrap_y)  # type: ignore[method-assign]
            setattr(causal, _PATCH, (wrap_x, wrap_y))
        elif hasattr(causal, _PATCH):
            del causal.forward  # falls back to the class method
            delattr(causal, _PATCH)
        count += 1
    for conv in _padded_convs(modules):
        padding = conv.padding
        if isinstance(padding, str):
            continue  # "same" padding computes its own amounts; diffusers does not use it
        pad_y, pad_x = (int(padding[0]), int(padding[1]))
        if wrap_x or wrap_y:
            conv._conv_forward = _padded_conv(conv, pad_y, pad_x, wrap_x, wrap_y)  # type: ignore[method-assign]
            setattr(conv, _PATCH, (wrap_x, wrap_y))
        elif hasattr(conv, _PATCH):
            del conv._conv_forward  # falls back to the class method
            delattr(conv, _PATCH)
        count += 1
    return count


@contextmanager
def seamless(modules: Iterable[nn.Module], wrap_x: bool, wrap_y: bool) -> Iterator[None]:
    """Wrap for one job only: the cached UNet and VAE are shared with other pipelines (a ControlNet render reuses
    the text-to-image components), so the plain convolutions come back afterwards, whatever happened."""
    modules = list(modules)
    set_seamless(modules, wrap_x, wrap_y)
    try:
        yield
    finally:
        set_seamless(modules, False, False)


def pipeline_modules(pipe: object) -> list[nn.Module]:
    """The networks whose convolutions shape the image: the denoiser and the VAE."""
    return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "vae", None)) if isinstance(m, nn.Module)]
