"""scene_diffusion.generate_texture: a (seamless) texture from a prompt, as an image and a material."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bpy

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

from ..addon.jobs import service
from ..addon.overrides import with_overrides
from ..addon.properties import TextureSettings
from ..addon.scene_import import texture
from ..contract.tasks import ParamError
from . import job_report


@with_overrides(TextureSettings)
class SCENE_DIFFUSION_OT_generate_texture(bpy.types.Operator):
    """Generate a texture from the prompt; put it on the selected mesh objects"""

    bl_idname = "scene_diffusion.generate_texture"
    bl_label = "Generate Texture"
    bl_options = {"REGISTER"}  # the result gets its own undo step when it lands

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        settings = job_report.scene_settings(self, context.scene.scene_diffusion.texture)
        if settings is None:
            return {"CANCELLED"}
        try:
            params = settings.to_params()
            files = settings.options.files()
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job_dir = service.new_job_folder(params.task)
        try:
            files.write(job_dir)
        except (OSError, ValueError) as exc:
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, f"Cannot put the model options' files in the job folder: {exc}")
            return {"CANCELLED"}
        targets = [o.name for o in context.selected_objects if o.type == "MESH"]
        skipped = [o.name for o in context.selected_objects if o.type != "MESH"]
        on_result = texture.applier(params.prompt, targets, settings.assign_material, settings.height_mode)
        job = service.submit(params, on_result=on_result, job_dir=job_dir)
        if skipped:
            self.report({"INFO"}, f"Not meshes, left as they are: {', '.join(skipped)}")
        return job_report.finish(self, job)


classes = (SCENE_DIFFUSION_OT_generate_texture,)
