"""The add-on's one backend: submit jobs, supervise them from a timer, keep UI state.

Under ``bpy.app.background`` (``blender -b`` scripts, the ``bpy`` module) submit() runs the
job to its end before returning, through the same supervisor code the timer uses.
"""

from __future__ import annotations

import atexit
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import bpy

from ...contract import jobfolder
from ...contract import messages as msg
from ...contract.tasks import TaskOutputs, TaskParams
from .. import paths, preferences, previews
from . import user_models
from .client import BackendClient, LaunchConfig
from .remote import RemoteConfig
from .supervisor import Applied, Job, Supervisor

BUSY_INTERVAL = 0.1  # seconds between timer ticks while a job runs: death is seen within 2 s
IDLE_INTERVAL = 0.5

_supervisor: Supervisor | None = None
# None: wait for jobs exactly when Blender has no event loop to run timers (background).
# Tests of the interactive path set False and drive _tick() themselves.
blocking: bool | None = None
_file_generation = 0  # bumped on every file load: results never land in another file
connection_report: list[str] = []  # what the last Test Connection found, for the preferences
_prewarm_asked = False  # a panel drew or a file loaded since the last prewarm try: draw() checks only this
_preload: msg.Preload | None = None  # sent once the prewarmed backend's handshake is in


def launch_config() -> LaunchConfig | RemoteConfig:
    """The remote server when one is chosen (environment or preferences), else the local process."""
    prefs = preferences.get()
    remote = preferences.remote_settings()
    if remote is not None:
        return RemoteConfig(address=remote.address, token=remote.token, insecure=remote.insecure,
                            known_servers=paths.known_servers_path())
    checkpoints = user_models.entries(prefs.checkpoints, bpy.path.abspath)
    return LaunchConfig(
        python=preferences.backend_python(), log_path=paths.log_path(),
        registry=preferences.models_registry(), device=prefs.device, precision=prefs.precision,
        allow_download=prefs.allow_download and bpy.app.online_access,
        allow_unsafe=prefs.allow_unsafe_weights,
        handshake_timeout=prefs.handshake_timeout, vram_budget=prefs.vram_budget,
        user_models=user_models.write(paths.user_dir() / user_models.FILE_NAME, checkpoints),
        user_model_entries=checkpoints)


def supervisor() -> Supervisor:
    global _supervisor
    if _supervisor is None:
        _supervisor = Supervisor(launch_config)
    return _supervisor


def new_job_folder(task: str) -> Path:
    """A fresh job folder for ``task`` (a parameters class's ``task``), for operators that write inputs before
    they submit; old finished jobs beyond the retention count are pruned first."""
    root = paths.jobs_dir()
    active = {j.job_dir for j in supervisor().active_jobs()}
    jobfolder.prune_jobs(root, keep=max(0, preferences.get().job_retention - 1), protect=active)
    return jobfolder.create_job(root, task, {})


def job_folder_with(task: str, files: Sequence[tuple[Path, str]]) -> Path:
    """A new job folder for ``task`` holding ``files`` (the artist's file, job-relative path) as its inputs:
    the backend reads only its job folder. A failed copy leaves no folder behind and raises OSError."""
    job_dir = new_job_folder(task)
    try:
        place_inputs(job_dir, files)
    except OSError:
        discard_job_folder(job_dir)
        raise
    return job_dir


def place_inputs(job_dir: Path, files: Sequence[tuple[Path, str]]) -> None:
    """Put each artist's file in ``job_dir`` at its job-relative path (linked or copied); OSError when that
    fails: the caller discards the folder."""
    jobfolder.place_inputs(job_dir, files)


def discard_job_folder(job_dir: Path) -> None:
    """Remove a folder whose job never started (its inputs could not be written)."""
    shutil.rmtree(job_dir, ignore_errors=True)


def submit(params: TaskParams, on_result: Callable[[Job, TaskOutputs], Applied | None] | None = None,
           on_finish: Callable[[Job], None] | None = None, job_dir: Path | None = None) -> Job:
    """Run the task ``params`` belongs to (in ``job_dir``, or a new folder); in background mode wait for it.
    ``on_result`` brings the task's outputs into the scene and returns what it brought, for the report."""
    sup = supervisor()
    if job_dir is None:
        job_dir = new_job_folder(params.task)
    record = jobfolder.update_job(job_dir, request=params.to_dict())
    generation = _file_generation

    def apply(job: Job, outputs: TaskOutputs) -> Applied | None:
        if generation != _file_generation:
            raise RuntimeError("another .blend file was opened while the job ran")
        applied = on_result(job, outputs) if on_result is not None else None
        if not bpy.app.background:
            try:  # one undo step for what the result added; never fail a landed result over it
                bpy.ops.ed.undo_push(message=f"Scene Diffusion: {params.task}")
            except RuntimeError as exc:
                print(f"Scene Diffusion: no undo step for job {job.id}: {exc}")
        return applied

    job = Job(record["id"], job_dir, params, on_result=apply, on_finish=on_finish)
    sup.submit(job)
    if is_blocking():
        sup.run_until_done(job)
    else:  # tick soon: an idle timer may be up to IDLE_INTERVAL away, and a short job ends within a few ticks
        if bpy.app.timers.is_registered(_tick):
            bpy.app.timers.unregister(_tick)
        bpy.app.timers.register(_tick, first_interval=sup.tick_interval(BUSY_INTERVAL), persistent=True)
    tag_redraw()
    return job


