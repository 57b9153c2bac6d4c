"""EXR writing: our ``write_exr`` (OpenEXR library) against Blender's own EXR saving, per compression.

    python bench/exr.py [--size 2048] [--repeat 3]

The same five maps (albedo, normal, roughness, ao, height) of a smooth random colour image are
written per compression (zip, piz, dwaa, none) and depth (float, half): by ``write_exr`` as one
multilayer file, and by Blender as one file per map (``Image.save_render`` with the scene's
OPEN_EXR settings: ``exr_codec``, ``color_depth`` '32'/'16', ``color_mode`` RGB/BW), since a
Blender image is a single layer. Prints MB/s of uncompressed pixel data (best of --repeat) for
both, their ratio, and the bytes on disk.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import bpy  # first: this benchmark runs in a process of its own, as Blender's side does
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `backend` is top level
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbr import best_of, smooth_colour  # noqa: E402  (bench/pbr.py: the same test image)

from backend.imaging.exr import COMPRESSIONS, read_exr, write_exr  # noqa: E402
from backend.imaging.pbr import derive_maps  # noqa: E402

MAP_NAMES = ("albedo", "normal", "roughness", "ao", "height")


def blender_images(maps: dict[str, np.ndarray]) -> dict[str, bpy.types.Image]:
    """One float Blender image per map, pixels set with foreach_set (Blender's rows start at the bottom)."""
    images = {}
    for name, layer in maps.items():
        height, width = layer.shape[:2]
        image = bpy.data.images.new(f"bench_{name}", width, height, alpha=False, float_buffer=True)
        image.colorspace_settings.name = "Non-Color"  # data: no colour conversion when saving
        rgba = np.ones((height, width, 4), dtype=np.float32)
        rgba[:, :, :3] = layer[:, :, None] if layer.ndim == 2 else layer
        image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())
        images[name] = image
    return images


def save_with_blender(images: dict[str, bpy.types.Image], maps: dict[str, np.ndarray], scene: bpy.types.Scene,
                      folder: Path, compression: str) -> None:
    """Every map through Image.save_render with the scene's EXR settings; BW for one-channel maps."""
    settings = scene.render.image_settings
    for name, image in images.items():
        settings.color_mode = "BW" if maps[name].ndim == 2 else "RGB"
        image.save_render(str(folder / f"blender_{compression}_{name}.exr"), scene=scene)


def blender_file_matches(path: Path, layer: np.ndarray, half: bool) -> bool:
    """Blender stores R, G, B even in BW mode: every stored channel must equal the map (half: its rounding)."""
    stored = read_exr(path).layers[""]
    expected = layer.astype(np.float16).astype(np.float32) if half else layer
    expected = expected[:, :, None] if expected.ndim == 2 else expected
    return bool(np.array_equal(stored, np.broadcast_to(expected, stored.shape)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="square map side in pixels (default 2048)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    args = parser.parse_args()

    all_maps = derive_maps(smooth_colour(args.size)).as_layers()
    maps = {name: all_maps[name] for name in MAP_NAMES}
    channels = sum(1 if layer.ndim == 2 else layer.shape[2] for layer in maps.values())
    images = blender_images(maps)
    scene = bpy.data.scenes.new("bench_exr")
    settings = scene.render.image_settings
    settings.file_format = "OPEN_EXR"

    print(f"EXR writing, {len(maps)} maps ({channels} channels) of {args.size}x{args.size}, best of {args.repeat}; "
          f"Blender {bpy.app.version_string}")
    # Blender writes R, G, B even for a BW single-channel map: it stores more bytes for the same maps.
    stored_channels = sum(3 for _ in maps.values())
    stored_ratio = stored_channels / channels
    print("MB/s = uncompressed map data (the maps' own channels) / seconds; 'Blender stored' counts the "
          f"{stored_channels} channels Blender writes (R, G, B even in BW mode)")
    print(f"{'codec':6}{'depth':7}{'ours MB/s':>11}{'Blender MB/s':>14}{'Blender stored':>16}{'ours/Blender':>14}"
          f"{'ours MB':>10}{'Blender MB':>12}  Blender file matches")
    with tempfile.TemporaryDirectory(prefix="bench_exr_") as tmp:
        folder = Path(tmp)
        for half in (False, True):
            bytes_per_sample = 2 if half else 4
            raw_mb = channels * args.size * args.size * bytes_per_sample / 1e6
            settings.color_depth = "16" if half else "32"
            for compression in COMPRESSIONS:
                ours_path = folder / f"ours_{compression}.exr"
                ours_s = best_of(args.repeat, partial(write_exr, half=half, compression=compression), ours_path, maps)
                settings.exr_codec = compression.upper()
                blender_s = best_of(args.repeat, save_with_blender, images, maps, scene, folder, compression)
                blender_mb = sum((folder / f"blender_{compression}_{n}.exr").stat().st_size for n in maps) / 1e6
                # Lossless codecs must give back exactly what we gave Blender (half: its rounding).
                matches = "lossy" if compression == "dwaa" else str(all(
                    blender_file_matches(folder / f"blender_{compression}_{n}.exr", maps[n], half) for n in maps))
                ours_mb = ours_path.stat().st_size / 1e6
                print(f"{compression:6}{'half' if half else 'float':7}{raw_mb / ours_s:>11.0f}"
                      f"{raw_mb / blender_s:>14.0f}{raw_mb * stored_ratio / blender_s:>16.0f}"
                      f"{blender_s / ours_s:>13.2f}x{ours_mb:>10.1f}{blender_mb:>12.1f}  {matches}")


if __name__ == "__main__":
    main()
