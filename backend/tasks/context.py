"""What a task sees of the server: its job folder, progress, cancel, the model cache, and the start
every task shares (the seed it uses, timings recorded in job.json)."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import JobCancelled, TaskError
from backend.models import ModelSpec, PipelineCache, Registry
from contract import jobfolder, messages

__all__ = ["JobCancelled", "JobContext", "TaskError", "invalid"]

ProgressFn = Callable[[int, int, "str | None", str], None]


def invalid(message: str, hint: str = "") -> TaskError:
    """The error for inputs that cannot be used (a file missing or malformed, a pass absent)."""
    return TaskError(messages.INVALID_PARAMS, message, hint)


@dataclass
class JobContext:
    id: str
    job_dir: Path
    registry: Registry
    models: PipelineCache
    device: str
    dtype: str
    report: ProgressFn
    cancel_event: threading.Event = field(default_factory=threading.Event)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("backend.job"))
    models_used: list[dict[str, Any]] = field(default_factory=list)  # provenance records, in the order used
    # Timed blocks not yet in job.json: the next record() or the job's end (take_timings) writes them, so a
    # block costs no atomic rewrite of job.json of its own (facts such as the seed are still written at once).
    pending_timings: dict[str, float] = field(default_factory=dict)

    def progress(self, step: int, total: int, preview: Path | None = None, message: str = "") -> None:
        self.report(step, total, self.relative(preview) if preview else None, message)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(self.id)

    def input(self, relative: str) -> Path:
        """A job input by its path relative to the job folder (the parameters checked it stays inside)."""
        return self.job_dir / relative

    def output(self, name: str) -> Path:
        path = self.job_dir / jobfolder.OUTPUTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return path.relative_to(self.job_dir).as_posix()

    def record(self, **changes: Any) -> None:
        """Add facts (seed, models, ...) to job.json as soon as they are known (pending timings ride along)."""
        if self.pending_timings:
            changes["timings"] = {**self.take_timings(), **changes.get("timings", {})}
        jobfolder.update_job(self.job_dir, **changes)

    def take_timings(self) -> dict[str, float]:
        """The timings not yet written, for the job's last job.json update; forgets them here."""
        taken, self.pending_timings = self.pending_timings, {}
        return taken

    def seed(self, requested: int) -> int:
        """The seed to use (``requested``, or a random one for -1), recorded in job.json."""
        seed = requested if requested >= 0 else random.randrange(2**32)
        self.record(seed=seed)
        return seed

    def record_models(self, commercial: bool = False, **roles: ModelSpec | list[ModelSpec]) -> None:
        """Which models each role uses, with their SHA-256 and licence, in job.json and ``self.models_used``
        (the EXR headers' provenance); with ``commercial``, a model whose licence forbids commercial use is
        refused here, before anything loads."""
        from backend.models import locate
        from backend.models.provenance import check_commercial, record_for

        def entry(role: str, spec: ModelSpec) -> dict[str, Any]:
            path = locate(spec)
            record = record_for(role, spec, path)
            check_commercial(f"Model '{spec.name}'", record.licence, commercial)
            self.models_used.append(record.as_json())
            return record.as_json()

        self.record(models={role: [entry(role, s) for s in spec] if isinstance(spec, list) else entry(role, spec)
                            for role, spec in roles.items()})

    def record_extra_models(self, role: str, records: list[dict[str, Any]]) -> None:
        """Files added to a base model for this job (LoRAs, an IP-Adapter), in job.json beside the models."""
        self.models_used.extend(records)
        self.record(models={role: records})

    def provenance_models(self) -> str:
        """Every model, LoRA and adapter the job used, as compact JSON for an EXR header attribute."""
        return json.dumps(self.models_used, separators=(",", ":")) if self.models_used else ""

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record how long the block took as ``timings.<name>`` in job.json (also when it fails), with the next
        record() or at the job's end."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.pending_timings[name] = round(time.perf_counter() - started, 3)
