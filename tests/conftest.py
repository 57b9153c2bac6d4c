"""Shared fixtures for every test folder (unit/, backend/, blender/).

Nothing here imports bpy or torch: tests/unit and tests/backend run in one process,
tests/blender in another (see the Makefile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `backend` and `devtools` import as top-level packages
    sys.path.insert(0, str(ROOT))

from devtools.backend_python import backend_python  # noqa: E402  (needs ROOT on sys.path)

# Nothing downloads from a hub in tests. Set at import time so that it is in place before
# huggingface_hub, diffusers or transformers read it, and inherited by subprocesses.
os.environ["HF_HUB_OFFLINE"] = "1"
# Model digests (provenance) are cached per user; the tests' cache stays in the checkout.
os.environ.setdefault("SCENE_DIFFUSION_CACHE", str(ROOT / ".cache" / "test-user-cache"))

TINY_MODELS_TIMEOUT_S = 1800
ENV_TINY_DIR = "SCENE_DIFFUSION_TEST_TINY_DIR"
TINY_MODEL_ROLES = ("text_to_image", "intrinsics", "normals", "controlnet_depth", "controlnet_normal",
                    "controlnet_canny", "controlnet_depth_sdxl", "controlnet_canny_sdxl", "image_to_3d",
                    "ip_adapter", "ip_adapter_sdxl")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_weights: needs real model weights; skipped when absent")


def _backend_version() -> str:
    from backend import __version__  # the package's __init__ is standard library only

    return str(__version__)


def _has_roles(registry: Path, roles: tuple[str, ...]) -> bool:
    try:
        listed = json.loads(registry.read_text(encoding="utf-8")).get("roles", {})
    except (OSError, ValueError, AttributeError):  # missing, unreadable or not a JSON object
        return False
    return isinstance(listed, dict) and all(role in listed for role in roles)


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """Folder of tiny random-weight pipelines for every role, with its ``registry.json``.

    Built once per backend version and factory source by ``python -m backend models make-tiny DIR`` into
    ``.cache/tiny-models/<version>-<digest of devtools/tiny_models>/`` and reused while its registry.json lists
    every role (an interrupted build is rebuilt). $SCENE_DIFFUSION_TEST_TINY_DIR names a folder to use instead.
    """
    override = os.environ.get(ENV_TINY_DIR)
    if override:  # a folder built (or assembled) by hand, used as it is
        return Path(override).resolve()
    from devtools.tiny_models import tiny_folder  # standard library only at import

    folder = tiny_folder(ROOT, _backend_version())
    if not _has_roles(folder / "registry.json", TINY_MODEL_ROLES):
        folder.parent.mkdir(parents=True, exist_ok=True)
        command = [backend_python(), "-m", "backend", "models", "make-tiny", str(folder)]
        try:
            proc = subprocess.run(
                command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                timeout=TINY_MODELS_TIMEOUT_S, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{' '.join(command)} ran past {TINY_MODELS_TIMEOUT_S} s:\n{exc.output or ''}")
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stdout}")
        if not (folder / "registry.json").is_file():
            pytest.fail(f"{' '.join(command)} wrote no {folder / 'registry.json'}:\n{proc.stdout}")
    return folder
