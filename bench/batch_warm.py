"""Batch renders through one warm backend against a fresh backend per scene.

    python bench/batch_warm.py [--scenes 4] [--size 64] [--steps 4]

Installs the extension into a temporary Blender user folder (as the tests do), builds N small
scenes, and renders each with scene_diffusion.render_controlnet (depth control): first all
through one backend that stays up, then each with the backend shut down before it, so every
scene pays the interpreter start, torch import and pipeline loading again. Models: tiny ones
(`make-tiny`) unless SCENE_DIFFUSION_MODELS names a registry. Prints seconds per scene for
both and the ratio.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import __version__  # noqa: E402
from devtools import extension  # noqa: E402
from devtools.bench_models import registry_for_bench  # noqa: E402


def build_scene(bpy, index: int) -> None:  # type: ignore[no-untyped-def]
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.mesh.primitive_plane_add(size=8)
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 1), rotation=(0, 0, index * math.pi / 7))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.6, location=(1.5 - index * 0.5, 1.0, 0.6))
    bpy.ops.object.camera_add(location=(6, -6, 4.5))
    camera = bpy.context.object
    camera.rotation_euler = (camera.location * -1).to_track_quat("-Z", "Y").to_euler()
    bpy.context.scene.camera = camera


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    registry = registry_for_bench(ROOT, __version__)
    os.environ.update(SCENE_DIFFUSION_MODELS=registry, HF_HUB_OFFLINE="1")
    os.environ.setdefault("SCENE_DIFFUSION_BACKEND_PYTHON", sys.executable)
    extension.prepare_user_dir(Path(tempfile.mkdtemp(prefix="scene_diffusion_bench_")))
    zip_path = extension.build(Path(tempfile.mkdtemp()))
    import bpy

    api = importlib.import_module(f"{extension.install(zip_path)}.addon.api")

    def render_all(fresh_backend: bool) -> float:
        started = time.perf_counter()
        for index in range(args.scenes):
            build_scene(bpy, index)
            settings = bpy.context.scene.scene_diffusion.render
            settings.prompt, settings.steps, settings.seed = "a stone cottage", args.steps, index
            settings.use_scene_resolution, settings.width, settings.height = False, args.size, args.size
            if fresh_backend:
                api.shutdown_backend()
            bpy.ops.scene_diffusion.render_controlnet()
        return (time.perf_counter() - started) / args.scenes

    api.shutdown_backend()
    warm = render_all(fresh_backend=False)  # the first scene starts the backend: it is counted
    api.shutdown_backend()
    cold = render_all(fresh_backend=True)
    api.shutdown_backend()
    print(f"{args.scenes} scenes, {args.size}x{args.size}, {args.steps} steps, depth ControlNet, "
          f"models: {registry}")
    print(f"{'one warm backend':<28} {warm:8.2f} s/scene")
    print(f"{'fresh backend per scene':<28} {cold:8.2f} s/scene")
    print(f"ratio fresh / warm: {cold / warm:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
