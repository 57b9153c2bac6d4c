"""Scene passes for ControlNets: Combined, Depth (Z) and Normal from the active camera, written
by Blender's own renderer as one multilayer EXR, and the camera as JSON.

The render uses the evaluated scene (modifiers, instances, visibility, holdouts as Blender
renders them). Every render setting touched here is restored afterwards, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy

if TYPE_CHECKING:
    from ...contract.formats.camera import CameraInfo

ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")
PASSES_FILE = "passes.exr"
CAMERA_FILE = "camera.json"


class PassRenderError(RuntimeError):
    """The passes could not be rendered; the message says why."""


@contextmanager
def overridden(*changes: tuple[Any, str, Any]) -> Iterator[None]:
    """Set (owner, attribute, value) in order and restore them in the same order afterwards
    (order matters: an EXR's media type must be set before its file format, both ways). All
    originals are read before anything is set: setting a file format changes its colour depth."""
    present = [(owner, name, value) for owner, name, value in changes
               if owner is not None and hasattr(owner, name)]  # skip what this Blender version lacks
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in present]
    try:
        for owner, name, value in present:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            try:
                setattr(owner, name, value)
            except (AttributeError, TypeError, ValueError):
                pass  # keep restoring the rest


def engine_id(engine: str) -> str:
    """EEVEE is BLENDER_EEVEE_NEXT in Blender 4.2-4.4 and BLENDER_EEVEE from 5.0."""
    if engine != "BLENDER_EEVEE":
        return engine
    engine_property: Any = bpy.types.RenderSettings.bl_rna.properties["engine"]
    items = engine_property.enum_items.keys()
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in items else "BLENDER_EEVEE"


def camera_info(scene: bpy.types.Scene, camera: bpy.types.Object, width: int, height: int) -> CameraInfo:
    """Everything needed to reproduce Blender's projection, as the contract's camera (checked on creation)."""
    from ...contract.formats.camera import CameraInfo  # numpy: imported when used, not at register()

    data: Any = camera.data
    matrix: Any = camera.matrix_world  # mathutils.Matrix: rows iterate as Vectors
    return CameraInfo.from_dict({
        "matrix_world": [list(row) for row in matrix],
        "type": data.type, "lens": data.lens, "sensor_width": data.sensor_width,
        "sensor_height": data.sensor_height, "sensor_fit": data.sensor_fit,
        "shift_x": data.shift_x, "shift_y": data.shift_y, "ortho_scale": data.ortho_scale,
        "clip_start": data.clip_start, "clip_end": data.clip_end,
        "resolution_x": width, "resolution_y": height,
        "pixel_aspect_x": 1.0, "pixel_aspect_y": 1.0,
    })


def pass_render_settings(scene: bpy.types.Scene, stem: Path, width: int, height: int, engine: str,
                         samples: int, antialias: bool = True) -> list[tuple[Any, str, Any]]:
    """What a pass render changes, in the order it must be set (and restored). ``antialias`` off: Workbench
    renders one sample per pixel (its Z is the pixel centre's either way)."""
    render = scene.render
    settings = render.image_settings
    view_layer = bpy.context.view_layer
    cycles = getattr(scene, "cycles", None)
    return [
        (render, "engine", engine_id(engine)),
        (render, "resolution_x", width), (render, "resolution_y", height),
        (render, "resolution_percentage", 100),
        # Pixel aspect other than 1 makes Blender 5.0 fail to write the multilayer EXR.
        (render, "pixel_aspect_x", 1.0), (render, "pixel_aspect_y", 1.0),
        (render, "use_border", False),
        (render, "use_compositing", False), (render, "use_sequencer", False),
        (render, "use_file_extension", True),
        (render, "filepath", str(stem)),
        (settings, "media_type", "MULTI_LAYER_IMAGE"),  # Blender 5.0+: before the file format
        (settings, "file_format", "OPEN_EXR_MULTILAYER"),
        (settings, "color_depth", "32"),
        (settings, "exr_codec", "ZIP"),
        (view_layer, "use_pass_z", True), (view_layer, "use_pass_normal", True),
        (cycles if engine == "CYCLES" else None, "samples", samples),
        (cycles if engine == "CYCLES" else None, "use_denoising", False),
        (getattr(scene, "eevee", None) if engine == "BLENDER_EEVEE" else None, "taa_render_samples", samples),
        (getattr(scene, "display", None) if engine == "BLENDER_WORKBENCH" and not antialias else None,
         "render_aa", "OFF"),
    ]


def render_passes(scene: bpy.types.Scene, inputs: Path, width: int, height: int,
                  engine: str = "CYCLES", samples: int = 1, frame: int | None = None,
                  antialias: bool = True) -> Path:
    """Render Combined + Z + Normal from the scene's camera into ``inputs/passes.exr``
    (multilayer EXR) and the camera, as it is at that frame, into ``inputs/camera.json``.
    Workbench writes no Normal; with ``antialias`` off it renders one sample per pixel."""
    from ...contract.formats.camera import write_camera

    out_path = inputs / PASSES_FILE
    camera = scene.camera
    if camera is None:
        raise PassRenderError("the scene has no active camera: add one and make it active (Ctrl+Numpad 0)")
    stem = out_path.with_suffix("")
    original_frame = scene.frame_current
    with overridden(*pass_render_settings(scene, stem, width, height, engine, samples, antialias)):
        try:
            if frame is not None:
                scene.frame_set(frame)
            bpy.ops.render.render(write_still=True, scene=scene.name)
            write_camera(inputs / CAMERA_FILE, camera_info(scene, camera, width, height))
        except RuntimeError as exc:
            raise PassRenderError(f"Blender could not render the passes: {exc}") from None
        finally:
            if frame is not None:
                scene.frame_set(original_frame)
    if not out_path.is_file():
        raise PassRenderError(f"Blender rendered but wrote no {out_path.name}")
    return out_path
