"""EXR writing and reading through the OpenEXR library, and 16-bit PNG."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from backend.imaging import exr as exr_module
from backend.imaging.exr import (
    COMPRESSIONS,
    MAP_CHANNELS,
    ExrError,
    ExrImage,
    read_exr,
    write_exr,
    write_png16,
)

H, W = 24, 20
PROVENANCE = {"prompt": "weathered oak planks, ünïcode ✓", "seed": "1234", "model": "tiny/sd15", "steps": "4",
              "software": "Scene Diffusion 0.1.0"}


def _maps(seed: int = 0) -> dict[str, np.ndarray]:
    """Random layers shaped like PBR maps, with values a half float cannot hold exactly."""
    rng = np.random.default_rng(seed)
    return {
        "albedo": rng.random((H, W, 3), dtype=np.float32),
        "normal": rng.random((H, W, 3), dtype=np.float32),
        "roughness": rng.random((H, W), dtype=np.float32),
        "ao": rng.random((H, W), dtype=np.float32),
        "height": rng.random((H, W), dtype=np.float32) * 10 - 5,
        "metallic": np.zeros((H, W), dtype=np.float32),
    }


def _as_half(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


def _stored_types(path: Path) -> dict[str, str]:
    """Channel name -> "HALF"/"FLOAT" over all parts, read with the library directly."""
    types: dict[str, str] = {}
    with OpenEXR.File(str(path), separate_channels=True) as f:
        for part in f.parts:
            for name, channel in part.channels.items():
                types[name] = channel.type().name
    return types


def _assert_layers_equal(read: dict[str, np.ndarray], written: dict[str, np.ndarray], half: set[str] = frozenset()):
    assert set(read) == set(written)
    for name, image in written.items():
        got = read[name]
        assert got.dtype == np.float32, name
        assert got.shape == image.shape, name
        expected = _as_half(image) if name in half else image
        np.testing.assert_array_equal(got, expected, err_msg=name)


# --- round trips ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_single_layer_round_trip_is_exact_in_float(tmp_path, channels):
    rng = np.random.default_rng(channels)
    image = rng.normal(size=(H, W, channels)).astype(np.float32) * 100
    image = image[:, :, 0] if channels == 1 else image
    path = write_exr(tmp_path / "plain.exr", {"": image})
    read = read_exr(path)
    _assert_layers_equal(read.layers, {"": image})
    assert read.channels == {1: ["Y"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[channels]
    assert set(_stored_types(path).values()) == {"FLOAT"}


def test_multilayer_round_trip_float_and_half(tmp_path):
    maps = _maps()
    path = write_exr(tmp_path / "maps.exr", maps, attributes=PROVENANCE)
    read = read_exr(path)
    _assert_layers_equal(read.layers, maps)
    assert read.attributes == PROVENANCE
    # Files keep channels sorted by name: layers come back alphabetically, each in MAP_CHANNELS order.
    assert list(read.layers) == sorted(maps)
    assert read.channels == [f"{name}.{c}" for name in sorted(maps) for c in MAP_CHANNELS[name]]
    assert len(OpenEXR.File(str(path), header_only=True).parts) == 1

    halves = write_exr(tmp_path / "half.exr", maps, half=True)
    _assert_layers_equal(read_exr(halves).layers, maps, half=set(maps))
    assert set(_stored_types(halves).values()) == {"HALF"}
    for name, image in maps.items():  # within half precision: 2^-11 relative
        np.testing.assert_allclose(read_exr(halves).layers[name], image, rtol=2**-11, atol=2**-24, err_msg=name)


def test_half_for_some_layers_only(tmp_path):
    maps = _maps()
    path = write_exr(tmp_path / "mixed.exr", maps, half={"albedo", "normal"})
    _assert_layers_equal(read_exr(path).layers, maps, half={"albedo", "normal"})
    types = _stored_types(path)
    assert {types[f"albedo.{c}"] for c in "RGB"} == {"HALF"}
    assert {types[f"normal.{c}"] for c in "XYZ"} == {"HALF"}
    assert types["height.Y"] == types["roughness.Y"] == "FLOAT"


def test_half_rounding_is_ieee_on_special_values(tmp_path):
    values = np.array([0.0, -0.0, 1.0, 1 / 3, 0.1, 2049.0, 2051.0, 65504.0, 65520.0, 1e6, 1e-8, 6e-8, 3e-5,
                       np.inf, -np.inf, np.nan], dtype=np.float32)
    image = np.tile(values, (2, 1))
    for layers in ({"": image}, {"": image.astype(np.float64)}):
        read = read_exr(write_exr(tmp_path / "special.exr", layers, half=True)).layers[""]
        with np.errstate(over="ignore"):
            expected = layers[""].astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(read, expected)
        assert np.signbit(read[0, 1])  # -0 stays negative


def test_multipart_round_trip_with_one_part_per_layer(tmp_path):
    maps = _maps()
    maps[""] = np.random.default_rng(5).random((H, W, 4), dtype=np.float32)
    path = write_exr(tmp_path / "parts.exr", maps, multipart=True, attributes=PROVENANCE, half={"ao"})
    with OpenEXR.File(str(path), header_only=True) as f:
        names = [part.name() for part in f.parts]
        assert names == ["albedo", "normal", "roughness", "ao", "height", "metallic", "rgba"]
        for index in range(len(names)):  # provenance on every part, for readers that look at one
            assert f.header(index)["prompt"] == PROVENANCE["prompt"]
    read = read_exr(path)
    _assert_layers_equal(read.layers, maps, half={"ao"})
    assert read.attributes == PROVENANCE


def test_layer_order_and_channel_letters(tmp_path):
    rng = np.random.default_rng(2)
    layers = {
        "albedo": rng.random((H, W, 4), dtype=np.float32),  # four channels: MAP_CHANNELS does not fit, RGBA
        "mask": rng.random((H, W), dtype=np.float32),  # unknown, one channel: Y
        "uv": rng.random((H, W, 2), dtype=np.float32),  # named explicitly
        "extra": rng.random((H, W, 6), dtype=np.float32),
    }
    names = {"uv": ("U", "V"), "extra": ("a", "b", "c", "d", "e", "f")}
    path = write_exr(tmp_path / "letters.exr", layers, channel_names=names)
    read = read_exr(path)
    _assert_layers_equal(read.layers, layers)
    assert read.channels == ["albedo.R", "albedo.G", "albedo.B", "albedo.A",
                             "extra.a", "extra.b", "extra.c", "extra.d", "extra.e", "extra.f",
                             "mask.Y", "uv.U", "uv.V"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_every_compression_is_readable(tmp_path, compression):
    maps = _maps()
    maps["height"] = np.clip(maps["height"], 0, 1)
    path = write_exr(tmp_path / f"{compression}.exr", maps, compression=compression, half={"albedo"})
    with OpenEXR.File(str(path), header_only=True) as f:
        assert f.parts[0].compression().name == f"{compression.upper() if compression != 'none' else 'NO'}_COMPRESSION"
    read = read_exr(path)
    if compression == "dwaa":  # lossy: close, not equal (random noise is its worst case)
        for name, image in maps.items():
            np.testing.assert_allclose(read.layers[name], image, atol=0.05, err_msg=name)
    else:
        _assert_layers_equal(read.layers, maps, half={"albedo"})


def test_integer_and_float64_input_is_stored_as_float(tmp_path):
    layers = {"": np.arange(H * W, dtype=np.int32).reshape(H, W), "d": np.full((H, W), 0.1, dtype=np.float64)}
    read = read_exr(write_exr(tmp_path / "types.exr", layers))
    np.testing.assert_array_equal(read.layers[""], layers[""].astype(np.float32))
    np.testing.assert_array_equal(read.layers["d"], np.float32(0.1))


def test_reading_foreign_layouts(tmp_path):
    """Multi-part files from other tools: un-prefixed channels in named parts, nested layer names."""
    rng = np.random.default_rng(9)
    rough, z, rgb = (rng.random((H, W), dtype=np.float32) for _ in range(3))
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    parts = [
        OpenEXR.Part(dict(header), {"R": rgb, "G": rgb, "B": rgb}, "rgba"),
        OpenEXR.Part(dict(header), {"Y": rough}, "roughness"),
        OpenEXR.Part(dict(header), {"ViewLayer.Depth.Z": z}, "ViewLayer.Depth"),
    ]
    path = tmp_path / "foreign.exr"
    OpenEXR.File(parts).write(str(path))
    read = read_exr(path)
    assert set(read.layers) == {"", "roughness", "ViewLayer.Depth"}
    np.testing.assert_array_equal(read.layers["roughness"], rough)
    np.testing.assert_array_equal(read.layers["ViewLayer.Depth"], z)
    assert read.layers[""].shape == (H, W, 3)


# --- require and errors ---------------------------------------------------------------------------------------------


def test_require_names_every_missing_layer_and_those_present(tmp_path):
    path = write_exr(tmp_path / "some.exr", {"albedo": _maps()["albedo"], "height": _maps()["height"]})
    image = read_exr(path)
    image.require("albedo", "height")
    with pytest.raises(ExrError) as info:
        image.require("albedo", "normal", "roughness")
    message = str(info.value)
    assert "some.exr" in message and "'normal'" in message and "'roughness'" in message
    assert "present: 'albedo', 'height'" in message
    with pytest.raises(ExrError, match="lacks layer 'x'"):
        ExrImage(layers={}, attributes={}, channels=[]).require("x")


def test_not_an_exr_file(tmp_path):
    fake = tmp_path / "image.exr"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ExrError, match=r"image\.exr is not an OpenEXR file"):
        read_exr(fake)
    truncated = tmp_path / "truncated.exr"
    truncated.write_bytes(write_exr(tmp_path / "whole.exr", _maps()).read_bytes()[:300])
    with pytest.raises(ExrError, match="truncated.exr"):
        read_exr(truncated)
    with pytest.raises(FileNotFoundError):
        read_exr(tmp_path / "missing.exr")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compression": "b44"}, "compression must be one of zip, piz, dwaa, none"),
        ({"attributes": {"compression": "x"}}, "reserved"),
        ({"attributes": {"seed": 4}}, "must be a string"),
        ({"channel_names": {"albedo": ("R", "G")}}, "3 channel"),
        ({"channel_names": {"nothere": ("Y",)}}, "not written"),
        ({"half": {"nothere"}}, "not written"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ExrError, match=message):
        write_exr(tmp_path / "bad.exr", {"albedo": _maps()["albedo"]}, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_layers_are_clear_errors(tmp_path):
    with pytest.raises(ExrError, match="at least one layer"):
        write_exr(tmp_path / "a.exr", {})
    with pytest.raises(ExrError, match="'b' is 3x2 but the others are 20x24"):
        write_exr(tmp_path / "a.exr", {"a": np.zeros((H, W)), "b": np.zeros((2, 3))})
    with pytest.raises(ExrError, match="5 channels"):
        write_exr(tmp_path / "a.exr", {"many": np.zeros((H, W, 5))})
    with pytest.raises(ExrError, match="non-empty"):
        write_exr(tmp_path / "a.exr", {"": np.zeros((0, W))})


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_is_a_clear_error_and_leaves_nothing(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ExrError, match="not writable"):
            write_exr(folder / "maps.exr", _maps())
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_folder_that_cannot_be_created_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExrError, match="cannot create folder"):
        write_exr(blocker / "maps.exr", _maps())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "maps.exr"
    write_exr(target, {"": np.zeros((H, W, 3), np.float32)})
    before = target.read_bytes()

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(exr_module.os, "replace", refuse)
    with pytest.raises(ExrError, match="cannot write .*maps.exr"):
        write_exr(target, _maps())
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["maps.exr"]


# --- exrheader (the OpenEXR command-line tools) ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("exrheader") is None, reason="exrheader not on PATH (Debian package 'openexr')")
def test_exrheader_lists_our_channels_and_attributes(tmp_path):
    path = write_exr(tmp_path / "maps.exr", _maps(), half={"albedo"}, compression="piz", attributes=PROVENANCE)
    text = subprocess.run(["exrheader", str(path)], capture_output=True, text=True, check=True).stdout
    channels = dict(re.findall(r"^\s+([\w.]+), (16|32)-bit floating-point", text, flags=re.MULTILINE))
    expected = {f"{name}.{c}": ("16" if name == "albedo" else "32") for name in _maps() for c in MAP_CHANNELS[name]}
    assert channels == expected
    assert re.search(r"^compression \(type compression\): piz", text, flags=re.MULTILINE)
    for key in ("seed", "model", "steps", "software"):
        assert f'{key} (type string): "{PROVENANCE[key]}"' in text


# --- oiiotool (OpenImageIO's command-line tool) -----------------------------------------------------------------------


needs_oiiotool = pytest.mark.skipif(shutil.which("oiiotool") is None,
                                    reason="oiiotool not on PATH (Debian package 'openimageio-tools')")


def _oiiotool_info(path: Path) -> str:
    return subprocess.run(["oiiotool", "-a", "--info", "-v", str(path)], capture_output=True, text=True,
                          check=True).stdout


@needs_oiiotool
def test_oiiotool_reads_our_multilayer_file(tmp_path):
    path = write_exr(tmp_path / "maps.exr", _maps(), half={"albedo"}, compression="piz", attributes=PROVENANCE)
    text = _oiiotool_info(path)
    assert "oiio:subimages: 1" in text
    (listed,) = re.findall(r"channel list: (.*)", text)
    channels = dict(re.findall(r"([\w.]+) \((half|float)\)", listed))
    assert channels == {f"{name}.{c}": ("half" if name == "albedo" else "float")
                        for name in _maps() for c in MAP_CHANNELS[name]}
    assert 'compression: "piz"' in text
    for key in ("seed", "model", "steps", "software"):
        assert f'{key}: "{PROVENANCE[key]}"' in text


@needs_oiiotool
def test_oiiotool_reads_our_multipart_file_one_subimage_per_layer(tmp_path):
    path = write_exr(tmp_path / "maps.exr", _maps(), multipart=True, attributes=PROVENANCE)
    text = _oiiotool_info(path)
    parts = re.findall(r'channel list: (.*)\n(?:.*\n)*?\s+name: "([^"]+)"', text)
    assert sorted(name for _, name in parts) == sorted(_maps())
    for listed, name in parts:
        assert sorted(c.strip() for c in listed.split(",")) == sorted(f"{name}.{c}" for c in MAP_CHANNELS[name])
    assert f"oiio:subimages: {len(_maps())}" in text
    assert text.count(f'seed: "{PROVENANCE["seed"]}"') == len(_maps())  # provenance in every part's header


# --- 16-bit PNG -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png16_round_trip_within_one_level(tmp_path, channels):
    rng = np.random.default_rng(channels)
    image = rng.random((H, W, channels), dtype=np.float32)
    image[0, 0] = 0.0
    image[0, 1] = 1.0
    path = write_png16(tmp_path / "map.png", image[:, :, 0] if channels == 1 else image)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    if channels == 1:
        assert raw.shape == (H, W)
        back = raw[:, :, None]
    else:
        back = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)
    back = back.astype(np.float64) / 65535.0
    # Rounded, not truncated: half a level, plus float32 rounding of the product.
    assert np.abs(back - image).max() <= 0.51 / 65535
    assert back[0, 0].max() == 0.0 and back[0, 1].min() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]


def test_png16_channel_order_clipping_and_errors(tmp_path):
    red = np.zeros((2, 2, 3), np.float32)
    red[..., 0] = 2.0  # clipped to 1
    raw = cv2.imread(str(write_png16(tmp_path / "red.png", red)), cv2.IMREAD_UNCHANGED)
    assert raw[0, 0].tolist() == [0, 0, 65535]  # stored BGR: red is the last
    with pytest.raises(ValueError, match="NaN"):
        write_png16(tmp_path / "nan.png", np.full((2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="H x W"):
        write_png16(tmp_path / "two.png", np.zeros((2, 2, 2), np.float32))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write"):
        write_png16(blocker / "a.png", red)
