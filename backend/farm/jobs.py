"""The jobs of a batch: every job folder directly under a folder, or the requests of a JSON-lines file.

A JSON-lines request is ``{"task": "texture", "params": {...}, "id": "wall-01", "inputs": {"inputs/a.png":
"a.png"}}`` (``id`` and ``inputs`` optional; input sources relative to the file's folder). Each becomes a job folder
under the batch's output folder named by its id (else ``line-NNNNN-<task>``), so running the same file again finds
the folders it made and resumes. A line that is not a valid request is a failed job of its own, not a stopped batch.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import jobfolder, messages, transfer
from contract.tasks import ParamError, params_for

MAX_LINE = 1 << 20  # a request line, in characters: params are small, inputs travel as files


@dataclass(frozen=True)
class BatchJob:
    """One job of the batch; ``name`` (its folder's name) identifies it in batch.json and on retries."""

    name: str
    job_dir: Path
    task: str
    family: str  # jobs with one family run back to back on an actor (its pipelines stay warm)
    done: bool = False  # job.json already says done: skipped (a re-run resumes)


@dataclass(frozen=True)
class BadJob:
    """A job folder or request line that cannot run; reported as failed with ``reason``."""

    name: str
    reason: str


def family_of(task: str, request: dict[str, Any]) -> str:
    """The model a job loads, then its task: jobs sharing both reuse the same warm pipeline."""
    model = request.get("model") if isinstance(request.get("model"), str) else ""
    return f"{model or 'default'}:{task}"


def from_folder(folder: Path) -> tuple[list[BatchJob], list[BadJob]]:
    """Every job folder directly under ``folder`` (those holding job.json), in name order."""
    jobs: list[BatchJob] = []
    bad: list[BadJob] = []
    for job_dir in jobfolder.list_jobs(folder):
        if job_dir.name.startswith("."):  # a folder still being made (jobs.py) or shipped
            continue
        job = _job_in(job_dir)
        if isinstance(job, BatchJob):
            jobs.append(job)
        else:
            bad.append(job)
    return jobs, bad


def _job_in(job_dir: Path) -> BatchJob | BadJob:
    try:
        record = jobfolder.read_job(job_dir)
        task, request = record["task"], record.get("request") or {}
        params_for(task, request)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ParamError is a ValueError
        return BadJob(job_dir.name, f"{job_dir / jobfolder.JOB_FILE}: {exc}")
    return BatchJob(job_dir.name, job_dir, task, family_of(task, request), record.get("status") == jobfolder.DONE)


def from_lines(file: Path, out: Path) -> tuple[list[BatchJob], list[BadJob]]:
    """A job folder under ``out`` for each request line of ``file`` (made once: a later run reuses it)."""
    jobs: list[BatchJob] = []
    bad: list[BadJob] = []
    seen: set[str] = set()
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                job = _job_from_line(line, number, file.parent, out, seen)
            except (ValueError, OSError) as exc:
                bad.append(BadJob(f"line-{number:05d}", f"{file}:{number}: {exc}"))
                continue
            jobs.append(job)
    return jobs, bad


def _job_from_line(line: str, number: int, base: Path, out: Path, seen: set[str]) -> BatchJob:
    if len(line) > MAX_LINE:
        raise ValueError(f"the line is longer than {MAX_LINE} characters")
    data = json.loads(line)
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise ValueError('expected an object with "task" and "params"')
    task, request = data["task"], data.get("params", {})
    if not isinstance(request, dict):
        raise ValueError('"params" must be an object')
    name = data.get("id", f"line-{number:05d}-{task}")
    if not isinstance(name, str) or not messages.ID_PATTERN.fullmatch(name):
        raise ValueError(f"id {name!r}: letters, digits, '-' and '_' only, 1-64 characters")
    if name in seen:
        raise ValueError(f"id {name!r} is used by an earlier line")
    seen.add(name)
    params = params_for(task, request)  # ParamError: the field and its bounds
    inputs = data.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
        raise ValueError('"inputs" must map job-relative paths to files')
    sources = {transfer.check_name(str(k)): base / v for k, v in inputs.items()}
    missing = [str(s) for s in sources.values() if not s.is_file()]
    if missing:
        raise ValueError(f"no such input file: {', '.join(missing)}")
    job_dir = out / name
    if (job_dir / jobfolder.JOB_FILE).is_file():  # made by an earlier run of this file: resume it
        job = _job_in(job_dir)
        if isinstance(job, BadJob):
            raise ValueError(job.reason)
        return job
    _create(job_dir, task, params.to_dict(), name, sources)
    return BatchJob(name, job_dir, task, family_of(task, request))


def _create(job_dir: Path, task: str, request: dict[str, Any], name: str, sources: dict[Any, Path]) -> None:
    """The job folder, job.json written last: a folder without it is not a job, and is made again next run."""
    staging = job_dir.with_name(f".{job_dir.name}.making")
    shutil.rmtree(staging, ignore_errors=True)
    jobfolder.create_job(job_dir.parent, task, request, job_id=name, at=staging)
    jobfolder.place_inputs(staging, [(source, str(relative)) for relative, source in sources.items()])
    shutil.rmtree(job_dir, ignore_errors=True)  # a half-made folder of a run that died here
    staging.rename(job_dir)


def collect(path: Path, out: Path) -> tuple[list[BatchJob], list[BadJob]]:
    """The batch's jobs from a folder of job folders or a JSON-lines file (its folders made under ``out``)."""
    if path.is_dir():
        return from_folder(path)
    if path.is_file():
        return from_lines(path, out)
    raise FileNotFoundError(f"--jobs {path}: no such folder or file")


__all__ = ["BadJob", "BatchJob", "ParamError", "collect", "family_of", "from_folder", "from_lines"]
