"""Reference images (IP-Adapter) on the tiny SD 1.5 and SDXL pipelines, through the registry and the pipeline cache.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_ip_adapter.py``. The tiny adapters
(devtools/tiny_models/ip_adapter.py, in h94/IP-Adapter's layout) come from the session fixture
``tiny_models``; their weights are random, so the tests check the wiring: a reference reaches the output,
unloading restores the base output exactly, ControlNet pipelines share it, and every family, layout and
file problem is refused with a clear error before anything loads.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend import models
from backend.models import ModelError, ModelSpec, PipelineCache
from backend.models.ip_adapter import (
    check_ip_adapter,
    ip_adapter_role,
    loaded_reference,
    reference_call_kwargs,
    use_reference,
)
from contract import messages

BASES = {"sd15": "sd15-tiny", "sdxl": "sdxl-tiny"}
STEPS = 2


def reference(kind: int) -> np.ndarray:
    """Reference images, H x W x 3 float sRGB in [0, 1]: 0 a noise image (not square), 1 a colour ramp."""
    if kind == 0:
        return np.random.default_rng(1).random((48, 40, 3), dtype=np.float32)
    return np.linspace(0.0, 1.0, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)


def generate(pipe: Any, seed: int = 7, **extra: Any) -> np.ndarray:
    out = pipe("a red cube", height=64, width=64, num_inference_steps=STEPS, output_type="np",
               generator=torch.Generator("cpu").manual_seed(seed), **extra).images
    assert isinstance(out, np.ndarray) and out.shape == (1, 64, 64, 3)
    return out


def adapter(registry: models.Registry, family: str) -> tuple[ModelSpec, Path]:
    spec = registry.resolve(ip_adapter_role(family))
    folder = models.locate(spec)
    assert folder is not None, f"{spec.name} is not in the tiny models"
    return spec, folder


@pytest.fixture()
def base_pipe(request: pytest.FixtureRequest, cache: PipelineCache, registry: models.Registry) -> Iterator[Any]:
    """The warm base pipeline of the family ``request.param`` (default SD 1.5), left without an adapter."""
    family = getattr(request, "param", "sd15")
    pipe = cache.text_to_image(registry.resolve("text_to_image", BASES[family]))
    use_reference(pipe, None)
    yield pipe
    use_reference(pipe, None)


def test_registry_roles_name_the_tiny_adapters(registry: models.Registry) -> None:
    for family, weights in (("sd15", "models/ip-adapter_sd15.safetensors"),
                            ("sdxl", "sdxl_models/ip-adapter_sdxl.safetensors")):
        spec, folder = adapter(registry, family)
        assert (spec.kind, spec.family, spec.tiny, spec.weight_name) == ("ip_adapter", family, True, weights)
        layout = check_ip_adapter(spec, folder, family)
        assert layout.weights == folder / weights
        assert layout.image_encoder == spec.image_encoder
        assert layout.cross_attention_dim == {"sd15": 32, "sdxl": 80}[family]  # the tiny UNets' widths
    assert ip_adapter_role("sdxl") == "ip_adapter_sdxl"
    with pytest.raises(ModelError) as info:
        ip_adapter_role("marigold")
    assert info.value.code == messages.MODEL_FAMILY and "Marigold" in info.value.message


@pytest.mark.parametrize("base_pipe", ["sd15", "sdxl"], indirect=True)
def test_reference_changes_the_output_and_unloading_restores_it(base_pipe: Any,
                                                                 registry: models.Registry) -> None:
    family = "sdxl" if "XL" in type(base_pipe).__name__ else "sd15"
    plain = generate(base_pipe)
    spec, folder = adapter(registry, family)
    use_reference(base_pipe, spec, folder)
    assert loaded_reference(base_pipe) == spec
    first = generate(base_pipe, **reference_call_kwargs(base_pipe, reference(0), 1.0))
    second = generate(base_pipe, **reference_call_kwargs(base_pipe, reference(1), 1.0))
    weaker = generate(base_pipe, **reference_call_kwargs(base_pipe, reference(0), 0.3))
    assert np.abs(first - plain).mean() > 0.02, "a reference must visibly change the output"
    assert np.abs(first - second).mean() > 0.005, "two references must give different outputs"
    assert np.abs(weaker - plain).mean() < np.abs(first - plain).mean(), "strength must scale the effect"
    use_reference(base_pipe, None)
    assert loaded_reference(base_pipe) is None and base_pipe.image_encoder is None
    assert np.array_equal(generate(base_pipe), plain), "without a reference the output is the base output"


def test_same_reference_is_deterministic_per_seed(base_pipe: Any, registry: models.Registry) -> None:
    use_reference(base_pipe, *adapter(registry, "sd15"))
    runs = {seed: [generate(base_pipe, seed, **reference_call_kwargs(base_pipe, reference(0), 0.8))
                   for _ in range(2)] for seed in (3, 4)}
    for first, again in runs.values():
        assert np.array_equal(first, again)
    assert not np.array_equal(runs[3][0], runs[4][0])


def test_loading_the_loaded_adapter_again_is_a_no_op(base_pipe: Any, registry: models.Registry) -> None:
    spec, folder = adapter(registry, "sd15")
    use_reference(base_pipe, spec, folder)
    encoder, projection = base_pipe.image_encoder, base_pipe.unet.encoder_hid_proj
    use_reference(base_pipe, spec)  # folder located from the registry entry: the same adapter
    assert base_pipe.image_encoder is encoder and base_pipe.unet.encoder_hid_proj is projection


def test_controlnet_pipeline_assembled_after_use_reference_takes_it(base_pipe: Any, cache: PipelineCache,
                                                                   registry: models.Registry) -> None:
    base = registry.resolve("text_to_image", BASES["sd15"])
    control = [registry.resolve("controlnet_depth")]
    image = np.random.default_rng(5).random((1, 64, 64, 3), dtype=np.float32)
    plain = generate(cache.controlnet_pipeline(base, control), image=image)
    use_reference(base_pipe, *adapter(registry, "sd15"))
    pipe = cache.controlnet_pipeline(base, control)
    assert pipe.unet is base_pipe.unet and pipe.image_encoder is base_pipe.image_encoder
    guided = generate(pipe, image=image, **reference_call_kwargs(pipe, reference(0), 1.0))
    assert np.abs(guided - plain).mean() > 0.02
    use_reference(base_pipe, None)
    assert np.array_equal(generate(cache.controlnet_pipeline(base, control), image=image), plain)


def test_sdxl_adapter_on_sd15_is_refused_before_loading(base_pipe: Any, registry: models.Registry,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("load_ip_adapter called for an adapter that does not fit")

    monkeypatch.setattr(base_pipe, "load_ip_adapter", must_not_load)
    spec, folder = adapter(registry, "sdxl")
    with pytest.raises(ModelError) as info:
        use_reference(base_pipe, spec, folder)
    assert info.value.code == messages.MODEL_FAMILY
    assert "SDXL" in info.value.message and "SD 1.5" in info.value.message and spec.name in info.value.message
    assert "ip_adapter" in info.value.hint
    # Declared SD 1.5 but holding SDXL-wide weights: caught from the weights file's header.
    mislabelled = dataclasses.replace(spec, family="sd15")
    with pytest.raises(ModelError) as info:
        use_reference(base_pipe, mislabelled, folder)
    assert info.value.code == messages.MODEL_FAMILY and "80 wide" in info.value.message
    assert "32" in info.value.message
    assert loaded_reference(base_pipe) is None and base_pipe.image_encoder is None


def copy_adapter(registry: models.Registry, tmp_path: Path) -> tuple[ModelSpec, Path]:
    spec, folder = adapter(registry, "sd15")
    copy = tmp_path / "adapter"
    shutil.copytree(folder, copy)
    return dataclasses.replace(spec, source=str(copy)), copy


def test_missing_files_are_clear_missing_models(registry: models.Registry, tmp_path: Path) -> None:
    spec, folder = copy_adapter(registry, tmp_path)
    (folder / spec.weight_name).unlink()
    with pytest.raises(ModelError) as info:
        check_ip_adapter(spec, folder, "sd15")
    assert info.value.code == messages.MODEL_MISSING
    assert str(folder / spec.weight_name) in info.value.message and "missing" in info.value.message
    spec, folder = copy_adapter(registry, tmp_path / "2")
    (folder / spec.image_encoder / "config.json").unlink()
    with pytest.raises(ModelError) as info:
        check_ip_adapter(spec, folder, "sd15")
    assert info.value.code == messages.MODEL_MISSING and "image encoder" in info.value.message
    spec, folder = copy_adapter(registry, tmp_path / "3")
    weights = folder / spec.weight_name
    weights.write_bytes(weights.read_bytes()[:-10])  # a cut-short download
    with pytest.raises(ModelError) as info:
        check_ip_adapter(spec, folder, "sd15")
    assert info.value.code == messages.MODEL_MISSING and "truncated" in info.value.message


def test_pickle_weights_need_allow_unsafe(registry: models.Registry, tmp_path: Path) -> None:
    spec, folder = copy_adapter(registry, tmp_path)
    pickle = spec.weight_name.replace(".safetensors", ".bin")
    (folder / spec.weight_name).rename(folder / pickle)
    spec = dataclasses.replace(spec, weight_name=pickle)
    with pytest.raises(ModelError) as info:
        check_ip_adapter(spec, folder, "sd15")
    assert info.value.code == messages.MODEL_MISSING and "pickle" in info.value.message
    assert "Allow Pickle Weights" in info.value.hint
    assert check_ip_adapter(spec, folder, "sd15", allow_unsafe=True).cross_attention_dim is None


def test_wrong_files_are_refused(registry: models.Registry, tmp_path: Path) -> None:
    spec, folder = adapter(registry, "sd15")
    sdxl_spec, _ = adapter(registry, "sdxl")
    # The image encoder's weights named as the adapter: no image_proj / ip_adapter keys.
    not_adapter = dataclasses.replace(spec, weight_name=f"{spec.image_encoder}/model.safetensors")
    with pytest.raises(ModelError) as info:
        check_ip_adapter(not_adapter, folder, "sd15")
    assert info.value.code == messages.MODEL_FAMILY and "not an IP-Adapter" in info.value.message
    # The SDXL image encoder with the SD 1.5 adapter: embedding widths differ (16 vs 24).
    wrong_encoder = dataclasses.replace(spec, image_encoder=sdxl_spec.image_encoder)
    with pytest.raises(ModelError) as info:
        check_ip_adapter(wrong_encoder, folder, "sd15")
    assert info.value.code == messages.MODEL_FAMILY and "16-wide" in info.value.message
    assert "24-wide" in info.value.message
    with pytest.raises(ModelError) as info:
        check_ip_adapter(registry.resolve("text_to_image", BASES["sd15"]), folder, "sd15")
    assert info.value.code == messages.INVALID_PARAMS


def test_reference_call_kwargs_checks_its_inputs(base_pipe: Any, registry: models.Registry) -> None:
    with pytest.raises(ModelError) as info:
        reference_call_kwargs(base_pipe, reference(0), 1.0)
    assert info.value.code == messages.INVALID_PARAMS and "no reference adapter" in info.value.message
    use_reference(base_pipe, *adapter(registry, "sd15"))
    with pytest.raises(ModelError) as info:
        reference_call_kwargs(base_pipe, np.zeros((8, 8), np.float32), 1.0)
    assert info.value.code == messages.INVALID_PARAMS and "(8, 8)" in info.value.message
    with pytest.raises(ModelError) as info:
        reference_call_kwargs(base_pipe, reference(0), -1.0)
    assert info.value.code == messages.INVALID_PARAMS
    image = reference_call_kwargs(base_pipe, reference(1), 1.0)["ip_adapter_image"]
    assert image.size == (64, 64) and image.mode == "RGB"
    assert image.getpixel((63, 63)) == (255, 255, 255)


def test_an_adapter_not_on_this_machine_is_a_missing_model(base_pipe: Any, registry: models.Registry,
                                                          tmp_path: Path) -> None:
    spec, _ = adapter(registry, "sd15")
    gone = dataclasses.replace(spec, source=str(tmp_path / "nowhere"))
    with pytest.raises(ModelError) as info:
        use_reference(base_pipe, gone)
    assert info.value.code == messages.MODEL_MISSING and str(tmp_path / "nowhere") in info.value.message
    assert loaded_reference(base_pipe) is None
