"""Public Python API for scripts and other add-ons (stable names; the rest is internal).

    import bl_ext.user_default.scene_diffusion.addon.api as sd
    job = sd.generate_texture("mossy stone", width=1024, height=1024, objects=["Wall"])

In background mode (``blender -b``, the ``bpy`` module) calls return when the job has
ended; in the UI they return at once and the result lands on a timer tick.

A farm batch splits the same work in three stages (see ``examples/``)::

    sd.prepare_texture("jobs/", "mossy stone", objects=["Wall"], width=1024, seed=7)  # no backend starts
    # elsewhere: python -m backend batch --jobs jobs/ --local 2
    report = sd.apply_jobs("jobs/")  # images and materials on Wall; report.not_done lists what did not finish
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import batch_stages
from .jobs import service
from .jobs.supervisor import Job
from .scene_import import texture
from .scene_import.pbr import find_maps

if TYPE_CHECKING:
    from ..contract.tasks import TextureParams


def generate_texture(prompt: str, objects: list[str] | None = None, with_material: bool = True,
                     loras: Sequence[tuple[str, float]] = (), reference: str = "", **settings: Any) -> Job:
    """Same as the operator; ``settings`` are TextureParams fields (width, seed, seamless_x, scheduler...).
    ``loras``: (LoRA .safetensors file, weight) pairs; ``reference``: an image file guiding the style
    (IP-Adapter, strength ``reference_strength``). Raises contract ParamError before starting anything when a
    value is out of range or a file is missing."""
    params, files = _texture_request(prompt, loras, reference, settings)
    on_result = texture.applier(prompt, list(objects or []), with_material)
    job_dir = service.new_job_folder(params.task)
    try:
        service.place_inputs(job_dir, files)
    except OSError:
        service.discard_job_folder(job_dir)
        raise
    return service.submit(params, on_result=on_result, job_dir=job_dir)


def _texture_request(prompt: str, loras: Sequence[tuple[str, float]], reference: str,
                     settings: dict[str, Any]) -> tuple[TextureParams, list[tuple[Path, str]]]:
    """TextureParams and its input files (artist's file, job-relative path); ParamError when a file is missing."""
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
    return TextureParams(prompt=prompt, loras=lora_params, reference=reference_file, **settings), files


# -- farm stages: prepare job folders here, run them anywhere, apply the results here -----------------------


def prepare_texture(jobs_dir: str | Path, prompt: str, objects: list[str] | None = None, with_material: bool = True,
                    loras: Sequence[tuple[str, float]] = (), reference: str = "", **settings: Any) -> Path:
    """Like :func:`generate_texture`, but only write the job folder under ``jobs_dir`` (no backend starts) and
    return it; :func:`apply_jobs` later puts the texture on ``objects`` of this .blend. ParamError as there."""
    params, files = _texture_request(prompt, loras, reference, settings)
    return batch_stages.prepare_texture(Path(jobs_dir), params, list(objects or []), with_material, files)


def prepare_render(jobs_dir: str | Path, scene: Any = None) -> batch_stages.PreparedFrames:
    """One render job folder per frame of the scene's Render settings (frame range, Output folder, controls, as
    ``render_controlnet`` with Animation on reads them), passes rendered now; no backend starts. Frames already
    in the Output folder are skipped. ParamError when the settings cannot render."""
    import bpy

    scene = scene if scene is not None else bpy.context.scene
    return batch_stages.prepare_render(Path(jobs_dir), scene)


def apply_jobs(jobs_dir: str | Path, frames_root: str | Path | None = None) -> batch_stages.ApplyReport:
    """Bring the finished jobs that the prepare calls wrote under ``jobs_dir`` back: textures onto their objects
    in the open .blend (save it yourself), render frames as numbered PNG/EXR files into the Output folder given at
    prepare (or ``frames_root``/<that folder's name>). Jobs not done are listed in ``report.not_done`` and left
    alone; calling it again applies nothing twice."""
    return batch_stages.apply_jobs(Path(jobs_dir), Path(frames_root) if frames_root is not None else None)


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


__all__ = ["generate_texture", "prepare_texture", "prepare_render", "apply_jobs", "backend_state",
           "shutdown_backend", "find_maps"]
