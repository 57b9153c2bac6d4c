"""Job folders: ``<root>/<time>-<task>-<id>/`` with job.json, inputs/, outputs/, backend.log.

Standard library only: the add-on creates job folders and marks failures; the backend
fills in the rest. Every file is written atomically (temporary name, then rename), so a
reader never sees half a file and a crash leaves the previous version intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

JOB_FILE = "job.json"
LOG_FILE = "backend.log"
INPUTS = "inputs"
OUTPUTS = "outputs"

# Job statuses, in the order a job passes through them.
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


def new_job_id() -> str:
    return uuid.uuid4().hex[:8]


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(handle)`` into a temporary sibling, then rename it over ``path``:
    readers never see half a file, and a failed write leaves the previous version intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy ``source`` to ``target`` so that ``target`` appears whole or not at all."""
    with open(source, "rb") as handle:
        return atomic_write_with(target, lambda out: shutil.copyfileobj(handle, out))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write_with(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A sibling temporary name for writers that need a path (image libraries);
    keep the real extension so format detection by suffix still works."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.tmp{path.suffix}")


def place_inputs(job_dir: str | os.PathLike[str], files: Sequence[tuple[Path, str]]) -> None:
    """Put each (file, job-relative path) in the job folder: a hard link where the file system allows one (LoRAs
    and checkpoints weigh hundreds of MB), else a copy. OSError when neither works."""
    for source, relative in files:
        target = Path(job_dir) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another drive, FAT, a share without links: copy
            shutil.copyfile(source, target)


def create_job(root: str | os.PathLike[str], task: str, request: dict[str, Any],
               job_id: str | None = None, at: str | os.PathLike[str] | None = None) -> Path:
    """Make a new job folder holding job.json (status queued) and empty inputs/, outputs/:
    ``<root>/<time>-<task>-<id>``, or exactly ``at`` when given (the command line's --out)."""
    job_id = job_id or new_job_id()
    now = time.time()
    # Milliseconds too: names sort in creation order even for jobs started in one second.
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    job_dir = Path(at) if at is not None else Path(root) / f"{stamp}-{task}-{job_id}"
    if (job_dir / JOB_FILE).exists():
        raise FileExistsError(f"{job_dir} already holds a job; choose another folder")
    (job_dir / INPUTS).mkdir(parents=True, exist_ok=at is not None)
    (job_dir / OUTPUTS).mkdir(exist_ok=at is not None)
    write_job(job_dir, {
        "id": job_id, "task": task, "status": QUEUED, "request": request,
        "created": time.time(), "timings": {}, "outputs": {},
    })
    return job_dir


def read_job(job_dir: str | os.PathLike[str]) -> dict[str, Any]:
    with open(Path(job_dir) / JOB_FILE, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{job_dir}/{JOB_FILE} is not a JSON object")
    return data


def write_job(job_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
    atomic_write_text(Path(job_dir) / JOB_FILE, json.dumps(record, indent=2, sort_keys=True))


def update_job(job_dir: str | os.PathLike[str], **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into job.json (dicts one level deep) and write it back."""
    try:
        record = read_job(job_dir)
    except FileNotFoundError:
        record = {}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    write_job(job_dir, record)
    return record


def list_jobs(root: str | os.PathLike[str]) -> list[Path]:
    """Job folders under ``root``, oldest first (names start with their creation time)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / JOB_FILE).is_file())


def prune_jobs(root: str | os.PathLike[str], keep: int, protect: set[Path] | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` finished jobs; running ones are never touched."""
    protect = {p.resolve() for p in (protect or set())}
    removed: list[Path] = []
    jobs = list_jobs(root)
    for job_dir in jobs[: max(0, len(jobs) - keep)]:
        try:
            status = read_job(job_dir).get("status")
        except (OSError, ValueError):
            continue
        if status in FINISHED and job_dir.resolve() not in protect:
            shutil.rmtree(job_dir, ignore_errors=True)
            removed.append(job_dir)
    return removed
