"""``python -m backend batch``: run a batch's jobs on Ray actors, each job exactly once, and keep batch.json.

One actor per GPU (``num_gpus=1``), or per CPU slot on a machine without one, each holding a warm engine. An idle
actor takes a job of the family it ran last (``order.FamilyQueue``). A job whose actor dies is retried on another
(a new actor replaces the dead one) up to ``max_retries`` times, then marked failed with the reason; a job that
fails on its own (bad input, out of memory) is not retried. Jobs already done are skipped, so a re-run resumes.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.engine_options import EngineOptions
from backend.farm import jobs as batch_jobs
from backend.farm.order import FamilyQueue
from backend.farm.shipping import JobStore
from backend.farm.summary import RUNNING, SKIPPED, Attempt, BatchSummary
from backend.farm.worker import FarmWorker, Ticket, WorkerInfo
from contract import jobfolder

log = logging.getLogger("backend.farm")
TRANSFERS = ("auto", "ship")
SUMMARY_FILE = "batch.json"


@dataclass(frozen=True)
class BatchOptions:
    jobs: Path
    out: Path | None = None  # batch.json (and a JSON-lines file's job folders); default: the jobs folder
    ray_address: str | None = None  # join this cluster ("auto": the one `ray start` made on this machine)
    local: int | None = None  # else start a local cluster of this many workers
    workers: int | None = None  # on a cluster: how many actors (default: one per GPU, else one per CPU)
    transfer: str = "auto"  # auto: in place on nodes that see the folder, shipped through Ray elsewhere; ship: always
    max_retries: int = 2
    engine: EngineOptions = field(default_factory=EngineOptions)
    progress: bool = True


@dataclass
class _Slot:
    index: int
    actor: Any
    info: WorkerInfo | None = None
    family: str | None = None
    job: batch_jobs.BatchJob | None = None
    attempt: int = 0


def output_folder(options: BatchOptions) -> Path:
    if options.out is not None:
        return options.out
    if options.jobs.is_file():  # requests.jsonl -> requests-jobs/ beside it
        return options.jobs.with_name(f"{options.jobs.stem}-jobs")
    return options.jobs


def run_batch(options: BatchOptions) -> BatchSummary:
    """Run the batch; returns its summary (also in ``<out>/batch.json``)."""
    if options.transfer not in TRANSFERS:
        raise ValueError(f"transfer {options.transfer!r}: choose one of {', '.join(TRANSFERS)}")
    out = output_folder(options)
    out.mkdir(parents=True, exist_ok=True)
    found, bad = batch_jobs.collect(options.jobs, out)
    summary = BatchSummary(out / SUMMARY_FILE, {
        "jobs": str(options.jobs), "ray": options.ray_address, "local": options.local,
        "transfer": options.transfer, "max_retries": options.max_retries})
    for problem in bad:
        summary.add(problem.name, "", "", jobfolder.FAILED, problem.reason)
    queue: FamilyQueue[batch_jobs.BatchJob] = FamilyQueue()
    for job in found:
        summary.add(job.name, job.task, job.family, SKIPPED if job.done else "pending")
        if not job.done:
            queue.put(job.family, job)
    if len(queue):
        _Run(options, out, summary, queue, {j.name: j for j in found}).go()
    summary.ended = time.time()
    summary.write()
    return summary


class _Run:
    def __init__(self, options: BatchOptions, out: Path, summary: BatchSummary,
                 queue: FamilyQueue[batch_jobs.BatchJob], by_name: dict[str, batch_jobs.BatchJob]) -> None:
        self.options, self.out, self.summary, self.queue, self.by_name = options, out, summary, queue, by_name
        self.refs: dict[Any, tuple[str, _Slot]] = {}  # in flight: ("start" | "job", slot)
        self.slots: list[_Slot] = []
        self.replacements = 0
        self.start_error = ""
        self.bar: Any = None

    def go(self) -> None:
        import ray

        started_ray = _connect(self.options)
        marker = self.out / f".batch-{uuid.uuid4().hex}"
        token = uuid.uuid4().hex
        marker.write_text(token if self.options.transfer != "ship" else "", encoding="utf-8")
        try:
            self._marker = (str(marker), token)
            self._store = ray.remote(JobStore).options(
                num_cpus=0, scheduling_strategy=_this_node()).remote(
                {name: str(job.job_dir) for name, job in self.by_name.items()})
            count, self._resources = _actor_shape(self.options)
            for _ in range(min(count, len(self.queue))):
                self._add_slot()
            self.bar = _progress(self.options.progress, len(self.queue))
            self._loop()
        except KeyboardInterrupt:
            for _kind, slot in self.refs.values():
                if slot.job is not None:
                    self.summary.attempt_lost(slot.job.name, "the batch was interrupted")
            raise
        finally:
            marker.unlink(missing_ok=True)
            self.summary.write()
            if self.bar is not None:
                self.bar.close()
            if started_ray:
                ray.shutdown()

    def _add_slot(self) -> None:
        import ray

        index = len(self.slots)
        actor = ray.remote(FarmWorker).options(max_restarts=0, scheduling_strategy="SPREAD", **self._resources) \
            .remote(index, self.options.engine, self._marker, self._store)
        slot = _Slot(index, actor)
        self.slots.append(slot)
        self.refs[actor.describe.remote()] = ("start", slot)  # type: ignore[attr-defined]

    def _loop(self) -> None:
        import ray

        while self.refs or len(self.queue):
            self._dispatch()
            if not self.refs:  # jobs left and no actor to run them
                self._fail_rest(self.start_error or "no worker could start")
                return
            ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=1.0)
            for ref in ready:
                kind, slot = self.refs.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._actor_lost(slot, _reason(exc))
                    continue
                except ray.exceptions.RayError as exc:  # run() itself raised: retry, the actor lives on
                    self._attempt_lost(slot, _reason(exc))
                    continue
                if kind == "start":
                    slot.info = value
                    self.summary.workers.append(_worker_row(value))
                else:
                    self._ended(slot, value)
            self._show()

    def _dispatch(self) -> None:
        dispatched = False
        busy = frozenset(s.family for s in self.slots if s.job is not None and s.family)
        for slot in self.slots:
            if slot.info is None or slot.job is not None or slot.actor is None:
                continue
            taken = self.queue.take(slot.family, busy)
            if taken is None:
                break
            slot.family, job = taken
            slot.job, slot.attempt = job, len(self.summary.jobs[job.name].attempts) + 1
            info = slot.info
            self.summary.begin(job.name, Attempt(slot.index, info.host, info.node, info.pid, time.time()))
            self.refs[slot.actor.run.remote(Ticket(job.name, str(job.job_dir), slot.attempt))] = ("job", slot)
            busy, dispatched = busy | {slot.family}, True
        if dispatched:
            self.summary.write()

    def _ended(self, slot: _Slot, report: Any) -> None:
        job, slot.job = slot.job, None
        assert job is not None
        if not self.summary.end(job.name, report.status, report.error, report.ended):
            log.warning("job %s reported again (attempt %d): ignored", job.name, slot.attempt)
        elif self.bar is not None:
            self.bar.update(1)
        self.summary.write()

    def _attempt_lost(self, slot: _Slot, why: str) -> None:
        job, slot.job = slot.job, None
        if job is None:  # describe() raised: the actor could not start its engine
            self.start_error = why
            slot.actor = None
            return
        self._retry(job, why)

    def _actor_lost(self, slot: _Slot, why: str) -> None:
        """The actor is gone (killed, node lost, out of host memory): retry its job, start another actor."""
        job, slot.job, slot.actor = slot.job, None, None
        if slot.info is None:
            self.start_error = why
        if job is not None:
            self._retry(job, why)
            if self.replacements < self.options.max_retries * max(1, len(self.slots)):
                self.replacements += 1
                self._add_slot()
        log.warning("worker %d lost: %s", slot.index, why)

    def _retry(self, job: batch_jobs.BatchJob, why: str) -> None:
        self.summary.attempt_lost(job.name, why)
        if len(self.summary.jobs[job.name].attempts) > self.options.max_retries:
            self.summary.end(job.name, jobfolder.FAILED, f"gave up after {self.options.max_retries} retries: {why}")
            if self.bar is not None:
                self.bar.update(1)
        else:
            self.queue.put(job.family, job, front=True)
        self.summary.write()

    def _fail_rest(self, why: str) -> None:
        while (taken := self.queue.take(None)) is not None:
            self.summary.end(taken[1].name, jobfolder.FAILED, why)

    def _show(self) -> None:
        if self.bar is not None:
            counts = self.summary.counts()
            self.bar.set_postfix(done=counts[jobfolder.DONE], failed=counts[jobfolder.FAILED],
                                 running=counts[RUNNING], refresh=False)


def _connect(options: BatchOptions) -> bool:
    """Join the cluster or start a local one; True when this process started it (and shuts it down)."""
    import ray

    backend_root = Path(__file__).resolve().parents[2]
    # The code travels to every node with the job (Ray's py_modules); its dependencies must be there already.
    runtime_env = {"py_modules": [str(backend_root / "backend"), str(backend_root / "contract")],
                   "excludes": ["__pycache__"]}
    if options.ray_address is not None:
        ray.init(address=options.ray_address, runtime_env=runtime_env, log_to_driver=False,
                 logging_level=logging.WARNING)
        return False
    ray.init(num_cpus=max(1, options.local or 1), include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=False, logging_level=logging.WARNING)
    return True


def _actor_shape(options: BatchOptions) -> tuple[int, dict[str, float]]:
    """How many actors and what each holds: a GPU each where the cluster has GPUs, else one CPU each."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    wanted = options.local if options.local is not None else options.workers
    if gpus:
        return min(wanted or gpus, gpus), {"num_gpus": 1, "num_cpus": 1}
    return max(1, min(wanted or cpus, cpus)), {"num_cpus": 1}


def _this_node() -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="job", file=sys.stderr, desc="batch", mininterval=0.5)


def _worker_row(info: WorkerInfo) -> dict[str, Any]:
    return {"actor": info.slot, "pid": info.pid, "host": info.host, "node": info.node, "device": info.device,
            "shared_storage": info.shared}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
