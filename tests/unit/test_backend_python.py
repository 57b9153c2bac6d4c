"""Which Python the tests start the backend with: SCENE_DIFFUSION_TEST_BACKEND_PYTHON, else this one."""

from __future__ import annotations

import sys
from pathlib import Path

from devtools.backend_python import TEST_BACKEND_PYTHON_ENV, backend_python
from devtools.remote_server import RemoteServer


def test_defaults_to_this_interpreter(monkeypatch):
    monkeypatch.delenv(TEST_BACKEND_PYTHON_ENV, raising=False)
    assert backend_python() == str(Path(sys.executable).absolute())


def test_the_variable_names_another_python_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(TEST_BACKEND_PYTHON_ENV, "venv/bin/python")
    assert backend_python() == str(tmp_path / "venv" / "bin" / "python")


def test_an_empty_variable_means_this_interpreter(monkeypatch):
    monkeypatch.setenv(TEST_BACKEND_PYTHON_ENV, "")
    assert backend_python() == str(Path(sys.executable).absolute())


def test_the_remote_server_starts_on_it(monkeypatch, tmp_path):
    monkeypatch.setenv(TEST_BACKEND_PYTHON_ENV, str(tmp_path / "missing-python"))
    monkeypatch.setattr(RemoteServer, "start", lambda self: None)  # only the command line is checked
    server = RemoteServer(tmp_path / "server", tmp_path / "registry.json")
    assert server.command[:3] == [str(tmp_path / "missing-python"), "-m", "backend"]
