"""The first Generate of a fresh Blender session, with "Start the Backend Early" off (before) and on (after).

    python bench/first_click.py [--quick] [--runs 2] [--wait ready|SECONDS] [--size 64] [--steps 4]

Each measurement is a fresh bpy process (this interpreter): the extension installed into a temporary Blender
user folder, a saved .blend opened (the load_post handler fires; with prewarm on it schedules the start),
then, as an artist would, a pause before pressing Generate Texture: until the backend reports the preload done
(``--wait ready``, the default) or a fixed number of seconds. Blender's timers do not run in the bpy module,
so the child calls what they would call: the one-shot prewarm timer, then the service's tick every 20 ms.
Times press -> first step preview (the default preview interval: step 2) and press -> result landed, then a
second press on the same backend (the warm job, for scale). Tiny models (`make-tiny`) unless
SCENE_DIFFUSION_MODELS names a registry. Prints medians and ``ratio N.Nx`` (off / on).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import __version__  # noqa: E402
from devtools import extension  # noqa: E402
from devtools.bench_models import registry_for_bench  # noqa: E402

POLL_S = 0.02
LIMIT_S = 300.0


def _press_and_time(bpy, service) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Press Generate Texture and tick until the result lands: seconds to the first preview and to the end."""
    started = time.perf_counter()
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    job = service.supervisor().current_job()
    first_preview = None
    while not job.finished and time.perf_counter() - started < LIMIT_S:
        service._tick()
        if first_preview is None and job.preview is not None:
            first_preview = time.perf_counter() - started
        time.sleep(POLL_S)
    if job.state != "done":
        raise SystemExit(f"job ended {job.state}: {job.error}")
    return {"preview_s": first_preview if first_preview is not None else float("nan"),
            "result_s": time.perf_counter() - started}


def child(args: argparse.Namespace) -> int:
    user = Path(tempfile.mkdtemp(prefix="scene_diffusion_first_click_"))
    extension.prepare_user_dir(user)
    import bpy

    module = extension.install(Path(args.zip))
    service = importlib.import_module(f"{module}.addon.jobs.service")
    service.blocking = False  # the interactive path: jobs advance on timer ticks, as in Blender's UI
    bpy.context.preferences.addons[module].preferences.prewarm = args.mode == "on"

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.mesh.primitive_cube_add()
    scene_file = user / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(scene_file))
    opened = time.perf_counter()
    bpy.ops.wm.open_mainfile(filepath=str(scene_file))  # load_post: prewarm schedules its timer
    if bpy.app.timers.is_registered(service.prewarm_now):  # the timer firing on the next event loop turn
        bpy.app.timers.unregister(service.prewarm_now)
        service.prewarm_now()
    sup = service.supervisor()
    waited_for = "nothing (prewarm off)"
    if args.mode == "on":
        fixed = None if args.wait == "ready" else float(args.wait)
        deadline = opened + (fixed if fixed is not None else LIMIT_S)
        while time.perf_counter() < deadline and (fixed is not None or sup.server_status is None):
            service._tick()
            time.sleep(POLL_S)
        waited_for = (f"{fixed:.1f} s fixed" if fixed is not None
                      else f"ready (preloaded {sup.server_status.loaded if sup.server_status else '?'})")
    wait_s = time.perf_counter() - opened

    settings = bpy.context.scene.scene_diffusion.texture
    settings.prompt, settings.steps, settings.seed = "mossy stone", args.steps, 1
    settings.width = settings.height = args.size
    bpy.context.view_layer.objects.active = bpy.context.scene.objects[0]
    first = _press_and_time(bpy, service)
    warm = _press_and_time(bpy, service)
    service.shutdown()
    print("RESULT " + json.dumps({**first, "warm_s": warm["result_s"], "wait_s": wait_s, "waited_for": waited_for}))
    return 0


def measure(mode: str, args: argparse.Namespace, zip_path: Path) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", mode, "--zip", str(zip_path), "--wait", args.wait,
               "--size", str(args.size), "--steps", str(args.steps)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=2 * LIMIT_S, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one run per mode")
    parser.add_argument("--runs", type=int, default=2, help="runs per mode, interleaved off/on")
    parser.add_argument("--wait", default="ready", help="before pressing: 'ready' or seconds")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--zip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        return child(args)

    registry = registry_for_bench(ROOT, __version__)
    os.environ.update(SCENE_DIFFUSION_MODELS=registry, HF_HUB_OFFLINE="1")
    os.environ.setdefault("SCENE_DIFFUSION_BACKEND_PYTHON", sys.executable)
    zip_path = extension.build(Path(tempfile.mkdtemp()))
    runs = 1 if args.quick else args.runs
    results: dict[str, list[dict[str, object]]] = {"off": [], "on": []}
    for _ in range(runs):
        for mode in ("off", "on"):
            results[mode].append(measure(mode, args, zip_path))

    def median(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[mode])  # type: ignore[arg-type]

    print(f"first Generate Texture of a fresh session, {args.size}x{args.size}, {args.steps} steps, "
          f"{runs} run(s) per mode, models: {registry}")
    print(f"prewarm on waited for {results['on'][-1]['waited_for']}: {median('on', 'wait_s'):.2f} s after the "
          f"file opened")
    for label, key in (("press -> first preview", "preview_s"), ("press -> result", "result_s")):
        print(f"{label:<24} off {median('off', key):7.2f} s   on {median('on', key):7.2f} s   "
              f"ratio {median('off', key) / median('on', key):.1f}x")
    warm = statistics.median([median("off", "warm_s"), median("on", "warm_s")])
    print(f"{'warm job (2nd press)':<24} {warm:7.2f} s; first press off is {median('off', 'result_s') / warm:.1f}x "
          f"a warm job, on {median('on', 'result_s') / warm:.1f}x")
    print(f"ratio {median('off', 'result_s') / median('on', 'result_s'):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
