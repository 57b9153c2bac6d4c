"""Import the repository as the package ``scene_diffusion`` outside Blender.

The add-on's modules use relative imports (``from ..backend import protocol``) because
Blender installs the extension as ``bl_ext.<repo>.scene_diffusion``. Tests of its bpy-free
parts (client, supervisor, setup) import it through a symlink named like the extension.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
_link_dir: Path | None = None


def import_addon_module(name: str) -> ModuleType:
    """``import_addon_module("addon.jobs.supervisor")`` -> scene_diffusion.addon.jobs.supervisor."""
    global _link_dir
    if _link_dir is None:
        _link_dir = Path(tempfile.mkdtemp(prefix="scene-diffusion-pkg-"))
        (_link_dir / "scene_diffusion").symlink_to(ROOT, target_is_directory=True)
        sys.path.insert(0, str(_link_dir))
    return importlib.import_module(f"scene_diffusion.{name}")
