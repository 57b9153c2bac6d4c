"""Job folders through Ray for nodes that do not see the driver's disk: files in chunks, never whole.

A ``JobStore`` actor runs on the driver's node and is the only thing that touches the batch folder there: a worker
lists a job's inputs, reads them chunk by chunk into a scratch folder, runs the job, sends the outputs back chunk by
chunk into a staging folder and commits: the staged files move into place and job.json is written last, once. Each
chunk is one task argument or return value (Ray keeps at most a few in flight), so a 2 GB input never sits in the
object store whole. Names are checked like a remote server checks uploads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from contract import jobfolder, transfer

CHUNK = 8 << 20
STAGING = ".farm-incoming"


class JobStore:
    """The batch folder's keeper on the driver's node (a Ray actor: ``ray.remote(JobStore)``)."""

    def __init__(self, folders: dict[str, str]) -> None:
        self._folders = {name: Path(path) for name, path in folders.items()}

    def _folder(self, name: str) -> Path:
        try:
            return self._folders[name]
        except KeyError:
            raise ValueError(f"no job {name!r} in this batch") from None

    def listing(self, name: str) -> list[tuple[str, int]]:
        """job.json and the inputs: what a worker needs to run the job (outputs of an earlier attempt stay)."""
        job_dir = self._folder(name)
        files = [jobfolder.JOB_FILE]
        inputs = job_dir / jobfolder.INPUTS
        files += sorted(p.relative_to(job_dir).as_posix() for p in inputs.rglob("*") if p.is_file())
        return [(rel, (job_dir / rel).stat().st_size) for rel in files]

    def read(self, name: str, rel: str, offset: int, length: int) -> bytes:
        path = transfer.resolve_inside(self._folder(name), rel)
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(min(length, CHUNK))

    def receive(self, name: str, attempt: int, rel: str, offset: int, data: bytes) -> None:
        """Write one chunk of an output into the attempt's staging folder (a dead attempt's is discarded)."""
        if rel == jobfolder.JOB_FILE:
            raise ValueError("job.json is written by commit")
        path = transfer.resolve_inside(self._staging(name, attempt), rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "r+b" if offset else "wb") as handle:
            handle.seek(offset)
            handle.write(data)

    def commit(self, name: str, attempt: int, record: dict[str, Any]) -> bool:
        """Move the attempt's files into the job folder, then write its job.json: True, or False (nothing
        changed) when the job was already done by another attempt."""
        job_dir, staging = self._folder(name), self._staging(name, attempt)
        try:
            if jobfolder.read_job(job_dir).get("status") == jobfolder.DONE:
                return False
        except (OSError, ValueError):
            pass
        if staging.is_dir():
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                target = job_dir / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)  # same file system: each output appears whole
        jobfolder.write_job(job_dir, record)
        shutil.rmtree(job_dir / STAGING, ignore_errors=True)
        return True

    def _staging(self, name: str, attempt: int) -> Path:
        return self._folder(name) / STAGING / str(int(attempt))


def fetch(store: Any, name: str, scratch: Path) -> None:
    """Copy a job's folder from the store into ``scratch`` (worker side), chunk by chunk."""
    import ray

    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / jobfolder.OUTPUTS).mkdir(parents=True)
    for rel, size in ray.get(store.listing.remote(name)):
        target = transfer.resolve_inside(scratch, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            for offset in range(0, size, CHUNK):
                handle.write(ray.get(store.read.remote(name, rel, offset, CHUNK)))


def send_back(store: Any, name: str, attempt: int, scratch: Path) -> bool:
    """Send the outputs and the log to the store, then commit job.json; False if another attempt got there."""
    import ray

    files = [p for p in (scratch / jobfolder.OUTPUTS).rglob("*") if p.is_file()]
    if (scratch / jobfolder.LOG_FILE).is_file():
        files.append(scratch / jobfolder.LOG_FILE)
    for path in files:
        rel = path.relative_to(scratch).as_posix()
        with open(path, "rb") as handle:
            offset = 0
            while True:  # an empty file is one empty chunk; a short chunk is the last
                data = handle.read(CHUNK)
                ray.get(store.receive.remote(name, attempt, rel, offset, data))
                offset += len(data)
                if len(data) < CHUNK:
                    break
    return bool(ray.get(store.commit.remote(name, attempt, jobfolder.read_job(scratch))))
