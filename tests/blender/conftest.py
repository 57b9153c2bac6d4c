"""Fixtures for tests that run the add-on inside the real ``bpy`` module.

Run this folder in its own process (``pytest tests/blender``): bpy and torch should not share
one. Blender's user folders are moved to a temporary directory *before* bpy is imported, so
the add-on is built, validated and installed like a user would, without touching
``~/.config/blender``.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from devtools import extension
from devtools.backend_python import backend_python

# Must happen before `import bpy`: Blender reads its user paths once, at module start-up.
BLENDER_USER_DIR = Path(tempfile.mkdtemp(prefix="scene_diffusion_blender_user_")).resolve()
atexit.register(shutil.rmtree, BLENDER_USER_DIR, True)
extension.prepare_user_dir(BLENDER_USER_DIR)

import bpy  # noqa: E402  (after prepare_user_dir on purpose)


@pytest.fixture(scope="session")
def blender_user_dir() -> Path:
    """The temporary folder that stands in for Blender's user config, scripts and extensions."""
    return BLENDER_USER_DIR


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extension zip built from this checkout with Blender's own tool, and validated."""
    zip_path = extension.build(tmp_path_factory.mktemp("dist"))
    extension.validate(zip_path)
    return zip_path


def _shutdown_backend(module: ModuleType) -> None:
    """Call ``<add-on>.addon.api.shutdown_backend()`` (or ``<add-on>.api...``) if it exists."""
    api_name = f"{module.__name__}.addon.api"
    api: object
    try:
        api = importlib.import_module(api_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (api_name, f"{module.__name__}.addon"):
            raise
        api = getattr(module, "api", None)
    shutdown = getattr(api, "shutdown_backend", None)
    if callable(shutdown):
        shutdown()


@pytest.fixture(scope="session")
def addon(extension_zip: Path, tiny_models: Path) -> Iterator[ModuleType]:
    """The add-on installed into the temporary user repository and enabled; yields its module.

    The backend it starts runs on :func:`devtools.backend_python.backend_python` (this interpreter unless
    SCENE_DIFFUSION_TEST_BACKEND_PYTHON names another) and loads the tiny models.
    """
    os.environ["SCENE_DIFFUSION_BACKEND_PYTHON"] = backend_python()
    os.environ["SCENE_DIFFUSION_MODELS"] = str(tiny_models)
    module_name = extension.install(extension_zip)
    module = importlib.import_module(module_name)
    try:
        yield module
    finally:
        _shutdown_backend(module)


@pytest.fixture
def clean_scene(addon: ModuleType) -> bpy.types.Scene:
    """An empty factory scene, with the add-on still enabled.

    ``wm.read_factory_settings`` would also reset the preferences and so disable every
    extension; ``wm.read_homefile(use_factory_startup=True)`` resets only the file.
    """
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    assert addon.__name__ in bpy.context.preferences.addons, "resetting the scene disabled the add-on"
    # Tests count the job folders their operator made: keep them all, whatever the session's job count
    # (set here: re-enabling the add-on, as test_install does, resets its preferences).
    bpy.context.preferences.addons[addon.__name__].preferences.job_retention = 100_000
    return bpy.context.scene


@pytest.fixture
def interactive(addon: ModuleType) -> Iterator[ModuleType]:
    """The add-on's service in interactive mode (jobs advance only on ``service._tick()``, as Blender's timer
    would call it); afterwards back to following bpy.app.background, with any job still running cancelled."""
    service = addon.addon.jobs.service  # type: ignore[attr-defined]
    service.blocking = False
    yield service
    service.blocking = None
    sup = service.supervisor()
    for job in sup.active_jobs():
        sup.cancel(job.id)
        sup.run_until_done(job, timeout=60)


# -- the same tests against a remote backend -----------------------------------------------------

REMOTE_ENV = ("SCENE_DIFFUSION_REMOTE", "SCENE_DIFFUSION_REMOTE_TOKEN_FILE")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``remote`` runs twice: with the local backend subprocess, then with a remote server."""
    if metafunc.definition.get_closest_marker("remote") is not None:
        metafunc.parametrize("backend_mode", ["local", "remote"], indirect=True)


@pytest.fixture(scope="session")
def remote_server(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real server process on loopback with TLS, its own root, token and certificate, shared by the
    session's remote runs; the add-on reaches it only through the network."""
    from devtools.remote_server import RemoteServer

    server = RemoteServer(tmp_path_factory.mktemp("remote"), tiny_models)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def backend_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs with the local backend; a test marked ``remote`` also runs with the remote one: the
    add-on is pointed at the server the way a script would (environment overrides) and its backend restarted."""
    mode = getattr(request, "param", "local")
    if mode != "remote":
        yield mode
        return
    server = request.getfixturevalue("remote_server")
    service = request.getfixturevalue("addon").addon.jobs.service
    service.shutdown()
    os.environ.update(SCENE_DIFFUSION_REMOTE=server.address,  # type: ignore[attr-defined]
                      SCENE_DIFFUSION_REMOTE_TOKEN_FILE=str(server.token_file))  # type: ignore[attr-defined]
    try:
        yield mode
    finally:
        for name in REMOTE_ENV:
            os.environ.pop(name, None)
        service.shutdown()
