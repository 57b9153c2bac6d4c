"""Command line: the server for the add-on, and every capability for shells and scripts.

    python -m backend serve
    python -m backend texture --prompt "mossy stone wall" --seamless --out DIR
    python -m backend pbr --image wall.png --out DIR
    python -m backend render --passes passes.exr --prompt "a cottage" --control depth=1.0 --out DIR
    python -m backend mesh --image subject.png --out DIR
    python -m backend import-mesh --file model.glb --out DIR
    python -m backend bake --mesh MESH.npz [--mesh ...] --views VIEWS.json --size 2048 --out DIR
    python -m backend project-texture --mesh MESH.npz --views VIEWS.json --prompt "old bronze" --out DIR
    python -m backend models make-tiny DIR | list | check
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from backend import jobfolder, protocol

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--registry", help="registry file or folder (default: $SCENE_DIFFUSION_MODELS, "
                                           "else the built-in Hugging Face ids)")
    parser.add_argument("--allow-download", action="store_true",
                        help="download missing models from the Hugging Face hub")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="also load pickled .bin weights (safetensors only by default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="JSON-lines server for the Blender add-on")
    _engine_options(serve)

    texture = sub.add_parser("texture", help="generate a texture into a job folder")
    texture.add_argument("--prompt", required=True)
    texture.add_argument("--negative-prompt", default="")
    texture.add_argument("--seed", type=int, default=-1, help="-1: random (recorded in job.json)")
    texture.add_argument("--steps", type=int, default=20)
    texture.add_argument("--guidance", type=float, default=7.5)
    texture.add_argument("--width", type=int, default=512)
    texture.add_argument("--height", type=int, default=512)
    texture.add_argument("--seamless", action="store_true", help="tile in X and Y")
    texture.add_argument("--seamless-x", action="store_true")
    texture.add_argument("--seamless-y", action="store_true")
    texture.add_argument("--model", default="", help="registry model name (default: role text_to_image)")
    texture.add_argument("--out", required=True, type=Path, help="job folder to create")
    _engine_options(texture)

    pbr = sub.add_parser("pbr", help="derive PBR maps (EXR) from a colour image into a job folder")
    pbr.add_argument("--image", required=True, type=Path, help="PNG/JPEG (sRGB) or EXR (linear) colour image")
    pbr.add_argument("--method", choices=("filters", "marigold"), default="filters")
    pbr.add_argument("--normal-strength", type=float, default=1.0)
    pbr.add_argument("--detail-radius", type=float, default=16.0)
    pbr.add_argument("--invert-height", action="store_true")
    pbr.add_argument("--no-wrap", action="store_true", help="the image does not tile: do not wrap filters")
    pbr.add_argument("--steps", type=int, default=4, help="marigold denoising steps")
    pbr.add_argument("--out", required=True, type=Path, help="job folder to create")
    _engine_options(pbr)

    render = sub.add_parser("render", help="ControlNet-guided render from a passes EXR into a job folder")
    render.add_argument("--passes", required=True, type=Path,
                        help="multilayer EXR with Combined, Depth (Z) and Normal passes, as Blender writes it")
    render.add_argument("--camera", type=Path, help="camera JSON (needed by the normal control)")
    render.add_argument("--prompt", required=True)
    render.add_argument("--negative-prompt", default="")
    render.add_argument("--control", action="append", default=[], metavar="KIND=WEIGHT[:START:END]",
                        help="depth, normal or canny with a weight, e.g. depth=1.0 or canny=0.5:0.1:0.8")
    render.add_argument("--canny-low", type=int, default=100)
    render.add_argument("--canny-high", type=int, default=200)
    render.add_argument("--img2img", action="store_true", help="start from the Combined pass")
    render.add_argument("--strength", type=float, default=0.75)
    render.add_argument("--seed", type=int, default=-1)
    render.add_argument("--steps", type=int, default=20)
    render.add_argument("--guidance", type=float, default=7.5)
    render.add_argument("--width", type=int, help="default: the passes' width (rounded to 8)")
    render.add_argument("--height", type=int, help="default: the passes' height (rounded to 8)")
    render.add_argument("--model", default="")
    render.add_argument("--out", required=True, type=Path, help="job folder to create")
    _engine_options(render)

    mesh = sub.add_parser("mesh", help="image to 3D (Shap-E): a mesh with vertex colours into a job folder")
    mesh.add_argument("--image", required=True, type=Path,
                      help="picture of one subject: PNG/JPEG (sRGB), or .npy (H x W x C float, sRGB values)")
    mesh.add_argument("--background", choices=("auto", "alpha", "none"), default="auto",
                      help="auto: alpha if present, else remove a plain border-coloured background; "
                           "alpha: use the alpha channel; none: use the whole image")
    mesh.add_argument("--tolerance", type=float, default=0.08, help="background colour tolerance (0-1)")
    mesh.add_argument("--steps", type=int, default=64)
    mesh.add_argument("--guidance", type=float, default=3.0)
    mesh.add_argument("--seed", type=int, default=-1, help="-1: random (recorded in job.json)")
    mesh.add_argument("--frame-size", type=int, default=64,
                      help="mesh resolution: cells per side of the grid the surface is extracted on")
    mesh.add_argument("--model", default="", help="registry model name (default: role image_to_3d)")
    mesh.add_argument("--out", required=True, type=Path, help="job folder to create")
    _engine_options(mesh)

    import_mesh = sub.add_parser("import-mesh", help="read a GLB/glTF/OBJ/PLY mesh into a job folder (mesh.npz)")
    import_mesh.add_argument("--file", required=True, type=Path, help="mesh file from an image-to-3D tool")
    import_mesh.add_argument("--out", required=True, type=Path, help="job folder to create")
    _engine_options(import_mesh)

    bake = sub.add_parser("bake", help="project images from cameras onto objects, baked into their UV maps",
                          description=BAKE_FORMATS, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bake_options(bake)
    _engine_options(bake)

    project = sub.add_parser("project-texture", description=BAKE_FORMATS,
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             help="generate one image per view (depth/normal ControlNets), baked onto objects")
    _bake_options(project)
    project.add_argument("--prompt", required=True)
    project.add_argument("--negative-prompt", default="")
    project.add_argument("--seed", type=int, default=-1, help="-1: random; view k uses seed + k")
    project.add_argument("--steps", type=int, default=20)
    project.add_argument("--guidance", type=float, default=7.5)
    project.add_argument("--width", type=int, default=512, help="generation width of every view")
    project.add_argument("--height", type=int, default=512, help="generation height of every view")
    project.add_argument("--depth-weight", type=float, default=1.0)
    project.add_argument("--normal-weight", type=float, default=0.0,
                         help="above 0: also a normal ControlNet (the passes need a Normal layer)")
    project.add_argument("--independent", action="store_true",
                         help="generate every view on its own (default: each view inpaints around what the "
                              "views before it painted)")
    project.add_argument("--model", default="", help="registry model name (default: role text_to_image)")
    _engine_options(project)

    models = sub.add_parser("models", help="model registry tools")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    tiny = models_sub.add_parser("make-tiny", help="build tiny random-weight pipelines for tests and demos")
    tiny.add_argument("dest", type=Path)
    for name in ("list", "check"):
        cmd = models_sub.add_parser(name, help=f"{name} what the registry resolves to")
        cmd.add_argument("--registry")
        cmd.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        from backend.server import serve

        return serve(args.device, args.precision, args.registry, args.allow_download, args.allow_unsafe)
    if args.command == "texture":
        return _texture(args)
    if args.command == "pbr":
        return _pbr(args)
    if args.command == "render":
        return _render(args)
    if args.command == "mesh":
        return _mesh(args)
    if args.command == "import-mesh":
        return _import_mesh(args)
    if args.command in ("bake", "project-texture"):
        return _bake(args)
    return _models(args)


def _models(args: argparse.Namespace) -> int:
    from backend import models

    if args.models_command == "make-tiny":
        from backend.tiny import make_tiny

        print(make_tiny(args.dest))
        return 0
    try:
        registry = models.load_registry(args.registry)
    except models.ModelError as exc:
        print(f"error: {exc.message}\n{exc.hint}", file=sys.stderr)
        return 2
    rows = models.describe(registry) if args.models_command == "list" else models.check(registry)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(f"registry: {registry.path or 'built-in defaults'}")
        for row in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0 if args.models_command == "list" or all(r.get("ok") for r in rows) else 1


def _texture(args: argparse.Namespace) -> int:
    from backend.params import ParamError, TextureParams

    try:
        params = TextureParams(
            prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps,
            guidance=args.guidance, width=args.width, height=args.height,
            seamless_x=args.seamless or args.seamless_x, seamless_y=args.seamless or args.seamless_y,
            model=args.model)
    except ParamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_in_folder("texture", params.to_dict(), args)


def _pbr(args: argparse.Namespace) -> int:
    from backend.params import ParamError, PbrParams

    source = args.image
    if not source.is_file():
        print(f"error: no such image: {source}", file=sys.stderr)
        return 2
    try:
        params = PbrParams(source=f"inputs/{source.name}", method=args.method,
                           source_colorspace="linear" if source.suffix.lower() == ".exr" else "srgb",
                           normal_strength=args.normal_strength, detail_radius=args.detail_radius,
                           invert_height=args.invert_height, seamless=not args.no_wrap, steps=args.steps)
    except ParamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_in_folder("pbr", params.to_dict(), args,
                         prepare=lambda job_dir: shutil.copy(source, job_dir / params.source))


def parse_control(text: str) -> dict[str, object]:
    """"depth=1.0" or "canny=0.5:0.1:0.8" -> a ControlParams dict."""
    kind, _, rest = text.partition("=")
    numbers = rest.split(":") if rest else ["1.0"]
    try:
        values = [float(n) for n in numbers]
    except ValueError:
        raise ValueError(f"--control {text!r}: expected KIND=WEIGHT[:START:END]") from None
    control: dict[str, object] = {"kind": kind.strip(), "weight": values[0]}
    if len(values) == 3:
        control.update(start=values[1], end=values[2])
    elif len(values) != 1:
        raise ValueError(f"--control {text!r}: expected KIND=WEIGHT[:START:END]")
    return control


def _render(args: argparse.Namespace) -> int:
    from backend.imaging.exr import ExrError, read_exr
    from backend.params import ParamError, RenderParams

    try:
        if not args.passes.is_file():
            raise ValueError(f"no such passes file: {args.passes}")
        if args.camera is not None and not args.camera.is_file():
            raise ValueError(f"no such camera file: {args.camera}")
        width, height = args.width, args.height
        if width is None or height is None:
            first = next(iter(read_exr(args.passes).layers.values()))
            width = width or round(first.shape[1] / 8) * 8
            height = height or round(first.shape[0] / 8) * 8
        params = RenderParams(
            prompt=args.prompt, controls=[parse_control(c) for c in args.control or ["depth=1.0"]],
            negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps, guidance=args.guidance,
            width=width, height=height, canny_low=args.canny_low, canny_high=args.canny_high,
            img2img=args.img2img, strength=args.strength, model=args.model)
    except (ValueError, ParamError, ExrError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def prepare(job_dir: Path) -> None:
        shutil.copy(args.passes, job_dir / params.passes)
        if args.camera is not None:
            shutil.copy(args.camera, job_dir / params.camera)

    return run_in_folder("render", params.to_dict(), args, prepare=prepare)


def _mesh(args: argparse.Namespace) -> int:
    from backend.params import MeshParams, ParamError

    source = args.image
    if not source.is_file():
        print(f"error: no such image: {source}", file=sys.stderr)
        return 2
    try:
        params = MeshParams(source=f"inputs/image{source.suffix.lower()}", background=args.background,
                            tolerance=args.tolerance, steps=args.steps, guidance=args.guidance, seed=args.seed,
                            frame_size=args.frame_size, model=args.model)
    except ParamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_in_folder("mesh", params.to_dict(), args,
                         prepare=lambda job_dir: shutil.copy(source, job_dir / params.source))


def _import_mesh(args: argparse.Namespace) -> int:
    from backend.params import ImportMeshParams, ParamError

    if not args.file.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        params = ImportMeshParams(path=str(args.file.resolve()))
    except ParamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_in_folder("import_mesh", params.to_dict(), args)


BAKE_FORMATS = """inputs:
  --mesh     one object's evaluated surface (world space, UVs, corner normals) as MESH.npz:
             see backend/geometry/bake_mesh.py
  --views    the views file (JSON): per view a camera (camera.json object), its passes EXR
             (Depth, Normal) and, for bake, the image to project; see backend/tasks/bake_inputs.py.
             The files it names are relative to its folder and are copied along with it.
