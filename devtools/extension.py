"""Build, validate and install the extension with Blender's own extension tooling.

Standard library only. Blender's extension command line (``blender_ext.py``) ships inside
the ``bpy`` wheel from PyPI; it is found through the import machinery without importing
``bpy`` and is run with the current interpreter, so no Blender binary is needed::

    python -m devtools.extension build [--out-dir dist] [--source-dir .]
    python -m devtools.extension validate [ZIP_OR_DIR]

Installing goes through Blender's real operator and so needs ``bpy`` in the calling
process. Point Blender's user folders at a scratch directory first, *before* ``import bpy``
(the paths are read once, when the module initialises)::

    from devtools import extension
    extension.prepare_user_dir(tmp)   # sets BLENDER_USER_* environment variables
    import bpy
    module_name = extension.install(zip_path)   # "bl_ext.user_default.scene_diffusion"
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
"""The repository root, which is also the extension root (holds ``blender_manifest.toml``)."""

MANIFEST_NAME = "blender_manifest.toml"
DEFAULT_REPO = "user_default"

_CLI_RELATIVE = Path("scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")
_TAGS_RELATIVE = Path("scripts", "modules", "_bpy_internal", "extensions", "tags.py")

# Environment variables Blender reads once at start-up to place its user folders. Setting
# BLENDER_USER_RESOURCES alone moves all of them; the specific ones are set as well so that
# a value inherited from the caller's environment cannot win over the scratch folder.
_USER_DIR_VARS = {
    "BLENDER_USER_RESOURCES": "",
    "BLENDER_USER_CONFIG": "config",
    "BLENDER_USER_SCRIPTS": "scripts",
    "BLENDER_USER_EXTENSIONS": "extensions",
    "BLENDER_USER_DATAFILES": "datafiles",
}


class ExtensionCLIError(RuntimeError):
    """Blender's extension command line failed; ``output`` holds what it printed."""

    def __init__(self, command: list[str], returncode: int, output: str) -> None:
        self.command = command
        self.returncode = returncode
        self.output = output
        super().__init__(
            f"blender_ext {command[0]} failed (exit {returncode}):\n{output.strip()}"
        )


class Manifest(NamedTuple):
    id: str
    version: str


def read_manifest(source_dir: Path = ROOT) -> Manifest:
    """The extension id and version from ``blender_manifest.toml``."""
    with open(Path(source_dir) / MANIFEST_NAME, "rb") as fh:
        data = tomllib.load(fh)
    return Manifest(id=str(data["id"]), version=str(data["version"]))


def bpy_package_dir() -> Path:
    """The installed ``bpy`` package folder, located without importing ``bpy``."""
    spec = importlib.util.find_spec("bpy")
    if spec is None:
        raise RuntimeError(
            f"the 'bpy' module is not installed for {sys.executable}; "
            "install bpy from PyPI (see requirements-dev.txt) or run `make venv`"
        )
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin is None:
        raise RuntimeError("cannot locate the 'bpy' package folder")
    return Path(spec.origin).parent


def _bpy_version_dirs() -> list[Path]:
    """``<bpy>/<major.minor>/`` folders, newest first."""
    root = bpy_package_dir()

    def key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.name.split("."))

    found = [p for p in root.glob("[0-9]*.[0-9]*") if p.is_dir()]
    return sorted(found, key=key, reverse=True)


def find_cli() -> Path:
    """Path of Blender's ``blender_ext.py`` inside the installed ``bpy`` wheel."""
    for version_dir in _bpy_version_dirs():
        candidate = version_dir / _CLI_RELATIVE
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        f"Blender's extension CLI (<bpy>/<version>/{_CLI_RELATIVE.as_posix()}) "
        f"was not found under {bpy_package_dir()}"
    )


def find_valid_tags() -> Path | None:
    """Blender's list of valid extension tags (``tags.py``), if the wheel has it."""
    for version_dir in _bpy_version_dirs():
        candidate = version_dir / _TAGS_RELATIVE
        if candidate.is_file():
            return candidate
    return None


def run_cli(*args: str) -> str:
    """Run ``blender_ext.py ARGS`` with this interpreter; return its output or raise."""
    command = [sys.executable, "-I", str(find_cli()), *args]
    proc = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ExtensionCLIError(list(args), proc.returncode, proc.stdout)
    return proc.stdout


def _tags_args() -> list[str]:
    tags = find_valid_tags()
    return ["--valid-tags", str(tags)] if tags is not None else []


