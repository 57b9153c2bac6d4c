"""Public Python API for scripts and other add-ons (stable names; the rest is internal).

    import bl_ext.user_default.scene_diffusion.addon.api as sd
    job = sd.generate_texture("mossy stone", width=1024, height=1024, objects=["Wall"])

In background mode (``blender -b``, the ``bpy`` module) calls return when the job has
ended; in the UI they return at once and the result lands on a timer tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .jobs import service
from .jobs.supervisor import Job
from .scene_import import texture
from .scene_import.pbr import find_maps


def generate_texture(prompt: str, objects: list[str] | None = None, with_material: bool = True,
                     loras: Sequence[tuple[str, float]] = (), reference: str = "", **settings: Any) -> Job:
    """Same as the operator; ``settings`` are TextureParams fields (width, seed, seamless_x, scheduler...).
    ``loras``: (LoRA .safetensors file, weight) pairs; ``reference``: an image file guiding the style
    (IP-Adapter, strength ``reference_strength``). Raises contract ParamError before starting anything when a
    value is out of range or a file is missing."""
    from ..contract.tasks import LoraParams, ParamError, TextureParams, lora_input, reference_input

    lora_params = [LoraParams(lora_input(index, Path(file).name), float(weight), Path(file).name)
                   for index, (file, weight) in enumerate(loras)]
    files = [(Path(file), lora.file) for (file, _weight), lora in zip(loras, lora_params, strict=True)]
    reference_file = reference_input(Path(reference).suffix) if reference else ""
    if reference:
        files.append((Path(reference), reference_file))
    missing = [str(path) for path, _relative in files if not path.is_file()]
    if missing:
        raise ParamError(f"no such file: {', '.join(missing)}")
    params = TextureParams(prompt=prompt, loras=lora_params, reference=reference_file, **settings)
    on_result = texture.applier(prompt, list(objects or []), with_material)
    job_dir = service.new_job_folder(params.task)
    try:
        service.place_inputs(job_dir, files)
    except OSError:
        service.discard_job_folder(job_dir)
        raise
    return service.submit(params, on_result=on_result, job_dir=job_dir)


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
