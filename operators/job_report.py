"""How every operator that submits a job ends: at once in the UI (the panels show the rest),
or, in background mode where the job has already ended, with its outcome as the report."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import bpy

from ..addon import service
from ..addon.supervisor import DONE, Job

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


def finish(op: bpy.types.Operator, job: Job, done: Callable[[Job], str]) -> set[OperatorReturnItems]:
    """``done(job)`` words a finished job's result for the report."""
    if not service.is_blocking() and not job.finished:
        op.report({"INFO"}, f"{job.task.replace('_', ' ').capitalize()} started (job {job.id}); "
                            "progress in the Diffusion tab")
        return {"FINISHED"}
    if job.state == DONE:
        op.report({"INFO"}, done(job))
        return {"FINISHED"}
    if job.error is not None:
        text = job.error.text()
        if job.error.log_tail:
            text += "\n" + job.error.log_tail
        op.report({"ERROR"}, text)
    else:
        op.report({"WARNING"}, f"Job {job.id} cancelled: nothing was changed")
    return {"CANCELLED"}
