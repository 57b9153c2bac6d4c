"""scene_diffusion.generate_texture: a (seamless) texture from a prompt, as an image and a material."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bpy

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

from ..addon import service, texture_result
from ..addon.supervisor import Job
from ..backend.params import ParamError
from . import job_report


class SCENE_DIFFUSION_OT_generate_texture(bpy.types.Operator):
    """Generate a texture from the prompt; put it on the selected mesh objects"""

    bl_idname = "scene_diffusion.generate_texture"
    bl_label = "Generate Texture"
    bl_options = {"REGISTER"}  # the result gets its own undo step when it lands

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        settings = context.scene.scene_diffusion.texture
        try:
            params = settings.to_params()
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        targets = [o.name for o in context.selected_objects if o.type == "MESH"]
        skipped = [o.name for o in context.selected_objects if o.type != "MESH"]
        on_result = texture_result.applier(params.prompt, targets, settings.assign_material, settings.height_mode)
        job = service.submit("texture", params.to_dict(), on_result=on_result)
        if skipped:
            self.report({"INFO"}, f"Not meshes, left as they are: {', '.join(skipped)}")
        return job_report.finish(self, job, _texture_done)


def _texture_done(job: Job) -> str:
    applied = job.applied
    where = f" on {', '.join(applied.objects)}" if applied.objects else ""
    seed = job.result.info.get("seed") if job.result else "?"
    return f"Texture '{applied.image}'{where} (seed {seed}, {Path(job.job_dir).name})"


classes = (SCENE_DIFFUSION_OT_generate_texture,)