outputs (in DIR/outputs/): textures/<object>.exr (RGBA float, scene-linear) and .png (sRGB);
project-texture also views/view_NN.png (and .exr), the image generated for each view"""


def _bake_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mesh", action="append", required=True, type=Path, metavar="MESH.npz",
                        help="an object's mesh (repeat for several objects)")
    parser.add_argument("--views", required=True, type=Path, metavar="VIEWS.json", help="the views file")
    parser.add_argument("--size", type=int, default=1024, help="texture width and height in pixels")
    parser.add_argument("--blend-exponent", type=float, default=4.0,
                        help="view weight = cos(angle to the view) ** this: higher favours views that see a "
                             "surface squarely")
    parser.add_argument("--padding", type=int, default=8, help="texels of padding around each UV island")
    parser.add_argument("--depth-tolerance", type=float, default=0.01,
                        help="relative depth slack before a texel counts as hidden in a view")
    parser.add_argument("--no-fill", action="store_true",
                        help="leave texels no view saw transparent instead of filling them")
    parser.add_argument("--out", required=True, type=Path, help="job folder to create")


def _bake(args: argparse.Namespace) -> int:
    from backend.params import BakeParams, ParamError, ProjectTextureParams
    from backend.tasks.bake_inputs import referenced_files
    from backend.tasks.context import TaskError

    task = "bake" if args.command == "bake" else "project_texture"
    meshes = [f"inputs/meshes/{index:02d}.npz" for index in range(len(args.mesh))]
    bake_fields = dict(meshes=meshes, views="inputs/views.json", size=args.size, blend_exponent=args.blend_exponent,
                       padding=args.padding, depth_tolerance=args.depth_tolerance, fill_unseen=not args.no_fill)
    try:
        missing = [str(path) for path in (*args.mesh, args.views) if not path.is_file()]
        if missing:
            raise ValueError(f"no such file: {', '.join(missing)}")
        params: BakeParams | ProjectTextureParams
        if task == "bake":
            params = BakeParams(**bake_fields)  # type: ignore[arg-type]
        else:
            params = ProjectTextureParams(
                prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps,
                guidance=args.guidance, width=args.width, height=args.height, model=args.model,
                depth_weight=args.depth_weight, normal_weight=args.normal_weight, sequential=not args.independent,
                **bake_fields)  # type: ignore[arg-type]
        files = referenced_files(args.views, images=task == "bake")
    except (ValueError, ParamError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TaskError as exc:
        print(f"error: {exc.message}\n{exc.hint}", file=sys.stderr)
        return 2

    def prepare(job_dir: Path) -> None:
        for source, mesh in zip(args.mesh, meshes, strict=True):
            (job_dir / mesh).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, job_dir / mesh)
        inputs = job_dir / jobfolder.INPUTS
        shutil.copy(args.views, inputs / "views.json")
        for relative in files:  # keeping their layout: the views file names them relative to its folder
            target = inputs / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(args.views.parent / relative, target)

    return run_in_folder(task, params.to_dict(), args, prepare=prepare)


def run_in_folder(task: str, request: dict[str, object], args: argparse.Namespace,
                  prepare: Callable[[Path], object] | None = None) -> int:
    """Create the job folder at --out (``prepare`` puts inputs there), then run the task in
    this process with a progress bar."""
    from tqdm import tqdm

    from backend.runner import make_engine, run_job

    try:
        job_dir = jobfolder.create_job(args.out.parent, task, request, at=args.out)
        if prepare is not None:
            prepare(job_dir)
        engine = make_engine(args.device, args.precision, args.registry, args.allow_download, args.allow_unsafe)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - ModelError and friends: message and hint, no trace
        print(f"error: {getattr(exc, 'message', exc)}\n{getattr(exc, 'hint', '')}", file=sys.stderr)
        return 2
    bar = tqdm(total=None, unit="step", file=sys.stderr, desc=task)

    def send(message: protocol.Message) -> None:
        if isinstance(message, protocol.Progress):
            bar.total = message.total
            bar.n = message.step
            bar.refresh()

    cancel = threading.Event()
    submit = protocol.Submit(jobfolder.new_job_id(), task, str(job_dir), request)
    try:
        final = run_job(engine, submit, send, cancel)
    except KeyboardInterrupt:
        jobfolder.update_job(job_dir, status=jobfolder.CANCELLED)
        print("\ncancelled", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if isinstance(final, protocol.Result):
        for name, rel in final.outputs.items():
            print(f"{name}: {job_dir / rel}")
        return 0
    if isinstance(final, protocol.Error):
        print(f"error: {final.message}\n{final.hint}", file=sys.stderr)
    return 1
