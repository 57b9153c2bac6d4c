"""Where the add-on keeps its files: the extension's user directory (survives updates)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bpy

ADDON_ID = __package__.rpartition(".")[0]  # e.g. "bl_ext.user_default.scene_diffusion"


def user_dir() -> Path:
    return Path(bpy.utils.extension_path_user(ADDON_ID, path="", create=True))


def jobs_dir() -> Path:
    path = user_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path() -> Path:
    path = user_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path / "backend.log"


def known_servers_path() -> Path:
    """Remote servers' pinned certificate fingerprints (trust on first use)."""
    return user_dir() / "known_servers.json"


def managed_venv() -> Path:
    return user_dir() / "venv"


def unwritable(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (created if missing), or None when they can."""
    if not folder.is_absolute():
        return "Save the .blend first, or choose an absolute folder"
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        return f"{folder} is not writable: choose another folder"
    return None


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
