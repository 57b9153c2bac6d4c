"""Quantized transformers for the large families (FLUX.1, FLUX.2 klein, Qwen-Image, Z-Image, SD 3.5).

A registry entry may ask for its transformer quantized (``ModelSpec.quantization``):

- ``"gguf"``: the transformer comes from a GGUF single file (``transformer_file``, as the community
  distributes them: Q8_0, Q4_K, ...), read with diffusers' ``from_single_file``; its weights stay quantized in
  memory and are dequantized layer by layer as they run. The rest of the pipeline comes from the entry's folder.
  Needs the ``gguf`` package, which is optional in the backend's environment.
- ``"bnb_4bit"``: the folder's own transformer quantized on load to 4-bit NF4 by bitsandbytes, which runs on
  NVIDIA GPUs only.

:func:`check_quantization` refuses a spec that cannot work (unknown mode, a family without a transformer, a
missing or non-GGUF file, a missing package, bitsandbytes off CUDA) before anything loads;
:func:`load_quantized` loads the pipeline but leaves it where it loaded (the caller applies its memory plan).
torch and diffusers are imported inside functions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from backend.models.errors import ModelError
from backend.models.families import FAMILY_NAMES, ModelSpec
from contract import messages

QUANTIZATIONS = ("gguf", "bnb_4bit")
# Family -> its diffusers transformer class (each has from_single_file in diffusers 0.42's loader table).
TRANSFORMER_CLASSES: dict[str, str] = {
    "flux": "FluxTransformer2DModel",
    "flux2_klein": "Flux2Transformer2DModel",
    "qwen_image": "QwenImageTransformer2DModel",
    "z_image": "ZImageTransformer2DModel",
    "sd3": "SD3Transformer2DModel",
}
GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
_GGUF_INSTALL = "pip install gguf"
_BNB_INSTALL = "pip install bitsandbytes"


def _name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_quantization(spec: ModelSpec, device: str) -> None:
    """Raise ModelError when ``spec``'s quantization cannot load on ``device``; nothing is read but file headers."""
    mode = spec.quantization
    if spec.transformer_file and mode != "gguf":  # the file would be ignored silently
        raise ModelError(messages.INVALID_PARAMS,
                         f"Model '{spec.name}' names a transformer_file ({spec.transformer_file}) but "
                         f"{f'quantization {mode!r}' if mode else 'no quantization'}: only GGUF transformers load "
                         "from a file.",
                         f"Set \"quantization\": \"gguf\" for '{spec.name}' in the registry to load the GGUF "
                         "transformer, or remove \"transformer_file\".")
    if not mode:
        return
    if mode not in QUANTIZATIONS:
        raise ModelError(messages.INVALID_PARAMS,
                         f"Model '{spec.name}' asks for quantization '{mode}', which is not known.",
                         "Use \"quantization\": \"gguf\" (with a transformer_file) or \"bnb_4bit\" (CUDA), or "
                         "remove it.")
    if spec.family not in TRANSFORMER_CLASSES:
        with_transformers = ", ".join(_name(f) for f in TRANSFORMER_CLASSES)
        raise ModelError(messages.INVALID_PARAMS,
                         f"Model '{spec.name}' is {_name(spec.family)}, which has no transformer to quantize.",
                         f"Quantization is for transformer models ({with_transformers}); remove "
                         f"\"quantization\" from '{spec.name}' in the registry.")
    if mode == "gguf":
        _check_gguf(spec)
    else:
        _check_bnb(spec, device)


