"""PBR map derivation: analytic normals, sign conventions, seamless maps, ranges and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from backend.imaging.color import linear_to_srgb, luminance, srgb_to_linear
from backend.imaging.pbr import (
    NORMAL_CONVENTIONS,
    PbrFilterSettings,
    PbrMaps,
    ao_from_height,
    decode_normal,
    derive_maps,
    encode_normal,
    height_from_color,
    normal_from_height,
    roughness_from_color,
)
from backend.imaging.tiling import seam_ratio

# Max angle between derived and analytic normals for smooth fields. Central differences
# underestimate a slope of wavelength L by sin(2 pi / L) / (2 pi / L): 0.5% at L = 32 px.
MAX_ANGLE_DEG = 1.0


def _periodic_noise(size: int, channels: int = 3, seed: int = 1) -> np.ndarray:
    """Smooth colour noise that tiles exactly: a random low-pass spectrum through the inverse FFT."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    envelope = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / 0.002)
    planes = []
    for _ in range(channels):
        spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) * envelope
        planes.append(np.fft.ifft2(spectrum).real)
    image = np.stack(planes, axis=-1)
    image = (image - image.min()) / (image.max() - image.min())
    return (0.05 + 0.9 * image).astype(np.float32)


def _sinusoid_field(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """h(row, col) = sum of sinusoids periodic on the image, and its exact d/dcol and d/drow."""
    r, c = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    h = np.zeros_like(r)
    d_col = np.zeros_like(r)
    d_row = np.zeros_like(r)
    # (amplitude, cycles across the width, cycles down the height, phase)
    for amp, kx, ky, phase in ((6.0, 2, 1, 0.3), (3.0, -1, 3, 1.1), (2.0, 4, 0, 2.0), (1.5, 0, 2, 0.7)):
        wx, wy = 2 * np.pi * kx / cols, 2 * np.pi * ky / rows
        arg = wx * c + wy * r + phase
        h += amp * np.sin(arg)
        d_col += amp * wx * np.cos(arg)
        d_row += amp * wy * np.cos(arg)
    return h, d_col, d_row


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.clip(np.sum(a.astype(np.float64) * b, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


# --- colour ---------------------------------------------------------------------------------------------------------


def test_srgb_transfer_functions_are_the_exact_piecewise_curves():
    x = np.array([-0.1, 0.0, 0.02, 0.04045, 0.5, 1.0, 2.0], dtype=np.float32)
    xd = x.astype(np.float64)
    expected = np.where(xd <= 0.04045, xd / 12.92, ((np.maximum(xd, 0.04045) + 0.055) / 1.055) ** 2.4)
    linear = srgb_to_linear(x)
    assert linear.dtype == np.float32
    np.testing.assert_allclose(linear, expected, rtol=1e-6, atol=1e-7)
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404114, rel=1e-6)
    assert linear_to_srgb(np.float32(0.0031308)) == pytest.approx(0.0031308 * 12.92, rel=1e-6)
    grid = np.linspace(-0.2, 3.0, 10001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(grid)), grid, atol=2e-6)


def test_luminance_uses_rec709_weights_and_ignores_alpha():
    rgba = np.zeros((1, 4, 4), dtype=np.float32)
    rgba[0, 0, 0] = rgba[0, 1, 1] = rgba[0, 2, 2] = 1.0
    rgba[0, 3] = (1.0, 1.0, 1.0, 0.0)
    np.testing.assert_allclose(luminance(rgba)[0], [0.2126, 0.7152, 0.0722, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="H x W x 3"):
        luminance(np.zeros((4, 4), dtype=np.float32))


# --- normals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", NORMAL_CONVENTIONS)
def test_normals_match_the_analytic_normals_of_a_periodic_sinusoid_field(convention):
    rows, cols = 96, 128
    h, d_col, d_row = _sinusoid_field(rows, cols)
    strength = 0.8
    n = normal_from_height(h.astype(np.float32), strength, convention=convention, wrap=True)
    assert n.shape == (rows, cols, 3) and n.dtype == np.float32
    # Analytic: x right, y UP the image (dh/dy = -dh/drow), n = normalize(-s dh/dx, -s dh/dy, 1).
    y_sign = 1.0 if convention == "opengl" else -1.0
    expected = np.stack([-strength * d_col, y_sign * strength * d_row, np.ones_like(h)], axis=-1)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    tilt = np.degrees(np.arccos(expected[..., 2]))
    assert tilt.max() > 30  # the field is steep enough for the comparison to mean something
    assert _angles_deg(n, expected).max() < MAX_ANGLE_DEG
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)


def test_normal_sign_conventions_on_ramps():
    rows, cols = 16, 20
    col = np.arange(cols, dtype=np.float32)[None, :].repeat(rows, 0)
    row = np.arange(rows, dtype=np.float32)[:, None].repeat(cols, 1)

    rising_right = normal_from_height(col * 0.5, 1.0, wrap=False)
    # Slope 0.5 per px: n = (-0.5, 0, 1) / |.|, on the border pixels too (one-sided differences).
    np.testing.assert_allclose(rising_right, np.broadcast_to([-0.5, 0.0, 1.0] / np.sqrt(1.25), (rows, cols, 3)),
                               atol=1e-6)

    rising_up = (rows - 1 - row) * 0.5  # higher toward row 0, the TOP of the image
    gl = normal_from_height(rising_up, 1.0, convention="opengl", wrap=False)
    dx = normal_from_height(rising_up, 1.0, convention="directx", wrap=False)
    np.testing.assert_allclose(gl, np.broadcast_to([0.0, -0.5, 1.0] / np.sqrt(1.25), (rows, cols, 3)), atol=1e-6)
    np.testing.assert_allclose(dx[..., 1], -gl[..., 1], atol=1e-7)
    np.testing.assert_allclose(dx[..., [0, 2]], gl[..., [0, 2]], atol=1e-7)
    # Encoded: OpenGL green below 0.5 on a slope facing down, DirectX above.
    assert np.all(encode_normal(gl)[..., 1] < 0.5) and np.all(encode_normal(dx)[..., 1] > 0.5)

    # A bump's top side faces up the image: OpenGL green above 0.5 there, red above 0.5 on its right side.
    yy, xx = np.mgrid[0:33, 0:33].astype(np.float32)
    bump = np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 40.0)
    n = normal_from_height(bump, 4.0, wrap=False)
    assert n[10, 16, 1] > 0.1 and n[22, 16, 1] < -0.1  # row 10 is above the centre
    assert n[16, 22, 0] > 0.1 and n[16, 10, 0] < -0.1


