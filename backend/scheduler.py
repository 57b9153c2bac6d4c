"""Jobs of many owners, one worker: per-owner queues taken round-robin, cancel only by the owner.

Every job's messages go to its ``sink`` (the owner's connection that submitted or attached it last;
None: dropped). The final messages are kept on the job so a later Attach can replay them.

Locks: a job's ``lock`` orders that job's messages (Accepted before Progress, a replay never after
the final); take it before the scheduler's condition, never the other way round, and never send
while holding the condition (a slow client must not stall the queue).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from contract import jobfolder, messages

if TYPE_CHECKING:
    from backend.runner import Engine

log = logging.getLogger("backend.scheduler")

Sink = Callable[[messages.Message], None]
# What the owner receives when a job ends, built from run_job's final message (remote: Files first).
Finisher = Callable[["Job", messages.Message], list[messages.Message]]

QUEUED, RUNNING, FINISHED = "queued", "running", "finished"
WORKER_DIED_EXIT = 70  # the add-on's supervisor restarts a backend that exits non-zero


class DuplicateJob(ValueError):
    pass


class CancelOutcome(enum.Enum):
    RUNNING = "running"  # the worker stops it at the next step and sends Cancelled
    DEQUEUED = "dequeued"  # removed from the queue, Cancelled sent
    FINISHED = "finished"  # nothing left to cancel
    NOT_YOURS = "not_yours"
    UNKNOWN = "unknown"


@dataclass(eq=False)
class Job:
    owner: str
    submit: messages.Submit  # job_dir: the folder on this machine
    seq: int  # arrival order, over all owners
    sink: Sink | None
    state: str = QUEUED
    progress: messages.Progress | None = None
    final: tuple[messages.Message, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.submit.id

    @property
    def job_dir(self) -> Path:
        return Path(self.submit.job_dir)

    def send(self, message: messages.Message) -> None:
        """Deliver to the current sink; call with ``lock`` held."""
        if self.sink is not None:
            self.sink(message)


def plain_final(job: Job, final: messages.Message) -> list[messages.Message]:
    return [final]


class Scheduler:
    def __init__(self, finisher: Finisher = plain_final, keep_finished: bool = False,
                 on_finished: Callable[[Job], None] | None = None) -> None:
        self.engine: Engine | None = None  # set before start()
        self._finisher = finisher
        self._keep_finished = keep_finished  # remote: finished jobs stay known for Attach
        self._on_finished = on_finished
        self._cond = threading.Condition()
        self._jobs: dict[tuple[str, str], Job] = {}
        self._queues: dict[str, list[Job]] = {}
        self._last_turn: dict[str, int] = {}  # owner -> the turn its last job started on
        self._turn = 0
        self._seq = 0
        self._running: Job | None = None
        self._cancel = threading.Event()
        self._release: list[tuple[str, Sink]] = []
        self._stopping = False
        self._connections: dict[str, int] = {}
        self._gone_since: dict[str, float] = {}
        self._worker: threading.Thread | None = None

    # -- requests ---------------------------------------------------------------------------

    def known(self, owner: str, job_id: str) -> bool:
        with self._cond:
            return self._blocks_id(owner, job_id)

    def _blocks_id(self, owner: str, job_id: str) -> bool:
        job = self._jobs.get((owner, job_id))
        return job is not None and (self._keep_finished or job.state != FINISHED)

    def submit(self, owner: str, submit: messages.Submit, sink: Sink | None) -> int:
        """Queue ``submit`` and send Accepted (jobs ahead of it, the running one included) to ``sink``."""
        with self._cond:
            if self._stopping:
                raise DuplicateJob("the backend is stopping")
            if self._blocks_id(owner, submit.id):
                raise DuplicateJob(f"job {submit.id} is already known; use a new id")
            self._seq += 1
            job = Job(owner, submit, self._seq, sink)
            job.lock.acquire()  # a new job: nobody else can hold it, so no lock-order problem
            self._jobs[(owner, submit.id)] = job
            self._queues.setdefault(owner, []).append(job)
            ahead = self._order().index(job) + (self._running is not None)
            self._cond.notify_all()
        try:
            job.send(messages.Accepted(submit.id, ahead))
        finally:
            job.lock.release()
        return ahead

    def cancel(self, owner: str, job_id: str, sink: Sink | None = None) -> CancelOutcome:
        job = self._find(owner, job_id)
        if job is None:
            return self._missing(owner, job_id)
        with job.lock:
            if sink is not None:
                job.sink = sink
            with self._cond:
                if job.state == RUNNING:
                    self._cancel.set()  # run_job answers Cancelled at the next step
                    return CancelOutcome.RUNNING
                if job.state == FINISHED:
                    return CancelOutcome.FINISHED
                self._dequeue(job)
            job.send(messages.Cancelled(job_id))
        self._finished(job)
        return CancelOutcome.DEQUEUED

    def attach(self, owner: str, job_id: str, sink: Sink) -> CancelOutcome | None:
        """Route ``job_id``'s messages to ``sink`` and tell it the job's state now; None when found,
        else NOT_YOURS / UNKNOWN (the caller answers)."""
        job = self._find(owner, job_id)
        if job is None:
            return self._missing(owner, job_id)
        with job.lock:
            job.sink = sink
            with self._cond:
                if job.state == QUEUED:
                    replay: Sequence[messages.Message] = [
                        messages.Accepted(job_id, self._order().index(job) + (self._running is not None))]
                elif job.state == RUNNING:
                    replay = [job.progress or messages.Progress(job_id, 0, 0, message="running")]
                else:
                    replay = job.final
            for message in replay:
                job.send(message)
        return None

    def job(self, owner: str, job_id: str) -> Job | CancelOutcome:
        """The owner's job, or NOT_YOURS / UNKNOWN."""
        return self._find(owner, job_id) or self._missing(owner, job_id)

    def _find(self, owner: str, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get((owner, job_id))

    def _missing(self, owner: str, job_id: str) -> CancelOutcome:
        with self._cond:
            others = any(key[1] == job_id for key in self._jobs)
        return CancelOutcome.NOT_YOURS if others else CancelOutcome.UNKNOWN

    def status(self, owner: str) -> messages.Status:
        with self._cond:
            running = self._running
            order = self._order()
            clients = sum(self._connections.values())
        own = [job for job in order if job.owner == owner]
        positions = {job.id: order.index(job) for job in own}
        loaded = self.engine.models.loaded() if self.engine else []
        return messages.Status("busy" if running else "idle",
                               running.id if running and running.owner == owner else None,
                               [job.id for job in own], loaded, positions, len(order), clients)

    def request_release(self, owner: str, sink: Sink) -> None:
        """Drop the loaded pipelines once the running job ends; the requester then gets Status."""
        with self._cond:
            self._release.append((owner, sink))
            self._cond.notify_all()

    # -- owners' connections (the orphan rule) ---------------------------------------------

    def connected(self, owner: str) -> None:
        with self._cond:
            self._connections[owner] = self._connections.get(owner, 0) + 1
            self._gone_since.pop(owner, None)

    def disconnected(self, owner: str) -> None:
        with self._cond:
            left = self._connections.get(owner, 1) - 1
            if left > 0:
                self._connections[owner] = left
            else:
                self._connections.pop(owner, None)
                self._gone_since[owner] = time.monotonic()

    def cancel_orphans(self, grace_s: float) -> list[Job]:
        """Cancel the queued jobs of owners without a connection for ``grace_s`` seconds."""
        now = time.monotonic()
        with self._cond:
            owners = [o for o, since in self._gone_since.items() if now - since >= grace_s]
            jobs = [job for o in owners for job in self._queues.get(o, [])]
            for owner in owners:
                self._gone_since.pop(owner, None)
        cancelled = [job for job in jobs if self.cancel(job.owner, job.id) is CancelOutcome.DEQUEUED]
        for job in cancelled:
            log.info("job %s of owner %s cancelled: no connection for %.0f s", job.id, job.owner, grace_s)
        return cancelled

    def forget(self, job_dirs: set[Path]) -> None:
        """Drop finished jobs whose folders were pruned: an Attach then answers unknown_job."""
        with self._cond:
            for key, job in list(self._jobs.items()):
                if job.state == FINISHED and job.job_dir in job_dirs:
                    del self._jobs[key]

    def active_dirs(self) -> set[Path]:
        with self._cond:
            return {job.job_dir for job in self._jobs.values() if job.state != FINISHED}

    # -- order ------------------------------------------------------------------------------

    def _order(self) -> list[Job]:
        """Queued jobs in the order the worker will take them (call with the condition held)."""
        queues = {owner: list(jobs) for owner, jobs in self._queues.items() if jobs}
        turns, turn, order = dict(self._last_turn), self._turn, []
        while queues:
            owner = _next_owner(queues, turns)
            order.append(queues[owner].pop(0))
            turn += 1
            turns[owner] = turn
            if not queues[owner]:
                del queues[owner]
        return order

    def _dequeue(self, job: Job) -> None:
        """Take a queued job out as cancelled (condition held)."""
        self._queues[job.owner].remove(job)
        job.state, job.final = FINISHED, (messages.Cancelled(job.id),)
        if not self._keep_finished:
            self._jobs.pop((job.owner, job.id), None)
        if (job.job_dir / jobfolder.JOB_FILE).is_file():
            _mark(job.job_dir, jobfolder.CANCELLED)

    # -- worker -----------------------------------------------------------------------------

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work_or_die, name="worker", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 30) -> None:
        """Stop taking jobs, cancel the running one at its next step, wait for the worker."""
        with self._cond:
            self._stopping = True
            for jobs in self._queues.values():
                jobs.clear()
            self._cancel.set()
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    def _work_or_die(self) -> None:
        try:
            self._work()
        except BaseException:  # noqa: BLE001 - a dead worker must never look like a busy one
            log.critical("the worker thread died:\n%s", traceback.format_exc())
            logging.shutdown()
            os._exit(WORKER_DIED_EXIT)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._release and not any(self._queues.values()):
                    self._cond.wait()
                if self._stopping:
                    return
                release, self._release = self._release, []
                job = None
                if not release:
                    queues = {o: q for o, q in self._queues.items() if q}
                    owner = _next_owner(queues, self._last_turn)
                    job = self._queues[owner].pop(0)
                    self._turn += 1
                    self._last_turn[owner] = self._turn
                    job.state, self._running = RUNNING, job
                    self._cancel.clear()
            if job is None:
                self._do_release(release)
            else:
                self._run(job)

    def _do_release(self, requests: list[tuple[str, Sink]]) -> None:
        assert self.engine is not None
        self.engine.release()
        for owner, sink in requests:
            sink(self.status(owner))

    def _run(self, job: Job) -> None:
        from backend.runner import run_job

        assert self.engine is not None
        try:
            final = run_job(self.engine, job.submit, lambda m: self._progress(job, m), self._cancel)
        except Exception as exc:  # noqa: BLE001 - whatever a job does, the worker carries on
            log.error("job %s crashed outside its task:\n%s", job.id, traceback.format_exc())
            final = messages.Error(job.id, messages.INTERNAL, f"{type(exc).__name__}: {exc}",
                                   "the backend's log (stderr) has the traceback; the backend keeps running")
            if (job.job_dir / jobfolder.JOB_FILE).is_file():
                _mark(job.job_dir, jobfolder.FAILED, error={"code": final.code, "message": final.message})
        try:
            finals = self._finisher(job, final)
        except Exception:  # noqa: BLE001 - a manifest that fails still leaves the job's own answer
            log.error("job %s: finishing failed:\n%s", job.id, traceback.format_exc())
            finals = [final]
        with job.lock:
            with self._cond:
                job.state, job.final, self._running = FINISHED, tuple(finals), None
                if not self._keep_finished:
                    self._jobs.pop((job.owner, job.id), None)
            for message in finals:
                job.send(message)
        self._finished(job)

    def _progress(self, job: Job, message: messages.Message) -> None:
        if not isinstance(message, messages.Progress):
            return  # run_job's final message: _run sends it (after the finisher)
        with job.lock:
            job.progress = message
            job.send(message)

    def _finished(self, job: Job) -> None:
        if self._on_finished is not None:
            try:
                self._on_finished(job)
            except Exception:  # noqa: BLE001 - housekeeping never stops the worker
                log.error("after job %s:\n%s", job.id, traceback.format_exc())


def _next_owner(queues: dict[str, list[Job]], last_turn: dict[str, int]) -> str:
    """Round-robin: the owner whose last job started longest ago (never: first), then the owner
    whose oldest queued job came first."""
    return min(queues, key=lambda owner: (last_turn.get(owner, 0), queues[owner][0].seq))


def _mark(job_dir: Path, status: str, **fields: object) -> None:
    try:
        jobfolder.update_job(job_dir, status=status, ended=time.time(), **fields)
    except (OSError, ValueError) as exc:  # a broken job.json must not break the worker too
        log.error("could not mark %s %s: %s", job_dir, status, exc)
