"""Animation: one render job per frame through the one warm backend, numbered PNG/EXR files,
frames already in the output folder skipped (resume), cancel stopping the sequence.

In the UI each frame's passes are rendered when the previous job ends (on the timer, on the
main thread); in background mode the frames run in a plain loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy

from ..contract.jobfolder import atomic_copy
from ..contract.tasks import RenderOutputs, RenderParams, TaskOutputs
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
            if all(p.is_file() for p in render_result.frame_files(self.folder, frame)):
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
        params = self.params
        if self.seed_per_frame and params.seed >= 0:
            params = params.replace(seed=(params.seed + frame) % 2**32)
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
        png, exr = render_result.frame_files(self.folder, self.frame)
        atomic_copy(job.job_dir / outputs.image_exr, exr)
        atomic_copy(job.job_dir / outputs.image, png)  # last: marks the frame done
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


def current() -> RenderSequence | None:
    return _current


def cancel_current() -> None:
    if _current is not None and not _current.finished:
        _current.cancel()
