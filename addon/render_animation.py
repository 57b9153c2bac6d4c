"""Animation: one render job per frame through the one warm backend, numbered PNG/EXR files,
frames already in the output folder skipped (resume), cancel stopping the sequence.

In the UI each frame's passes are rendered when the previous job ends (on the timer, on the
main thread); in background mode the frames run in a plain loop. The checks, per-frame seeds and
numbered files are shared with the render operator and the farm stages (batch_stages.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..contract.jobfolder import atomic_copy
from ..contract.tasks import ParamError, RenderOutputs, RenderParams, TaskOutputs
from . import paths
from .jobs import service
from .jobs.supervisor import CANCELLED, DONE, Job, JobError
from .model_options import OptionFiles
from .scene_export import passes
from .scene_import import render as render_result

_current: RenderSequence | None = None


@dataclass
class RenderSequence:
    scene: str
    frames: list[int]
    folder: Path
    params: RenderParams
    engine: str = "CYCLES"
    samples: int = 1
    seed_per_frame: bool = False
    files: OptionFiles = field(default_factory=OptionFiles)  # LoRAs and reference, the same for every frame
    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    job: Job | None = None
    frame: int | None = None
    error: JobError | None = None
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.cancelled or self.error is not None or not self._pending()

    @property
    def progress(self) -> tuple[int, int]:
        return len(self.done) + len(self.skipped), len(self.frames)

    def _pending(self) -> list[int]:
        return [f for f in self.frames if f not in self.done and f not in self.skipped]

    def start(self) -> RenderSequence:
        global _current
        _current = self
        for frame in self.frames:  # resume: frames whose files are already there are kept
            if frame_stored(self.folder, frame):
                self.skipped.append(frame)
        if service.is_blocking():
            while not self.finished:
                self._submit_next()
        else:
            self._submit_next()
        return self

    def cancel(self) -> None:
        self.cancelled = True
        if self.job is not None and not self.job.finished:
            service.supervisor().cancel(self.job.id)

    def _submit_next(self) -> None:
        pending = self._pending()
        scene = bpy.data.scenes.get(self.scene)
        if not pending or scene is None or self.cancelled:
            if scene is None:
                self.error = JobError(f"scene '{self.scene}' is gone", "start the animation again")
            return
        frame = self.frame = pending[0]
        params = frame_params(self.params, frame, self.seed_per_frame)
        job_dir = service.new_job_folder(params.task)
        try:
            passes.render_passes(scene, job_dir / "inputs", params.width, params.height,
                                 self.engine, self.samples, frame=frame)
            self.files.write(job_dir)
        except (passes.PassRenderError, OSError, ValueError) as exc:
            service.discard_job_folder(job_dir)
            self.error = JobError(str(exc))
            return
        self.job = service.submit(params, on_result=self._store, on_finish=self._ended, job_dir=job_dir)

    def _store(self, job: Job, outputs: TaskOutputs) -> render_result.RenderApplied:
        assert self.frame is not None and isinstance(outputs, RenderOutputs)
        store_frame(job.job_dir, outputs, self.folder, self.frame)
        return render_result.apply_render(job.job_dir, outputs)

    def _ended(self, job: Job) -> None:
        if job.state == DONE and self.frame is not None:
            self.done.append(self.frame)
        elif job.state == CANCELLED:
            self.cancelled = True
        else:
            self.error = job.error
        if not service.is_blocking() and not self.finished:
            self._submit_next()  # on the timer tick that ended this job: main thread


# -- shared with the batch stages (batch_stages.py): the same checks, seeds and frame files ----------------


def render_request(scene: Any, settings: Any) -> tuple[RenderParams, OptionFiles]:
    """The scene's Render settings as a job's parameters and files, checked before any job folder exists;
    ParamError says what to change."""
    if scene.camera is None:
        raise ParamError("The scene has no active camera: add one and make it active (Ctrl+Numpad 0)")
    params, files = settings.to_params(scene), settings.options.files()
    if settings.engine == "BLENDER_WORKBENCH" and settings.use_normal and settings.normal.weight > 0:
        raise ParamError("Workbench renders no normal pass: use Cycles or EEVEE for the normal control")
    return params, files


def sequence_request(settings: Any, params: RenderParams) -> tuple[list[int], Path, RenderParams]:
    """An animation's frames, output folder and parameters, with one seed for the whole sequence (recorded in
    every job); ParamError for an empty range or a folder that cannot be written."""
    if settings.frame_end < settings.frame_start:
        raise ParamError(f"the frame range {settings.frame_start}-{settings.frame_end} is empty")
    folder = Path(bpy.path.abspath(settings.output_dir))
    problem = paths.unwritable(folder)
    if problem:
        raise ParamError(problem)
    if params.seed < 0:
        params = params.replace(seed=random.randrange(2**31))
    return list(range(settings.frame_start, settings.frame_end + 1)), folder, params


def frame_params(params: RenderParams, frame: int, seed_per_frame: bool) -> RenderParams:
    """One frame's parameters: with "New Seed per Frame", the sequence's seed plus the frame number."""
    if seed_per_frame and params.seed >= 0:
        return params.replace(seed=(params.seed + frame) % 2**32)
    return params


def store_frame(job_dir: Path, outputs: RenderOutputs, folder: Path, frame: int) -> None:
    """Copy a frame's result into the numbered files; the PNG last, since it marks the frame done (resume)."""
    png, exr = render_result.frame_files(folder, frame)
    atomic_copy(job_dir / outputs.image_exr, exr)
    atomic_copy(job_dir / outputs.image, png)


def frame_stored(folder: Path, frame: int) -> bool:
    return all(p.is_file() for p in render_result.frame_files(folder, frame))


def current() -> RenderSequence | None:
    return _current


def cancel_current() -> None:
    if _current is not None and not _current.finished:
        _current.cancel()
