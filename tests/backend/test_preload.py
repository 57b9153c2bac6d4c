"""Preload: the backend loads the model a panel names before the first job, and only when that is harmless."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
from backend_process import BackendProcess

from backend import server as server_module
from backend.runner import make_engine
from contract import jobfolder, messages


class _Lines:
    """The server's protocol stream, read back as messages."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()

    def write(self, line: str) -> None:
        self.lines.put(line)

    def flush(self) -> None:
        pass

    def until(self, kind: type, timeout: float = 120.0) -> messages.Message:
        while True:
            message = messages.decode(self.lines.get(timeout=timeout))
            if isinstance(message, kind):
                return message


@pytest.fixture
def served(tiny_models: Path):  # type: ignore[no-untyped-def]
    """A stdio server in this process with its own engine (nothing loaded) and a running worker."""
    out = _Lines()
    server = server_module.Server(out)  # type: ignore[arg-type]
    server.scheduler.engine = make_engine("cpu", "fp32", str(tiny_models))
    server.scheduler.start()
    yield server, out
    server.scheduler.stop(timeout=30)


def _texture_job(root: Path, **params: object) -> messages.Submit:
    request = {"prompt": "slate", "width": 64, "height": 64, "steps": 2, "seed": 1, **params}
    job_dir = jobfolder.create_job(root, "texture", request)
    return messages.Submit(jobfolder.read_job(job_dir)["id"], "texture", str(job_dir), request)


def test_preload_loads_the_roles_default_model_and_answers_status(served):
    server, out = served
    server.handle_line(messages.encode(messages.Preload("text_to_image")))
    status = out.until(messages.Status)
    assert status.loaded == ["sd15-tiny"] and status.state == "idle"


def test_preload_by_name_then_a_job_uses_the_loaded_pipeline(served, tmp_path):
    server, out = served
    server.handle_line(messages.encode(messages.Preload("text_to_image", "sdxl-tiny")))
    assert out.until(messages.Status).loaded == ["sdxl-tiny"]
    pipeline = server.scheduler.engine.models.text_to_image(server.scheduler.engine.registry.resolve(
        "text_to_image", "sdxl-tiny"))
    server.handle_line(messages.encode(_texture_job(tmp_path, model="sdxl-tiny")))
    assert isinstance(out.until(messages.Result), messages.Result)
    assert server.scheduler.engine.models.text_to_image(server.scheduler.engine.registry.resolve(
        "text_to_image", "sdxl-tiny")) is pipeline  # the job loaded nothing again


def test_preload_never_unloads_a_warm_model(served, tmp_path):
    server, out = served
    server.handle_line(messages.encode(_texture_job(tmp_path)))
    out.until(messages.Result)
    server.handle_line(messages.encode(messages.Preload("text_to_image", "sdxl-tiny")))
    assert out.until(messages.Status).loaded == ["sd15-tiny"]


def test_preload_refused_when_memory_is_short(served, monkeypatch, caplog):
    server, out = served
    monkeypatch.setattr(server_module, "_free_memory", lambda engine: 1024)
    with caplog.at_level("INFO", logger="backend.server"):
        server.handle_line(messages.encode(messages.Preload("text_to_image")))
        assert out.until(messages.Status).loaded == []
    assert any("needed" in r.message and "free" in r.message for r in caplog.records)


def test_a_failed_preload_is_logged_and_the_backend_keeps_serving(served, tmp_path, caplog):
    server, out = served
    with caplog.at_level("INFO", logger="backend.server"):
        server.handle_line(messages.encode(messages.Preload("text_to_image", "no-such-model")))
        assert out.until(messages.Status).loaded == []
    assert any("no-such-model" in r.message for r in caplog.records)
    server.handle_line(messages.encode(_texture_job(tmp_path)))
    assert isinstance(out.until(messages.Result), messages.Result)


def test_preload_over_the_real_pipe(tiny_models, tmp_path):
    proc = BackendProcess(tiny_models)
    try:
        assert isinstance(proc.next(timeout=120), messages.Handshake)
        proc.send(messages.Preload("text_to_image"))
        status, _ = proc.until((messages.Status,), timeout=120)
        assert status.loaded == ["sd15-tiny"]
        proc.send(_texture_job(tmp_path))
        result, _ = proc.until((messages.Result, messages.Error), timeout=120)
        assert isinstance(result, messages.Result), result
    finally:
        proc.close()
