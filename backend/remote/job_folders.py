"""Job folders on the server: ``<root>/jobs/<owner>/<time>-<task>-<id>``, filled from the content
store; what a finished job sends back (Files before Result); pruning old ones."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from backend.remote.store import ContentStore
from backend.scheduler import Job
from contract import jobfolder, messages, transfer
from contract.tasks import TASKS, ParamError, params_for

log = logging.getLogger("backend.remote")

# Names a client may not upload: the server writes these itself.
_RESERVED = (jobfolder.JOB_FILE, jobfolder.LOG_FILE)


class SubmitRefused(Exception):
    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def owner_of(client_key: str) -> str:
    """The name jobs are owned by: never the client's key itself, which stays secret."""
    return hashlib.sha256(client_key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class JobFolders:
    root: Path  # <server root>/jobs
    store: ContentStore
    keep: int  # finished jobs kept (all owners together)

    def check(self, submit: messages.Submit) -> None:
        """Everything that can be refused before a folder exists; SubmitRefused says why."""
        if submit.job_dir:
            raise SubmitRefused(messages.BAD_MESSAGE, "a remote client never names a server path",
                                "send job_dir \"\" and the inputs as files={path: sha256}")
        if submit.task not in TASKS:
            raise SubmitRefused(messages.UNKNOWN_TASK, f"unknown task {submit.task!r}",
                                f"known tasks: {', '.join(sorted(TASKS))}")
        try:
            params_for(submit.task, submit.params)
        except ParamError as exc:
            raise SubmitRefused(messages.INVALID_PARAMS, str(exc)) from None
        if len(submit.files) > transfer.MAX_FILES:
            raise SubmitRefused(messages.TOO_LARGE, f"{len(submit.files)} files; at most {transfer.MAX_FILES} a job")
        total = 0
        for name, sha in submit.files.items():
            try:
                transfer.check_name(name)
            except transfer.BadFileName as exc:
                raise SubmitRefused(messages.BAD_FILE, str(exc)) from None
            if name in _RESERVED or name.startswith(jobfolder.OUTPUTS + "/"):
                raise SubmitRefused(messages.BAD_FILE, f"{name!r} is written by the server, not uploaded")
            if not self.store.has(sha):
                raise SubmitRefused(messages.BAD_FILE, f"{name!r}: content {sha[:12]} was not uploaded",
                                    "upload each file (UploadStart, Chunk) before the Submit that names it")
            total += self.store.size(sha)
        if total > self.store.max_bytes:
            raise SubmitRefused(messages.TOO_LARGE, f"the job's files hold {total} bytes, over this server's "
                                                    f"limit of {self.store.max_bytes} (--max-upload-mb)")

    def create(self, owner: str, submit: messages.Submit) -> Path:
        """The job's folder with its files in place (call ``check`` first)."""
        job_dir = jobfolder.create_job(self.root / owner, submit.task, submit.params, job_id=submit.id)
        try:
            for name, sha in submit.files.items():
                target = transfer.resolve_inside(job_dir, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(self.store.path(sha), target)  # same disk: no copy
                except OSError:
                    shutil.copyfile(self.store.path(sha), target)
        except (OSError, transfer.BadFileName) as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise SubmitRefused(messages.BAD_FILE, f"could not place the job's files: {exc}") from None
        return job_dir

    def finals(self, job: Job, final: messages.Message) -> list[messages.Message]:
        """A finished job's answer: on success Files (what the client should download) before Result."""
        if not isinstance(final, messages.Result):
            return [final]
        wanted = {name: path for name, path in transfer.folder_files(job.job_dir).items()
                  if name in _RESERVED or name.startswith(jobfolder.OUTPUTS + "/")}
        return [messages.Files(job.id, transfer.manifest(wanted)), final]

    def prune(self, protect: set[Path]) -> set[Path]:
        """Delete the oldest finished jobs beyond ``keep`` (over all owners); the folders removed."""
        if not self.root.is_dir():
            return set()
        jobs = sorted((p for owner in self.root.iterdir() if owner.is_dir() for p in jobfolder.list_jobs(owner)),
                      key=lambda p: p.name)
        removed: set[Path] = set()
        for job_dir in jobs[: max(0, len(jobs) - self.keep)]:
            try:
                status = jobfolder.read_job(job_dir).get("status")
            except (OSError, ValueError):
                continue
            if status in jobfolder.FINISHED and job_dir not in protect:
                shutil.rmtree(job_dir, ignore_errors=True)
                removed.add(job_dir)
        return removed

    def mark_stale(self) -> int:
        """At start: jobs a previous run left queued or running can never finish; mark them failed."""
        count = 0
        for owner in self.root.iterdir() if self.root.is_dir() else ():
            for job_dir in jobfolder.list_jobs(owner):
                try:
                    if jobfolder.read_job(job_dir).get("status") in (jobfolder.QUEUED, jobfolder.RUNNING):
                        jobfolder.update_job(job_dir, status=jobfolder.FAILED, ended=time.time(),
                                             error={"code": messages.INTERNAL,
                                                    "message": "the server stopped before this job finished"})
                        count += 1
                except (OSError, ValueError):
                    continue
        return count
