"""OpenEXR files through the OpenEXR library (3.x bindings), and 16-bit PNG for tools without EXR.

Layers follow the EXR naming convention: a layer "albedo" is the channels "albedo.R",
"albedo.G", "albedo.B"; the un-prefixed layer "" is plain R, G, B(, A). All layers go into one
part (a multilayer file, as Blender's multilayer EXR and compositors expect) or, with
``multipart=True``, one part per layer named after it. Pixels are H x W (x C) float32 with row 0
at the top; each layer is stored as float or half. Provenance (prompt, seed, model, ...) goes in
as string header attributes. Files are written to a temporary sibling and renamed, so a reader
never sees half a file and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import OpenEXR

from contract.jobfolder import temp_path_for

COMPRESSIONS = ("zip", "piz", "dwaa", "none")
_COMPRESSION_CODES = {
    "zip": OpenEXR.ZIP_COMPRESSION,  # lossless, 16 scanlines per block: the usual default
    "piz": OpenEXR.PIZ_COMPRESSION,  # lossless wavelet, best on noisy images
    "dwaa": OpenEXR.DWAA_COMPRESSION,  # lossy (DCT, default level 45), float channels too: small preview-grade files
    "none": OpenEXR.NO_COMPRESSION,
}

MAP_CHANNELS: dict[str, tuple[str, ...]] = {
    "albedo": ("R", "G", "B"),
    "normal": ("X", "Y", "Z"),
    "roughness": ("Y",),
    "ao": ("Y",),
    "height": ("Y",),
    "metallic": ("Y",),
}
# Channel letters for a layer with no entry above, by channel count (Y, A: luminance and alpha).
_DEFAULT_CHANNELS: dict[int, tuple[str, ...]] = {
    1: ("Y",), 2: ("Y", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A"),
}
# How channels of a layer are ordered into an array when reading a file we did not write.
_LETTER_ORDER = ("R", "G", "B", "X", "Y", "Z", "U", "V", "W", "A")
_MULTIPART_PLAIN_NAME = "rgba"  # part name for the un-prefixed layer in a multi-part file

# Header attributes the library or the format owns; provenance may not use these names.
_RESERVED_ATTRIBUTES = frozenset({
    "channels", "compression", "dataWindow", "displayWindow", "lineOrder", "pixelAspectRatio",
    "screenWindowCenter", "screenWindowWidth", "type", "name", "tiles", "version", "chunkCount",
    "maxSamplesPerPixel", "view",
})
_MAGIC = b"\x76\x2f\x31\x01"


class ExrError(ValueError):
    """An EXR file that cannot be written or read as asked; the message names the file."""


@dataclass
class ExrImage:
    """What ``read_exr`` found in a file."""

    # "" for un-prefixed R, G, B, A -> H x W (one channel) or H x W x C float32. In the file's order:
    # EXR sorts channels by name, so layers come alphabetically (per part), whatever order they were written in.
    layers: dict[str, np.ndarray]
    attributes: dict[str, str] = field(default_factory=dict)  # string header attributes (provenance)
    channels: list[str] = field(default_factory=list)  # full names as stored, in layer order, e.g. "albedo.R"
    path: Path | None = None

    def require(self, *names: str) -> None:
        """Raise ExrError naming every missing layer and the layers present."""
        missing = [name for name in names if name not in self.layers]
        if missing:
            where = f"{self.path}" if self.path is not None else "EXR image"
            present = ", ".join(repr(name) for name in self.layers) or "none"
            raise ExrError(
                f"{where} lacks layer{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(name) for name in missing)}; layers present: {present}"
            )


def _use_threads() -> None:
    """The bindings start with OpenEXR's process-wide pool at 0 threads: compression and decoding then
    run on one core (2 cores: writing 1.6x, reading 3x slower). Size it once, unless someone already did."""
    if OpenEXR.global_thread_count() == 0:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        OpenEXR.set_global_thread_count(max(1, cpus))


# --- writing -------------------------------------------------------------------------------------------------------


def _make_folder(path: Path, error: type[Exception]) -> None:
    """Create the target's folder, as the PNG writer does; a failure names the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot write {path}: cannot create folder {path.parent}: {exc.strerror or exc}") from exc


def _letters_for(name: str, count: int, channel_names: dict[str, tuple[str, ...]] | None) -> tuple[str, ...]:
    if channel_names and name in channel_names:
        letters = tuple(channel_names[name])
        if len(letters) != count:
            raise ExrError(f"layer {name!r} has {count} channel(s) but channel_names gives {letters}")
        if len(set(letters)) != count or not all(isinstance(c, str) and c and "." not in c for c in letters):
            raise ExrError(f"channel_names for layer {name!r} must be distinct non-empty names without '.': {letters}")
        return letters
    known = MAP_CHANNELS.get(name)
    if known is not None and len(known) == count:
        return known
    if count not in _DEFAULT_CHANNELS:
        raise ExrError(f"layer {name!r} has {count} channels; give their names in channel_names (1 to 4 are automatic)")
    return _DEFAULT_CHANNELS[count]


