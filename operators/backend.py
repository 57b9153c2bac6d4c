"""Backend housekeeping: set up its environment, restart it, cancel a job, open a job folder, test a remote
server and forget its pinned key."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import bpy

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems
from bpy.props import StringProperty

from ..addon import paths, preferences, render_animation
from ..addon.jobs import known_servers, readiness, service, setup
from ..addon.jobs.connection_test import ConnectionReport, ConnectionTest


class SCENE_DIFFUSION_OT_cancel_job(bpy.types.Operator):
    """Stop the running job at its next step; it yields no result"""

    bl_idname = "scene_diffusion.cancel_job"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    job_id: StringProperty(name="Job", description="Job to cancel; empty: every running job")  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        sup = service.supervisor()
        if not self.job_id:
            render_animation.cancel_current()  # an animation stops too, not just its current frame
        jobs = [j for j in sup.active_jobs() if not self.job_id or j.id == self.job_id]
        if not jobs:
            self.report({"INFO"}, "No job is running")
            return {"CANCELLED"}
        for job in jobs:
            sup.cancel(job.id)
        self.report({"INFO"}, f"Cancelling {len(jobs)} job(s)")
        return {"FINISHED"}


class SCENE_DIFFUSION_OT_restart_backend(bpy.types.Operator):
    """Stop the backend (cancelling its jobs) and start a fresh one"""

    bl_idname = "scene_diffusion.restart_backend"
    bl_label = "Restart Backend"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        try:
            service.restart()
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot start the backend: {exc}")
            return {"CANCELLED"}
        return {"FINISHED"}


class SCENE_DIFFUSION_OT_free_memory(bpy.types.Operator):
    """Unload the backend's models to free GPU and system memory (the next job loads them again)"""

    bl_idname = "scene_diffusion.free_memory"
    bl_label = "Free Memory"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        if not service.supervisor().release():
            self.report({"INFO"}, "The backend is not running")
            return {"CANCELLED"}
        return {"FINISHED"}


class SCENE_DIFFUSION_OT_open_job_folder(bpy.types.Operator):
    """Open the folder of the latest job (inputs, outputs, job.json, log)"""

    bl_idname = "scene_diffusion.open_job_folder"
    bl_label = "Open Job Folder"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        folder = service.last_job_dir() or paths.jobs_dir()
        bpy.ops.wm.path_open(filepath=str(folder))
        return {"FINISHED"}


class SCENE_DIFFUSION_OT_setup_backend(bpy.types.Operator):
    """Create the managed Python environment for the backend and install torch and diffusers into it"""

    bl_idname = "scene_diffusion.setup_backend"
    bl_label = "Setup Backend"
    bl_options = {"REGISTER"}

    _run: setup.SetupRun | None = None
    _timer: bpy.types.Timer | None = None

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Setup downloads packages, and Blender's online access is off: allow it in "
                                   "Preferences > System > Network, or install backend/requirements.txt "
                                   "into a Python yourself and set it as Backend Python")
            return {"CANCELLED"}
        venv = paths.managed_venv()
        choice = preferences.torch_build()
        self.report({"WARNING"} if choice.warning else {"INFO"},
                    f"Setup Backend: {choice.reason}" + (f" ({choice.warning})" if choice.warning else ""))
        run = setup.SetupRun(venv, paths.venv_python(venv), choice=choice).start()
        if bpy.app.background:
            return self._finish(run, run.wait())
        self._run = run
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        run = self._run
        assert run is not None
        if event.type == "ESC":
            run.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        context.window_manager.progress_update(int(run.fraction * 100))
        context.workspace.status_text_set(f"Scene Diffusion setup: {run.message}")
        if run.returncode is None:
            return {"PASS_THROUGH"}
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        context.window_manager.progress_end()
        context.workspace.status_text_set(None)
        return self._finish(run, run.returncode)

    def _finish(self, run: setup.SetupRun, code: int | None) -> set[OperatorReturnItems]:
        readiness.cache.clear()  # the panel's environment line changes now
        if code == 0:
            self.report({"INFO"}, f"Backend environment ready: {run.python}; torch build: {run.choice.reason}")
            service.shutdown()  # the next job starts the backend from the new environment
            return {"FINISHED"}
        self.report({"ERROR"}, f"Backend setup {run.message}\n{run.tail()}")
        return {"CANCELLED"}


class SCENE_DIFFUSION_OT_test_connection(bpy.types.Operator):
    """Connect to the backend and report its latency, device, versions and queue"""

    bl_idname = "scene_diffusion.test_connection"
    bl_label = "Test Connection"
    bl_options = {"REGISTER"}

    _test: ConnectionTest | None = None
    _timer: bpy.types.Timer | None = None

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        service.connection_report[:] = ["Connecting…"]
        try:
            test = ConnectionTest(service.connect())
        except OSError as exc:
            return self._finish(ConnectionReport(False, [f"Cannot start the backend: {exc}"]))
        if bpy.app.background:  # no event loop: wait here (the client's threads do the connecting)
            while (report := test.poll()) is None:
                time.sleep(0.05)
            return self._finish(report)
        self._test = test
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        if event.type != "TIMER" or self._test is None:
            return {"PASS_THROUGH"}
        report = self._test.poll()
        if report is None:
            return {"PASS_THROUGH"}
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        return self._finish(report)

    def _finish(self, report: ConnectionReport) -> set[OperatorReturnItems]:
        service.connection_report[:] = report.lines
        service.tag_redraw()
        self.report({"INFO"} if report.ok else {"ERROR"}, report.text())
        return {"FINISHED"} if report.ok else {"CANCELLED"}


class SCENE_DIFFUSION_OT_forget_server_key(bpy.types.Operator):
    """Forget the remote server's pinned certificate; the next connection pins the one it presents"""

    bl_idname = "scene_diffusion.forget_server_key"
    bl_label = "Forget Server Key"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        address = preferences.remote_address()
        if not address or not known_servers.forget(paths.known_servers_path(), address):
            self.report({"INFO"}, f"No key is pinned for {address or 'the remote backend'}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Forgot the key of {address}; the next connection pins the one it presents")
        return {"FINISHED"}


classes = (SCENE_DIFFUSION_OT_cancel_job, SCENE_DIFFUSION_OT_restart_backend, SCENE_DIFFUSION_OT_free_memory,
           SCENE_DIFFUSION_OT_open_job_folder, SCENE_DIFFUSION_OT_setup_backend, SCENE_DIFFUSION_OT_test_connection,
           SCENE_DIFFUSION_OT_forget_server_key)
