"""How every operator that submits a job ends: at once in the UI (the panels show the rest),
or, in background mode where the job has already ended, with its outcome as the report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import bpy

from ..addon.jobs import service
from ..addon.jobs.supervisor import DONE, Job

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


def finish(op: bpy.types.Operator, job: Job) -> set[OperatorReturnItems]:
    """The report of a job that ended (its result's summary and warnings), or of one that started."""
    if not service.is_blocking() and not job.finished:
        op.report({"INFO"}, f"{job.task.replace('_', ' ').capitalize()} started (job {job.id}); "
                            "progress in the Diffusion tab")
        return {"FINISHED"}
    if job.state == DONE:
        applied = job.applied
        op.report({"INFO"}, applied.summary() if applied is not None else f"Job {job.id} done ({job.job_dir.name})")
        for warning in applied.warnings if applied is not None else []:
            op.report({"WARNING"}, warning)
        return {"FINISHED"}
    if job.error is not None:
        text = job.error.text()
        if job.error.log_tail:
            text += "\n" + job.error.log_tail
        op.report({"ERROR"}, text)
    else:
        op.report({"WARNING"}, f"Job {job.id} cancelled: nothing was changed")
    return {"CANCELLED"}


def scene_settings(op: bpy.types.Operator, group: Any) -> Any | None:
    """The capability's scene settings with the call's keywords over them; None (after an error report) when
    a keyword names a datablock that does not exist."""
    from ..addon import overrides

    try:
        return overrides.SettingsView(op, group)
    except overrides.OverrideError as exc:
        op.report({"ERROR"}, str(exc))
        return None
