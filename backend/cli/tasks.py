"""One subcommand per task: its inputs copied into a new job folder at --out, its parameters from the
task's dataclass (``arguments.add_fields``), run in this process with a progress bar."""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.cli.arguments import add_fields, field_values
from contract import jobfolder, messages
from contract.formats import FormatError
from contract.formats.views import referenced_files
from contract.tasks import (
    ImportMeshParams,
    MeshParams,
    ParamError,
    PbrParams,
    ProjectImageParams,
    ProjectTextureParams,
    RenderParams,
    TaskParams,
    TextureParams,
)
from contract.tasks.options import ModelOptions, lora_input, reference_input
from contract.tasks.project import VIEWS_FILE, mesh_inputs

PROJECT_FORMATS = """inputs:
  --mesh     one object's evaluated surface (world space, UVs, corner normals) as MESH.npz:
             see contract/formats/surface.py
  --views    the views file (JSON): per view a camera (camera.json object), its passes EXR
             (Depth, Normal) and, for project-image, the image to project; see contract/formats/views.py.
             The files it names are relative to its folder and are copied along with it.
outputs (in DIR/outputs/): textures/<object>.exr (RGBA float, scene-linear) and .png (sRGB);
project-texture also views/view_NN.png (and .exr), the image generated for each view"""

Prepare = Callable[[Path], object]


class UsageError(ValueError):
    """A missing input file or a bad option value; printed as ``error: ...`` with exit code 2."""


@dataclass(frozen=True)
class Command:
    params: type[TaskParams]
    help: str
    inputs: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], tuple[TaskParams, Prepare | None]]
    skip: tuple[str, ...] = ()
    description: str | None = None


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UsageError(f"no such {what}: {path}")
    return path


def _copy(pairs: list[tuple[Path, Path]]) -> Prepare:
    def prepare(job_dir: Path) -> None:
        for source, relative in pairs:
            (job_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, job_dir / relative)

    return prepare


# -- texture, pbr ---------------------------------------------------------------------------------------------------

def _texture_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seamless", action="store_true", help="tile in X and Y")


def _texture(args: argparse.Namespace) -> tuple[TaskParams, Prepare | None]:
    both = {"seamless_x": True, "seamless_y": True} if args.seamless else {}
    return field_values(args, TextureParams, **both), None


def _pbr_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, type=Path, help="PNG/JPEG (sRGB) or EXR (linear) colour image")
    parser.add_argument("--no-wrap", dest="seamless", action="store_false",
                        help="the image does not tile: do not wrap filters")


def _pbr(args: argparse.Namespace) -> tuple[TaskParams, Prepare | None]:
    source = _existing(args.image, "image")
    params = field_values(args, PbrParams, source=f"inputs/{source.name}", seamless=args.seamless,
                          source_colorspace="linear" if source.suffix.lower() == ".exr" else "srgb")
    return params, _copy([(source, Path(f"inputs/{source.name}"))])


# -- render ---------------------------------------------------------------------------------------------------------

def parse_control(text: str) -> dict[str, object]:
    """"depth=1.0" or "canny=0.5:0.1:0.8" -> a ControlParams object."""
    kind, _, rest = text.partition("=")
    numbers = rest.split(":") if rest else ["1.0"]
    try:
        values = [float(n) for n in numbers]
    except ValueError:
        raise UsageError(f"--control {text!r}: expected KIND=WEIGHT[:START:END]") from None
    control: dict[str, object] = {"kind": kind.strip(), "weight": values[0]}
    if len(values) == 3:
        control.update(start=values[1], end=values[2])
    elif len(values) != 1:
        raise UsageError(f"--control {text!r}: expected KIND=WEIGHT[:START:END]")
    return control


def _render_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passes", required=True, type=Path,
                        help="multilayer EXR with Combined, Depth (Z) and Normal passes, as Blender writes it")
    parser.add_argument("--camera", type=Path, help="camera JSON (needed by the normal control)")
    parser.add_argument("--control", action="append", default=[], metavar="KIND=WEIGHT[:START:END]",
                        help="depth, normal or canny with a weight, e.g. depth=1.0 or canny=0.5:0.1:0.8")
    parser.add_argument("--width", type=int, help="default: the passes' width (rounded to 8)")
    parser.add_argument("--height", type=int, help="default: the passes' height (rounded to 8)")


