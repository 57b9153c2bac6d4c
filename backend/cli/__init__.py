"""Command line: the server for the add-on, and every capability for shells and scripts.

    python -m backend serve
    python -m backend serve --listen 0.0.0.0:8765 [--root DIR] [--token-file PATH]
    python -m backend texture --prompt "mossy stone wall" --seamless --out DIR
    python -m backend pbr --image wall.png --out DIR
    python -m backend render --passes passes.exr --prompt "a cottage" --control depth=1.0 --out DIR
    python -m backend mesh --image subject.png --out DIR
    python -m backend import-mesh --file model.glb --out DIR
    python -m backend project-image --mesh MESH.npz [--mesh ...] --views VIEWS.json --size 2048 --out DIR
    python -m backend project-texture --mesh MESH.npz --views VIEWS.json --prompt "old bronze" --out DIR
    python -m backend batch --jobs JOBS_DIR [--ray auto | --local N] [--out DIR]
    python -m backend models make-tiny DIR | list | check
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from backend.cli.batch import add_batch_command, run_batch_command
from backend.cli.tasks import TASK_COMMANDS, add_task_commands, run_task_command

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
VRAM_BUDGETS = ("auto", "high", "12gb", "8gb", "6gb")


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--registry", help="registry file or folder (default: $SCENE_DIFFUSION_MODELS, "
                                           "else the built-in Hugging Face ids)")
    parser.add_argument("--allow-download", action="store_true",
                        help="download missing models from the Hugging Face hub")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="also load pickled .bin weights (safetensors only by default)")
    # backend.diffusion.memory.VRAM_BUDGETS (a test keeps them equal), spelled out so --help needs no torch.
    parser.add_argument("--vram-budget", choices=VRAM_BUDGETS, default="auto",
                        help="GPU memory to plan for: auto (by the card), high (all on the GPU), 12gb, 8gb (model "
                             "offload), 6gb (sequential offload); VAE tiling and attention slicing as needed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="JSON-lines server for the Blender add-on (stdio, or --listen)")
    _engine_options(serve)
    serve.add_argument("--user-models", metavar="FILE",
                       help="the add-on's list of the artist's own checkpoints, merged into the registry")
    net = serve.add_argument_group("network", "serve many add-ons over TLS instead of one over stdin/stdout")
    net.add_argument("--listen", metavar="HOST:PORT",
                     help="listen for add-ons on this address; ':8765' is loopback only, "
                          "other machines need the host spelled out (e.g. 0.0.0.0:8765)")
    net.add_argument("--root", type=Path, help="where the token, certificate, uploads and jobs live "
                                               "(default: a per-user data folder)")
    net.add_argument("--token-file", type=Path, help="shared token, made on first start (default: ROOT/token)")
    net.add_argument("--insecure", action="store_true", help="plain TCP, allowed on a loopback address only")
    net.add_argument("--max-upload-mb", type=int, default=2048, help="largest upload, and a job's inputs together")
    net.add_argument("--keep-jobs", type=int, default=200, help="finished jobs kept for clients to collect")
    net.add_argument("--orphan-grace", type=float, default=120.0, metavar="S",
                     help="cancel the queued jobs of a client gone for this many seconds")

    add_task_commands(sub, _engine_options)
    add_batch_command(sub, _engine_options)

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
    if args.command == "serve" and args.listen is not None:
        from backend.engine_options import EngineOptions
        from backend.remote.listener import NetworkOptions, serve_network

        return serve_network(NetworkOptions(
            args.listen, args.token_file, args.root, args.insecure, args.max_upload_mb, args.keep_jobs,
            args.orphan_grace, EngineOptions.from_args(args)))
    if args.command == "serve":
        if args.insecure or args.root or args.token_file:
            print("error: --root, --token-file and --insecure go with --listen", file=sys.stderr)
            return 2
        from backend.engine_options import EngineOptions
        from backend.server import serve

        return serve(EngineOptions.from_args(args), args.user_models)
    if args.command == "batch":
        return run_batch_command(args)
    if args.command in TASK_COMMANDS:
        return run_task_command(args)
    return _models(args)


def _models(args: argparse.Namespace) -> int:
    from backend import models

    if args.models_command == "make-tiny":
        try:
            from devtools.tiny_models import make_tiny
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("devtools"):
                raise
            print("error: make-tiny needs the repository checkout (devtools/ is not shipped in the extension zip)",
                  file=sys.stderr)
            return 2
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
