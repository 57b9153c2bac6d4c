"""Generate textures headlessly, one per prompt, onto named objects, and save the file.

    blender -b scene.blend -P examples/texture_batch.py -- \
        --prompt "mossy stone wall" --objects Wall --size 1024 --seed 7 --save out.blend

Also works with the `bpy` module (`python examples/texture_batch.py -- ...`) when the
extension is installed in that Blender's user extensions. Several --prompt/--objects pairs
run in order through one warm backend.

On a farm the same work runs in three stages: --prepare writes one job folder per prompt and
starts no backend, the batch command runs them where the GPUs are, --apply brings the textures
back onto the objects of this .blend (jobs that did not finish are listed; exit code 1):

    blender -b scene.blend -P examples/texture_batch.py -- --prompt "mossy stone wall" --objects Wall --prepare jobs/
    python -m backend batch --jobs jobs/ --local 2
    blender -b scene.blend -P examples/texture_batch.py -- --apply jobs/ --save out.blend
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import bpy


def _api():  # type: ignore[no-untyped-def]
    for name in bpy.context.preferences.addons.keys():
        if name.endswith(".scene_diffusion"):
            return importlib.import_module(f"{name}.addon.api")
    raise SystemExit("Scene Diffusion is not enabled in this Blender (Preferences > Get Extensions)")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="texture_batch.py")
    parser.add_argument("--prompt", action="append", default=[], help="repeat for several textures")
    parser.add_argument("--objects", action="append", nargs="*", default=[],
                        help="object names for the matching --prompt (repeat per prompt)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--no-seamless", action="store_true")
    parser.add_argument("--model", default="")
    parser.add_argument("--save", help="save the .blend here (default: leave the file unsaved)")
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument("--prepare", type=Path, metavar="DIR", help="only write the job folders into DIR")
    stage.add_argument("--apply", type=Path, metavar="DIR", help="bring DIR's finished jobs into this file")
    args = parser.parse_args(argv)
    if not args.prompt and args.apply is None:
        parser.error("--prompt is required (except with --apply)")
    return args


def apply(api, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    report = api.apply_jobs(args.apply)
    for line in report.lines():
        print(line, file=sys.stdout if report.ok else sys.stderr)
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=args.save)
    return 0 if report.ok else 1


def main(argv: list[str]) -> int:
    args = parse(argv)
    api = _api()
    if args.apply is not None:
        return apply(api, args)
    failures = 0
    for index, prompt in enumerate(args.prompt):
        objects = args.objects[index] if index < len(args.objects) else []
        missing = [n for n in objects if n not in bpy.data.objects]
        if missing:
            print(f"error: no object named {', '.join(missing)}", file=sys.stderr)
            return 2
        settings = dict(width=args.size, height=args.size, steps=args.steps, seed=args.seed, model=args.model,
                        seamless_x=not args.no_seamless, seamless_y=not args.no_seamless)
        if args.prepare is not None:
            print(f"{prompt!r}: {api.prepare_texture(args.prepare, prompt, objects=objects, **settings)}")
            continue
        job = api.generate_texture(prompt, objects=objects, **settings)
        if job.state == "done":
            print(f"{prompt!r}: image {job.applied.image!r} on {job.applied.objects} ({job.job_dir})")
        else:
            failures += 1
            print(f"{prompt!r}: {job.state}: {job.error.text() if job.error else ''}", file=sys.stderr)
    if args.prepare is not None:
        return 0  # nothing ran; --apply saves the file once the results are in
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=args.save)
    api.shutdown_backend()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []))
