"""The tiny Qwen-style text side of FLUX.2 klein, Qwen-Image and Z-Image: one offline tokenizer, two encoders.

The three families prompt a Qwen language model through its chat format and read hidden states:
FLUX.2 klein stacks Qwen3 layers 9, 18 and 27, Z-Image takes Qwen3's second-to-last layer, Qwen-Image
takes Qwen2.5-VL's last layer after dropping its system prompt's tokens. The tokenizer is a real
``Qwen2TokenizerFast`` (in transformers 5 the same class as ``Qwen2Tokenizer``): byte-level BPE with
Qwen's pre-tokenizer over the 256 byte symbols, merges that make each word of the pipelines' templates
one token, Qwen's special tokens and a chat template laid out like Qwen3's (``enable_thinking``
honoured); built in memory, with no download and no sentencepiece. torch and transformers are imported
inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devtools.tiny_models.tokenizer import LOAD_KWARGS, _byte_symbols

ENDOFTEXT = "<|endoftext|>"  # Qwen's pad (and unknown) token
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK = ("<think>", "</think>")
SPECIALS = (ENDOFTEXT, IM_START, IM_END, *THINK)
# The system prompt Qwen-Image's pipelines put before the user's prompt; they drop its first 34 tokens
# (prompt_template_encode_start_idx), which the real vocabulary makes exactly the text before the prompt.
QWEN_IMAGE_SYSTEM = ("Describe the image by detailing the color, shape, size, texture, quantity, text, "
                     "spatial relationships of the objects and background:")
# Words the chat turns and that system prompt are made of. The merges build each into one token, as the
# real vocabulary does, so the template costs the same number of tokens as with the real tokenizer and
# the user's prompt (byte tokens) is not diluted among dozens of template bytes.
TEMPLATE_WORDS = ("system", "user", "assistant", *QWEN_IMAGE_SYSTEM.replace(",", " ").replace(":", " ").split())

# The same layout as Qwen3's chat template: one "<|im_start|>role\ncontent<|im_end|>\n" turn per message,
# then the assistant's opening; with enable_thinking=False the reply starts after an empty think block.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and not enable_thinking -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class TinyQwenSizes:
    """Widths of the tiny Qwen text encoders."""

    hidden: int = 16
    heads: int = 2
    kv_heads: int = 1
    head_dim: int = 8
    # FLUX.2 klein reads Qwen3 hidden states 9, 18 and 27 (its default text_encoder_out_layers), so its
    # encoder keeps 28 layers (the real Qwen3-4B: 36); at width 16 a 512-token prompt still takes ~0.5 s on
    # 2 CPU cores, the largest part of a tiny klein call.
    klein_layers: int = 28
    layers: int = 2  # Z-Image (hidden_states[-2]) and Qwen-Image (hidden_states[-1])
    qwen_vl_hidden: int = 32  # Qwen2.5-VL: 2 heads of 16, so M-RoPE's three sections fit
    qwen_vl_mrope: tuple[int, int, int] = (2, 3, 3)  # sums to head_dim / 2, as (16, 24, 24) does for 128
    max_positions: int = 2048  # Qwen-Image pads to 1024 + 34 tokens


QWEN_SIZES = TinyQwenSizes()


def qwen_merges() -> list[tuple[str, str]]:
    """Merges that build each template word left to right, one letter at a time, in the form the
    pre-tokenizer cuts it: after a space ("Ġ" + word) or, for the first word of a line or turn, bare."""
    bare = {"Describe", "system", "user", "assistant"}
    merges: dict[tuple[str, str], None] = {}
    for word in TEMPLATE_WORDS:
        form = word if word in bare else "Ġ" + word
        for end in range(1, len(form)):
            merges[(form[:end], form[end])] = None
    return list(merges)


def qwen_vocab() -> dict[str, int]:
    """Byte symbols, merge results, then the specials (Qwen keeps them after the BPE tokens)."""
    tokens = _byte_symbols() + [a + b for a, b in qwen_merges()] + list(SPECIALS)
    return {tok: i for i, tok in enumerate(tokens)}


def qwen_tokenizer() -> Any:
    """A ``Qwen2TokenizerFast`` (transformers 5: ``Qwen2Tokenizer``) built in memory, ready to save."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer  # transformers 5: Qwen2TokenizerFast is this same class

    # The BPE model takes merges as (a, b) pairs (transformers annotates them as "a b" strings).
    merges: Any = qwen_merges()
    tokenizer = Qwen2Tokenizer(
        vocab=qwen_vocab(),
        merges=merges,
        unk_token=ENDOFTEXT,
        eos_token=IM_END,  # Qwen3's instruct tokenizers end a reply at <|im_end|>
        pad_token=ENDOFTEXT,
        model_max_length=131072,
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in SPECIALS]})
    # transformers 5 records how a tokenizer was loaded; keep the saved files independent of that.
    for key in LOAD_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def qwen3_text_encoder(seed: int, layers: int, causal_lm: bool) -> Any:
    """A Qwen3 of ``layers`` layers: FLUX.2-klein-4B ships Qwen3-4B as Qwen3ForCausalLM (``causal_lm``),
    Z-Image-Turbo as the bare Qwen3Model."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    vocab = qwen_vocab()
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=QWEN_SIZES.hidden,
        intermediate_size=2 * QWEN_SIZES.hidden,
        num_hidden_layers=layers,
        num_attention_heads=QWEN_SIZES.heads,
        num_key_value_heads=QWEN_SIZES.kv_heads,
        head_dim=QWEN_SIZES.head_dim,
        max_position_embeddings=QWEN_SIZES.max_positions,
        tie_word_embeddings=True,  # as Qwen3-4B; halves the saved size
        pad_token_id=vocab[ENDOFTEXT],
        bos_token_id=vocab[ENDOFTEXT],
        eos_token_id=vocab[IM_END],
    )
    return (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config).eval()


def qwen25_vl_text_encoder(seed: int) -> Any:
    """A Qwen2_5_VLForConditionalGeneration (Qwen-Image uses Qwen2.5-VL-7B-Instruct); its vision tower is
    built as small as the class allows (the text-to-image pipelines never call it)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab = qwen_vocab()
    hidden = QWEN_SIZES.qwen_vl_hidden
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": QWEN_SIZES.layers,
            "num_attention_heads": QWEN_SIZES.heads,
            "num_key_value_heads": QWEN_SIZES.kv_heads,
            "max_position_embeddings": QWEN_SIZES.max_positions,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                "mrope_section": list(QWEN_SIZES.qwen_vl_mrope)},
            "bos_token_id": vocab[ENDOFTEXT],
            "eos_token_id": vocab[IM_END],
            "pad_token_id": vocab[ENDOFTEXT],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [0],
        },
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()

