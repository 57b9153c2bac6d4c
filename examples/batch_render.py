"""ControlNet renders of frames and scenes, headless, through one warm backend.

    blender -b scene.blend -P examples/batch_render.py -- \
        --prompt "a cottage in the snow, golden hour" --frames 1-10 --out renders/
    blender -b -P examples/batch_render.py -- --scenes a.blend b.blend --prompt "..." --out renders/

Also works with the `bpy` module (`python examples/batch_render.py -- ...`) when the
extension is installed in that Blender. Frames already in the output folder are skipped, so
an interrupted batch resumes where it stopped. Each scene gets its own subfolder.

On a farm the same work runs in three stages: --prepare renders every scene's passes into one
job folder per frame and starts no backend, the batch command runs the jobs where the GPUs are,
--apply writes the finished frames into --out/<scene>/ as above (frames not done are listed;
exit code 1; run it again once they are):

    blender -b -P examples/batch_render.py -- --scenes a.blend b.blend --prompt "..." --frames 1-10 \
        --out renders/ --prepare jobs/
    python -m backend batch --jobs jobs/ --local 2
    blender -b -P examples/batch_render.py -- --apply jobs/ --out renders/
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
    parser.add_argument("--prompt")
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
    parser.add_argument("--out", type=Path, help="frames go into OUT/<scene>/ (with --apply: default the "
                                                   "folders given at --prepare)")
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument("--prepare", type=Path, metavar="DIR", help="only write the frames' job folders into DIR")
    stage.add_argument("--apply", type=Path, metavar="DIR", help="copy DIR's finished frames into the output")
    args = parser.parse_args(argv)
    if args.apply is None and (not args.prompt or args.out is None):
        parser.error("--prompt and --out are required (except with --apply)")
    if args.out is not None:
        args.out = args.out.absolute()  # the render settings want an absolute folder
    return args


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
    if args.apply is not None:
        report = api.apply_jobs(args.apply, frames_root=args.out)
        for line in report.lines():
            print(line, file=sys.stdout if report.ok else sys.stderr)
        return 0 if report.ok else 1
    failures = 0
    for blend in args.scenes or [None]:
        if blend is not None:
            bpy.ops.wm.open_mainfile(filepath=str(blend))
        scene = bpy.context.scene
        out = args.out / (Path(blend).stem if blend else scene.name)
        configure(scene, args, out)
        started = time.monotonic()
        if args.prepare is not None:
            try:
                prepared = api.prepare_render(args.prepare, scene)
            except (ValueError, RuntimeError, OSError) as exc:  # ParamError, PassRenderError, a file not written
                failures += 1
                print(f"{blend or scene.name}: {exc}", file=sys.stderr)
                continue
            print(f"{blend or scene.name}: {len(prepared.jobs)} frame jobs in {args.prepare}, "
                  f"{len(prepared.skipped)} frames already in {out} ({time.monotonic() - started:.1f} s)")
            continue
        try:
            bpy.ops.scene_diffusion.render_controlnet()
        except RuntimeError as exc:  # the operator's error report
            failures += 1
            print(f"{blend or scene.name}: {exc}", file=sys.stderr)
            continue
        print(f"{blend or scene.name}: frames in {out} ({time.monotonic() - started:.1f} s)")
    if args.prepare is None:
        api.shutdown_backend()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []))
