"""Runs one job in its folder: job.json bookkeeping, per-job log, errors turned into messages.

Shared by the server (jobs from the add-on) and the command line (jobs from a shell), so
both leave the same folder behind.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from backend import __version__
from backend.diffusion.device import is_out_of_memory
from backend.errors import JobCancelled, TaskError
from backend.models import PipelineCache, Registry
from backend.tasks import get_task
from backend.tasks.context import JobContext
from contract import jobfolder, messages
from contract.tasks import TASKS, ParamError, params_for

if TYPE_CHECKING:
    from backend.diffusion.memory import MemoryPlan

log = logging.getLogger("backend")

Send = Callable[[messages.Message], None]


@dataclass
class Engine:
    """What stays alive between jobs: the registry, the loaded pipelines, the device."""

    registry: Registry
    models: PipelineCache
    device: str
    dtype: str
    versions: dict[str, str]
    memory: MemoryPlan | None = None  # the VRAM mode pipelines load in (None: plain, as before budgets)
    warnings: list[str] = field(default_factory=list)  # for the handshake: checkpoints left out, ...

    @property
    def memory_label(self) -> str:
        return self.memory.mode_label if self.memory is not None else ""

    def release(self) -> None:
        """Free what jobs keep between them: the loaded models, and the bake's cached surfaces."""
        from backend.projection.surface import clear_surface_cache

        self.models.release()
        clear_surface_cache()


def run_job(engine: Engine, submit: messages.Submit, send: Send,
            cancel_event: threading.Event | None = None) -> messages.Message:
    """Run ``submit`` and send progress; return (and send) the final message."""
    job_dir = Path(submit.job_dir)
    final = _run(engine, submit, job_dir, send, cancel_event or threading.Event())
    send(final)
    return final


def _run(engine: Engine, submit: messages.Submit, job_dir: Path, send: Send,
         cancel_event: threading.Event) -> messages.Message:
    if submit.task not in TASKS:
        return messages.Error(submit.id, messages.UNKNOWN_TASK, f"unknown task {submit.task!r}",
                              f"known tasks: {', '.join(sorted(TASKS))}")

    if not (job_dir / jobfolder.JOB_FILE).is_file():
        return messages.Error(submit.id, messages.INVALID_PARAMS,
                              f"job folder {job_dir} has no {jobfolder.JOB_FILE}",
                              "create jobs with contract.jobfolder.create_job")
    try:
        params = params_for(submit.task, submit.params)
    except ParamError as exc:
        return _fail(job_dir, time.time(), submit.id, messages.INVALID_PARAMS, str(exc), "")

    handler = logging.FileHandler(job_dir / jobfolder.LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    started = time.time()
    jobfolder.update_job(job_dir, status=jobfolder.RUNNING, started=started,
                         backend={"version": __version__, "device": engine.device,
                                  "dtype": engine.dtype, "versions": engine.versions})

    def report(step: int, total: int, preview: str | None, message: str) -> None:
        send(messages.Progress(submit.id, step, total, preview, message))

    ctx = JobContext(id=submit.id, job_dir=job_dir, registry=engine.registry,
                     models=engine.models, device=engine.device, dtype=engine.dtype,
                     report=report, cancel_event=cancel_event)
    log.info("job %s: %s started", submit.id, submit.task)
    try:
        output = get_task(submit.task)(ctx, params)
    except JobCancelled:
        _finish(job_dir, started, jobfolder.CANCELLED, ctx.take_timings())
        log.info("job %s cancelled", submit.id)
        return messages.Cancelled(submit.id)
    except TaskError as exc:
        return _fail(job_dir, started, submit.id, exc.code, exc.message, exc.hint, ctx.take_timings())
    except Exception as exc:  # noqa: BLE001 - any failure must become a message, not a dead backend
        log.error("job %s failed:\n%s", submit.id, traceback.format_exc())
        if is_out_of_memory(exc):
            engine.release()
            from backend.diffusion.memory import oom_hint

            advice = oom_hint(engine.memory) if engine.memory is not None else (
                "lower the width and height, generate fewer images at once, or choose fp16 precision")
            return _fail(job_dir, started, submit.id, messages.OUT_OF_MEMORY,
                         f"out of memory on {engine.device}",
                         f"{advice}; the backend released its models and keeps running", ctx.take_timings())
        return _fail(job_dir, started, submit.id, messages.INTERNAL, f"{type(exc).__name__}: {exc}",
                     f"the traceback is in {job_dir / jobfolder.LOG_FILE}", ctx.take_timings())
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files, info = output.files(), output.info()
    speedups = engine.models.speedups()  # provenance of speed: what the models ran with on CUDA
    _finish(job_dir, started, jobfolder.DONE, ctx.take_timings(), outputs=files, info=info,
            **({"backend": {"speedups": speedups}} if speedups else {}))
    log.info("job %s done in %.2f s", submit.id, time.time() - started)
    return messages.Result(submit.id, files, info)


def _finish(job_dir: Path, started: float, status: str, timings: dict[str, float] | None = None,
            **fields: object) -> None:
    """The job's last job.json update: its status, end, run time and the task's timings not yet written."""
    ended = time.time()
    jobfolder.update_job(job_dir, status=status, ended=ended,
                         timings={**(timings or {}), "run_s": round(ended - started, 3)}, **fields)


def _fail(job_dir: Path, started: float, job_id: str, code: str, message: str,
          hint: str, timings: dict[str, float] | None = None) -> messages.Error:
    log.error("job %s failed: %s (%s)", job_id, message, code)
    _finish(job_dir, started, jobfolder.FAILED, timings, error={"code": code, "message": message, "hint": hint})
    return messages.Error(job_id, code, message, hint)


def make_engine(device: str = "auto", precision: str = "auto", registry: str | None = None,
                allow_download: bool = False, allow_unsafe: bool = False, vram_budget: str = "auto",
                user_models: str | None = None) -> Engine:
    """Pick the device and its memory mode, read the registry (plus the artist's checkpoints); loads no weights."""
    from backend.diffusion.device import dtype_name, library_versions, pick_device, pick_dtype
    from backend.diffusion.memory import plan_memory, total_vram
    from backend.models import load_registry
    from backend.models.user_models import merge_user_models

    dev = pick_device(device)
    dtype = pick_dtype(dev, precision)
    plan = plan_memory(vram_budget, dev, total_vram(dev))
    models, warnings = merge_user_models(load_registry(registry), user_models)
    cache = PipelineCache(dev, dtype, allow_download, allow_unsafe)
    cache.memory_plan = plan
    return Engine(models, cache, dev, dtype_name(dtype), library_versions(), plan, warnings)
