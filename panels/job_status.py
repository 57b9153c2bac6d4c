"""Drawing a job's progress, preview, error and cancel button (shared by capability panels)."""

from __future__ import annotations

from typing import Any

import bpy

from ..addon import previews
from ..addon.jobs import service
from ..addon.jobs.supervisor import CANCELLED, DONE, FAILED, Job
from ..contract.tasks import TaskParams


def latest_job(*tasks: type[TaskParams]) -> Job | None:
    """The newest job of these tasks (their parameters classes), running or finished, for a capability's panel."""
    jobs = [j for j in service.supervisor().jobs.values() if isinstance(j.params, tasks)]
    return max(jobs, key=lambda j: j.submitted, default=None)


def draw_job(layout: bpy.types.UILayout, job: Job | None) -> None:
    if job is None:
        return
    box = layout.box()
    if not job.finished:
        row = box.row(align=True)
        row.progress(factor=job.fraction, type="BAR", text=job.progress_text())
        row.operator("scene_diffusion.cancel_job", text="", icon="CANCEL").job_id = job.id
        icon_id = previews.icon(job.id)
        if icon_id:
            box.template_icon(icon_value=icon_id, scale=8.0)
    elif job.state == DONE:
        box.label(text=f"Done: job {job.id}", icon="CHECKMARK")
    elif job.state == CANCELLED:
        box.label(text=f"Cancelled: job {job.id}", icon="CANCEL")
    elif job.state == FAILED and job.error is not None:
        col = box.column(align=True)
        col.alert = True
        col.label(text=job.error.message, icon="ERROR")
        if job.error.hint:
            col.label(text=job.error.hint)
        for line in job.error.log_tail.splitlines()[-4:]:
            col.label(text=line[:120])


def draw_seed(layout: bpy.types.UILayout, settings: Any) -> None:
    """A fixed seed field, greyed out while a random seed is chosen per job."""
    row = layout.row(heading="Seed", align=True)
    row.prop(settings, "random_seed", text="Random")
    sub = row.row(align=True)
    sub.enabled = not settings.random_seed
    sub.prop(settings, "seed", text="")