def build(out_dir: str | os.PathLike[str] = ROOT / "dist",
          source_dir: str | os.PathLike[str] = ROOT) -> Path:
    """Build ``<out_dir>/<id>-<version>.zip`` from ``source_dir``; return its path.

    Files are chosen by the manifest's ``[build] paths_exclude_pattern``; tags are checked
    against Blender's own list.
    """
    source = Path(source_dir).resolve()
    manifest = read_manifest(source)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"{manifest.id}-{manifest.version}.zip"
    if zip_path.exists():
        zip_path.unlink()
    run_cli(
        "build",
        "--source-dir", str(source),
        "--output-filepath", str(zip_path),
        *_tags_args(),
    )
    if not zip_path.is_file():
        raise RuntimeError(f"blender_ext build reported success but wrote no {zip_path}")
    return zip_path


def validate(path: str | os.PathLike[str]) -> str:
    """Validate a built zip (or a source folder) with ``blender_ext.py validate``.

    Returns the validator's output; raises :class:`ExtensionCLIError` on failure.
    """
    target = Path(path).resolve()
    if not target.exists():
        raise FileNotFoundError(target)
    return run_cli("validate", *_tags_args(), str(target))


def prepare_user_dir(path: str | os.PathLike[str]) -> dict[str, str]:
    """Point Blender's user folders (config, scripts, extensions, datafiles) at ``path``.

    Must be called BEFORE ``import bpy``: Blender reads these variables once, when the
    module initialises. Nothing is then written under ``~/.config/blender``. Returns the
    variables that were set.
    """
    if "bpy" in sys.modules:
        raise RuntimeError(
            "prepare_user_dir() must run before `import bpy`; bpy is already imported "
            "and keeps its user folders"
        )
    base = Path(path).resolve()
    base.mkdir(parents=True, exist_ok=True)
    env = {name: str(base / sub) if sub else str(base) for name, sub in _USER_DIR_VARS.items()}
    os.environ.update(env)
    return env


def install(zip_path: str | os.PathLike[str], *, repo: str = DEFAULT_REPO,
            enable: bool = True) -> str:
    """Install a built zip into a user repository with Blender's own operator.

    Call in a process that has already imported ``bpy`` (after :func:`prepare_user_dir`).
    Offline works: installing from a file needs no online access. Returns the add-on's
    module name, e.g. ``"bl_ext.user_default.scene_diffusion"``; with ``enable`` it is
    enabled (registered) on return.
    """
    bpy = sys.modules.get("bpy")
    if bpy is None:
        raise RuntimeError("install() needs bpy imported in this process "
                           "(call prepare_user_dir() first, then `import bpy`)")
    source = Path(zip_path).resolve()
    if not source.is_file():
        raise FileNotFoundError(source)

    import zipfile

    with zipfile.ZipFile(source) as zf, zf.open(MANIFEST_NAME) as fh:
        pkg_id = str(tomllib.load(fh)["id"])

    module_name = f"bl_ext.{repo}.{pkg_id}"
    # The operator reports ERROR as a RuntimeError; a CANCELLED result is turned into one.
    result = bpy.ops.extensions.package_install_files(
        filepath=str(source), repo=repo, enable_on_install=enable,
    )
    if "FINISHED" not in result:
        raise RuntimeError(f"installing {source} into {repo!r} returned {set(result)}")

    installed = Path(bpy.utils.user_resource("EXTENSIONS", path=repo)) / pkg_id
    if not (installed / MANIFEST_NAME).is_file():
        raise RuntimeError(f"{source} was not installed at {installed}")
    if enable and module_name not in bpy.context.preferences.addons:
        raise RuntimeError(
            f"{module_name} was installed at {installed} but is not enabled "
            "(its register() probably failed; see the output above)"
        )
    return module_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.extension", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the extension zip")
    p_build.add_argument("--out-dir", default=str(ROOT / "dist"))
    p_build.add_argument("--source-dir", default=str(ROOT))
    p_validate = sub.add_parser(
        "validate", help="validate a zip or folder (default: build into a temp dir, check that)")
    p_validate.add_argument("path", nargs="?")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            print(build(args.out_dir, args.source_dir))
        elif args.path is not None:
            print(validate(args.path).strip() or "valid")
        else:
            with tempfile.TemporaryDirectory(prefix="scene_diffusion_build_") as tmp:
                zip_path = build(tmp)
                print(validate(zip_path).strip() or "valid")
    except (ExtensionCLIError, RuntimeError, FileNotFoundError) as ex:
        print(ex, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
