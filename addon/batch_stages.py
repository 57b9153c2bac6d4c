"""Blender's two stages of a farm batch, for scripts that split the work where it fits.

``prepare`` writes job folders from the scenes (pass renders, model option files, job.json holding the request)
directly under a jobs folder and runs nothing: no backend starts. Any runner of job folders then runs them in place
(``python -m backend batch --jobs DIR``: each job.json ends "done" with its outputs and info). ``apply`` brings the
finished jobs' results back: textures as images and materials on the named objects of the open .blend, render
frames as the numbered PNG/EXR files the animation path writes.

What apply needs beyond job.json (which .blend, objects, prompt, frame, output folder) is kept in a manifest
keyed by job id, so the requests stay free of absolute paths: ``DIR/blender_stages/<process>.json``, one file per
prepare process, so prepares of many .blend files may write one jobs folder at once (a render manager runs them
in parallel); apply reads them all.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..contract import jobfolder
from ..contract.schema import ParamError, decode
from ..contract.tasks import TASKS, RenderOutputs, RenderParams, TaskOutputs, TextureOutputs, TextureParams
from . import render_animation
from .jobs import service
from .jobs.supervisor import Job
from .model_options import OptionFiles
from .scene_export import passes
from .scene_import import texture

MANIFESTS = "blender_stages"  # the folder of manifests under the jobs folder
MANIFEST_VERSION = 1
_THIS_PREPARE = f"{os.getpid()}-{uuid.uuid4().hex[:12]}.json"  # this process's manifest: no one else writes it
TEXTURE, FRAME = "texture", "frame"  # what apply does with a job: a texture onto objects, a frame into files
JOB_KEY = "scene_diffusion_job"  # custom property on an applied image: its job id, so apply runs once per job


@dataclass(frozen=True)
class StagedJob:
    """One job as the manifest keeps it: where its folder is and where its result goes."""

    folder: str  # the job folder's name under the jobs folder
    kind: str  # TEXTURE or FRAME
    blend: str = ""  # the .blend it was prepared from ("" for an unsaved file)
    scene: str = ""
    prompt: str = ""  # TEXTURE: names the image and material, as the single-machine path does
    objects: list[str] = field(default_factory=list)
    with_material: bool = True
    height_mode: str = "BUMP"
    frame: int = 0  # FRAME: the frame number and the folder its numbered files go into
    output: str = ""


@dataclass(frozen=True)
class PreparedFrames:
    jobs: list[Path]  # one job folder per frame still to render
    skipped: list[int]  # frames whose files are already in the output folder (resume)


@dataclass
class ApplyReport:
    """What apply did with each job of the manifest, by job folder name."""

    applied: list[str] = field(default_factory=list)  # results brought in by this call
    kept: list[str] = field(default_factory=list)  # already in this .blend, or the frame's files already there
    elsewhere: dict[str, str] = field(default_factory=dict)  # textures of another .blend (which): open it to apply
    not_done: dict[str, str] = field(default_factory=dict)  # queued, running, failed, missing: and why

    @property
    def ok(self) -> bool:
        return not self.not_done

    def lines(self) -> list[str]:
        lines = [f"{len(self.applied)} applied, {len(self.kept)} already there, "
                 f"{len(self.elsewhere)} for another .blend, {len(self.not_done)} not done"]
        lines += [f"  {name}: prepared from {blend}; apply with that file open"
                  for name, blend in self.elsewhere.items()]
        lines += [f"  {name}: {why}" for name, why in self.not_done.items()]
        return lines


# -- the manifest ----------------------------------------------------------------------------------------


def read_manifest(jobs_dir: Path) -> dict[str, StagedJob]:
    """Every prepare's jobs by id ({} when there are none yet); ValueError when a manifest cannot be read."""
    jobs: dict[str, StagedJob] = {}
    folder = Path(jobs_dir) / MANIFESTS
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        jobs.update(_read_one(path))
    return jobs


