"""Add-on preferences: which Python runs the backend, which models, which device."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import paths

ENV_PYTHON = "SCENE_DIFFUSION_BACKEND_PYTHON"
ENV_MODELS = "SCENE_DIFFUSION_MODELS"


class SceneDiffusionPreferences(bpy.types.AddonPreferences):
    bl_idname = paths.ADDON_ID

    backend_python: StringProperty(  # type: ignore[valid-type]
        name="Backend Python", subtype="FILE_PATH",
        description="Python interpreter with torch and diffusers that runs the backend. "
                    "Empty: the managed environment made by Setup Backend")
    models_registry: StringProperty(  # type: ignore[valid-type]
        name="Model Registry", subtype="FILE_PATH",
        description="Registry JSON file (or a folder holding registry.json) mapping roles to models. "
                    "Empty: the built-in Hugging Face model ids")
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device", default="auto",
        items=[("auto", "Automatic", "CUDA, then Apple MPS, then CPU"), ("cuda", "CUDA", ""),
               ("mps", "Apple MPS", ""), ("cpu", "CPU", "")])
    precision: EnumProperty(  # type: ignore[valid-type]
        name="Precision", default="auto",
        items=[("auto", "Automatic", "Half precision on GPUs, full on CPU"), ("fp16", "Half (fp16)", ""),
               ("bf16", "BFloat16", ""), ("fp32", "Full (fp32)", "")])
    allow_download: BoolProperty(  # type: ignore[valid-type]
        name="Download Missing Models", default=True,
        description="Let the backend download models it does not find locally "
                    "(only when Blender's online access is allowed)")
    allow_unsafe_weights: BoolProperty(  # type: ignore[valid-type]
        name="Allow Pickle Weights", default=False,
        description="Also load .bin/.ckpt weights, which can run code when loaded. "
                    "Off: safetensors only")
    job_retention: IntProperty(  # type: ignore[valid-type]
        name="Jobs to Keep", default=50, min=1, soft_max=500,
        description="Finished job folders kept on disk; older ones are deleted")
    handshake_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Start Timeout", default=120.0, min=1.0, soft_max=600.0, unit="TIME_ABSOLUTE",
        description="Seconds to wait for a starting backend before giving up")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        if os.environ.get(ENV_PYTHON):
            col.label(text=f"{ENV_PYTHON} overrides the interpreter: {os.environ[ENV_PYTHON]}", icon="INFO")
        col.prop(self, "backend_python")
        row = col.row()
        row.operator("scene_diffusion.setup_backend", icon="CONSOLE")
        row.enabled = bpy.app.online_access
        if not bpy.app.online_access:
            col.label(text="Setup needs online access (Preferences > System > Network)", icon="ERROR")
        if os.environ.get(ENV_MODELS):
            col.label(text=f"{ENV_MODELS} overrides the registry: {os.environ[ENV_MODELS]}", icon="INFO")
        col.prop(self, "models_registry")
        col.prop(self, "allow_download")
        col.prop(self, "allow_unsafe_weights")
        row = col.row()
        row.prop(self, "device")
        row.prop(self, "precision")
        col.prop(self, "job_retention")
        col.prop(self, "handshake_timeout")


def get() -> SceneDiffusionPreferences:
    return bpy.context.preferences.addons[paths.ADDON_ID].preferences  # type: ignore[return-value]


def backend_python() -> str:
    """Environment override, then the preference, then the managed environment."""
    chosen = os.environ.get(ENV_PYTHON) or bpy.path.abspath(get().backend_python)
    return chosen or str(paths.venv_python(paths.managed_venv()))


def models_registry() -> str | None:
    chosen = os.environ.get(ENV_MODELS) or bpy.path.abspath(get().models_registry)
    return chosen or None


classes = (SceneDiffusionPreferences,)
