"""Runs inside a real Blender with a window (``blender start.blend --python driver.py -- plan.json``).

For each capability of the plan: set the scene up, press the capability's button the way a click does
(``INVOKE_DEFAULT`` with the window, the 3D View and its sidebar as context), screenshot the screen
mid-job, press the job's Cancel button with the mouse (xdotool, at the button found in that
screenshot), then run it again to the end and screenshot the result. Everything happens in one timer
driven by a generator, so Blender's own event loop draws the window in between, as for an artist.
Writes ``report.json`` and the screenshots to the plan's ``out`` folder, then quits. Standard library,
bpy and numpy only (what the root's Blender has).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import screen  # noqa: E402  (beside this file; Blender does not put it on the path)

PLAN_PATH = Path(sys.argv[sys.argv.index("--") + 1])
PLAN = json.loads(PLAN_PATH.read_text(encoding="utf-8"))
OUT = Path(PLAN["out"])
REPORT: dict[str, Any] = {"blender": bpy.app.version_string, "capabilities": {}, "errors": []}
# The sidebar shows one of the extension's panels at a time, open, so its job box is on the screen (all of
# them open are taller than a 1000-pixel window); an artist would collapse the others the same way.
PANELS = {"texture": "SCENE_DIFFUSION_PT_texture", "render": "SCENE_DIFFUSION_PT_render",
          "project": "SCENE_DIFFUSION_PT_project", "mesh": "SCENE_DIFFUSION_PT_mesh", "pbr": "SCENE_DIFFUSION_PT_pbr",
          "backend": "SCENE_DIFFUSION_PT_backend"}
PANEL_CLASSES: dict[str, Any] = {}


def show_only(shown: str) -> None:
    """Unregister every panel of the extension but ``shown``, which is registered again open."""
    if not PANEL_CLASSES:
        PANEL_CLASSES.update({key: getattr(bpy.types, name) for key, name in PANELS.items()})
    for cls in PANEL_CLASSES.values():
        if cls.is_registered:
            bpy.utils.unregister_class(cls)
    cls = PANEL_CLASSES[shown]
    cls.bl_options = set()  # the Backend, Project and Image to Mesh panels start closed
    bpy.utils.register_class(cls)


def window_parts() -> tuple[Any, Any, Any]:
    window = bpy.context.window_manager.windows[0]
    area = max((a for a in window.screen.areas if a.type == "VIEW_3D"), key=lambda a: a.width * a.height)
    region = next(r for r in area.regions if r.type == "UI")
    return window, area, region


def rect(thing: Any, window: Any) -> dict[str, int]:
    """A region or area as screen pixels from the top-left (Blender counts from the bottom-left)."""
    return {"left": thing.x, "top": window.height - (thing.y + thing.height), "width": thing.width,
            "height": thing.height}


def screenshot(name: str) -> str:
    path = OUT / f"{name}.png"
    subprocess.run(["import", "-window", "root", str(path)], check=True, timeout=60)
    return path.name


def redraw() -> Iterator[float]:
    """Let Blender draw every area at least twice before a screenshot."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            area.tag_redraw()
    yield 0.4
    yield 0.4


def press(operator: str) -> set[str]:
    window, area, region = window_parts()
    group, name = operator.split(".")
    with bpy.context.temp_override(window=window, area=area, region=region):
        return set(getattr(getattr(bpy.ops, group), name)("INVOKE_DEFAULT"))


def latest_job() -> Any:
    jobs = list(SERVICE.supervisor().jobs.values())
    return max(jobs, key=lambda j: j.submitted, default=None)


def datablocks() -> dict[str, list[str]]:
    return {kind: sorted(b.name for b in getattr(bpy.data, kind))
            for kind in ("images", "materials", "objects", "meshes")}


def load_screen(path: Path) -> np.ndarray:
    """A screenshot as H x W x 3 (0-255, rows from the top), read with Blender's own image loader."""
    image = bpy.data.images.load(str(path))
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return (pixels.reshape(height, width, 4)[::-1, :, :3] * 255).round()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> Iterator[float]:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        yield 0.05


def park_mouse() -> None:
    """Over the empty viewport, so no button is highlighted in the next screenshot."""
    subprocess.run(["xdotool", "mousemove", "300", "500"], check=True, timeout=30)


def click(x: int, y: int) -> Iterator[float]:
    subprocess.run(["xdotool", "mousemove", str(x), str(y)], check=True, timeout=30)
    yield 0.5  # Blender highlights the button under the mouse before it takes the click
    subprocess.run(["xdotool", "click", "1"], check=True, timeout=30)
    yield 0.2