def _render(args: argparse.Namespace) -> tuple[TaskParams, Prepare | None]:
    from backend.imaging.exr import ExrError, read_exr

    passes = _existing(args.passes, "passes file")
    if args.camera is not None:
        _existing(args.camera, "camera file")
    width, height = args.width, args.height
    if width is None or height is None:
        try:
            first = next(iter(read_exr(passes).layers.values()))
        except ExrError as exc:
            raise UsageError(str(exc)) from None
        width = width or round(first.shape[1] / 8) * 8
        height = height or round(first.shape[0] / 8) * 8
    params = field_values(args, RenderParams, width=width, height=height,
                          controls=[parse_control(c) for c in args.control or ["depth=1.0"]])
    assert isinstance(params, RenderParams)
    pairs = [(passes, Path(params.passes))] + ([(args.camera, Path(params.camera))] if args.camera else [])
    return params, _copy(pairs)


# -- mesh, import-mesh ----------------------------------------------------------------------------------------------

def _mesh_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, type=Path,
                        help="picture of one subject: PNG/JPEG (sRGB), or .npy (H x W x C float, sRGB values)")


def _mesh(args: argparse.Namespace) -> tuple[TaskParams, Prepare | None]:
    source = _existing(args.image, "image")
    relative = f"inputs/image{source.suffix.lower()}"
    return field_values(args, MeshParams, source=relative), _copy([(source, Path(relative))])


def _import_mesh_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", required=True, type=Path, help="mesh file from an image-to-3D tool")


def _import_mesh(args: argparse.Namespace) -> tuple[TaskParams, Prepare | None]:
    from contract.formats.mesh_files import mesh_file_inputs

    source = _existing(args.file, "file")
    try:
        pairs = mesh_file_inputs(source)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    params = ImportMeshParams(source=pairs[0][1], name=source.name)
    return params, _copy([(file, Path(relative)) for file, relative in pairs])


# -- project-image, project-texture ---------------------------------------------------------------------------------

def _project_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mesh", action="append", required=True, type=Path, metavar="MESH.npz",
                        help="an object's mesh (repeat for several objects)")
    parser.add_argument("--views", required=True, type=Path, metavar="VIEWS.json", help="the views file")
    parser.add_argument("--no-fill", dest="fill_unseen", action="store_false",
                        help="leave texels no view saw transparent instead of filling them")
    parser.add_argument("--independent", dest="sequential", action="store_false",
                        help="project-texture: generate every view on its own (default: each view inpaints "
                             "around what the views before it painted)")


def _project(cls: type[TaskParams], images: bool) -> Callable[[argparse.Namespace], tuple[TaskParams, Prepare]]:
    def build(args: argparse.Namespace) -> tuple[TaskParams, Prepare]:
        for path in (*args.mesh, args.views):
            _existing(path, "file")
        meshes = mesh_inputs(len(args.mesh))
        extra = {"sequential": args.sequential} if cls is ProjectTextureParams else {}
        params = field_values(args, cls, meshes=meshes, views=VIEWS_FILE, fill_unseen=args.fill_unseen, **extra)
        try:
            files = referenced_files(args.views, images=images)
        except FormatError as exc:
            raise UsageError(str(exc)) from None
        inputs = Path(VIEWS_FILE).parent
        # Keeping their layout: the views file names them relative to its folder.
        pairs = [(s, Path(m)) for s, m in zip(args.mesh, meshes, strict=True)] + [(args.views, Path(VIEWS_FILE))]
        pairs += [(args.views.parent / relative, inputs / relative) for relative in files]
        return params, _copy(pairs)

    return build


# -- LoRAs and the reference image (texture, render, project-texture) ------------------------------------------------

def _model_option_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                        help="a LoRA (.safetensors) with its weight (default 1.0); repeat for several")
    parser.add_argument("--reference", type=Path, metavar="IMAGE",
                        help="style/reference image (IP-Adapter), strength from --reference-strength")


def parse_lora(text: str) -> tuple[Path, float]:
    """"style.safetensors:0.8" -> (path, 0.8); a bare path has weight 1 (a Windows drive colon is no weight)."""
    path, sep, weight = text.rpartition(":")
    if not sep or not path or "/" in weight or "\\" in weight:
        return Path(text), 1.0
    try:
        return Path(path), float(weight)
    except ValueError:
        raise UsageError(f"--lora {text!r}: expected FILE[:WEIGHT], e.g. style.safetensors:0.8") from None


def _with_model_options(params: TaskParams, prepare: Prepare | None,
                        args: argparse.Namespace) -> tuple[TaskParams, Prepare]:
    pairs: list[tuple[Path, str]] = []
    loras = []
    for index, text in enumerate(args.lora):
        path, weight = parse_lora(text)
        _existing(path, "LoRA file")
        relative = lora_input(index, path.name)
        loras.append({"file": relative, "weight": weight, "name": path.name})
        pairs.append((path, relative))
    changes: dict[str, Any] = {"loras": loras}
    if args.reference is not None:
        source = _existing(args.reference, "reference image")
        changes["reference"] = reference_input(source.suffix)
        pairs.append((source, changes["reference"]))
    def both(job_dir: Path) -> None:
        if prepare is not None:
            prepare(job_dir)
        jobfolder.place_inputs(job_dir, pairs)  # LoRAs: hard-linked where the file system allows

    return params.replace(**changes), both