def test_zero_strength_gives_flat_normals_and_encoding_round_trips():
    h = _periodic_noise(32, channels=1)[..., 0]
    flat = normal_from_height(h, 0.0)
    np.testing.assert_array_equal(flat, np.broadcast_to(np.array([0, 0, 1], np.float32), flat.shape))
    np.testing.assert_array_equal(encode_normal(flat)[0, 0], [0.5, 0.5, 1.0])
    n = normal_from_height(h, 20.0)
    encoded = encode_normal(n)
    assert encoded.min() >= 0.0 and encoded.max() <= 1.0
    np.testing.assert_allclose(decode_normal(encoded), n, atol=1e-6)
    # 8-bit quantisation shortens vectors; decode renormalises them.
    decoded = decode_normal(np.round(encoded * 255) / 255)
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=-1), 1.0, atol=1e-5)
    assert _angles_deg(decoded, n).max() < 1.0
    np.testing.assert_array_equal(decode_normal(np.full((1, 1, 3), 0.5, np.float32))[0, 0], [0, 0, 1])
    with pytest.raises(ValueError, match="convention"):
        normal_from_height(h, 1.0, convention="vulkan")


# --- seamless maps --------------------------------------------------------------------------------------------------


def test_maps_of_a_tileable_input_tile_and_are_roll_equivariant():
    image = _periodic_noise(192)
    settings = PbrFilterSettings(detail_radius=12.0, ao_radius=8.0, normal_strength=2.0)
    maps = derive_maps(image, settings)
    for name, layer in maps.as_layers().items():
        if name == "metallic":
            continue
        for axis in (0, 1):
            assert seam_ratio(layer, axis) == pytest.approx(1.0, abs=0.5), (name, axis)

    shift = (37, 91)
    rolled = derive_maps(np.roll(image, shift, axis=(0, 1)), settings)
    for name, layer in maps.as_layers().items():
        np.testing.assert_allclose(rolled.as_layers()[name], np.roll(layer, shift, axis=(0, 1)), atol=1e-5,
                                   err_msg=name)


