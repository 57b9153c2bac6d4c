"""Job supervision without bpy: one backend client, its jobs, and what the UI shows of them.

Blender's timer (addon/service.py) calls ``tick`` on the main thread; background scripts
call ``run_until_done``. Either way the same code notices a dead backend, a missing
handshake, a protocol mismatch, and turns each into a job error with the log tail. The
next submit after a death starts a fresh backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ...contract import jobfolder
from ...contract import messages as msg
from ...contract.tasks import ParamError, TaskOutputs, TaskParams
from .client import BackendClient, LaunchConfig

# Job states as the UI shows them.
STARTING, QUEUED, RUNNING, DONE, FAILED, CANCELLED = "starting", "queued", "running", "done", "failed", "cancelled"


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
    step: int = 0
    total: int = 0
    preview: Path | None = None
    outputs: TaskOutputs | None = None  # the task's typed outputs, once its result arrived
    error: JobError | None = None
    applied: Applied | None = None  # what on_result brought into the scene (for reports)
    submitted: float = field(default_factory=time.monotonic)
    sent: bool = False
    cancel_requested: bool = False

    @property
    def task(self) -> str:
        return self.params.task

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


class Supervisor:
    def __init__(self, make_config: Callable[[], LaunchConfig]) -> None:
        self._make_config = make_config
        self.client: BackendClient | None = None
        self.jobs: dict[str, Job] = {}
        self.last_error: JobError | None = None
        self._started_at = 0.0
        self._early_error: JobError | None = None  # an error the backend sent before its handshake

    # -- state for the UI ------------------------------------------------------------------

    @property
    def handshake(self) -> msg.Handshake | None:
        return self.client.handshake if self.client else None

    @property
    def state(self) -> str:
        if self.client is None:
            return "stopped"
        return "ready" if self.client.handshake else "starting"

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.finished]

    def current_job(self) -> Job | None:
        """The running job, else the newest one (finished or not)."""
        running = [j for j in self.jobs.values() if j.state == RUNNING]
        if running:
            return running[0]
        return max(self.jobs.values(), key=lambda j: j.submitted, default=None)

    # -- actions ---------------------------------------------------------------------------

    def ensure_started(self) -> BackendClient:
        if self.client is not None and self.client.returncode() is None:
            return self.client
        self.client = BackendClient(self._make_config())
        self._early_error = None
        self.client.start()
        self._started_at = time.monotonic()
        return self.client

    def submit(self, job: Job) -> Job:
        self.jobs[job.id] = job
        try:
            self.ensure_started()
        except OSError as exc:
            self._fail(job, JobError(f"cannot start the backend: {exc}",
                                     "set the backend Python in the add-on preferences or run Setup Backend",
                                     msg.DEPENDENCY))
            return job
        job.state = STARTING if self.client and not self.client.handshake else QUEUED
        self._send_pending()
        return job

    def cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.finished:
            return
        job.cancel_requested = True
        if not job.sent:
            self._end(job, CANCELLED)
        elif self.client is not None:
            try:
                self.client.send(msg.Cancel(job_id))
            except OSError:
                pass  # a dead backend is noticed by tick()

    def release(self) -> bool:
        """Ask a running backend to drop its loaded pipelines; False when none runs."""
        if self.client is None or self.client.returncode() is not None:
            return False
        try:
            self.client.send(msg.Release())
        except OSError:
            return False
        return True

    def restart(self) -> None:
        self.stop()
        self.ensure_started()

    def stop(self) -> None:
        """Shut the backend down; running jobs end as cancelled."""
        client, self.client = self.client, None
        if client is not None:
            client.stop()
        for job in self.active_jobs():
            self._end(job, CANCELLED)

    # -- supervision -----------------------------------------------------------------------

    def tick(self) -> bool:
        """Handle what has arrived and check the process; True when anything changed."""
        client = self.client
        if client is None:
            return False
        messages = client.messages()
        for message in messages:
            self._handle(message)
        if self.client is None:  # a handshake mismatch stopped it
            return True
        code = client.returncode()
        if code is not None:
            self._died(client, code)
            return True
        if client.handshake is None and time.monotonic() - self._started_at > client.config.handshake_timeout:
            client.stop(timeout=1)
            self.client = None
            self._fail_all(JobError(
                f"the backend did not answer within {client.config.handshake_timeout:.0f} s",
                "check the backend Python in the preferences; the log says why", msg.DEPENDENCY,
                client.log_tail()))
            return True
        return bool(messages)

    def run_until_done(self, job: Job, timeout: float | None = None) -> Job:
        """Background mode: block until ``job`` ends, handling messages as the timer would."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.finished:
            if self.client is None:
                break
            message = self.client.wait_message(0.1)
            if message is not None:
                self._handle(message)
            self.tick()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(job.id)
                deadline = None
        return job

    def _handle(self, message: msg.Message) -> None:
        if isinstance(message, msg.Handshake):
            if message.protocol != msg.PROTOCOL_VERSION:
                client, self.client = self.client, None
                if client:
                    client.stop(timeout=1)
                self._fail_all(JobError(
                    f"backend speaks protocol {message.protocol}, the add-on speaks {msg.PROTOCOL_VERSION}",
                    "update the add-on and its backend together (restart Blender after updating)"))
                return
            self._send_pending()
            return
        job = self.jobs.get(getattr(message, "id", None) or "")
        if isinstance(message, msg.Error) and job is None:
            self.last_error = JobError(message.message, message.hint, message.code)
            if self.client and self.client.handshake is None:  # failed before the handshake
                self._early_error = self.last_error
                self._fail_all(self.last_error)
            return
        if job is None or job.finished:
            return
        if isinstance(message, msg.Accepted):
            job.state = QUEUED
        elif isinstance(message, msg.Progress):
            job.state, job.step, job.total = RUNNING, message.step, message.total
            if message.preview:
                job.preview = job.job_dir / message.preview
        elif isinstance(message, msg.Result):
            try:
                job.outputs = type(job.params).outputs.from_result(message.outputs, message.info)
            except ParamError as exc:
                self._fail(job, JobError(f"the backend's result does not fit the task {job.task}: {exc}",
                                         "update the add-on and its backend together", msg.BAD_MESSAGE))
                return
            job.state = DONE
            if job.on_result is not None:
                try:
                    job.applied = job.on_result(job, job.outputs)
                except Exception as exc:  # noqa: BLE001 - applying failed; the outputs stay in the folder
                    self._fail(job, JobError(f"the result could not be applied: {exc}",
                                             f"its files are kept in {job.job_dir}"))
                    return
            self._end(job, DONE)
        elif isinstance(message, msg.Error):
            self._fail(job, JobError(message.message, message.hint, message.code))
        elif isinstance(message, msg.Cancelled):
            self._end(job, CANCELLED)

    def _send_pending(self) -> None:
        client = self.client
        if client is None or client.handshake is None:
            return
        for job in self.active_jobs():
            if not job.sent:
                try:
                    client.send(msg.Submit(job.id, job.task, str(job.job_dir), job.params.to_dict()))
                except OSError:
                    return  # a dead backend is noticed by tick()
                job.sent = True
                job.state = QUEUED

    def _died(self, client: BackendClient, code: int) -> None:
        self.client = None
        tail = client.log_tail()
        early = self._early_error
        if early is not None:  # it said why before it exited: keep that
            error = JobError(f"{early.message} (backend exited with code {code})", early.hint, early.code, tail)
        else:
            error = JobError(f"the backend exited with code {code}",
                             "the next job starts a fresh backend; the log lines below say why",
                             msg.INTERNAL, tail)
        self._fail_all(error)
        self.last_error = error

    def _fail_all(self, error: JobError) -> None:
        self.last_error = error
        for job in self.active_jobs():
            self._fail(job, error)

    def _fail(self, job: Job, error: JobError) -> None:
        job.error = error
        self.last_error = error
        try:
            jobfolder.update_job(job.job_dir, status=jobfolder.FAILED, ended=time.time(),
                                 error={"code": error.code, "message": error.message, "hint": error.hint})
        except OSError:
            pass
        self._end(job, FAILED)

    def _end(self, job: Job, state: str) -> None:
        job.state = state
        if state == CANCELLED and job.job_dir.is_dir():
            try:
                if jobfolder.read_job(job.job_dir).get("status") not in jobfolder.FINISHED:
                    jobfolder.update_job(job.job_dir, status=jobfolder.CANCELLED, ended=time.time())
            except (OSError, ValueError):
                pass
        if job.on_finish is not None:
            job.on_finish(job)