def _plane(pixels: np.ndarray, as_half: bool) -> np.ndarray:
    """One channel as a contiguous float32 or float16 array."""
    if not as_half:
        return np.ascontiguousarray(pixels, dtype=np.float32)
    convert = getattr(cv2, "convertFp16", None)
    if convert is not None and pixels.dtype == np.float32:
        # The CPU's F16C instructions through OpenCV: ~10x numpy 1.x's astype(float16), same IEEE rounding.
        return np.asarray(convert(np.ascontiguousarray(pixels))).view(np.float16)
    with np.errstate(over="ignore"):  # beyond +-65504 is +-inf in half, as the format defines
        return pixels.astype(np.float16)  # float64 straight to half: no double rounding through float32


def _layer_channels(name: str, image: np.ndarray, as_half: bool,
                    channel_names: dict[str, tuple[str, ...]] | None) -> dict[str, np.ndarray]:
    """One layer -> {full channel name: contiguous H x W float32/float16 array}."""
    pixels = image[:, :, None] if image.ndim == 2 else image
    letters = _letters_for(name, pixels.shape[2], channel_names)
    return {
        (f"{name}.{letter}" if name else letter): _plane(pixels[:, :, i], as_half)
        for i, letter in enumerate(letters)
    }


def _checked_layers(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not layers:
        raise ExrError("an EXR file needs at least one layer")
    checked: dict[str, np.ndarray] = {}
    size: tuple[int, int] | None = None
    for name, image in layers.items():
        if not isinstance(name, str) or name.startswith(".") or name.endswith("."):
            raise ExrError(f"layer name {name!r} must be a string that neither starts nor ends with '.'")
        array = np.asarray(image)
        if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0 or (
                array.ndim == 3 and array.shape[2] == 0):
            raise ExrError(f"layer {name!r} must be a non-empty H x W or H x W x C array, got shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ExrError(f"layer {name!r} must hold real numbers, got dtype {array.dtype}")
        if size is None:
            size = (array.shape[0], array.shape[1])
        elif (array.shape[0], array.shape[1]) != size:
            raise ExrError(
                f"layer {name!r} is {array.shape[1]}x{array.shape[0]} but the others are {size[1]}x{size[0]}")
        checked[name] = array
    return checked


def _checked_attributes(attributes: dict[str, str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in (attributes or {}).items():
        if not isinstance(key, str) or not key:
            raise ExrError(f"attribute names must be non-empty strings, got {key!r}")
        if key in _RESERVED_ATTRIBUTES:
            raise ExrError(f"attribute name {key!r} is reserved by the EXR format; choose another")
        if not isinstance(value, str):
            raise ExrError(
                f"attribute {key!r} must be a string (convert numbers with str()), got {type(value).__name__}")
        result[key] = value
    return result


def write_exr(path: str | os.PathLike[str], layers: dict[str, np.ndarray], *, half: bool | set[str] = False,
              compression: str = "zip", attributes: dict[str, str] | None = None, multipart: bool = False,
              channel_names: dict[str, tuple[str, ...]] | None = None) -> Path:
    """Write layers (name -> H x W or H x W x C) to ``path`` atomically; returns the path.

    Name "" writes plain R, G, B(, A); other names write "<name>.<channel>", all in one part, or
    one part per layer named after it (the un-prefixed layer's part is "rgba") with ``multipart``.
    Channel letters: ``channel_names[name]`` if given, else ``MAP_CHANNELS[name]`` when the count
    matches, else Y / Y, A / R, G, B / R, G, B, A by count. ``half``: True stores every layer as
    half float, a set only the layers named in it, False all as 32-bit float (half rounds to nearest
    even; beyond +-65504 becomes +-inf). ``attributes``: string header attributes, copied to every
    part. A missing folder is created. Raises ExrError for bad arguments and when the file cannot
    be written (folder not creatable or not writable, disk full), leaving nothing behind.
    """
    path = Path(path)
    if compression not in _COMPRESSION_CODES:
        raise ExrError(
            f"cannot write {path}: compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    checked = _checked_layers(layers)
    header_attributes = _checked_attributes(attributes)
    if channel_names:
        unknown = sorted(set(channel_names) - set(checked))
        if unknown:
            raise ExrError(f"channel_names names layers that are not written: {', '.join(map(repr, unknown))}")
    half_layers = set(checked) if half is True else (set(half) if half else set())
    unknown_half = sorted(half_layers - set(checked))
    if unknown_half:
        raise ExrError(f"half names layers that are not written: {', '.join(map(repr, unknown_half))}")

    _use_threads()
    header = {"compression": _COMPRESSION_CODES[compression], "type": OpenEXR.scanlineimage, **header_attributes}
    per_layer = {name: _layer_channels(name, image, name in half_layers, channel_names)
                 for name, image in checked.items()}
    if multipart:
        exr = OpenEXR.File([
            OpenEXR.Part(dict(header), channels, name or _MULTIPART_PLAIN_NAME) for name, channels in per_layer.items()
        ])
    else:
        merged: dict[str, np.ndarray] = {}
        for channels in per_layer.values():
            merged.update(channels)
        exr = OpenEXR.File(header, merged)

    _make_folder(path, ExrError)
    tmp = temp_path_for(path)
    try:
        try:
            exr.write(str(tmp))
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            reason = (f"folder {path.parent} is not writable" if not os.access(path.parent, os.W_OK) else str(exc))
            raise ExrError(f"cannot write {path}: {reason}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


# --- reading -------------------------------------------------------------------------------------------------------


def _ordered(layer: str, letters: list[str]) -> list[str]:
    known = MAP_CHANNELS.get(layer)
    if known is not None and sorted(known) == sorted(letters):
        return list(known)
    rank = {letter: i for i, letter in enumerate(_LETTER_ORDER)}
    return sorted(letters, key=lambda letter: (rank.get(letter, len(rank)), letter))


def read_exr(path: str | os.PathLike[str]) -> ExrImage:
    """Read a single- or multi-part EXR file into layers of float32 (half and uint channels converted).

    A channel "a.b.R" belongs to layer "a.b"; an un-prefixed channel to layer "" in a single-part
    file, and to the layer named after its part in a multi-part one. Raises ExrError when the file
    is not an OpenEXR file or cannot be decoded, FileNotFoundError when it does not exist.
    (In a multi-part file, un-prefixed channels of a part named "rgba" or unnamed are layer "".)"""
    path = Path(path)
    with open(path, "rb") as handle:
        if handle.read(4) != _MAGIC:
            raise ExrError(f"{path} is not an OpenEXR file")
    _use_threads()
    try:
        exr = OpenEXR.File(str(path), separate_channels=True)
        parts = [(part.name(), part.header, part.channels) for part in exr.parts]
    except (RuntimeError, ValueError) as exc:
        raise ExrError(f"{path}: cannot read this OpenEXR file: {exc}") from exc

    grouped: dict[str, dict[str, tuple[str, np.ndarray]]] = {}  # layer -> letter -> (stored name, pixels)
    attributes: dict[str, str] = {}
    for part_name, header, channels in parts:
        for key, value in header.items():
            if isinstance(value, str) and key not in _RESERVED_ATTRIBUTES:
                attributes.setdefault(key, value)
        for stored, channel in channels.items():
            layer, _, letter = stored.rpartition(".")
            if not layer and len(parts) > 1 and part_name not in ("", _MULTIPART_PLAIN_NAME):
                layer = part_name
            slot = grouped.setdefault(layer, {})
            if letter in slot:
                raise ExrError(f"{path}: channel {letter!r} of layer {layer!r} appears in more than one part")
            slot[letter] = (stored, channel.pixels)

    layers: dict[str, np.ndarray] = {}
    names: list[str] = []
    for layer, slot in grouped.items():
        order = _ordered(layer, list(slot))
        planes = [slot[letter][1].astype(np.float32, copy=False) for letter in order]
        shapes = {plane.shape for plane in planes}
        if len(shapes) > 1:
            raise ExrError(f"{path}: the channels of layer {layer!r} differ in size (subsampling is not supported)")
        layers[layer] = planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)
        names.extend(slot[letter][0] for letter in order)
    return ExrImage(layers=layers, attributes=attributes, channels=names, path=path)


# --- 16-bit PNG ----------------------------------------------------------------------------------------------------


def write_png16(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an H x W, H x W x 1, x 3 or x 4 image with values in [0, 1] as a 16-bit PNG, atomically.
    Values are clipped and rounded to the nearest of 65536 levels; no colour transform is applied."""
    path = Path(path)
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))) or pixels.size == 0:
        raise ValueError(f"a 16-bit PNG needs a non-empty H x W (x 1, 3 or 4) image, got shape {np.shape(image)}")
    values = np.asarray(pixels, dtype=np.float32)
    if not np.isfinite(values.sum(dtype=np.float64)):
        raise ValueError(f"cannot write {path}: the image holds NaN or infinity")
    quantised = np.clip(values, 0.0, 1.0) * np.float32(65535.0) + np.float32(0.5)
    out: np.ndarray = quantised.astype(np.uint16)
    if out.ndim == 3:  # OpenCV writes BGR(A)
        out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR if out.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    _make_folder(path, OSError)
    tmp = temp_path_for(path)
    try:
        try:
            written = cv2.imwrite(str(tmp), out)
        except cv2.error as exc:
            raise OSError(f"cannot write {path}: {exc}") from exc
        if not written:
            reason = f"folder {path.parent} is not writable" if not os.access(path.parent, os.W_OK) else "write failed"
            raise OSError(f"cannot write {path}: {reason}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path
