"""scene_diffusion.generate_texture: a (seamless) texture from a prompt, as an image and a material."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bpy

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

from ..addon import service, texture_result
from ..addon.supervisor import DONE, Job
from ..backend.params import ParamError


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
        if not service.is_blocking() and not job.finished:
            self.report({"INFO"}, f"Generating texture (job {job.id}); progress in the Diffusion tab")
            return {"FINISHED"}
        return self._report_end(job)

    def _report_end(self, job: Job) -> set[OperatorReturnItems]:
        if job.state == DONE and job.result is not None:
            applied = job.applied
            where = f" on {', '.join(applied.objects)}" if applied and applied.objects else ""
            self.report({"INFO"}, f"Texture '{applied.image if applied else '?'}'{where} "
                                  f"(seed {job.result.info.get('seed')}, {Path(job.job_dir).name})")
            return {"FINISHED"}
        if job.error is not None:
            text = job.error.text()
            if job.error.log_tail:
                text += "\n" + job.error.log_tail
            self.report({"ERROR"}, text)
        else:
            self.report({"WARNING"}, "Texture job cancelled")
        return {"CANCELLED"}


classes = (SCENE_DIFFUSION_OT_generate_texture,)