def run_capability(name: str, spec: dict[str, Any]) -> Iterator[float]:
    entry: dict[str, Any] = {}
    REPORT["capabilities"][name] = entry
    SETUPS[name](spec)
    show_only(name)
    window, area, region = window_parts()
    entry["sidebar"] = rect(region, window)
    entry["viewport"] = rect(area, window)
    # A long run: seen mid-job, then cancelled with the panel's own Cancel button.
    apply_steps(name, spec["cancel_steps"], spec.get("cancel_setting"))
    park_mouse()
    yield from redraw()
    entry["idle"] = screenshot(f"{name}-idle")
    before = datablocks()
    entry["cancel_invoke"] = sorted(press(spec["operator"]))
    job = latest_job()
    wants_preview = spec.get("preview", True)
    yield from wait_for(lambda: job.state == "running" and job.step >= 2
                        and (job.preview is not None or not wants_preview),
                        spec.get("timeout", 300), f"{name}: two steps" + (" and a preview" if wants_preview else ""))
    yield from redraw()
    yield from redraw()  # Blender loads a preview icon in the background and draws it on a later redraw
    idle = load_screen(OUT / entry["idle"])
    attempt = 0
    for attempt in range(6):  # noqa: B007  (counted in the report)
        # A person sees the preview within a second or two: so may the screenshot.
        entry["mid_fraction"] = job.fraction
        entry["mid"] = screenshot(f"{name}-mid")
        box = screen.job_box(idle, load_screen(OUT / entry["mid"]), entry["sidebar"], REPORT["progress_colour"])
        if box is not None and (box.preview_pixels >= screen.PREVIEW_SEEN or not wants_preview):
            break
        yield from redraw()
    entry["mid_attempts"] = attempt + 1
    if box is None:
        raise RuntimeError(f"{name}: no job box found in the sidebar of {entry['mid']}")
    entry["cancel_at"] = list(box.cancel)
    yield from click(*box.cancel)
    park_mouse()
    yield from wait_for(lambda: job.finished, 120, f"{name}: the cancelled job to end")
    yield from redraw()
    entry["cancelled_state"] = job.state
    entry["cancelled_step"] = job.step
    entry["cancelled_total"] = job.total
    entry["cancelled_applied"] = job.applied is not None
    entry["cancelled_datablocks_same"] = datablocks() == before
    entry["cancelled"] = screenshot(f"{name}-cancelled")

    # A short run to the end: the result in the scene and in the viewport.
    apply_steps(name, spec["steps"], spec.get("setting"))
    entry["done_invoke"] = sorted(press(spec["operator"]))
    job = latest_job()
    yield from wait_for(lambda: job.finished, spec.get("timeout", 300), f"{name}: the job to end")
    entry["state"] = job.state
    entry["error"] = job.error.text() if job.error is not None else None
    entry["applied"] = job.applied.summary() if job.applied is not None else None
    entry["result"] = RESULTS[name]()
    window, area, region = window_parts()
    yield from redraw()
    entry["done"] = screenshot(f"{name}-done")


def apply_steps(name: str, steps: int, setting: list[Any] | None = None) -> None:
    settings = getattr(bpy.context.scene.scene_diffusion, name)  # each capability's settings group
    settings.steps = steps
    if setting:  # [name, value]: what else makes the run long enough to be caught mid-job
        setattr(settings, setting[0], setting[1])


def select_only(*objects: Any) -> None:
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj in objects)
    bpy.context.view_layer.objects.active = objects[0] if objects else None


def setup_texture(spec: dict[str, Any]) -> None:
    settings = bpy.context.scene.scene_diffusion.texture
    settings.prompt, settings.width, settings.height = "weathered red bricks", spec["size"], spec["size"]
    # Model Options open, with the tiny LoRA and a sampler: the texture jobs run with them, as an artist sets them.
    settings.options.show, settings.options.scheduler = True, "euler_a"
    lora = Path(os.environ["SCENE_DIFFUSION_MODELS"]) / "loras" / "sd15-style-a.safetensors"
    bpy.ops.scene_diffusion.add_lora(target="texture", filepath=str(lora), weight=0.8)
    select_only(bpy.data.objects["Cube"])


def job_request() -> dict[str, Any]:
    """What the latest job asked for (its job.json request)."""
    return dict(json.loads((latest_job().job_dir / "job.json").read_text(encoding="utf-8"))["request"])


def setup_render(spec: dict[str, Any]) -> None:
    settings = bpy.context.scene.scene_diffusion.render
    settings.prompt, settings.use_scene_resolution = "a stone cube on a table", False
    settings.width = settings.height = spec["size"]


