"""The artist's install path, for real: Setup Backend creates the managed environment under the extension's
user folder from backend/requirements.txt (pip, the network, this machine's torch build), then a texture job
runs through it, with no SCENE_DIFFUSION_BACKEND_PYTHON override.

Its own process (``pytest tests/install``): the extension is installed into a scratch Blender user folder
the way Blender installs it, before anything else of the add-on runs. Slow by nature (minutes of pip); the
time is printed, never asserted.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from devtools import extension

USER_DIR = Path(tempfile.mkdtemp(prefix="scene_diffusion_install_")).resolve()
extension.prepare_user_dir(USER_DIR)  # before `import bpy`: Blender reads its user paths once

import bpy  # noqa: E402

os.environ.pop("SCENE_DIFFUSION_BACKEND_PYTHON", None)  # the point: the add-on finds its own environment


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path):
    zip_path = extension.build(tmp_path_factory.mktemp("dist"))
    os.environ["SCENE_DIFFUSION_MODELS"] = str(tiny_models)
    module = importlib.import_module(extension.install(zip_path))
    yield module
    module.addon.jobs.service.shutdown()
    shutil.rmtree(USER_DIR, ignore_errors=True)


def test_setup_backend_then_generate_through_the_managed_environment(addon):
    paths = addon.addon.paths
    venv_python = paths.venv_python(paths.managed_venv())
    assert not venv_python.exists()
    assert Path(addon.addon.preferences.backend_python()) == venv_python  # nothing configured: the managed one
    bpy.context.preferences.system.use_online_access = True  # as the artist allows it in Preferences > System

    started = time.monotonic()
    assert bpy.ops.scene_diffusion.setup_backend() == {"FINISHED"}
    setup_s = time.monotonic() - started
    assert venv_python.is_file()
    assert str(paths.managed_venv()).startswith(str(USER_DIR))  # under the extension's user folder

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.object
    settings = bpy.context.scene.scene_diffusion.texture
    settings.prompt, settings.width, settings.height, settings.steps = "slate roof", 64, 64, 2
    started = time.monotonic()
    assert bpy.ops.scene_diffusion.generate_texture() == {"FINISHED"}
    first_job_s = time.monotonic() - started

    assert cube.active_material is not None and cube.active_material.name == "slate roof"
    sup = addon.addon.jobs.service.supervisor()
    pid = sup.client.pid
    argv0 = Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())
    assert argv0 == venv_python, f"the backend ran on {argv0}, not the managed environment"
    assert sup.handshake is not None and sup.handshake.versions.get("torch", "").startswith("2.13.0")
    print(f"\nSetup Backend: {setup_s:.0f} s; first texture job through it (backend start, model load): "
          f"{first_job_s:.1f} s")
