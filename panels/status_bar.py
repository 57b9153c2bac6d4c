"""A progress bar in Blender's status bar while a job runs."""

from __future__ import annotations

import bpy

from ..addon.jobs import service
from ..addon.jobs.supervisor import DOWNLOADING, UPLOADING


def draw(self: bpy.types.Header, context: bpy.types.Context) -> None:
    jobs = service.active_jobs()
    if not jobs:
        return
    job = jobs[0]
    row = self.layout.row(align=True)
    if job.state in (UPLOADING, DOWNLOADING):
        text = f"Diffusion: {job.task} {job.progress_text().lower()}"  # megabytes while files move
    elif job.total:
        text = f"Diffusion: {job.task} {job.step}/{job.total}"
    else:
        text = f"Diffusion: {job.task} {job.state}"
    row.progress(factor=job.fraction, type="BAR", text=text)
    row.operator("scene_diffusion.cancel_job", text="", icon="CANCEL").job_id = job.id


def register() -> None:
    bpy.types.STATUSBAR_HT_header.append(draw)


def unregister() -> None:
    bpy.types.STATUSBAR_HT_header.remove(draw)