def _read_one(path: Path) -> dict[str, StagedJob]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise ValueError(f"{path} is not a Scene Diffusion stages manifest")
    return {job_id: decode(StagedJob, entry, f"{path.name} job {job_id}") for job_id, entry in data["jobs"].items()}


def _add_to_manifest(jobs_dir: Path, entries: dict[str, StagedJob]) -> None:
    if not entries:
        return
    path = Path(jobs_dir) / MANIFESTS / _THIS_PREPARE
    path.parent.mkdir(parents=True, exist_ok=True)
    jobs = {**(_read_one(path) if path.is_file() else {}), **entries}
    text = json.dumps({"version": MANIFEST_VERSION, "jobs": {k: asdict(v) for k, v in jobs.items()}},
                      indent=2, sort_keys=True)
    jobfolder.atomic_write_text(path, text)


def _new_job(jobs_dir: Path, params: TextureParams | RenderParams) -> tuple[str, Path]:
    job_id = jobfolder.new_job_id()
    return job_id, jobfolder.create_job(jobs_dir, params.task, params.to_dict(), job_id=job_id)


def _blend_key(path: str) -> str:
    return str(Path(path).resolve()) if path else ""


# -- prepare -----------------------------------------------------------------------------------------------


def prepare_texture(jobs_dir: Path, params: TextureParams, objects: Sequence[str], with_material: bool = True,
                    files: Sequence[tuple[Path, str]] | OptionFiles = (), height_mode: str = "BUMP") -> Path:
    """A texture job folder under ``jobs_dir`` with its input files in place (artist's file, job-relative path
    pairs, or a settings group's OptionFiles). OSError or ValueError when they cannot be written: no folder left."""
    jobs_dir = Path(jobs_dir)
    job_id, job_dir = _new_job(jobs_dir, params)
    try:
        if isinstance(files, OptionFiles):
            files.write(job_dir)
        else:
            service.place_inputs(job_dir, list(files))
    except (OSError, ValueError):
        service.discard_job_folder(job_dir)
        raise
    _add_to_manifest(jobs_dir, {job_id: StagedJob(job_dir.name, TEXTURE, bpy.data.filepath, bpy.context.scene.name,
                                                  params.prompt, list(objects), with_material, height_mode)})
    return job_dir


def prepare_frames(jobs_dir: Path, scene: bpy.types.Scene, params: RenderParams, frames: Sequence[int],
                   output: Path, engine: str = "CYCLES", samples: int = 1, seed_per_frame: bool = False,
                   files: OptionFiles | None = None) -> PreparedFrames:
    """One render job folder per frame (its passes rendered by Blender into inputs/), as the animation path
    would submit them; frames whose files are already in ``output`` are skipped. PassRenderError, OSError or
    ValueError stop it; the frames prepared before stay in the manifest."""
    jobs_dir, entries = Path(jobs_dir), {}
    prepared, skipped = [], []
    try:
        for frame in frames:
            if render_animation.frame_stored(output, frame):
                skipped.append(frame)
                continue
            frame_params = render_animation.frame_params(params, frame, seed_per_frame)
            job_id, job_dir = _new_job(jobs_dir, frame_params)
            try:
                passes.render_passes(scene, job_dir / jobfolder.INPUTS, frame_params.width, frame_params.height,
                                     engine, samples, frame=frame)
                (files or OptionFiles()).write(job_dir)
            except (passes.PassRenderError, OSError, ValueError):
                service.discard_job_folder(job_dir)
                raise
            entries[job_id] = StagedJob(job_dir.name, FRAME, bpy.data.filepath, scene.name, params.prompt,
                                        frame=frame, output=str(output))
            prepared.append(job_dir)
    finally:
        _add_to_manifest(jobs_dir, entries)
    return PreparedFrames(prepared, skipped)


def prepare_render(jobs_dir: Path, scene: bpy.types.Scene) -> PreparedFrames:
    """The scene's Render settings as the render operator reads them for an animation: its frame range, one seed
    for the sequence, the numbered files in its Output folder. ParamError when they cannot render."""
    settings: Any = scene.scene_diffusion.render  # type: ignore[attr-defined]
    params, files = render_animation.render_request(scene, settings)
    frames, output, params = render_animation.sequence_request(settings, params)
    return prepare_frames(jobs_dir, scene, params, frames, output, settings.engine, settings.samples,
                          settings.seed_per_frame, files)