def setup_project(spec: dict[str, Any]) -> None:
    settings = bpy.context.scene.scene_diffusion.project
    settings.prompt, settings.views, settings.texture_size = "painted wooden crate", "ACTIVE", spec["size"]
    settings.width = settings.height = spec["size"]
    select_only(bpy.data.objects["Cube"])


def setup_mesh(spec: dict[str, Any]) -> None:
    settings = bpy.context.scene.scene_diffusion.mesh
    settings.source, settings.image, settings.frame_size = "IMAGE", texture_image(), spec["size"]
    settings.target_size = 2.0  # as big as the cube
    bpy.context.scene.cursor.location = (0.0, -3.0, 0.0)  # beside the cube (towards the view), not inside it


def setup_pbr(spec: dict[str, Any]) -> None:
    settings = bpy.context.scene.scene_diffusion.pbr
    settings.image, settings.method = texture_image(), "marigold"
    select_only(bpy.data.objects["Cube"])


def texture_image() -> Any:
    """The image the texture capability put on the cube (its Image Texture node)."""
    material = bpy.data.objects["Cube"].active_material
    return next(n.image for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image is not None)


def cube_images() -> list[str]:
    material = bpy.data.objects["Cube"].active_material
    if material is None or material.node_tree is None:
        return []
    return sorted(n.image.name for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image)


def show_render() -> dict[str, Any]:
    image = bpy.data.images.get("Diffusion Render")
    if image is not None:  # the result where an artist looks at it: an Image Editor beside the viewport
        window = bpy.context.window_manager.windows[0]
        area = next(a for a in window.screen.areas if a.type == "PROPERTIES")
        area.type = "IMAGE_EDITOR"
        area.spaces.active.image = image
    return {"image": image.name if image else None, "size": list(image.size) if image else None}


SETUPS = {"texture": setup_texture, "render": setup_render, "project": setup_project, "mesh": setup_mesh,
          "pbr": setup_pbr}
RESULTS: dict[str, Callable[[], Any]] = {
    "texture": lambda: {"cube_images": cube_images(), "loras": [lora["name"] for lora in job_request()["loras"]],
                        "scheduler": job_request()["scheduler"]},
    "render": show_render,
    "project": lambda: {"cube_images": cube_images()},
    "mesh": lambda: {"objects": sorted(o.name for o in bpy.data.objects),
                     "active": bpy.context.view_layer.objects.active.name,
                     "location": list(bpy.context.view_layer.objects.active.location)},
    "pbr": lambda: {"cube_images": cube_images()},
}


def flow() -> Iterator[float]:
    show_only("texture")
    window, area, region = window_parts()
    space = area.spaces.active
    space.show_region_ui = True
    space.shading.type, space.shading.color_type = "SOLID", "TEXTURE"
    yield 0.5
    window, area, region = window_parts()
    region.active_panel_category = "Diffusion"
    REPORT["window"] = {"width": window.width, "height": window.height, "x": window.x, "y": window.y}
    REPORT["progress_colour"] = [round(c * 255) for c in
                                 bpy.context.preferences.themes[0].user_interface.wcol_progress.item[:3]]
    yield from redraw()
    REPORT["start"] = screenshot("start")
    for name, spec in PLAN["capabilities"].items():
        try:
            yield from run_capability(name, spec)
        except Exception:  # one capability's failure is reported, the others still run
            REPORT["errors"].append(f"{name}: {traceback.format_exc()}")
    show_only("backend")
    park_mouse()
    yield from redraw()
    REPORT["backend"] = screenshot("backend")


def finish() -> None:
    (OUT / "report.json").write_text(json.dumps(REPORT, indent=2), encoding="utf-8")
    if SERVICE is not None:
        SERVICE.shutdown()
    bpy.ops.wm.quit_blender()


def main() -> None:
    steps = flow()

    def tick() -> float | None:
        try:
            return next(steps)
        except StopIteration:
            pass
        except Exception:
            REPORT["errors"].append(traceback.format_exc())
        finish()
        return None

    bpy.app.timers.register(tick, first_interval=1.0)


SERVICE: Any = None
try:
    ADDON = next(name for name in bpy.context.preferences.addons.keys() if name.endswith("scene_diffusion"))
    SERVICE = sys.modules[ADDON].addon.jobs.service
    main()
except Exception:  # the extension is missing or broken: say so and quit rather than leave a window open
    REPORT["errors"].append(traceback.format_exc())
    finish()
