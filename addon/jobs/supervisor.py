"""Job supervision without bpy: one backend client, its jobs, and what the UI shows of them.

Blender's timer (addon/service.py) calls ``tick`` on the main thread; background scripts
call ``run_until_done``. Either way the same code notices a dead backend, a missing
handshake, a protocol mismatch, and turns each into a job error with the log tail. The
next submit after a death starts a fresh backend; a job the dead backend never accepted is
sent once more to it instead of failing.

The client is a local process (client.py) or a remote server (remote.py), whichever the config
makes. A lost remote connection fails the active jobs, but the ones the server had accepted are
remembered: the next connection (next submit, Test Connection, or a retry every few seconds)
attaches to them, and those the server still has come back to life.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...contract import jobfolder
from ...contract import messages as msg
from ...contract.tasks import ParamError
from .client import BackendClient, LaunchConfig
from .job import (  # noqa: F401  (the job's names, re-exported: callers know them from here)
    CANCELLED,
    DONE,
    DOWNLOADING,
    FAILED,
    PHASES,
    QUEUED,
    RUNNING,
    STARTING,
    UPLOADING,
    Applied,
    Job,
    JobError,
)
from .remote import RemoteClient, RemoteConfig

RETRY_INTERVAL = 3.0  # seconds between reconnect attempts while jobs wait for a lost server
QUICK_INTERVAL = 0.01  # seconds between timer ticks while a result may be near (see tick_interval)
QUICK_AFTER_SUBMIT = 0.25  # seconds of quick ticks after a submit: a short job ends inside them
LOST = "connection_lost"

Client = BackendClient | RemoteClient
Config = LaunchConfig | RemoteConfig


class Supervisor:
    def __init__(self, make_config: Callable[[], Config]) -> None:
        self._make_config = make_config
        self.client: Client | None = None
        self.jobs: dict[str, Job] = {}
        self.last_error: JobError | None = None
        self.server_status: msg.Status | None = None  # the latest Status answer
        self.starts = 0  # clients started so far (tests count restarts)
        self._started_at = 0.0
        self._early_error: JobError | None = None  # an error the backend sent before its handshake
        self._detached: dict[str, str] = {}  # job id -> server address, for jobs a lost server had accepted
        self._retry_at = 0.0

    # -- state for the UI ------------------------------------------------------------------

    @property
    def handshake(self) -> msg.Handshake | None:
        return self.client.handshake if self.client else None

    @property
    def state(self) -> str:
        if self.client is None:
            return "stopped"
        return "ready" if self.client.handshake else "starting"

    @property
    def remote_address(self) -> str | None:
        """The remote server the current client talks to, if it is remote."""
        return self.client.config.address if isinstance(self.client, RemoteClient) else None

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.finished]

    def detached_jobs(self) -> list[Job]:
        """Failed by a lost connection, maybe still on the server: a reconnect may bring them back."""
        return [self.jobs[i] for i in self._detached if i in self.jobs]

    def tick_interval(self, busy: float) -> float:
        """When the window's timer should tick next while jobs run: ``busy``, or QUICK_INTERVAL while a result may
        be near: in the first QUICK_AFTER_SUBMIT seconds of a job (a short one ends there), and once a job has
        reported its last step (only decoding and writing files remain). A result is then applied within about
        10 ms instead of up to ``busy`` later; the quick ticks are cheap and last only those short phases."""
        now = time.monotonic()
        quick = any(now - j.submitted < QUICK_AFTER_SUBMIT or (j.state == RUNNING and j.total and j.step >= j.total)
                    for j in self.active_jobs())
        return min(busy, QUICK_INTERVAL) if quick else busy

    def current_job(self) -> Job | None:
        """The running job, else the newest one (finished or not)."""
        running = [j for j in self.jobs.values() if j.state == RUNNING]
        if running:
            return running[0]
        return max(self.jobs.values(), key=lambda j: j.submitted, default=None)

    # -- actions ---------------------------------------------------------------------------

    def ensure_started(self) -> Client:
        """The running client, or a new one; settings changed while idle (local <-> remote, another
        server) take effect here instead of at the next restart."""
        config = self._make_config()
        client = self.client
        if client is not None and client.returncode() is None:
            if client.config == config or self.active_jobs():
                return client
            self.stop()
        return self._start(config)

    def _start(self, config: Config) -> Client:
        client = config.make_client()
        self._early_error = None
        client.start()
        self.client = client
        self.starts += 1
        self._started_at = time.monotonic()
        return client

    def submit(self, job: Job) -> Job:
        self.jobs[job.id] = job
        try:
            self.ensure_started()
        except OSError as exc:
            hint = getattr(exc, "hint", "") or "set the backend Python in the add-on preferences or run Setup Backend"
            self._fail(job, JobError(f"cannot start the backend: {exc}", hint, msg.DEPENDENCY))
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
        """Shut the backend down (a remote one: cancel this session's jobs there and disconnect); running jobs
        end as cancelled."""
        client, self.client = self.client, None
        if isinstance(client, RemoteClient):
            for job in self.active_jobs():
                if job.sent:
                    try:
                        client.send(msg.Cancel(job.id))
                    except OSError:
                        pass
        if client is not None:
            client.stop()
        for job in self.active_jobs():
            self._end(job, CANCELLED)

    # -- supervision -----------------------------------------------------------------------

    def tick(self) -> bool:
        """Handle what has arrived and check the process; True when anything changed."""
        client = self.client
        if client is None:
            return self._retry_detached()
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
            hint = ("check the address and the network" if isinstance(client, RemoteClient)
                    else "check the backend Python in the preferences; the log says why")
            self._fail_all(JobError(
                f"the backend did not answer within {client.config.handshake_timeout:.0f} s", hint, msg.DEPENDENCY,
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
            for warning in message.warnings:  # also shown in the Backend panel
                print(f"Scene Diffusion backend: {warning}")
            self._attach_detached()
            self._send_pending()
            return
        if isinstance(message, msg.Status):
            self.server_status = message
            return
        job = self.jobs.get(getattr(message, "id", None) or "")
        if job is not None and job.id in self._detached and not self._reattach(job, message):
            return
        if isinstance(message, msg.Error) and job is None:
            self.last_error = JobError(message.message, message.hint, message.code)
            if self.client and self.client.handshake is None:  # failed before the handshake
                self._early_error = self.last_error
                self._fail_all(self.last_error)
            return
        if job is None or job.finished:
            return
        if isinstance(message, msg.Accepted):
            job.state, job.accepted = QUEUED, True
        elif isinstance(message, msg.Progress):
            job.state = PHASES.get(message.phase, RUNNING)
            if message.phase:
                job.moved, job.to_move = message.step, message.total
            else:
                job.step, job.total = message.step, message.total
            if message.phase != "upload":  # moving the inputs up proves nothing; running or downloading does
                job.accepted = True
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

    def _died(self, client: Client, code: int) -> None:
        self.client = None
        if isinstance(client, RemoteClient):
            self._lost(client)
            return
        tail = client.log_tail()
        early = self._early_error
        if early is not None:  # it said why before it exited: keep that
            error = JobError(f"{early.message} (backend exited with code {code})", early.hint, early.code, tail)
        else:
            error = JobError(f"the backend exited with code {code}",
                             "the next job starts a fresh backend; the log lines below say why",
                             msg.INTERNAL, tail)
        # A death racing a submit: the job never reached a worker, so a fresh backend gets it once more.
        again = [j for j in self.active_jobs() if j.sent and not j.accepted and not j.resent and early is None]
        for job in self.active_jobs():
            if job not in again:
                self._fail(job, error)
        self.last_error = error
        if not again:
            return
        for job in again:
            job.sent, job.resent, job.state = False, True, STARTING
        try:
            self.ensure_started()
        except OSError as exc:
            self._fail_all(JobError(f"cannot start the backend again: {exc}", error.hint, msg.DEPENDENCY, tail))

    def _lost(self, client: RemoteClient) -> None:
        """The remote connection ended: before the handshake it never worked (say why); after it, the jobs the
        server accepted are remembered for a reconnect."""
        address = client.config.address
        early = self._early_error
        if early is not None or client.handshake is None:
            self._fail_all(early or JobError(f"the remote backend at {address} closed the connection",
                                             "check the server's log", msg.INTERNAL, client.log_tail()))
            return
        reason = client.lost_reason or "the connection ended"
        message = f"lost the connection to the remote backend at {address}: {reason}"
        for job in self.active_jobs():
            if job.accepted:
                self._detached[job.id] = address
                hint = ("the server may still be running it; reconnecting (the next job, Test Connection, or the "
                        f"automatic retry every {RETRY_INTERVAL:.0f} s) collects it")
            else:
                hint = "the job had not reached the server; run it again"
            self._fail(job, JobError(message, hint, LOST, client.log_tail()))
        self._retry_at = time.monotonic() + RETRY_INTERVAL

    def _retry_detached(self) -> bool:
        """With no client, reconnect every few seconds while jobs wait for their lost server (only when the
        preferences still name that server)."""
        if not self._detached or time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        try:
            config = self._make_config()
        except OSError:
            return False
        if not isinstance(config, RemoteConfig) or config.address not in self._detached.values():
            return False
        self._start(config)
        return True

    def _attach_detached(self) -> None:
        client = self.client
        if not isinstance(client, RemoteClient):
            return
        jobs = {i: self.jobs[i].job_dir for i, address in self._detached.items()
                if address == client.config.address and i in self.jobs}
        try:
            client.attach(jobs)
        except OSError:
            pass  # noticed by tick()

    def _reattach(self, job: Job, message: msg.Message) -> bool:
        """A server's answer about a detached job; True when the message should then be handled as usual."""
        del self._detached[job.id]
        if isinstance(message, (msg.Accepted, msg.Progress, msg.Result)):
            job.state, job.error, job.sent, job.accepted = QUEUED, None, True, True
            if isinstance(message, msg.Progress) and message.phase == "download":
                # It finished while we were away: the transfer thread is fetching its files and then merges the
                # server's job.json (done); rewriting the record here would race that merge.
                return True
            try:
                record = jobfolder.read_job(job.job_dir)
                # Done: the job finished while we were away and its Files came first, so the server's job.json
                # is already merged in: keep it.
                if record.get("status") != jobfolder.DONE:
                    record.pop("error", None)
                    record.pop("ended", None)
                    jobfolder.write_job(job.job_dir, {**record, "status": jobfolder.RUNNING})
            except (OSError, ValueError):
                pass
            return True
        if isinstance(message, msg.Error) and message.code != msg.UNKNOWN_JOB:
            # It ended badly on the server while we were away: show that instead of the lost connection.
            job.error = self.last_error = JobError(message.message, message.hint, message.code)
            try:
                jobfolder.update_job(job.job_dir, status=jobfolder.FAILED,
                                     error={"code": message.code, "message": message.message, "hint": message.hint})
            except OSError:
                pass
        elif isinstance(message, msg.Cancelled):
            job.state = CANCELLED
            try:
                jobfolder.update_job(job.job_dir, status=jobfolder.CANCELLED)
            except OSError:
                pass
        return False  # unknown_job: the server lost it; it stays failed

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
