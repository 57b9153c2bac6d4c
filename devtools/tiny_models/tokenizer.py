"""The tiny CLIP tokenizer: byte-level BPE over every byte, a handful of merges and CLIP's two specials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length; the pipelines pad and truncate to it
LOAD_KWARGS = ("is_local", "local_files_only")

# A handful of merges so the tokenizer exercises real BPE, not only single bytes.
MERGES = (("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "n"))


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2 / CLIP mapping).

    Printable Latin-1 bytes stand for themselves; the others are shifted past 255 so no
    symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + shifted)
            shifted += 1
    return [symbols[b] for b in range(256)]


def tokenizer_vocab() -> dict[str, int]:
    """Bytes, their end-of-word forms, merge results, then the two specials (last, as in CLIP)."""
    tokens = _byte_symbols()
    tokens += [s + "</w>" for s in tokens]
    tokens += [a + b for a, b in MERGES]
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}


def write_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt``: the files CLIPTokenizer reads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tokenizer_vocab(), ensure_ascii=False),
                                       encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in MERGES]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _tokenizer(scratch: Path) -> Any:
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(scratch / "tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)
    # transformers 5 saves how the tokenizer was loaded (is_local, local_files_only) into
    # tokenizer_config.json; drop it so the output does not depend on HF_HUB_OFFLINE.
    for key in LOAD_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer
