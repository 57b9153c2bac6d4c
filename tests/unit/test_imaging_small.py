import numpy as np
import pytest

from backend.diffusion.preview import latents_to_rgb
from backend.imaging.image_io import read_image, to_uint8, write_png
from backend.imaging.tiling import seam_ratio


def _periodic_noise(size: int) -> np.ndarray:
    """Smooth noise that tiles exactly: a random low-pass spectrum through the inverse FFT."""
    rng = np.random.default_rng(1)
    spectrum = rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))
    f = np.fft.fftfreq(size)
    spectrum *= np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / 0.002)
    return np.fft.ifft2(spectrum).real[:, :, None]


def test_seam_ratio_is_about_one_for_a_tiling_image_and_large_across_a_cut():
    tiling = _periodic_noise(256)
    assert seam_ratio(tiling, axis=1) == pytest.approx(1.0, abs=0.25)
    assert seam_ratio(tiling, axis=0) == pytest.approx(1.0, abs=0.25)
    cut = tiling[:, 40:200]  # same texture, no longer continuous across its edges
    assert seam_ratio(cut, axis=1) > 3


def test_png_round_trip_rounds_not_truncates(tmp_path):
    image = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    path = write_png(tmp_path / "a.png", image, scale=2)
    back = read_image(path)
    assert back.shape == (10, 14, 3)
    assert np.abs(back[::2, ::2] - image).max() <= 0.5 / 255 + 1e-6
    assert to_uint8(np.array([0.999])) == 255 and to_uint8(np.array([0.001])) == 0
    assert not [p for p in tmp_path.iterdir() if p.name != "a.png"]


def test_latent_preview_shape_range_and_bad_shape():
    latents = np.random.default_rng(0).normal(size=(4, 8, 6)).astype(np.float32)
    for family in ("sd15", "sdxl"):
        rgb = latents_to_rgb(latents, family)
        assert rgb.shape == (8, 6, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert not np.allclose(latents_to_rgb(latents, "sd15"), latents_to_rgb(latents, "sdxl"))
    with pytest.raises(ValueError, match="latents shaped"):
        latents_to_rgb(latents[:2], "sd15")
    # 16-channel latents (FLUX.1, SD 3.5): the first three channels, each stretched over its range.
    wide = np.random.default_rng(1).normal(size=(16, 8, 6)).astype(np.float32)
    rgb = latents_to_rgb(wide, "flux")
    assert rgb.shape == (8, 6, 3) and rgb.min() == 0 and rgb.max() == 1