COMMANDS = {
    "texture": Command(TextureParams, "generate a texture into a job folder", _texture_inputs, _texture),
    "pbr": Command(PbrParams, "derive PBR maps (EXR) from a colour image into a job folder", _pbr_inputs, _pbr,
                   skip=("source", "source_colorspace", "seamless")),
    "render": Command(RenderParams, "ControlNet-guided render from a passes EXR into a job folder", _render_inputs,
                      _render, skip=("passes", "camera", "width", "height")),
    "mesh": Command(MeshParams, "image to 3D (Shap-E): a mesh with vertex colours into a job folder", _mesh_inputs,
                    _mesh, skip=("source", "source_colorspace")),
    "import-mesh": Command(ImportMeshParams, "read a GLB/glTF/OBJ/PLY mesh into a job folder (mesh.npz)",
                           _import_mesh_inputs, _import_mesh, skip=("source", "name")),
    "project-image": Command(ProjectImageParams, "project images from cameras onto objects, baked into their UV maps",
                             _project_inputs, _project(ProjectImageParams, True), skip=("views", "fill_unseen"),
                             description=PROJECT_FORMATS),
    "project-texture": Command(ProjectTextureParams, "generate one image per view (depth/normal ControlNets), "
                               "baked onto objects", _project_inputs, _project(ProjectTextureParams, False),
                               skip=("views", "fill_unseen", "sequential"), description=PROJECT_FORMATS),
}
ALIASES = {"bake": "project-image"}  # the name project-image had before it was one name everywhere
TASK_COMMANDS = (*COMMANDS, *ALIASES)


def add_task_commands(sub: Any, engine_options: Callable[[argparse.ArgumentParser], None]) -> None:
    for name, command in COMMANDS.items():
        parser = sub.add_parser(name, help=command.help, description=command.description,
                                aliases=[a for a, target in ALIASES.items() if target == name],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        command.inputs(parser)
        if issubclass(command.params, ModelOptions):
            _model_option_inputs(parser)
        add_fields(parser, command.params, skip=(*command.skip, "reference"))
        parser.add_argument("--out", required=True, type=Path, help="job folder to create")
        engine_options(parser)


def run_task_command(args: argparse.Namespace) -> int:
    command = COMMANDS[ALIASES.get(args.command, args.command)]
    try:
        params, prepare = command.build(args)
        if isinstance(params, ModelOptions):
            params, prepare = _with_model_options(params, prepare, args)
    except (UsageError, ParamError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_in_folder(params, args, prepare)


def run_in_folder(params: TaskParams, args: argparse.Namespace, prepare: Prepare | None = None) -> int:
    """Create the job folder at --out (``prepare`` puts inputs there), then run the task in
    this process with a progress bar."""
    from tqdm import tqdm

    from backend.runner import make_engine, run_job

    request = params.to_dict()
    try:
        job_dir = jobfolder.create_job(args.out.parent, params.task, request, at=args.out)
        if prepare is not None:
            prepare(job_dir)
        engine = make_engine(args.device, args.precision, args.registry, args.allow_download, args.allow_unsafe,
                             args.vram_budget)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - TaskError and friends: message and hint, no trace
        print(f"error: {getattr(exc, 'message', exc)}\n{getattr(exc, 'hint', '')}", file=sys.stderr)
        return 2
    bar = tqdm(total=None, unit="step", file=sys.stderr, desc=params.task)

    def send(message: messages.Message) -> None:
        if isinstance(message, messages.Progress):
            bar.total = message.total
            bar.n = message.step
            bar.refresh()

    submit = messages.Submit(jobfolder.new_job_id(), params.task, str(job_dir), request)
    try:
        final = run_job(engine, submit, send, threading.Event())
    except KeyboardInterrupt:
        jobfolder.update_job(job_dir, status=jobfolder.CANCELLED)
        print("\ncancelled", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if isinstance(final, messages.Result):
        for name, value in final.outputs.items():
            for rel in value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]:
                if rel:
                    print(f"{name}: {job_dir / rel}")
        return 0
    if isinstance(final, messages.Error):
        print(f"error: {final.message}\n{final.hint}", file=sys.stderr)
    return 1
