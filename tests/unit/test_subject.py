"""The subject of a picture centred on white (backend/geometry/subject.py), on drawn test pictures."""

from __future__ import annotations

import numpy as np
import pytest

from backend.geometry.subject import SubjectError, border_colour, subject_image

GREY = (0.5, 0.5, 0.5)
RED = (0.8, 0.1, 0.1)


def disc(size: int = 64, centre: tuple[int, int] = (30, 24), radius: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2


def painted(mask: np.ndarray, colour: tuple[float, ...] = RED, background: tuple[float, ...] = GREY) -> np.ndarray:
    image = np.empty((*mask.shape, len(background)), np.float32)
    image[:] = background
    image[mask] = colour
    return image


def test_alpha_is_the_subject_and_transparent_colours_become_white() -> None:
    inside = disc()
    rgba = np.zeros((64, 64, 4), np.float32)
    rgba[..., :3] = np.random.default_rng(0).random((64, 64, 3))  # garbage where alpha is 0
    rgba[inside] = (*RED, 1.0)
    rgb, mask = subject_image(rgba)
    side = 23 + 2 * round(0.1 * 23)  # the disc's 23 pixels plus a 10% margin each side
    assert rgb.shape == (side, side, 3) and mask.shape == (side, side) and rgb.dtype == np.float32
    assert mask.sum() == inside.sum()
    assert np.allclose(rgb[mask], RED) and np.allclose(rgb[~mask], 1.0)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert rows[0] == side - 1 - rows[-1] and cols[0] == side - 1 - cols[-1]  # centred


def test_soft_alpha_is_composited_over_white() -> None:
    rgba = np.zeros((32, 32, 4), np.float32)
    rgba[8:24, 8:24] = (0.0, 0.0, 0.0, 0.25)
    rgb, mask = subject_image(rgba, mode="alpha")
    assert np.allclose(rgb[~np.all(rgb == 1.0, axis=2)], 0.75)
    assert mask.sum() == 16 * 16  # faint everywhere: the visible pixels are the subject


def test_plain_background_is_separated_by_the_border_colour() -> None:
    inside = disc()
    image = painted(inside)
    assert np.allclose(border_colour(image), GREY)
    rgb, mask = subject_image(image, tolerance=0.08)
    assert mask.sum() == inside.sum()
    assert np.allclose(rgb[mask], RED) and np.allclose(rgb[~mask], 1.0)


def test_background_coloured_details_inside_stay_and_specks_go() -> None:
    ring = disc(radius=14) & ~disc(radius=5)
    image = painted(ring)
    image[2:4, 60:62] = RED  # a 4-pixel speck far from the subject
    rgb, mask = subject_image(image)
    assert mask.sum() == disc(radius=14).sum()  # the grey hole is enclosed: part of the subject
    assert np.allclose(rgb[mask & np.all(np.isclose(rgb, GREY), axis=2)], GREY)
    assert mask.shape[0] < 40  # cropped to the ring, not stretched out to the speck


def test_opaque_alpha_falls_back_to_the_border_colour() -> None:
    inside = disc()
    rgba = painted(inside, (*RED, 1.0), (*GREY, 1.0))
    _, mask = subject_image(rgba, mode="auto")
    assert mask.sum() == inside.sum()
    _, everything = subject_image(rgba, mode="alpha")  # asked for alpha: the whole opaque image
    assert everything.sum() == 64 * 64


def test_none_keeps_the_whole_image_padded_to_a_square() -> None:
    image = np.random.default_rng(1).random((20, 30, 3)).astype(np.float32)
    rgb, mask = subject_image(image, mode="none")
    assert rgb.shape == (30, 30, 3) and mask.sum() == 20 * 30
    assert np.array_equal(rgb[5:25], image) and np.all(rgb[:5] == 1.0)


def test_grey_images_work() -> None:
    image = painted(disc(), (0.9,), (0.1,))[:, :, 0]
    rgb, mask = subject_image(image)
    assert mask.sum() == disc().sum() and np.allclose(rgb[mask], 0.9)


@pytest.mark.parametrize("image,mode,message", [
    (np.zeros((0, 0, 3), np.float32), "auto", "empty"),
    (np.zeros((0, 16, 4), np.float32), "auto", "empty"),
    (np.zeros((16, 16, 4), np.float32), "auto", "fully transparent"),
    (np.zeros((16, 16, 4), np.float32), "alpha", "fully transparent"),
    (np.full((16, 16, 3), 0.3, np.float32), "auto", "no subject found"),
    (np.full((16, 16, 3), 0.3, np.float32), "alpha", "no alpha channel"),
])
def test_errors_say_what_is_wrong(image: np.ndarray, mode: str, message: str) -> None:
    with pytest.raises(SubjectError, match=message):
        subject_image(image, mode=mode)


def test_tolerance_decides_what_is_background() -> None:
    inside = disc()
    image = painted(inside, colour=(0.55, 0.5, 0.5))  # close to the grey background
    with pytest.raises(SubjectError, match="no subject found"):
        subject_image(image, tolerance=0.08)
    _, mask = subject_image(image, tolerance=0.02)
    assert mask.sum() == inside.sum()
