"""ControlNet renders of frames and scenes, headless, through one warm backend.

    blender -b scene.blend -P examples/batch_render.py -- \
        --prompt "a cottage in the snow, golden hour" --frames 1-10 --out renders/
    blender -b -P examples/batch_render.py -- --scenes a.blend b.blend --prompt "..." --out renders/

Also works with the `bpy` module (`python examples/batch_render.py -- ...`) when the
extension is installed in that Blender. Frames already in the output folder are skipped, so
an interrupted batch resumes where it stopped. Each scene gets its own subfolder.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import bpy


def _addon_module() -> str:
    for name in bpy.context.preferences.addons.keys():
        if name.endswith(".scene_diffusion"):
            return name
    raise SystemExit("Scene Diffusion is not enabled in this Blender (Preferences > Get Extensions)")


def frame_range(text: str) -> tuple[int, int]:
    start, _, end = text.partition("-")
    return int(start), int(end or start)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch_render.py")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--scenes", nargs="*", default=[], help=".blend files (default: the open file)")
    parser.add_argument("--frames", type=frame_range, help="e.g. 1-10 (default: the current frame only)")
    parser.add_argument("--control", action="append", default=[], metavar="KIND=WEIGHT",
                        help="depth, normal, canny (default: depth=1.0)")
    parser.add_argument("--size", help="WxH (default: the scene's resolution)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-per-frame", action="store_true")
    parser.add_argument("--engine", default="CYCLES", choices=("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"))
    parser.add_argument("--out", required=True, type=Path)
    return parser.parse_args(argv)


def configure(scene: bpy.types.Scene, args: argparse.Namespace, out: Path) -> None:
    settings = scene.scene_diffusion.render
    settings.prompt, settings.negative_prompt, settings.steps = args.prompt, args.negative_prompt, args.steps
    settings.random_seed, settings.seed, settings.seed_per_frame = False, args.seed, args.seed_per_frame
    settings.engine = args.engine
    settings.use_depth = settings.use_normal = settings.use_canny = False
    for control in args.control or ["depth=1.0"]:
        kind, _, weight = control.partition("=")
        setattr(settings, f"use_{kind}", True)
        getattr(settings, kind).weight = float(weight or 1.0)
    if args.size:
        width, _, height = args.size.partition("x")
        settings.use_scene_resolution, settings.width, settings.height = False, int(width), int(height)
    first, last = args.frames or (scene.frame_current, scene.frame_current)
    settings.animation, settings.frame_start, settings.frame_end = True, first, last
    settings.output_dir = str(out)


def main(argv: list[str]) -> int:
    args = parse(argv)
    module = _addon_module()
    api = importlib.import_module(f"{module}.addon.api")
    failures = 0
    for blend in args.scenes or [None]:
        if blend is not None:
            bpy.ops.wm.open_mainfile(filepath=str(blend))
        scene = bpy.context.scene
        out = args.out / (Path(blend).stem if blend else scene.name)
        configure(scene, args, out)
        started = time.monotonic()
        try:
            bpy.ops.scene_diffusion.render_controlnet()
        except RuntimeError as exc:  # the operator's error report
            failures += 1
            print(f"{blend or scene.name}: {exc}", file=sys.stderr)
            continue
        print(f"{blend or scene.name}: frames in {out} ({time.monotonic() - started:.1f} s)")
    api.shutdown_backend()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []))
