"""3D View > Sidebar > Diffusion > Backend: process or server status, device, last error, folders; before the
first job, whether the environment is ready, the device it will use and the models' sizes."""

from __future__ import annotations

import bpy

from ..addon import paths, preferences
from ..addon.jobs import known_servers, model_sizes, service


class SCENE_DIFFUSION_PT_backend(bpy.types.Panel):
    bl_label = "Backend"
    bl_idname = "SCENE_DIFFUSION_PT_backend"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Diffusion"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        sup = service.supervisor()
        layout = self.layout
        col = layout.column(align=True)
        address = sup.remote_address or (preferences.remote_address() if preferences.is_remote() else None)
        if address:
            col.label(text=f"Remote {address}", icon="WORLD")
            fingerprint = known_servers.pinned(paths.known_servers_path(), address)
            if fingerprint:
                col.label(text=f"Key {known_servers.display(fingerprint)[:31]}…")
        col.label(text=f"Status: {sup.state}", icon="LINKED" if sup.state == "ready" else "UNLINKED")
        hs = sup.handshake
        ready = None if address else preferences.readiness_now()
        if ready is not None:
            env = ready.env
            if env.ready:
                col.label(text=env.summary, icon="CHECKMARK")
            else:  # None: a Python of the artist's own, judged when the backend starts
                col.label(text=env.summary, icon="ERROR" if env.ready is False else "QUESTION")
            if env.hint and not env.ready:
                col.label(text=env.hint)
        if hs is not None:
            col.label(text=f"Device: {hs.device} ({hs.dtype})")
            col.label(text=f"Backend {hs.backend_version}, torch {hs.versions.get('torch', '?')}, "
                           f"diffusers {hs.versions.get('diffusers', '?')}")
            if getattr(hs, "memory", ""):  # older backends send none
                col.label(text=f"Memory: {hs.memory}")
        elif ready is not None:
            col.label(text=f"Device: {ready.device}")
        if hs is not None and hs.warnings:
            warn = layout.column(align=True)
            warn.alert = True
            for line in hs.warnings:
                warn.label(text=line, icon="ERROR")
        if ready is not None:
            _draw_models(layout.box().column(align=True), ready.models)
        if sup.last_error is not None:
            err = layout.column(align=True)
            err.alert = True
            err.label(text=sup.last_error.message, icon="ERROR")
            if sup.last_error.hint:
                err.label(text=sup.last_error.hint)
        waiting = sup.detached_jobs()
        if waiting:
            box = layout.column(align=True)
            box.label(text=f"{len(waiting)} job(s) wait for the server to come back", icon="TIME")
            box.operator("scene_diffusion.test_connection", text="Reconnect", icon="LINKED")
        row = layout.row(align=True)
        row.operator("scene_diffusion.restart_backend", icon="FILE_REFRESH")
        row.operator("scene_diffusion.free_memory", icon="TRASH")
        row.operator("scene_diffusion.open_job_folder", icon="FILE_FOLDER", text="Job Folder")


def _draw_models(box: bpy.types.UILayout, report: model_sizes.ModelsReport) -> None:
    if report.problem:
        box.alert = True
        box.label(text=report.problem, icon="ERROR")
        return
    missing = f", {report.missing} to download" if report.missing else ""
    box.label(text=f"Models: {model_sizes.human_size(report.on_disk)} on disk{missing}", icon="FILE_3D")
    for model in report.models:
        box.label(text=model_sizes.describe(model),
                  icon="CHECKMARK" if model.status == model_sizes.ON_DISK else "IMPORT")


classes = (SCENE_DIFFUSION_PT_backend,)
