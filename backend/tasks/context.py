"""What a task sees of the server: its job folder, progress, cancel and the model cache."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend import jobfolder
from backend.models import PipelineCache, Registry


class JobCancelled(Exception):
    """Raised at the next step after a cancel request; the job yields no result."""


class TaskError(Exception):
    """A failure the user can act on: ``code`` from backend.protocol, a message and a hint."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


@dataclass
class TaskOutput:
    """Output name -> path relative to the job folder, plus facts for job.json."""

    outputs: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[int, int, "str | None", str], None]


@dataclass
class JobContext:
    id: str
    job_dir: Path
    params: dict[str, Any]
    registry: Registry
    models: PipelineCache
    device: str
    dtype: str
    report: ProgressFn
    cancel_event: threading.Event = field(default_factory=threading.Event)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("backend.job"))

    def progress(self, step: int, total: int, preview: Path | None = None, message: str = "") -> None:
        self.report(step, total, self.relative(preview) if preview else None, message)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(self.id)

    def output(self, name: str) -> Path:
        path = self.job_dir / jobfolder.OUTPUTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return path.relative_to(self.job_dir).as_posix()

    def record(self, **changes: Any) -> None:
        """Add facts (seed, models, ...) to job.json as soon as they are known."""
        jobfolder.update_job(self.job_dir, **changes)