def _check_gguf(spec: ModelSpec) -> None:
    if not spec.transformer_file:
        raise ModelError(messages.INVALID_PARAMS,
                         f"Model '{spec.name}' asks for a GGUF transformer but names no transformer_file.",
                         f"Set \"transformer_file\" of '{spec.name}' in the registry to the .gguf file (a path "
                         "relative to the registry file, or absolute).")
    file = Path(spec.transformer_file)
    if file.suffix.lower() != ".gguf":
        raise ModelError(messages.INVALID_PARAMS,
                         f"The transformer_file of model '{spec.name}' ({file}) is not a .gguf file.",
                         "Point \"transformer_file\" at a GGUF transformer (ending in .gguf); a .safetensors "
                         "model belongs in \"source\".")
    if not file.is_file():
        raise ModelError(messages.MODEL_MISSING,
                         f"The GGUF transformer of model '{spec.name}' is not at {file}.",
                         f"Download the .gguf file there, or fix \"transformer_file\" of '{spec.name}' in the "
                         "registry.")
    try:
        with file.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelError(messages.MODEL_MISSING, f"Cannot read {file}: {exc}",
                         "Check the file's permissions, or download it again.") from None
    if magic != GGUF_MAGIC:  # renamed, cut short, or an HTML error page saved under the name
        raise ModelError(messages.MODEL_MISSING,
                         f"{file} (the transformer_file of model '{spec.name}') is not a GGUF file.",
                         "The file is damaged or is something else with a .gguf name: download it again.")
    if not _installed("gguf"):
        raise ModelError(messages.MODEL_MISSING,
                         f"Model '{spec.name}' has a GGUF transformer, but the gguf package is not installed.",
                         f"Run `{_GGUF_INSTALL}` in the backend's environment (it is optional), or use the "
                         "model's own weights without \"quantization\".")


def _check_bnb(spec: ModelSpec, device: str) -> None:
    if device.split(":")[0] != "cuda":
        raise ModelError(messages.INVALID_PARAMS,
                         f"Model '{spec.name}' asks for bitsandbytes 4-bit, but the backend runs on "
                         f"{device.split(':')[0].upper()}: bitsandbytes 4-bit needs an NVIDIA GPU.",
                         "Use \"quantization\": \"gguf\" with a GGUF transformer, or a VRAM budget "
                         "(--vram-budget 8gb or 6gb) instead.")
    if not _installed("bitsandbytes"):
        raise ModelError(messages.MODEL_MISSING,
                         f"Model '{spec.name}' asks for bitsandbytes 4-bit, but bitsandbytes is not installed.",
                         f"Run `{_BNB_INSTALL}` in the backend's environment, or use \"quantization\": "
                         "\"gguf\" or a VRAM budget instead.")


def transformer_class(family: str) -> Any:
    import diffusers

    return getattr(diffusers, TRANSFORMER_CLASSES[family])


def load_quantized(pipeline_cls: Any, spec: ModelSpec, folder: Path, dtype: Any, local: bool) -> Any:
    """``pipeline_cls`` from ``folder`` with its transformer quantized as ``spec`` says (call
    :func:`check_quantization` first). The pipeline is not moved: the caller places it by its memory plan."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        if spec.quantization == "gguf":
            return _load_gguf(pipeline_cls, spec, folder, dtype, local)
        return _load_bnb(pipeline_cls, folder, dtype, local)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError, SingleFileComponentError) as exc:
        # Shapes that do not fit the folder's transformer config (another model size), missing files, damaged data.
        what = (f"the GGUF transformer {spec.transformer_file}" if spec.quantization == "gguf"
                else "its transformer in bitsandbytes 4-bit")
        raise ModelError(messages.MODEL_MISSING,
                         f"Cannot load model '{spec.name}' from {folder} with {what}: {exc}",
                         _load_hint(spec)) from None


def _load_hint(spec: ModelSpec) -> str:
    if spec.quantization == "gguf":
        return (f"Check that the GGUF file is a {_name(spec.family)} transformer of the same model as the "
                f"folder of '{spec.name}' (the same sizes), or download it again.")
    return "The model files look incomplete or damaged: download them again, or load without \"quantization\"."


def _load_gguf(pipeline_cls: Any, spec: ModelSpec, folder: Path, dtype: Any, local: bool) -> Any:
    from diffusers import GGUFQuantizationConfig

    transformer = transformer_class(spec.family).from_single_file(
        spec.transformer_file,
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        config=str(folder),  # the folder's transformer/config.json: the file holds weights only
        subfolder="transformer",
        dtype=dtype,
        local_files_only=local,
    )
    return pipeline_cls.from_pretrained(folder, transformer=transformer, dtype=dtype, local_files_only=local,
                                        use_safetensors=True)


def _load_bnb(pipeline_cls: Any, folder: Path, dtype: Any, local: bool) -> Any:
    from diffusers import PipelineQuantizationConfig

    config = PipelineQuantizationConfig(
        quant_backend="bitsandbytes_4bit",
        quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": dtype},
        components_to_quantize=["transformer"],  # the text encoders stay in dtype: they run once per prompt
    )
    return pipeline_cls.from_pretrained(folder, quantization_config=config, dtype=dtype, local_files_only=local,
                                        use_safetensors=True)
