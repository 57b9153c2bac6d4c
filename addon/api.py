"""Public Python API for scripts and other add-ons (stable names; the rest is internal).

    import bl_ext.user_default.scene_diffusion.addon.api as sd
    job = sd.generate_texture("mossy stone", width=1024, height=1024, objects=["Wall"])

In background mode (``blender -b``, the ``bpy`` module) calls return when the job has
ended; in the UI they return at once and the result lands on a timer tick.
"""

from __future__ import annotations

from typing import Any

from .jobs import service
from .jobs.supervisor import Job
from .scene_import import texture
from .scene_import.pbr import find_maps


def generate_texture(prompt: str, objects: list[str] | None = None, with_material: bool = True,
                     **settings: Any) -> Job:
    """Same as the operator; ``settings`` are TextureParams fields (width, seed, seamless_x...).
    Raises contract ParamError before starting anything when a value is out of range."""
    from ..contract.tasks import TextureParams

    params = TextureParams(prompt=prompt, **settings)
    on_result = texture.applier(prompt, list(objects or []), with_material)
    return service.submit(params, on_result=on_result)


def backend_state() -> dict[str, Any]:
    """For pipeline scripts: process state, device, versions, last error."""
    sup = service.supervisor()
    hs = sup.handshake
    return {"state": sup.state, "device": hs.device if hs else None, "dtype": hs.dtype if hs else None,
            "versions": dict(hs.versions) if hs else {},
            "last_error": sup.last_error.text() if sup.last_error else None}


def shutdown_backend() -> None:
    """Stop the backend process (the next job starts a new one)."""
    service.shutdown()


__all__ = ["generate_texture", "backend_state", "shutdown_backend", "find_maps"]
