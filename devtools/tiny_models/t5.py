"""The tiny T5 tokenizer and encoder FLUX.1 and SD 3.5 use as their long-prompt text encoder.

The real pipelines ship T5-XXL v1.1 (a gated-GELU encoder) with a SentencePiece Unigram tokenizer.
sentencepiece is not installed and nothing downloads, so the tokenizer is a ``tokenizers`` Unigram
model over single characters (plain and word-initial "▁" forms) and a few whole words, wrapped in
transformers' T5TokenizerFast (in transformers 5 the same class as T5Tokenizer): the same class,
special tokens (<pad> 0, </s> 1, <unk> 2) and "append </s>" post-processing as the real one.
torch and transformers are imported inside functions.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.tiny_models.tokenizer import LOAD_KWARGS

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPACE = "▁"  # SentencePiece's word-start marker
T5_MAX_TOKENS = 512
# Whole words scored above their letters, so the Unigram model has real choices to make.
WORDS = ("a", "the", "and", "of", "red", "blue", "cube", "sphere", "on", "with")


@dataclass(frozen=True)
class TinyT5Sizes:
    """The tiny encoder's shape: T5 v1.1 (gated GELU, untied head) with as little as the class allows."""

    layers: int = 2
    heads: int = 2
    d_kv: int = 8
    ff_factor: int = 2  # d_ff = ff_factor * d_model
    relative_buckets: int = 8
    relative_max_distance: int = 32


T5_SIZES = TinyT5Sizes()


def t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces with log-probability scores, ids in list order (specials first, as in T5)."""
    pieces: list[tuple[str, float]] = [(PAD, 0.0), (EOS, 0.0), (UNK, 0.0), (SPACE, -4.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(c, -5.0) for c in chars]
    pieces += [(SPACE + c, -5.5) for c in chars]
    pieces += [(SPACE + w, -3.0) for w in WORDS]
    return pieces


def t5_tokenizer(scratch: Path) -> Any:
    """A T5 tokenizer built from :func:`t5_vocab`, saved and reloaded from ``scratch`` like a real one."""
    # transformers 5's T5Tokenizer is the tokenizers-backed ("fast") class; T5TokenizerFast is an alias of it.
    from transformers import T5Tokenizer

    # model_max_length as the real FLUX.1 / SD 3.5 tokenizer_2 / tokenizer_3 configs (the pipelines pass their own).
    built = T5Tokenizer(vocab=t5_vocab(), eos_token=EOS, unk_token=UNK, pad_token=PAD, extra_ids=0,
                        model_max_length=T5_MAX_TOKENS)
    folder = scratch / "t5-tokenizer-src"
    built.save_pretrained(str(folder))
    tokenizer = T5Tokenizer.from_pretrained(str(folder))
    # As for the CLIP tokenizer: no record of how it was loaded in the saved tokenizer_config.json.
    for key in LOAD_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def t5_encoder(seed: int, width: int) -> Any:
    """A T5EncoderModel of hidden size ``width`` (the pipelines' joint_attention_dim), seeded."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(t5_vocab()),
        d_model=width,
        d_kv=T5_SIZES.d_kv,
        d_ff=T5_SIZES.ff_factor * width,
        num_layers=T5_SIZES.layers,
        num_heads=T5_SIZES.heads,
        relative_attention_num_buckets=T5_SIZES.relative_buckets,
        relative_attention_max_distance=T5_SIZES.relative_max_distance,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as T5-XXL
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config).eval()
