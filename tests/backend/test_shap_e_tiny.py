"""Shap-E image to 3D through the registry and the pipeline cache, on the tiny model.

The tiny renderer is shaped at make-tiny time (devtools/tiny_models/shap_e.py: shape_shap_e_renderer) so that any
latent decodes to a closed, coloured, roughly spherical surface: the tests run the unmodified
diffusers pipeline and check a real mesh comes out, deterministically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend import models
from backend.models import ModelError, ModelSpec, PipelineCache
from contract import messages
from devtools.tiny_models import SHAP_E_DIR, SHAP_E_RADIUS, marching_cubes_table


def picture(seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((48, 40, 3)) * 255).astype(np.uint8))


def generate(pipe, seed: int, steps: int = 3):  # type: ignore[no-untyped-def]
    return pipe(picture(), num_inference_steps=steps, guidance_scale=3.0, frame_size=32, output_type="mesh",
                generator=torch.Generator("cpu").manual_seed(seed)).images[0]


def test_role_resolves_to_the_tiny_shap_e_model(registry: models.Registry, tiny_models: Path) -> None:
    spec = registry.resolve("image_to_3d")
    assert (spec.name, spec.family, spec.kind, spec.tiny) == (SHAP_E_DIR, "shap_e", "image_to_3d", True)
    assert models.detect_family(Path(spec.source)) == ("shap_e", "ShapEImg2ImgPipeline")
    index = json.loads((tiny_models / SHAP_E_DIR / "model_index.json").read_text())
    assert index["image_processor"] == ["transformers", "CLIPImageProcessor"]  # as openai/shap-e-img2img
    rows = {row["name"]: row for row in models.check(registry)}
    assert rows[SHAP_E_DIR]["ok"], rows[SHAP_E_DIR]


def test_default_registry_points_at_openai_shap_e() -> None:
    spec = models.default_registry().resolve("image_to_3d")
    assert (spec.source, spec.family, spec.kind) == ("openai/shap-e-img2img", "shap_e", "image_to_3d")


def test_pipeline_makes_a_closed_coloured_mesh_deterministically(registry: models.Registry,
                                                                 cache: PipelineCache) -> None:
    import trimesh

    pipe = cache.image_to_3d(registry.resolve("image_to_3d"))
    assert type(pipe).__name__ == "ShapEImg2ImgPipeline"
    assert cache.image_to_3d(registry.resolve("image_to_3d")) is pipe  # kept warm
    mesh = generate(pipe, seed=1)
    verts, faces = mesh.verts.numpy(), mesh.faces.numpy()
    assert verts.shape[1] == 3 and len(verts) > 100 and len(faces) > 100
    colours = np.stack([mesh.vertex_channels[k].numpy() for k in "RGB"], axis=1)
    assert colours.shape == verts.shape and colours.min() >= 0.0 and colours.max() <= 1.0
    assert colours.std(axis=0).min() > 0.01  # a smooth colour field, not one flat colour
    surface = trimesh.Trimesh(verts, faces, process=True)
    assert surface.is_watertight and surface.is_winding_consistent and surface.volume > 0  # normals point out
    radius = np.linalg.norm(verts, axis=1)
    assert abs(float(np.median(radius)) - SHAP_E_RADIUS) < 0.1

    again = generate(pipe, seed=1)
    assert torch.equal(again.verts, mesh.verts) and torch.equal(again.faces, mesh.faces)
    other = generate(pipe, seed=2)
    assert len(other.verts) != len(mesh.verts) or not torch.equal(other.verts, mesh.verts)  # the latent matters


def test_loading_shap_e_releases_other_families(registry: models.Registry, tiny_models: Path) -> None:
    cache = PipelineCache("cpu", torch.float32)
    cache.text_to_image(registry.resolve("text_to_image"))
    cache.image_to_3d(registry.resolve("image_to_3d"))
    assert cache.loaded() == [SHAP_E_DIR]


def test_wrong_kinds_and_classes_are_clear_errors(registry: models.Registry, tiny_models: Path) -> None:
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).image_to_3d(registry.resolve("text_to_image"))
    assert info.value.code == messages.INVALID_PARAMS and "image_to_3d" in info.value.message
    # a Marigold folder declared as an image-to-3D model: caught from its JSON, before any weights load
    marigold = ModelSpec("fake", str(tiny_models / "marigold-normals-tiny"), "shap_e", "image_to_3d")
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).image_to_3d(marigold)
    assert info.value.code == messages.MODEL_FAMILY and "Marigold" in info.value.message
    wrong_family = ModelSpec("fake", str(tiny_models / SHAP_E_DIR), "sd15", "image_to_3d")
    with pytest.raises(ModelError) as info:
        PipelineCache("cpu", torch.float32).image_to_3d(wrong_family)
    assert info.value.code == messages.MODEL_FAMILY and "Shap-E" in info.value.message


def test_marching_cubes_table_closes_surfaces_with_outward_normals() -> None:
    import trimesh
    from diffusers.pipelines.shap_e.renderer import MeshDecoder

    cases, masks = marching_cubes_table()
    assert cases.shape == (256, 5, 3) and masks.shape == (256, 5)
    assert not masks[0].any() and not masks[255].any()  # all outside, all inside: nothing
    assert masks[1].sum() == 1 and masks[0x69].sum() == 4  # one corner; a checkerboard of four
    decoder = MeshDecoder()
    decoder.cases.copy_(torch.from_numpy(cases))
    decoder.masks.copy_(torch.from_numpy(masks))
    axis = torch.linspace(-1, 1, 24)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    fields = {"torus": 0.2 - (((x ** 2 + y ** 2).sqrt() - 0.5) ** 2 + z ** 2).sqrt(),
              "noise": torch.from_numpy(np.random.default_rng(0).standard_normal((24, 24, 24))).float()}
    for name, field in fields.items():
        out = decoder(field, torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([2.0, 2.0, 2.0]))
        surface = trimesh.Trimesh(out.verts.numpy(), out.faces.numpy(), process=True)
        # noise reaches the grid's edge, where the surface is open; inside it every edge has two faces
        assert surface.is_winding_consistent, name
        if name == "torus":
            assert surface.is_watertight and surface.volume > 0 and surface.euler_number == 0
