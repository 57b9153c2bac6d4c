"""Start the Backend Early: a drawn panel or an opened file starts the local backend and preloads the Texture
panel's model before the first job; off, remote, or in a background script it starts nothing.

Blender's timers do not run in the bpy module, so these tests fire the one-shot prewarm timer themselves and
tick the service as its timer would (the ``interactive`` fixture)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import bpy
import pytest

from contract import jobfolder


@pytest.fixture
def fresh(addon, clean_scene, interactive, tmp_path):  # type: ignore[no-untyped-def]
    """No backend running, no prewarm asked yet, the preference as given; a saved .blend to open."""
    service = interactive
    service.shutdown()
    service._prewarm_asked, service._preload = False, None
    service.supervisor().server_status = None
    bpy.ops.mesh.primitive_cube_add()
    scene_file = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(scene_file))
    yield service, scene_file
    prefs(addon).prewarm = True
    service.shutdown()


def prefs(addon):  # type: ignore[no-untyped-def]
    return bpy.context.preferences.addons[addon.__name__].preferences


class _AnyLayout:
    """Takes every UILayout call and attribute (the panels' layout checks live in test_panels.py)."""

    def __getattr__(self, name: str) -> _AnyLayout:
        return self

    def __call__(self, *args: object, **kwargs: object) -> _AnyLayout:
        return self


def _draw_texture_panel(addon) -> None:  # type: ignore[no-untyped-def]
    addon.panels.texture.SCENE_DIFFUSION_PT_texture.draw(SimpleNamespace(layout=_AnyLayout()), bpy.context)


def _fire_prewarm_timer(service) -> bool:  # type: ignore[no-untyped-def]
    """Run the one-shot timer the way Blender's event loop would; False when none was scheduled."""
    if not bpy.app.timers.is_registered(service.prewarm_now):
        return False
    bpy.app.timers.unregister(service.prewarm_now)
    service.prewarm_now()
    return True


def _tick_until(service, done, limit: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not done() and time.monotonic() < deadline:
        service._tick()
        time.sleep(0.05)


def test_off_starts_nothing(addon, fresh):
    service, scene_file = fresh
    prefs(addon).prewarm = False
    starts = service.supervisor().starts
    bpy.ops.wm.open_mainfile(filepath=str(scene_file))
    service.schedule_prewarm()  # as a panel's draw() does
    _fire_prewarm_timer(service)
    assert service.supervisor().client is None and service.supervisor().starts == starts


def test_panel_draw_only_schedules_then_the_timer_starts_and_preloads(addon, fresh):
    service, _scene_file = fresh
    sup = service.supervisor()
    starts = sup.starts
    _draw_texture_panel(addon)
    assert sup.client is None, "draw() itself must start nothing"
    assert _fire_prewarm_timer(service)
    assert sup.client is not None and sup.starts == starts + 1
    _tick_until(service, lambda: sup.server_status is not None)
    assert sup.state == "ready" and sup.server_status.loaded == ["sd15-tiny"]
    _draw_texture_panel(addon)  # later redraws ask nothing more
    assert not bpy.app.timers.is_registered(service.prewarm_now)


def test_opening_a_file_leads_to_a_running_backend_before_the_first_job(addon, fresh):
    service, scene_file = fresh
    sup = service.supervisor()
    bpy.ops.wm.open_mainfile(filepath=str(scene_file))  # the load_post handler schedules the prewarm
    assert _fire_prewarm_timer(service)
    _tick_until(service, lambda: sup.server_status is not None)
    assert sup.state == "ready" and sup.server_status.loaded == ["sd15-tiny"]
    starts = sup.starts
    settings = bpy.context.scene.scene_diffusion.texture
    settings.prompt, settings.steps, settings.width, settings.height = "slate", 2, 64, 64
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    job = sup.current_job()
    _tick_until(service, lambda: job.finished)
    assert job.state == "done", job.error
    assert sup.starts == starts  # the job ran on the prewarmed backend
    assert jobfolder.read_job(job.job_dir)["models"]["text_to_image"]["family"] == "sd15"


def test_the_panels_model_is_the_one_preloaded(addon, fresh):
    service, _scene_file = fresh
    sup = service.supervisor()
    bpy.context.scene.scene_diffusion.texture.model = "sdxl-tiny"
    _draw_texture_panel(addon)
    assert _fire_prewarm_timer(service)
    _tick_until(service, lambda: sup.server_status is not None)
    assert sup.server_status.loaded == ["sdxl-tiny"]


def test_a_remote_backend_starts_no_local_process(addon, fresh, monkeypatch):
    service, scene_file = fresh
    monkeypatch.setenv("SCENE_DIFFUSION_REMOTE", "127.0.0.1:9")  # nothing listens: a connection would fail
    starts = service.supervisor().starts
    bpy.ops.wm.open_mainfile(filepath=str(scene_file))
    _fire_prewarm_timer(service)
    assert service.supervisor().client is None and service.supervisor().starts == starts


def test_background_scripts_start_on_their_first_job_as_before(addon, fresh):
    service, _scene_file = fresh
    service.blocking = None  # follow bpy.app.background, as a `blender -b` script does
    assert bpy.app.background
    service.schedule_prewarm()
    assert not bpy.app.timers.is_registered(service.prewarm_now)
    assert service.supervisor().client is None
    service.blocking = False


def test_the_preference_defaults_to_on(addon):
    assert type(prefs(addon)).bl_rna.properties["prewarm"].default is True
    assert os.environ.get("SCENE_DIFFUSION_REMOTE") is None
