"""A diffusers transformer's weights written as a GGUF single file (tests of GGUF loading; no download).

diffusers' ``from_single_file`` converts a checkpoint's keys from the original layout only when they differ
from the model's own (``_should_convert_state_dict_to_diffusers`` in diffusers/loaders/single_file_model.py:
an exact match of the key sets skips the conversion), so the file keeps diffusers' names as they are. GGUF
stores each tensor's shape innermost first; the gguf package's writer and reader do that turn themselves, so a
numpy array goes in with its own shape. Quantized rows are blocks of 32 values (Q8_0, Q4_0), so only 2-D
weights whose rows are a multiple of 32 are quantized; everything else is F32 (F16 with ``small="f16"``).
gguf, numpy and torch are imported inside the function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QTYPES = ("Q8_0", "Q4_0")
_BLOCK = 32  # values per block of Q8_0 and Q4_0


def write_gguf_transformer(transformer: Any, path: Path | str, qtype: str = "Q8_0", small: str = "f32") -> list[str]:
    """Write ``transformer``'s state dict to ``path`` as GGUF; the names of the tensors stored quantized.

    ``qtype``: the GGUF quant type of the 2-D weights that fit it (``QTYPES``); ``small``: the type of the
    rest, ``"f32"`` or ``"f16"``.
    """
    import gguf
    import numpy as np
    import torch

    if qtype not in QTYPES:
        raise ValueError(f"qtype must be one of {', '.join(QTYPES)}, got {qtype!r}")
    quant = gguf.GGMLQuantizationType[qtype]
    rest = np.float16 if small == "f16" else np.float32
    writer = gguf.GGUFWriter(str(path), arch=type(transformer).__name__)
    quantized: list[str] = []
    for name, tensor in transformer.state_dict().items():
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if name.endswith(".weight") and data.ndim == 2 and data.shape[1] % _BLOCK == 0:
            # Bytes per row (uint8); the writer infers the element shape from the quant type.
            writer.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)
            quantized.append(name)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data.astype(rest)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return quantized
