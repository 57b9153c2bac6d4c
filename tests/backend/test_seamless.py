"""Seamless means the networks see a torus: shifting the starting noise shifts the image.

With circular padding in every UNet and VAE convolution, rolling the initial latents by a
multiple of the UNet's downsampling factor rolls the decoded image by that many latent
pixels times the VAE's scale factor, exactly (up to float rounding), edges included. With
zero padding the edges break that equality, which is what a visible seam is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.diffusion.seamless import pipeline_modules, set_seamless
from backend.models import PipelineCache, load_registry


@pytest.fixture(scope="module")
def cache():
    return PipelineCache("cpu", torch.float32)


def _render(pipe, latents):
    return pipe(prompt="tiles", num_inference_steps=3, width=128, height=128, guidance_scale=5.0,
                latents=latents.clone(), output_type="np").images[0]


@pytest.mark.parametrize("model", ["sd15-tiny", "sdxl-tiny"])
def test_circular_padding_makes_generation_shift_equivariant(tiny_models, cache, model):
    pipe = cache.text_to_image(load_registry(tiny_models).resolve("text_to_image", model))
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    shift = 4  # latent pixels: a multiple of the tiny UNet's downsampling (2)
    pixels = shift * pipe.vae_scale_factor
    errors = {}
    for wrap in (True, False):
        set_seamless(pipeline_modules(pipe), wrap, wrap)
        a = _render(pipe, latents)
        b = _render(pipe, torch.roll(latents, (shift, shift), dims=(2, 3)))
        errors[wrap] = np.abs(np.roll(a, (pixels, pixels), axis=(0, 1)) - b).max()
    assert errors[True] < 1e-4
    assert errors[False] > 0.05


def test_one_axis_only_and_restoring(tiny_models, cache):
    pipe = cache.text_to_image(load_registry(tiny_models).resolve("text_to_image"))
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    set_seamless(pipeline_modules(pipe), True, False)
    a = _render(pipe, latents)
    b = _render(pipe, torch.roll(latents, 4, dims=3))  # shift along X only
    assert np.abs(np.roll(a, 32, axis=1) - b).max() < 1e-4
    c = _render(pipe, torch.roll(latents, 4, dims=2))  # Y does not wrap
    assert np.abs(np.roll(a, 32, axis=0) - c).max() > 0.05

    changed = set_seamless(pipeline_modules(pipe), False, False)
    assert changed > 0
    convs = [m for mod in pipeline_modules(pipe) for m in mod.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any("_conv_forward" in vars(conv) for conv in convs)  # back to the class method


def test_a_seamless_texture_leaves_the_shared_networks_plain(tiny_models, tmp_path):
    """The render pipeline reuses the text-to-image UNet and VAE: a seamless texture before it must not make the
    render wrap (found by the farm test: a warm actor's render differed from a fresh backend's)."""
    from farm_jobs import output_pixels, render_job, texture_job

    from backend.runner import make_engine, run_job
    from contract import jobfolder, messages

    def run(engine, job_dir):  # type: ignore[no-untyped-def]
        record = jobfolder.read_job(job_dir)
        final = run_job(engine, messages.Submit(record["id"], record["task"], str(job_dir), record["request"]),
                        lambda _m: None)
        assert isinstance(final, messages.Result), final

    fresh, after = render_job(tmp_path / "a", 2), render_job(tmp_path / "b", 2)
    run(make_engine("cpu", registry=str(tiny_models)), fresh)
    warm = make_engine("cpu", registry=str(tiny_models))
    run(warm, texture_job(tmp_path / "b", 1))
    run(warm, after)
    first, second = output_pixels(fresh), output_pixels(after)
    assert first.keys() == second.keys()
    assert all((first[name] == second[name]).all() for name in first)
