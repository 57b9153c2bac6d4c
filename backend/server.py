"""`python -m backend serve`: JSON lines on stdin/stdout, one worker, a reader that stays responsive.

The reader (main thread) answers cancel, status and shutdown at once while the worker runs
jobs in order. Stdout carries protocol lines only: the process's file descriptor 1 is pointed
at stderr before anything heavy is imported, so a stray print or a C library's output can
never corrupt the messages.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from typing import IO, TYPE_CHECKING

from backend import __version__
from contract import messages

if TYPE_CHECKING:
    from backend.runner import Engine

log = logging.getLogger("backend.server")

_RELEASE = "release"


class Server:
    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: deque[messages.Submit | str] = deque()
        self._current: messages.Submit | None = None
        self._cancel = threading.Event()
        self._stopping = False
        self.engine: Engine | None = None  # set once the device and registry are ready

    def send(self, message: messages.Message) -> None:
        line = messages.encode(message)
        with self._write_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, ValueError):
                pass  # the add-on is gone; the reader sees EOF and shuts down

    # -- reader ----------------------------------------------------------------------------

    def handle_line(self, line: str) -> bool:
        """Act on one input line; False once the server should stop reading."""
        if not line.strip():
            return True
        try:
            message = messages.decode(line)
        except messages.ProtocolError as exc:
            self.send(messages.Error(None, messages.BAD_MESSAGE, str(exc),
                                     "send one JSON object per line, as backend/messages.py defines"))
            return True
        if isinstance(message, messages.Submit):
            with self._cond:
                self._pending.append(message)
                queued = len(self._pending) - 1 + (self._current is not None)
                self._cond.notify()
            self.send(messages.Accepted(message.id, queued))
        elif isinstance(message, messages.Cancel):
            self._cancel_job(message.id)
        elif isinstance(message, messages.StatusRequest):
            self.send(self.status())
        elif isinstance(message, messages.Release):
            with self._cond:
                self._pending.append(_RELEASE)
                self._cond.notify()
        elif isinstance(message, messages.Shutdown):
            return False
        else:
            self.send(messages.Error(None, messages.BAD_MESSAGE,
                                     f"{message.type} is a backend message, not a request"))
        return True

    def _cancel_job(self, job_id: str) -> None:
        with self._cond:
            if self._current is not None and self._current.id == job_id:
                self._cancel.set()  # the worker answers Cancelled at the next step
                return
            for item in list(self._pending):
                if isinstance(item, messages.Submit) and item.id == job_id:
                    self._pending.remove(item)
                    self.send(messages.Cancelled(job_id))
                    return
        log.info("cancel for %s: not running or queued", job_id)

    def status(self) -> messages.Status:
        with self._cond:
            current = self._current.id if self._current else None
            queued = [i.id for i in self._pending if isinstance(i, messages.Submit)]
        loaded = self.engine.models.loaded() if self.engine else []
        return messages.Status("busy" if current else "idle", current, queued, loaded)

    # -- worker ----------------------------------------------------------------------------

    def work(self) -> None:
        from backend.runner import run_job

        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                item = self._pending.popleft()
                if isinstance(item, messages.Submit):
                    self._current = item
                    self._cancel.clear()
            assert self.engine is not None
            if not isinstance(item, messages.Submit):  # _RELEASE
                self.engine.models.release()
                self.send(self.status())
                continue
            try:
                run_job(self.engine, item, self.send, self._cancel)
            finally:
                with self._cond:
                    self._current = None

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._cancel.set()
            self._cond.notify_all()


def _protocol_stream() -> IO[str]:
    """Keep the real stdout for protocol lines and send everything else written to fd 1 to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def serve(device: str = "auto", precision: str = "auto", registry: str | None = None,
          allow_download: bool = False, allow_unsafe: bool = False) -> int:
    out = _protocol_stream()
    server = Server(out)
    try:
        from backend.runner import make_engine

        engine = server.engine = make_engine(device, precision, registry, allow_download, allow_unsafe)
    except ImportError as exc:
        server.send(messages.Error(None, messages.DEPENDENCY, f"the backend cannot import {exc.name}: {exc}",
                                   "run Setup Backend in the add-on preferences, or point "
                                   "SCENE_DIFFUSION_BACKEND_PYTHON at a Python with backend/requirements.txt"))
        return 3
    except Exception as exc:  # noqa: BLE001 - a bad device or registry is a message, not a trace
        code = getattr(exc, "code", messages.INVALID_PARAMS)
        server.send(messages.Error(None, code, str(exc), getattr(exc, "hint", "")))
        return 2
    server.send(messages.Handshake(messages.PROTOCOL_VERSION, __version__, engine.device,
                                   engine.dtype, engine.versions, os.getpid()))
    worker = threading.Thread(target=server.work, name="worker", daemon=True)
    worker.start()
    stdin = sys.stdin
    for line in stdin:
        if not server.handle_line(line):
            break
    # Shutdown request or EOF (the add-on went away): stop the running job at its next step.
    server.stop()
    worker.join(timeout=30)
    server.send(messages.Bye())
    out.close()
    return 0
