"""The farm's worker: a Ray actor holding one warm engine (the backend's own runner and pipeline cache).

The driver makes it an actor with ``ray.remote(FarmWorker)``; nothing here imports Ray at module level, so the
class is plain Python for tests. A job runs in place when this node sees the driver's batch folder (shared storage),
else in a scratch copy fetched and sent back through the driver's ``JobStore`` (``shipping.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.engine_options import EngineOptions
from contract import jobfolder, messages


@dataclass(frozen=True)
class WorkerInfo:
    slot: int
    pid: int
    host: str
    node: str
    device: str
    shared: bool  # sees the driver's batch folder: jobs run in place


@dataclass(frozen=True)
class Ticket:
    name: str  # the job folder's name: the job's identity in the batch
    job_dir: str  # on the driver's disk
    attempt: int


@dataclass(frozen=True)
class Report:
    name: str
    status: str  # jobfolder.DONE, FAILED or CANCELLED
    error: str
    started: float
    ended: float
    already_done: bool = False  # another attempt finished it first (its actor died after the job's end)


class FarmWorker:
    def __init__(self, slot: int, options: EngineOptions, marker: tuple[str, str], store: Any) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _match_threads()
        self._engine = options.make()
        self._store = store
        self._scratch = Path(tempfile.mkdtemp(prefix="scene_diffusion_farm_"))
        marker_path, token = marker
        try:
            self._shared = Path(marker_path).read_text(encoding="utf-8") == token
        except OSError:
            self._shared = False
        self.info = self._info(slot)

    def _info(self, slot: int) -> WorkerInfo:
        try:
            import ray

            node = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - plain Python (tests): no runtime context
            node = ""
        return WorkerInfo(slot, os.getpid(), socket.gethostname(), node, self._engine.device, self._shared)

    def describe(self) -> WorkerInfo:
        return self.info

    def run(self, ticket: Ticket) -> Report:
        started = time.time()
        if self._shared:
            return self._run_in(Path(ticket.job_dir), ticket, started)
        from backend.farm import shipping

        scratch = self._scratch / f"{ticket.name}-{ticket.attempt}"
        shipping.fetch(self._store, ticket.name, scratch)
        try:
            report = self._run_in(scratch, ticket, started, shipped=True)
            if report.status != jobfolder.CANCELLED and not shipping.send_back(
                    self._store, ticket.name, ticket.attempt, scratch):
                return Report(ticket.name, jobfolder.DONE, "", started, time.time(), already_done=True)
            return report
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run_in(self, job_dir: Path, ticket: Ticket, started: float, shipped: bool = False) -> Report:
        from backend.runner import run_job

        record = jobfolder.read_job(job_dir)
        if record.get("status") == jobfolder.DONE and not shipped:  # a retry of a job that did end
            return Report(ticket.name, jobfolder.DONE, "", started, time.time(), already_done=True)
        submit = messages.Submit(id=str(record.get("id") or ticket.name), task=str(record["task"]),
                                 job_dir=str(job_dir), params=dict(record.get("request") or {}))
        final = run_job(self._engine, submit, lambda _message: None)
        if isinstance(final, messages.Result):
            return Report(ticket.name, jobfolder.DONE, "", started, time.time())
        if isinstance(final, messages.Error):
            why = f"{final.message} ({final.code})" + (f"; {final.hint}" if final.hint else "")
            return Report(ticket.name, jobfolder.FAILED, why, started, time.time())
        return Report(ticket.name, jobfolder.CANCELLED, "cancelled", started, time.time())


def _match_threads() -> None:
    """As many torch threads as CPUs Ray gave this actor: two actors on two cores must not fight over both."""
    try:
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            torch.set_num_threads(max(1, int(cpus)))
    except Exception:  # noqa: BLE001 - outside Ray: leave torch's default
        pass
