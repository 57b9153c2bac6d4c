"""3D View > Sidebar > Diffusion > Backend: process or server status, device, last error, folders."""

from __future__ import annotations

import bpy

from ..addon import paths, preferences
from ..addon.jobs import known_servers, service


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
        if hs is not None:
            col.label(text=f"Device: {hs.device} ({hs.dtype})")
            col.label(text=f"Backend {hs.backend_version}, torch {hs.versions.get('torch', '?')}, "
                           f"diffusers {hs.versions.get('diffusers', '?')}")
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


classes = (SCENE_DIFFUSION_PT_backend,)
