"""Quantized transformers (backend/models/quantized.py): GGUF single-file loading on CPU, and every refusal.

A tiny FLUX.1 transformer (random weights, built here) is written as GGUF with devtools/tiny_models/gguf_file.py
(2-D weights in Q8_0 or Q4_0, the rest F32) and read back with diffusers' ``from_single_file``: the weights stay
quantized (GGUFLinear, uint8 blocks) and the output matches the original within the quant type's error. The
pipeline-level load (load_quantized) runs a tiny FLUX.1 pipeline folder without text encoders (prompt embeddings
are passed in). bitsandbytes 4-bit needs CUDA and the bitsandbytes package: skipped without them.
Run: ``.venv/bin/python -m pytest tests/backend/test_quantized.py -q``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.models import quantized
from backend.models.errors import ModelError
from backend.models.families import ModelSpec
from backend.models.family_traits import TRAITS
from backend.models.quantized import TRANSFORMER_CLASSES, check_quantization, load_quantized
from contract import messages

pytest.importorskip("gguf", reason="the gguf package (requirements-dev.txt) writes and reads the GGUF files")

from devtools.tiny_models.gguf_file import write_gguf_transformer  # noqa: E402  (needs gguf)

# Rows of 32 (the attention width 2 x 16, the joint width 32) so that every linear weight quantizes.
FLUX_TINY: dict[str, Any] = {
    "patch_size": 1, "in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
    "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32, "guidance_embeds": False,
    "axes_dims_rope": (4, 6, 6),
}
# Largest output error allowed, as a fraction of the output's largest magnitude.
TOLERANCE = {"Q8_0": 0.02, "Q4_0": 0.15}


def flux_transformer(**overrides: Any) -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model: Any = FluxTransformer2DModel(**{**FLUX_TINY, **overrides})
    return model.eval()


def no_text_flux() -> Any:
    """FluxPipeline that loads without its text encoders and tokenizers (the test passes prompt embeddings)."""
    from diffusers import FluxPipeline

    class FluxNoText(FluxPipeline):  # type: ignore[misc]
        _optional_components = [*FluxPipeline._optional_components, "text_encoder", "tokenizer",
                                "text_encoder_2", "tokenizer_2"]

    return FluxNoText


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FLUX.1 pipeline folder: the tiny transformer, a tiny VAE, the flow-matching scheduler, no text side."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline

    torch.manual_seed(1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=32, shift_factor=0.1, scaling_factor=0.5)
    pipe: Any = FluxPipeline(transformer=flux_transformer(), vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    folder = tmp_path_factory.mktemp("quantized") / "flux-tiny"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gguf_files(flux_folder: Path) -> dict[str, Path]:
    files = {}
    for qtype in TOLERANCE:
        files[qtype] = flux_folder.parent / f"flux-tiny-{qtype}.gguf"
        assert write_gguf_transformer(flux_transformer(), files[qtype], qtype)
    return files


def gguf_spec(folder: Path, file: Path) -> ModelSpec:
    return ModelSpec("flux-gguf", str(folder), "flux", "text_to_image", quantization="gguf",
                     transformer_file=str(file))


def forward(model: Any) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    tokens, text = 16, 8  # a 4 x 4 latent, 8 prompt tokens

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    with torch.no_grad():
        return model(hidden_states=rand(1, tokens, 16), encoder_hidden_states=rand(1, text, 32),
                     pooled_projections=rand(1, 32), timestep=torch.tensor([0.5]), img_ids=torch.zeros(tokens, 3),
                     txt_ids=torch.zeros(text, 3), return_dict=False)[0]


def image(pipe: Any) -> np.ndarray:
    generator = torch.Generator().manual_seed(5)
    embeds = torch.randn(1, 8, 32, generator=generator)
    pooled = torch.randn(1, 32, generator=generator)
    out = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, height=32, width=32, num_inference_steps=2,
               output_type="np", generator=torch.Generator().manual_seed(7))
    return np.asarray(out.images)


# --- loading --------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", sorted(TOLERANCE))
def test_gguf_transformer_matches_original(flux_folder: Path, gguf_files: dict[str, Path], qtype: str) -> None:
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
    from diffusers.quantizers.gguf.utils import GGUFLinear

    loaded = FluxTransformer2DModel.from_single_file(
        str(gguf_files[qtype]), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
        config=str(flux_folder), subfolder="transformer", dtype=torch.float32, local_files_only=True)
    to_q = loaded.transformer_blocks[0].attn.to_q
    assert isinstance(to_q, GGUFLinear)
    assert to_q.weight.dtype == torch.uint8  # kept quantized in memory; dequantized as it runs
    want, got = forward(flux_transformer()), forward(loaded)
    error = (want - got).abs().max().item() / want.abs().max().item()
    assert 0 < error < TOLERANCE[qtype], f"{qtype}: relative error {error:.4f}"


def test_load_quantized_gguf_pipeline(flux_folder: Path, gguf_files: dict[str, Path]) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear

    pipeline_cls = no_text_flux()
    spec = gguf_spec(flux_folder, gguf_files["Q8_0"])
    check_quantization(spec, "cpu")
    pipe = load_quantized(pipeline_cls, spec, flux_folder, torch.float32, local=True)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.transformer.transformer_blocks[0].attn.to_q, GGUFLinear)
    full = pipeline_cls.from_pretrained(flux_folder, dtype=torch.float32, local_files_only=True)
    full.set_progress_bar_config(disable=True)
    want, got = image(full), image(pipe)
    assert want.shape == got.shape == (1, 32, 32, 3)
    assert np.abs(want - got).max() < 0.02


def test_load_quantized_wraps_a_mismatched_file(flux_folder: Path, tmp_path: Path) -> None:
    """A GGUF transformer of another size than the folder's config: MODEL_MISSING with a hint, not a traceback."""
    other = tmp_path / "wider.gguf"
    write_gguf_transformer(flux_transformer(joint_attention_dim=64), other, "Q8_0")
    with pytest.raises(ModelError) as err:
        load_quantized(no_text_flux(), gguf_spec(flux_folder, other), flux_folder, torch.float32, local=True)
    assert err.value.code == messages.MODEL_MISSING
    assert "wider.gguf" in err.value.message and "same sizes" in err.value.hint


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 4-bit runs on NVIDIA GPUs only: no CUDA")
def test_load_quantized_bnb_4bit_on_cuda(flux_folder: Path) -> None:
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    spec = ModelSpec("flux-nf4", str(flux_folder), "flux", "text_to_image", quantization="bnb_4bit")
    check_quantization(spec, "cuda")
    pipe = load_quantized(no_text_flux(), spec, flux_folder, torch.bfloat16, local=True)
    assert type(pipe.transformer.transformer_blocks[0].attn.to_q).__name__ == "Linear4bit"


