"""PBR derivation against its memory-bound floor.

    python bench/pbr.py [--size 4096] [--repeat 3]

Times ``derive_maps`` on a smooth random colour image (best of --repeat), and in the same run the
floor any implementation pays for the same data: reading the colour input from a file and writing
the six maps back out as raw .npy files (page cache, no compression). Prints both and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `backend` is top level

from backend.imaging.color import srgb_to_linear  # noqa: E402
from backend.imaging.pbr import PbrFilterSettings, derive_maps  # noqa: E402


def smooth_colour(size: int, seed: int = 0) -> np.ndarray:
    """Smooth random scene-linear colour: coarse noise upsampled, plus a little fine grain."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, size // 64), max(2, size // 64), 3), dtype=np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    image += rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(0.03)
    np.clip(image, 0.0, 1.0, out=image)
    return srgb_to_linear(image)


def best_of(repeat: int, run: Callable[..., object], *args: object) -> float:
    """Shortest of ``repeat`` timed calls of ``run(*args)`` (the benchmarks share it)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="square image side in pixels (default 4096)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    args = parser.parse_args()

    colour = smooth_colour(args.size)
    settings = PbrFilterSettings()
    with tempfile.TemporaryDirectory(prefix="bench_pbr_") as tmp:
        folder = Path(tmp)
        source = folder / "colour.npy"
        np.save(source, colour)
        maps = derive_maps(colour, settings).as_layers()  # warm-up, and the arrays the floor writes

        def floor() -> None:
            np.load(source)
            for name, layer in maps.items():
                np.save(folder / f"{name}.npy", layer)

        derive_s = best_of(args.repeat, lambda: derive_maps(colour, settings))
        floor_s = best_of(args.repeat, floor)

    megapixels = args.size * args.size / 1e6
    moved = (colour.nbytes + sum(layer.nbytes for layer in maps.values())) / 2**20
    print(f"PBR maps {args.size}x{args.size} ({megapixels:.1f} MP), best of {args.repeat}, "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} CPUs, "
          f"OpenCV threads {cv2.getNumThreads()}")
    print(f"{'':28}{'seconds':>10}{'MP/s':>10}")
    print(f"{'derive_maps (all 6 maps)':28}{derive_s:>10.3f}{megapixels / derive_s:>10.1f}")
    print(f"{'floor: load input + save':28}{floor_s:>10.3f}{megapixels / floor_s:>10.1f}   ({moved:.0f} MiB moved)")
    print(f"ratio derive / floor: {derive_s / floor_s:.2f}x")


if __name__ == "__main__":
    main()
