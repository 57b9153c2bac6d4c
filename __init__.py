"""Scene Diffusion: local diffusion models for Blender scenes (extension entry point).

register() and unregister() only. Modules are imported here, at register time, and none
of them imports anything heavy: torch and diffusers live in the backend process.
"""

from __future__ import annotations

from types import ModuleType


def _modules() -> list[ModuleType]:
    """In registration order: preferences and properties before the classes using them."""
    from .addon import model_options, preferences, previews, properties
    from .addon.jobs import service
    from .operators import backend as backend_ops
    from .operators import mesh as mesh_ops
    from .operators import model_options as model_options_ops
    from .operators import pbr as pbr_ops
    from .operators import project as project_ops
    from .operators import render as render_ops
    from .operators import texture as texture_ops
    from .panels import backend as backend_panel
    from .panels import mesh as mesh_panel
    from .panels import pbr as pbr_panel
    from .panels import project as project_panel
    from .panels import render as render_panel
    from .panels import status_bar
    from .panels import texture as texture_panel

    return [preferences, model_options, properties, service, previews, texture_ops, render_ops, pbr_ops, mesh_ops,
            project_ops, backend_ops, model_options_ops, texture_panel, render_panel, pbr_panel, mesh_panel,
            project_panel, backend_panel, status_bar]


def register() -> None:
    import bpy

    for module in _modules():
        for cls in getattr(module, "classes", ()):
            bpy.utils.register_class(cls)
        if hasattr(module, "register"):
            module.register()


def unregister() -> None:
    import bpy

    for module in reversed(_modules()):
        if hasattr(module, "unregister"):
            module.unregister()
        for cls in reversed(getattr(module, "classes", ())):
            bpy.utils.unregister_class(cls)