def is_blocking() -> bool:
    return bpy.app.background if blocking is None else blocking


def _tick() -> float | None:
    sup = supervisor()
    changed = sup.tick()
    _send_preload(sup)
    if changed:
        for job in sup.active_jobs():
            previews.update(job.id, job.preview)
        tag_redraw()
    if sup.active_jobs():
        return sup.tick_interval(BUSY_INTERVAL)
    # Jobs a lost server may still hold keep the timer alive: tick() reconnects every few seconds.
    return IDLE_INTERVAL if sup.client is not None or sup.detached_jobs() else None


def ensure_ticking() -> None:
    if not bpy.app.background and not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=BUSY_INTERVAL, persistent=True)


# -- prewarm: the backend (and the Texture panel's model) ready before the first Generate ------------------


def schedule_prewarm() -> None:
    """Called from the panels' draw() (so it must stay cheap) and on file load: a one-shot timer starts the
    backend, since nothing may start inside draw(). Background scripts start it with their first job."""
    global _prewarm_asked
    if _prewarm_asked or is_blocking():
        return
    _prewarm_asked = True
    if not bpy.app.timers.is_registered(prewarm_now):
        bpy.app.timers.register(prewarm_now, first_interval=0.0)


def prewarm_now() -> None:
    """The timer's work: with the preference on and a local backend, start it and ask for the Texture panel's
    model once it is up. A start that fails is printed; the first job reports it as it always did."""
    global _preload
    if not preferences.get().prewarm or preferences.is_remote():
        return
    sup = supervisor()
    if sup.client is not None or sup.active_jobs():
        return  # already running, or a job got there first
    try:
        sup.ensure_started()
    except (OSError, ValueError) as exc:
        print(f"Scene Diffusion: the backend did not start early: {exc}")
        return
    texture = getattr(getattr(bpy.context.scene, "scene_diffusion", None), "texture", None)
    _preload = msg.Preload("text_to_image", getattr(texture, "model", "").strip())
    ensure_ticking()


def _send_preload(sup: Supervisor) -> None:
    """Send the pending preload once the handshake is in; drop it when a job came first or the backend went."""
    global _preload
    request = _preload
    if request is None or (sup.client is not None and sup.handshake is None):
        return
    _preload = None
    if sup.active_jobs() or not isinstance(sup.client, BackendClient):
        return
    try:
        sup.client.send(request)
    except OSError:
        pass  # a dead backend is noticed by tick()


@bpy.app.handlers.persistent
def _on_load_post(*_args: object) -> None:
    global _prewarm_asked
    if bpy.data.filepath:  # a .blend the artist opened, not the startup file
        _prewarm_asked = False
        schedule_prewarm()


def connect() -> Supervisor:
    """Start the backend (or connect to the remote one) without a job, e.g. for Test Connection."""
    sup = supervisor()
    sup.ensure_started()
    ensure_ticking()
    return sup


def tag_redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR", "STATUSBAR", "PREFERENCES"}:
                area.tag_redraw()


def restart() -> None:
    supervisor().restart()
    ensure_ticking()


def shutdown() -> None:
    if _supervisor is not None:
        _supervisor.stop()


@bpy.app.handlers.persistent
def _on_load_pre(*_args: object) -> None:
    global _file_generation
    _file_generation += 1


def active_jobs() -> list[Job]:
    """Running and queued jobs, without starting anything (for drawing)."""
    return _supervisor.active_jobs() if _supervisor is not None else []


def last_job_dir() -> Path | None:
    job = supervisor().current_job()
    return job.job_dir if job else None


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)
    atexit.register(shutdown)


def unregister() -> None:
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    if bpy.app.timers.is_registered(prewarm_now):
        bpy.app.timers.unregister(prewarm_now)
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    atexit.unregister(shutdown)
    shutdown()