# --- refusals (nothing loads) -----------------------------------------------------------


def refused(spec: ModelSpec, device: str = "cpu") -> ModelError:
    with pytest.raises(ModelError) as err:
        check_quantization(spec, device)
    assert err.value.hint
    return err.value


def test_no_quantization_passes() -> None:
    check_quantization(ModelSpec("flux", "/nowhere", "flux", "text_to_image"), "cpu")


def test_unknown_quantization() -> None:
    err = refused(ModelSpec("f", "/nowhere", "flux", "text_to_image", quantization="int8"))
    assert err.code == messages.INVALID_PARAMS and "'int8'" in err.message


@pytest.mark.parametrize("family", ["sd15", "sdxl", "marigold", "shap_e"])
@pytest.mark.parametrize("mode", ["gguf", "bnb_4bit"])
def test_family_without_transformer(family: str, mode: str) -> None:
    err = refused(ModelSpec("m", "/nowhere", family, "text_to_image", quantization=mode), "cuda")
    assert err.code == messages.INVALID_PARAMS and "no transformer" in err.message


def test_gguf_without_file() -> None:
    err = refused(ModelSpec("f", "/nowhere", "flux", "text_to_image", quantization="gguf"))
    assert err.code == messages.INVALID_PARAMS and "no transformer_file" in err.message


def test_gguf_file_missing(tmp_path: Path) -> None:
    err = refused(gguf_spec(tmp_path, tmp_path / "absent.gguf"))
    assert err.code == messages.MODEL_MISSING and "absent.gguf" in err.message


def test_gguf_file_not_gguf_suffix(tmp_path: Path) -> None:
    file = tmp_path / "transformer.safetensors"
    file.write_bytes(b"\0" * 16)
    err = refused(gguf_spec(tmp_path, file))
    assert err.code == messages.INVALID_PARAMS and "not a .gguf file" in err.message


def test_gguf_file_not_gguf_content(tmp_path: Path) -> None:
    file = tmp_path / "page.gguf"
    file.write_text("<html>not found</html>", encoding="utf-8")
    err = refused(gguf_spec(tmp_path, file))
    assert err.code == messages.MODEL_MISSING and "not a GGUF file" in err.message


def test_gguf_package_missing(gguf_files: dict[str, Path], flux_folder: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantized, "_installed", lambda package: package != "gguf")
    err = refused(gguf_spec(flux_folder, gguf_files["Q8_0"]))
    assert err.code == messages.MODEL_MISSING and "pip install gguf" in err.hint


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_bnb_needs_cuda(device: str) -> None:
    err = refused(ModelSpec("f", "/nowhere", "flux", "text_to_image", quantization="bnb_4bit"), device)
    assert err.code == messages.INVALID_PARAMS
    assert "bitsandbytes 4-bit needs an NVIDIA GPU" in err.message and "gguf" in err.hint


def test_bnb_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantized, "_installed", lambda package: package != "bitsandbytes")
    err = refused(ModelSpec("f", "/nowhere", "sd3", "text_to_image", quantization="bnb_4bit"), "cuda:0")
    assert err.code == messages.MODEL_MISSING and "bitsandbytes" in err.hint


@pytest.mark.parametrize("mode", ["", "bnb_4bit"])
def test_transformer_file_without_gguf(tmp_path: Path, mode: str) -> None:
    spec = replace(gguf_spec(tmp_path, tmp_path / "t.gguf"), quantization=mode)
    err = refused(spec, "cuda")
    assert err.code == messages.INVALID_PARAMS and "transformer_file" in err.message


def test_transformer_classes() -> None:
    """One single-file-loadable diffusers class per transformer family of family_traits.py."""
    import diffusers
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    assert set(TRANSFORMER_CLASSES) == {f for f, t in TRAITS.items() if t.denoiser == "transformer"}
    for name in TRANSFORMER_CLASSES.values():
        assert hasattr(diffusers, name) and name in SINGLE_FILE_LOADABLE_CLASSES
