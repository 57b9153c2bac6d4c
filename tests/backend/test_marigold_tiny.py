"""Marigold intrinsics and normals through the registry and the pipeline cache, on tiny models.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_marigold_tiny.py``.
The tiny pipelines come from the session fixture ``tiny_models`` (make-tiny into .cache/);
their weights are random, so the tests check shapes, ranges, determinism and the loading
rules, not what the predictions look like.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import models
from backend.models import ModelError, ModelSpec, PipelineCache
from contract import messages

INTRINSICS = "marigold-intrinsics-tiny"
NORMALS = "marigold-normals-tiny"


def color(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """An RGB float image in [0, 1], H x W x 3, as the backend holds images."""
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# --- registry --------------------------------------------------------------------------


def test_roles_resolve_to_the_tiny_marigold_models(registry: models.Registry) -> None:
    intrinsics, normals = registry.resolve("intrinsics"), registry.resolve("normals")
    assert (intrinsics.name, intrinsics.family, intrinsics.kind, intrinsics.tiny) == (
        INTRINSICS, "marigold", "intrinsics", True)
    assert (normals.name, normals.family, normals.kind, normals.tiny) == (
        NORMALS, "marigold", "normals", True)
    assert models.detect_family(Path(intrinsics.source)) == ("marigold", "MarigoldIntrinsicsPipeline")
    assert models.detect_family(Path(normals.source)) == ("marigold", "MarigoldNormalsPipeline")


def test_describe_and_check_list_them(registry: models.Registry, tiny_models: Path) -> None:
    rows = {row["name"]: row for row in models.describe(registry)}
    assert rows[INTRINSICS] == {"roles": ["intrinsics"], "name": INTRINSICS, "family": "marigold",
                                "kind": "intrinsics", "source": str(tiny_models / INTRINSICS),
                                "local": str(tiny_models / INTRINSICS), "tiny": True}
    assert rows[NORMALS]["roles"] == ["normals"] and rows[NORMALS]["kind"] == "normals"
    checked = {row["name"]: row for row in models.check(registry)}
    assert checked[INTRINSICS]["ok"] is True and checked[NORMALS]["ok"] is True
    assert all(row["ok"] for row in checked.values()), checked


# --- running the pipelines ---------------------------------------------------------------


def test_intrinsics_predicts_albedo_roughness_and_metallic(registry: models.Registry,
                                                          cache: PipelineCache) -> None:
    from diffusers import MarigoldIntrinsicsPipeline

    pipe = cache.marigold(registry.resolve("intrinsics"))
    assert type(pipe) is MarigoldIntrinsicsPipeline and pipe.vae_scale_factor == 8
    props = pipe.target_properties
    assert props["target_names"] == ["albedo", "material"] and pipe.n_targets == 2
    assert props["material"]["sub_target_names"] == ["roughness", "metallicity", None]
    assert pipe.default_denoising_steps <= 2 and pipe.default_processing_resolution == 64

    def run(seed: int, steps: int = 1) -> np.ndarray:
        return pipe(color(), num_inference_steps=steps, generator=seeded(seed), output_type="np").prediction

    prediction = run(7)
    # One image, two targets: [albedo, material], each H x W x 3, values in [0, 1].
    assert prediction.shape == (2, 64, 64, 3) and prediction.dtype == np.float32
    assert np.isfinite(prediction).all() and prediction.min() >= 0.0 and prediction.max() <= 1.0
    albedo = prediction[0]
    roughness, metallic = prediction[1][..., 0], prediction[1][..., 1]
    assert albedo.shape == (64, 64, 3) and roughness.shape == metallic.shape == (64, 64)
    assert prediction.std() > 0.01  # a prediction, not a constant

    np.testing.assert_array_equal(prediction, run(7))  # a seeded generator is deterministic
    assert not np.array_equal(prediction, run(8))
    assert run(7, steps=2).shape == (2, 64, 64, 3)

    # diffusers' own visualizer reads the same layout from target_properties.
    vis = pipe.image_processor.visualize_intrinsics(prediction, props)
    assert {"albedo", "roughness", "metallicity"} <= set(vis[0])
    assert vis[0]["albedo"].size == (64, 64)


def test_intrinsics_output_matches_a_non_square_input(registry: models.Registry,
                                                      cache: PipelineCache) -> None:
    pipe = cache.marigold(registry.resolve("intrinsics"))
    out = pipe(color(48, 80), generator=seeded(1), output_type="np")  # default steps and resolution
    assert out.prediction.shape == (2, 48, 80, 3)


def test_normals_are_unit_vectors(registry: models.Registry, cache: PipelineCache) -> None:
    from diffusers import MarigoldNormalsPipeline

    pipe = cache.marigold(registry.resolve("normals"))
    assert type(pipe) is MarigoldNormalsPipeline and pipe.vae_scale_factor == 8
    assert pipe.use_full_z_range is True

    def run(seed: int) -> np.ndarray:
        return pipe(color(), num_inference_steps=1, generator=seeded(seed), output_type="np").prediction

    normals = run(3)
    assert normals.shape == (1, 64, 64, 3) and normals.dtype == np.float32
    assert np.isfinite(normals).all() and normals.min() >= -1.0 and normals.max() <= 1.0
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(normals, run(3))
    assert not np.array_equal(normals, run(4))
    assert pipe.image_processor.visualize_normals(normals)[0].size == (64, 64)


# --- the cache ---------------------------------------------------------------------------


def test_cache_keeps_both_marigold_models_and_releases_them_for_another_family(
        registry: models.Registry) -> None:
    cache = PipelineCache("cpu", torch.float32)
    intrinsics = cache.marigold(registry.resolve("intrinsics"))
    normals = weakref.ref(cache.marigold(registry.resolve("normals")))
    assert cache.marigold(registry.resolve("intrinsics")) is intrinsics  # cached by name
    assert cache.loaded() == [INTRINSICS, NORMALS]  # one family: both stay loaded

    first = weakref.ref(intrinsics)
    del intrinsics
    cache.text_to_image(registry.resolve("text_to_image"))  # SD 1.5 takes the device
    assert cache.loaded() == ["sd15-tiny"]
    gc.collect()
    assert first() is None and normals() is None

    cache.marigold(registry.resolve("normals"))  # and Marigold takes it back
    assert cache.loaded() == [NORMALS]


def test_wrong_kind_is_invalid_params(registry: models.Registry) -> None:
    cache = PipelineCache("cpu", torch.float32)
    with pytest.raises(ModelError) as info:
        cache.marigold(registry.resolve("text_to_image"))
    assert info.value.code == messages.INVALID_PARAMS and "text_to_image" in info.value.message
    with pytest.raises(ModelError) as info:
        cache.text_to_image(registry.resolve("intrinsics"))
    assert info.value.code == messages.INVALID_PARAMS and "intrinsics" in info.value.message
    assert cache.loaded() == []


# --- family and kind checks ----------------------------------------------------------------


def test_intrinsics_declared_sd15_is_a_family_error_before_loading(
        tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*args: object) -> None:
        raise AssertionError("weights were about to load")

    monkeypatch.setattr(models, "pipeline_class", no_loading)
    wrong = ModelSpec("iid", str(tiny_models / INTRINSICS), "sd15", "intrinsics")
    cache = PipelineCache("cpu", torch.float32)
    with pytest.raises(ModelError) as info:
        cache.marigold(wrong)
    err = info.value
    assert err.code == messages.MODEL_FAMILY
    assert "'iid'" in err.message and "SD 1.5" in err.message
    assert "a Marigold model (MarigoldIntrinsicsPipeline)" in err.message
    assert '"family": "marigold"' in err.hint
    assert cache.loaded() == []
    row = models.check(models.Registry(None, {"iid": wrong}, {"intrinsics": "iid"}))[0]
    assert row["ok"] is False and "Marigold" in row["detail"]


def test_a_model_that_cannot_serve_the_kind_is_a_family_error(tiny_models: Path) -> None:
    cache = PipelineCache("cpu", torch.float32)
    # A Marigold normals folder is no intrinsics model, although the family matches.
    swapped = ModelSpec("swapped", str(tiny_models / NORMALS), "marigold", "intrinsics")
    with pytest.raises(ModelError) as info:
        cache.marigold(swapped)
    assert info.value.code == messages.MODEL_FAMILY
    assert "MarigoldNormalsPipeline" in info.value.message
    assert "MarigoldIntrinsicsPipeline" in info.value.message
    assert models.MARIGOLD_INTRINSICS_ID in info.value.hint
    # An SD 1.5 pipeline honestly declared SD 1.5 still cannot predict normals.
    sd15 = ModelSpec("sd", str(tiny_models / "sd15-tiny"), "sd15", "normals")
    with pytest.raises(ModelError) as info:
        cache.marigold(sd15)
    assert info.value.code == messages.MODEL_FAMILY
    assert "must be a Marigold model" in info.value.message
    assert cache.loaded() == []


def test_missing_marigold_repo_names_the_id() -> None:
    spec = ModelSpec("ghost", "nobody-here/not-a-marigold", "marigold", "normals")
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).marigold(spec)
    assert info.value.code == messages.MODEL_MISSING
    assert "nobody-here/not-a-marigold" in info.value.message
    assert "hf download nobody-here/not-a-marigold" in info.value.hint
