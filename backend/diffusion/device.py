"""Device and precision choice: CUDA, then MPS, then CPU; half precision where it is safe."""

from __future__ import annotations

import platform
import sys

import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def pick_device(preference: str = "auto") -> str:
    """The device asked for, or the best present one; an unavailable request is an error."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if preference == "auto":
        return next(name for name in ("cuda", "mps", "cpu") if available[name])
    if preference not in available:
        raise ValueError(f"unknown device {preference!r}; choose one of {', '.join(DEVICES)}")
    if not available[preference]:
        raise ValueError(f"device {preference!r} is not available on this machine")
    return preference


def pick_dtype(device: str, preference: str = "auto") -> torch.dtype:
    """fp16 on CUDA and MPS (the SD VAE in fp16 is handled by the pipelines' upcast);
    fp32 on CPU, where half precision is slow or unsupported for convolutions."""
    if preference == "auto":
        return torch.float16 if device in ("cuda", "mps") else torch.float32
    if preference not in _DTYPES:
        raise ValueError(f"unknown precision {preference!r}; choose one of {', '.join(PRECISIONS)}")
    return _DTYPES[preference]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}.get(dtype, str(dtype))


def library_versions() -> dict[str, str]:
    import diffusers
    import numpy
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "platform": sys.platform,
    }


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
