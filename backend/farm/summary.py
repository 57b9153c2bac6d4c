"""batch.json: per job its status, the actor and host that ran it, times and retries; rewritten (atomically) on
every change, so a batch killed at any moment leaves an accurate record. Each job ends once: a second end for the
same job (a retry racing a report) is ignored."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract import jobfolder

SKIPPED = "skipped"  # done by an earlier run
PENDING, RUNNING = "pending", "running"
ENDED = (jobfolder.DONE, jobfolder.FAILED, jobfolder.CANCELLED, SKIPPED)


@dataclass
class Attempt:
    actor: int
    host: str
    node: str
    pid: int
    started: float
    ended: float | None = None
    outcome: str = RUNNING
    error: str = ""


@dataclass
class JobEntry:
    name: str
    task: str
    family: str
    status: str = PENDING
    attempts: list[Attempt] = field(default_factory=list)
    error: str = ""
    started: float | None = None
    ended: float | None = None

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)


class BatchSummary:
    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self.jobs: dict[str, JobEntry] = {}
        self.workers: list[dict[str, Any]] = []
        self.started = time.time()
        self.ended: float | None = None

    def add(self, name: str, task: str, family: str, status: str = PENDING, error: str = "") -> None:
        self.jobs[name] = JobEntry(name, task, family, status, error=error)

    def begin(self, name: str, attempt: Attempt) -> None:
        entry = self.jobs[name]
        entry.status = RUNNING
        entry.started = entry.started or attempt.started
        entry.attempts.append(attempt)

    def attempt_lost(self, name: str, why: str) -> None:
        """The attempt's actor died or the attempt raised: recorded; the job is pending again (or failed)."""
        entry = self.jobs[name]
        if entry.attempts:
            last = entry.attempts[-1]
            last.ended, last.outcome, last.error = time.time(), "lost", why
        entry.status = PENDING

    def end(self, name: str, status: str, error: str = "", ended: float | None = None) -> bool:
        """The job's one end; False (nothing changed) if it had already ended."""
        entry = self.jobs[name]
        if entry.status in ENDED:
            return False
        entry.status, entry.error, entry.ended = status, error, ended or time.time()
        if entry.attempts and entry.attempts[-1].outcome == RUNNING:
            last = entry.attempts[-1]
            last.ended, last.outcome, last.error = entry.ended, status, error
        return True

    def counts(self) -> dict[str, int]:
        counts = {s: 0 for s in (jobfolder.DONE, jobfolder.FAILED, jobfolder.CANCELLED, SKIPPED, RUNNING, PENDING)}
        for entry in self.jobs.values():
            counts[entry.status] += 1
        return counts

    def write(self) -> None:
        jobs = {name: {**asdict(entry), "retries": entry.retries} for name, entry in self.jobs.items()}
        data = {"started": self.started, "ended": self.ended, "settings": self.settings, "workers": self.workers,
                "counts": self.counts(), "jobs": jobs}
        jobfolder.atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True, default=str))
