"""Panels drawn against Blender's real UILayout API description.

Without a window, Blender cannot draw a panel; what can be checked is that every call a
panel makes exists on UILayout with those keyword arguments, every property it shows
exists on its data, and every button names a registered operator and its real properties.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import SimpleNamespace

import bpy
import pytest

_LAYOUT = bpy.types.UILayout.bl_rna


class _OperatorButton:
    def __init__(self, idname: str) -> None:
        module, name = idname.split(".")
        op = getattr(getattr(bpy.ops, module), name)
        op.get_rna_type()  # raises for an unregistered operator
        object.__setattr__(self, "_props", set(op.get_rna_type().properties.keys()))

    def __setattr__(self, name: str, value: object) -> None:
        assert name in self._props, f"operator has no property {name!r}"


class RecordingLayout:
    def __init__(self, calls: list) -> None:
        object.__setattr__(self, "calls", calls)

    def __setattr__(self, name: str, value: object) -> None:
        assert name in _LAYOUT.properties, f"UILayout has no property {name!r}"

    def __getattr__(self, name: str):
        function = _LAYOUT.functions.get(name)
        assert function is not None, f"UILayout has no function {name!r}"
        parameters = set(function.parameters.keys())

        def call(*args, **kwargs):
            unknown = set(kwargs) - parameters
            assert not unknown, f"UILayout.{name} has no parameter(s) {unknown}"
            self.calls.append((name, args, kwargs))
            if name in ("prop",):
                data, prop = args[0], args[1]
                assert prop in data.bl_rna.properties, f"{data} has no property {prop!r}"
            if name == "operator":
                return _OperatorButton(args[0])
            return RecordingLayout(self.calls)

        return call


def _draw(draw, *args) -> list:
    calls: list = []
    draw(SimpleNamespace(layout=RecordingLayout(calls)), *args)
    return calls


def _job(addon, state, **fields):
    sup_mod = addon.addon.jobs.supervisor
    params = importlib.import_module(f"{addon.__name__}.contract.tasks").TextureParams(prompt="drawn")
    job = sup_mod.Job("drawn", Path("/nonexistent"), params, state=state, **fields)
    job.submitted = time.monotonic() + 1e6  # the newest, so panels pick it
    return job


@pytest.mark.parametrize("state, fields", [
    ("running", {"step": 3, "total": 10}),
    ("starting", {}),
    ("done", {}),
    ("cancelled", {}),
    ("failed", {"error": "boom"}),
])
def test_texture_panel_draws_every_job_state(addon, clean_scene, state, fields):
    sup = addon.addon.jobs.service.supervisor()
    if "error" in fields:
        fields["error"] = addon.addon.jobs.supervisor.JobError("boom", "try again", "internal", "line 1\nline 2")
    job = _job(addon, state, **fields)
    sup.jobs[job.id] = job
    try:
        calls = _draw(addon.panels.texture.SCENE_DIFFUSION_PT_texture.draw, bpy.context)
    finally:
        del sup.jobs[job.id]
    names = [c[0] for c in calls]
    assert ("operator", ("scene_diffusion.generate_texture",), {"icon": "TEXTURE"}) in calls
    if state in ("running", "starting"):
        assert "progress" in names
    if state == "failed":
        assert any(c[0] == "label" and c[2].get("text") == "boom" for c in calls)


def test_backend_panel_and_preferences_draw(addon, clean_scene):
    calls = _draw(addon.panels.backend.SCENE_DIFFUSION_PT_backend.draw, bpy.context)
    assert {"scene_diffusion.restart_backend", "scene_diffusion.free_memory",
            "scene_diffusion.open_job_folder"} <= {c[1][0] for c in calls if c[0] == "operator"}
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    calls = []
    values = {k: getattr(prefs, k) for k in prefs.bl_rna.properties.keys() if k != "rna_type"}
    type(prefs).draw(SimpleNamespace(layout=RecordingLayout(calls), bl_rna=prefs.bl_rna, **values), bpy.context)
    assert any(c[0] == "operator" and c[1][0] == "scene_diffusion.setup_backend" for c in calls)


def _labels(calls: list) -> list[str]:
    return [c[2].get("text", "") for c in calls if c[0] == "label"]


def test_backend_panel_says_what_is_ready_before_the_first_job(addon, clean_scene, monkeypatch):
    sup = addon.addon.jobs.service.supervisor()
    monkeypatch.setattr(type(sup), "handshake", property(lambda self: None))  # no backend has answered yet
    addon.addon.jobs.readiness.cache.clear()
    calls = _draw(addon.panels.backend.SCENE_DIFFUSION_PT_backend.draw, bpy.context)
    labels = _labels(calls)
    # The test backend Python is this project's venv: torch and diffusers are installed there.
    assert any(t.startswith("Backend environment ready (torch ") for t in labels), labels
    assert any(t.startswith("Device: ") for t in labels), labels
    models = next(t for t in labels if t.startswith("Models: "))
    assert "on disk" in models and "0 B on disk" not in models  # the tiny models are local folders
    assert any(t.startswith("text_to_image: ") for t in labels) and any(t.startswith("image_to_3d: ") for t in labels)


def test_backend_panel_shows_the_handshake_warnings(addon, clean_scene, monkeypatch):
    messages = importlib.import_module(f"{addon.__name__}.contract.messages")
    hello = messages.Handshake(messages.PROTOCOL_VERSION, "0.1.0", "cpu", "fp32", {"torch": "2.13.0+cpu"}, 1,
                               ["This machine has an NVIDIA GPU but the backend's torch is a CPU-only build"])
    sup = addon.addon.jobs.service.supervisor()
    monkeypatch.setattr(type(sup), "handshake", property(lambda self: hello))
    calls = _draw(addon.panels.backend.SCENE_DIFFUSION_PT_backend.draw, bpy.context)
    assert ("label", (), {"text": hello.warnings[0], "icon": "ERROR"}) in calls
    assert "Device: cpu (fp32)" in _labels(calls)


def test_preferences_show_the_torch_build_and_what_automatic_found(addon, clean_scene):
    addon.addon.jobs.torch_choice.automatic(wait=True)  # the GPU probe runs on a thread: let it finish
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    assert prefs.torch_build == "auto"
    calls = []
    values = {k: getattr(prefs, k) for k in prefs.bl_rna.properties.keys() if k != "rna_type"}
    type(prefs).draw(SimpleNamespace(layout=RecordingLayout(calls), bl_rna=prefs.bl_rna, **values), bpy.context)
    assert any(c[0] == "prop" and c[1][1] == "torch_build" for c in calls)
    assert any(t.startswith("Automatic: ") and "checking" not in t for t in _labels(calls)), _labels(calls)


def test_status_bar_shows_a_running_job(addon, clean_scene):
    sup = addon.addon.jobs.service.supervisor()
    job = _job(addon, "running", step=2, total=8)
    sup.jobs[job.id] = job
    try:
        calls = _draw(addon.panels.status_bar.draw, bpy.context)
    finally:
        del sup.jobs[job.id]
    progress = next(c for c in calls if c[0] == "progress")
    assert progress[2]["factor"] == 0.25 and "2/8" in progress[2]["text"]


@pytest.mark.parametrize("method, file_format", [("filters", "exr"), ("marigold", "png16")])
def test_pbr_panels_draw_in_both_editors(addon, clean_scene, method, file_format):
    scene = bpy.context.scene.scene_diffusion
    scene.pbr.method, scene.export.format = method, file_format
    for panel in (addon.panels.pbr.SCENE_DIFFUSION_PT_pbr, addon.panels.pbr.SCENE_DIFFUSION_PT_pbr_image):
        calls = _draw(panel.draw, bpy.context)
        operators = {c[1][0] for c in calls if c[0] == "operator"}
        assert operators == {"scene_diffusion.derive_pbr", "scene_diffusion.export_maps",
                             "scene_diffusion.import_maps"}
        shown = {c[1][1] for c in calls if c[0] == "prop"}
        assert ("steps" in shown) == (method == "marigold")
        assert ("compression" in shown) == (file_format == "exr")
    assert addon.panels.pbr.SCENE_DIFFUSION_PT_pbr_image.bl_space_type == "IMAGE_EDITOR"


@pytest.mark.parametrize("animation, camera", [(False, True), (True, False)])
def test_render_panel_draws(addon, clean_scene, animation, camera):
    scene = bpy.context.scene
    if camera:
        bpy.ops.object.camera_add()
        scene.camera = bpy.context.object
    scene.scene_diffusion.render.animation = animation
    calls = _draw(addon.panels.render.SCENE_DIFFUSION_PT_render.draw, bpy.context)
    assert ("operator", ("scene_diffusion.render_controlnet",), {"icon": "RENDER_STILL"}) in calls
    labels = [c[2].get("text") for c in calls if c[0] == "label"]
    assert ("No active camera" in labels) == (not camera)
    shown = {c[1][1] for c in calls if c[0] == "prop"}
    assert ("frame_start" in shown) == animation and {"use_depth", "use_normal", "use_canny"} <= shown


@pytest.mark.parametrize("source", ["IMAGE", "FILE"])
def test_mesh_panel_draws(addon, clean_scene, source):
    bpy.context.scene.scene_diffusion.mesh.source = source
    calls = _draw(addon.panels.mesh.SCENE_DIFFUSION_PT_mesh.draw, bpy.context)
    operators = {c[1][0] for c in calls if c[0] == "operator"}
    assert operators == {"scene_diffusion.image_to_mesh", "scene_diffusion.import_mesh"}
    assert any(c[0] == ("template_ID" if source == "IMAGE" else "prop") for c in calls)