# -- apply -------------------------------------------------------------------------------------------------


def apply_jobs(jobs_dir: Path, frames_root: Path | None = None) -> ApplyReport:
    """Bring every finished job of the manifest into the open .blend (textures) or its frames' folder (renders;
    under ``frames_root``/<the prepared folder's name> when given). Jobs not done are reported, never applied;
    a second call applies nothing twice."""
    jobs_dir, report = Path(jobs_dir), ApplyReport()
    open_blend = _blend_key(bpy.data.filepath)
    for job_id, entry in read_manifest(jobs_dir).items():
        if entry.kind == TEXTURE and _texture_landed(job_id):  # also in a copy saved under another name
            report.kept.append(entry.folder)
            continue
        if entry.kind == TEXTURE and _blend_key(entry.blend) != open_blend:
            report.elsewhere[entry.folder] = entry.blend or "an unsaved file"
            continue
        job_dir = jobs_dir / entry.folder
        try:
            outputs = _finished_outputs(job_dir)
        except ValueError as exc:
            report.not_done[entry.folder] = str(exc)
            continue
        try:
            landed = _apply(job_id, job_dir, entry, outputs, frames_root)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:  # a result that cannot land: its files stay
            report.not_done[entry.folder] = f"done, but could not be applied: {exc}"
            continue
        (report.applied if landed else report.kept).append(entry.folder)
    return report


def _texture_landed(job_id: str) -> bool:
    return any(image.get(JOB_KEY) == job_id for image in bpy.data.images)


def _finished_outputs(job_dir: Path) -> TaskOutputs:
    """The typed outputs of a done job (the client's Result path); ValueError saying why it is not done."""
    try:
        record = jobfolder.read_job(job_dir)
    except FileNotFoundError:
        raise ValueError("missing: no job folder") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable {jobfolder.JOB_FILE}: {exc}") from None
    status = record.get("status", "")
    if status != jobfolder.DONE:
        error = record.get("error") or {}
        why = ": ".join(p for p in (error.get("message", ""), error.get("hint", "")) if p)
        raise ValueError(f"{status}: {why}" if why else str(status))
    cls = TASKS.get(record.get("task", ""))
    if cls is None:
        raise ValueError(f"unknown task {record.get('task')!r}")
    try:
        outputs = cls.outputs.from_result(record.get("outputs") or {}, record.get("info") or {})
    except ParamError as exc:
        raise ValueError(f"done, but its outputs do not fit the task: {exc}") from None
    missing = [p for p in outputs.paths() if not (job_dir / p).is_file()]
    if missing:
        raise ValueError(f"done, but its output files are missing: {', '.join(missing)}")
    return outputs


def _apply(job_id: str, job_dir: Path, entry: StagedJob, outputs: TaskOutputs, frames_root: Path | None) -> bool:
    """Bring one job's result in; False when it was already there."""
    if entry.kind == FRAME:
        if not isinstance(outputs, RenderOutputs):
            raise ValueError(f"a frame job whose outputs are {type(outputs).__name__}")
        folder = Path(entry.output) if frames_root is None else Path(frames_root) / Path(entry.output).name
        if render_animation.frame_stored(folder, entry.frame):
            return False
        render_animation.store_frame(job_dir, outputs, folder, entry.frame)
        return True
    if entry.kind != TEXTURE or not isinstance(outputs, TextureOutputs):
        raise ValueError(f"the manifest's kind {entry.kind!r} does not fit a {type(outputs).__name__}")
    params = TextureParams.from_dict(jobfolder.read_job(job_dir)["request"])
    on_result = texture.applier(entry.prompt, entry.objects, entry.with_material, entry.height_mode)
    applied = on_result(Job(job_id, job_dir, params), outputs)  # what the single-machine path runs
    bpy.data.images[applied.image][JOB_KEY] = job_id
    return True