def test_without_wrap_the_edges_show_seams_and_rolling_changes_the_maps():
    image = _periodic_noise(192)
    wrapped = derive_maps(image, PbrFilterSettings(wrap=True))
    mirrored = derive_maps(image, PbrFilterSettings(wrap=False))
    for name in ("height", "normal", "ao"):
        worst_wrapped = max(seam_ratio(wrapped.as_layers()[name], axis) for axis in (0, 1))
        worst_mirrored = max(seam_ratio(mirrored.as_layers()[name], axis) for axis in (0, 1))
        assert worst_mirrored > 1.4 * worst_wrapped, name
    # Far from the edges only the global statistics (height's mean and spread) differ, a little.
    inner = np.s_[60:-60, 60:-60]
    np.testing.assert_allclose(mirrored.height[inner], wrapped.height[inner], atol=0.02)

    shift = (37, 91)
    rolled = derive_maps(np.roll(image, shift, axis=(0, 1)), PbrFilterSettings(wrap=False))
    assert np.abs(rolled.height - np.roll(mirrored.height, shift, axis=(0, 1))).max() > 0.05
    assert np.abs(rolled.normal - np.roll(mirrored.normal, shift, axis=(0, 1))).max() > 0.05


# --- maps -----------------------------------------------------------------------------------------------------------


def test_shapes_dtypes_and_ranges():
    image = _periodic_noise(64)
    maps = derive_maps(image)
    assert isinstance(maps, PbrMaps)
    layers = maps.as_layers()
    assert list(layers) == ["albedo", "normal", "roughness", "ao", "height", "metallic"]
    for name, layer in layers.items():
        assert layer.dtype == np.float32, name
        assert layer.shape == ((64, 64, 3) if name in ("albedo", "normal") else (64, 64)), name
        assert layer.min() >= 0.0 and layer.max() <= 1.0, name
        assert layer.flags.c_contiguous, name
    np.testing.assert_array_equal(maps.metallic, 0.0)
    np.testing.assert_array_equal(maps.albedo, image)  # already in [0, 1]: albedo is the colour itself
    np.testing.assert_allclose(np.linalg.norm(decode_normal(maps.normal), axis=-1), 1.0, atol=1e-5)
    assert 0.4 < float(maps.height.mean()) < 0.6
    assert maps.ao.max() == pytest.approx(1.0) and maps.ao.min() < 1.0
    assert maps.roughness.std() > 0.01


def test_rgba_input_ignores_alpha_and_hdr_albedo_is_clipped():
    image = _periodic_noise(48)
    rgba = np.concatenate([image, np.random.default_rng(3).random((48, 48, 1), dtype=np.float32)], axis=-1)
    a, b = derive_maps(image), derive_maps(rgba)
    for name, layer in a.as_layers().items():
        np.testing.assert_array_equal(b.as_layers()[name], layer, err_msg=name)
    bright = derive_maps(image * 4.0)
    assert bright.albedo.max() == 1.0


def test_invert_flips_height():
    image = _periodic_noise(64)
    up = derive_maps(image, PbrFilterSettings(invert_height=False))
    down = derive_maps(image, PbrFilterSettings(invert_height=True))
    np.testing.assert_allclose(down.height, 1.0 - up.height, atol=1e-6)
    n_up, n_down = decode_normal(up.normal), decode_normal(down.normal)
    np.testing.assert_allclose(n_down[..., :2], -n_up[..., :2], atol=1e-5)
    # Bright is high: the brightest pixel's height is above average, and the opposite when inverted.
    brightest = np.unravel_index(np.argmax(luminance(image)), image.shape[:2])
    assert up.height[brightest] > 0.5 > down.height[brightest]


