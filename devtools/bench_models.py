"""The models a benchmark runs on, found (or built) the same way by every script in bench/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.tiny_models import tiny_folder


def registry_for_bench(root: Path, version: str) -> str:
    """``$SCENE_DIFFUSION_MODELS`` when set, else the checkout's tiny build (built first by
    ``python -m backend models make-tiny`` in a child process, so the caller imports no torch for it)."""
    registry = os.environ.get("SCENE_DIFFUSION_MODELS")
    if registry:
        return registry
    folder = tiny_folder(root, version)
    if not (folder / "registry.json").is_file():
        subprocess.run([sys.executable, "-m", "backend", "models", "make-tiny", str(folder)], cwd=root, check=True)
    return str(folder)
