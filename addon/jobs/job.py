"""A job as the add-on follows it: its state, progress and error, what it brought into the scene.

No bpy: the supervisor (supervisor.py) updates these from the backend's messages; panels and operators
read them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ...contract.tasks import TaskOutputs, TaskParams
from .transfers import mb

# Job states as the UI shows them.
STARTING, QUEUED, RUNNING, DONE, FAILED, CANCELLED = "starting", "queued", "running", "done", "failed", "cancelled"
UPLOADING, DOWNLOADING = "uploading", "downloading"  # a remote job's files moving; step/total in bytes
PHASES = {"upload": UPLOADING, "download": DOWNLOADING}  # Progress.phase -> state


@dataclass
class JobError:
    message: str
    hint: str = ""
    code: str = ""
    log_tail: str = ""

    def text(self) -> str:
        return f"{self.message.rstrip('.')}. {self.hint}" if self.hint else self.message


class Applied(Protocol):
    """What a result brought into the scene, as the operator reports it."""

    @property
    def warnings(self) -> list[str]: ...

    def summary(self) -> str: ...


@dataclass
class Job:
    id: str
    job_dir: Path
    params: TaskParams
    on_result: Callable[[Job, TaskOutputs], Applied | None] | None = None  # bring the outputs into the scene
    on_finish: Callable[[Job], None] | None = None  # after any ending: done, failed, cancelled
    state: str = QUEUED
    step: int = 0  # the task's denoising steps (kept while files move)
    total: int = 0
    moved: int = 0  # a remote job's bytes moved and to move, while state is uploading or downloading
    to_move: int = 0
    preview: Path | None = None
    outputs: TaskOutputs | None = None  # the task's typed outputs, once its result arrived
    error: JobError | None = None
    applied: Applied | None = None  # what on_result brought into the scene (for reports)
    submitted: float = field(default_factory=time.monotonic)
    sent: bool = False
    accepted: bool = False  # the backend answered Accepted (or already ran it)
    resent: bool = False  # sent again after a backend died before accepting it
    cancel_requested: bool = False

    @property
    def task(self) -> str:
        return self.params.task

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)

    @property
    def fraction(self) -> float:
        if self.state in (UPLOADING, DOWNLOADING):
            return self.moved / self.to_move if self.to_move else 0.0
        return self.step / self.total if self.total else 0.0

    def progress_text(self) -> str:
        """What a progress bar says: steps while it runs, megabytes while its files move."""
        if self.state in (UPLOADING, DOWNLOADING):
            return f"{self.state.capitalize()} {mb(self.moved)} / {mb(self.to_move)} MB"
        return f"{self.state.capitalize()} {self.step}/{self.total}" if self.total else self.state.capitalize() + "…"