def test_height_is_bright_detail_and_roughness_follows_lightness():
    image = _periodic_noise(64)
    height = height_from_color(image, detail_radius=0.0)
    lum = luminance(image)
    assert np.corrcoef(height.ravel(), lum.ravel())[0, 1] > 0.95
    flat = height_from_color(np.full((8, 8, 3), 0.3, np.float32))
    np.testing.assert_array_equal(flat, 0.5)
    rough = roughness_from_color(image, base=0.5, contrast=1.0)
    assert np.corrcoef(rough.ravel(), lum.ravel())[0, 1] < -0.9  # brighter is smoother
    assert float(np.median(rough)) == pytest.approx(0.5, abs=0.1)
    np.testing.assert_allclose(roughness_from_color(image, base=0.3, contrast=0.0), 0.3)


def test_ao_darkens_pits_not_peaks():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    blob = np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / 30.0)
    pit = 0.5 - 0.4 * blob
    peak = 0.5 + 0.4 * blob
    ao_pit = ao_from_height(pit, radius=8.0, depth=16.0)
    ao_peak = ao_from_height(peak, radius=8.0, depth=16.0)
    assert ao_pit[32, 32] < 0.8 and ao_pit[0, 0] == pytest.approx(1.0)
    assert ao_peak[32, 32] == pytest.approx(1.0)
    # Stronger means darker; zero strength or radius switches it off.
    assert ao_from_height(pit, radius=8.0, strength=2.0)[32, 32] < ao_pit[32, 32]
    np.testing.assert_array_equal(ao_from_height(pit, radius=0.0), 1.0)
    np.testing.assert_array_equal(ao_from_height(pit, radius=8.0, strength=0.0), 1.0)


def test_tiny_images_work():
    for shape in ((1, 1, 3), (1, 5, 3), (2, 2, 4), (3, 1, 3)):
        maps = derive_maps(np.random.default_rng(0).random(shape, dtype=np.float32))
        for name, layer in maps.as_layers().items():
            assert layer.shape[:2] == shape[:2], (name, shape)
            assert np.isfinite(layer).all(), (name, shape)
        derive_maps(np.random.default_rng(0).random(shape, dtype=np.float32), PbrFilterSettings(wrap=False))


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 4, 3), np.float32), "non-empty"),
        (np.zeros((4, 0, 3), np.float32), "non-empty"),
        (np.zeros((4, 4), np.float32), "single-channel"),
        (np.zeros((4, 4, 1), np.float32), "single-channel"),
        (np.zeros((4, 4, 2), np.float32), "H x W x 3"),
        (np.zeros((4,), np.float32), "H x W x 3"),
    ],
)
def test_bad_shapes_are_clear_errors(image, message):
    with pytest.raises(ValueError, match=message):
        derive_maps(image)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad):
    image = np.full((8, 8, 3), 0.5, np.float32)
    image[3, 4, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        derive_maps(image)
    image[3, 4, 1] = 0.5
    image4 = np.concatenate([image, np.full((8, 8, 1), bad, np.float32)], axis=-1)
    derive_maps(image4)  # alpha is ignored, whatever it holds


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("normal_strength", -1.0), ("normal_strength", float("nan")), ("detail_radius", -2.0),
        ("roughness_base", 1.5), ("roughness_contrast", 20.0), ("ao_radius", -1.0), ("ao_strength", -0.1),
        ("height_depth", 0.0), ("normal_convention", "vulkan"), ("wrap", "yes"), ("invert_height", 1),
        ("detail_radius", "16"),
    ],
)
def test_settings_are_validated_with_readable_messages(field, value):
    with pytest.raises(ValueError, match=field):
        PbrFilterSettings(**{field: value})


def test_default_settings_are_valid_and_frozen():
    settings = PbrFilterSettings()
    assert settings.normal_convention == "opengl" and settings.wrap
    with pytest.raises(AttributeError):
        settings.wrap = False  # type: ignore[misc]
