"""scene_diffusion.render_controlnet: the scene's own passes guide a diffusion render."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import bpy

from ..addon import render_animation
from ..addon.jobs import service
from ..addon.jobs.supervisor import Job
from ..addon.model_options import OptionFiles
from ..addon.overrides import with_overrides
from ..addon.properties import RenderSettings
from ..addon.scene_export import passes
from ..addon.scene_import import render
from ..contract.tasks import ParamError, RenderOutputs, RenderParams, TaskOutputs
from . import job_report

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


@with_overrides(RenderSettings)
class SCENE_DIFFUSION_OT_render_controlnet(bpy.types.Operator):
    """Render depth, normal and colour passes from the active camera and let ControlNets follow them"""

    bl_idname = "scene_diffusion.render_controlnet"
    bl_label = "Render with Diffusion"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        scene: Any = context.scene  # carries the add-on's scene_diffusion property group
        settings = job_report.scene_settings(self, scene.scene_diffusion.render)
        if settings is None:
            return {"CANCELLED"}
        try:  # camera, parameters, files: checked before any job folder exists
            params, files = render_animation.render_request(scene, settings)
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if settings.animation:
            return self._animation(scene, settings, params, files)
        job_dir = service.new_job_folder(params.task)
        try:
            passes.render_passes(scene, job_dir / "inputs", params.width, params.height,
                                 settings.engine, settings.samples)
            files.write(job_dir)
        except (passes.PassRenderError, OSError, ValueError) as exc:
            service.discard_job_folder(job_dir)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}

        def on_result(job: Job, outputs: TaskOutputs) -> render.RenderApplied:
            assert isinstance(outputs, RenderOutputs)
            return render.apply_render(job.job_dir, outputs)

        job = service.submit(params, on_result=on_result, job_dir=job_dir)
        return job_report.finish(self, job)

    def _animation(self, scene: bpy.types.Scene, settings: Any, params: RenderParams,
                   files: OptionFiles) -> set[OperatorReturnItems]:
        current = render_animation.current()
        if current is not None and not current.finished:
            self.report({"ERROR"}, "An animation is already rendering: cancel it first")
            return {"CANCELLED"}
        try:  # the frame range, the output folder, one seed for the whole sequence
            frames, folder, params = render_animation.sequence_request(settings, params)
        except ParamError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        sequence = render_animation.RenderSequence(
            scene.name, frames, folder, params,
            settings.engine, settings.samples, settings.seed_per_frame, files=files).start()
        done, total = sequence.progress
        if sequence.error is not None:
            self.report({"ERROR"}, sequence.error.text())
            return {"CANCELLED"}
        if sequence.cancelled:
            self.report({"WARNING"}, f"Animation cancelled after {done} of {total} frames")
            return {"CANCELLED"}
        if sequence.finished:
            self.report({"INFO"}, f"{len(sequence.done)} frames rendered, {len(sequence.skipped)} already there, "
                                  f"in {folder}")
        else:
            self.report({"INFO"}, f"Rendering {total} frames into {folder}")
        return {"FINISHED"}


classes = (SCENE_DIFFUSION_OT_render_controlnet,)
