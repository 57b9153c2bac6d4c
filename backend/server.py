"""`python -m backend serve`: JSON lines on stdin/stdout, one worker, a reader that stays responsive.

The reader (main thread) answers cancel, status and shutdown at once while the scheduler's worker
runs jobs in order; this client is the scheduler's one owner, "local". Stdout carries protocol lines
only: the process's file descriptor 1 is pointed at stderr before anything heavy is imported, so a
stray print or a C library's output can never corrupt the messages.

With ``--listen`` the same scheduler serves clients over TLS instead (backend/remote/listener.py).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import IO

from backend import __version__
from backend.scheduler import CancelOutcome, DuplicateJob, Scheduler
from contract import framing, messages

log = logging.getLogger("backend.server")

LOCAL = "local"  # the stdio client's owner name in the scheduler
LINE_HINT = "send one JSON object per line, as contract/messages.py defines"


class Server:
    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._write_lock = threading.Lock()
        self.scheduler = Scheduler()
        self.scheduler.connected(LOCAL)

    def send(self, message: messages.Message) -> None:
        line = messages.encode(message)
        with self._write_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the add-on is gone; the reader sees EOF and shuts down

    def handle_line(self, line: str | bytes) -> bool:
        """Act on one input line; False once the server should stop reading."""
        if not line or line in ("\n", b"\n"):
            return True
        try:
            message = messages.decode(line)
        except messages.ProtocolError as exc:
            self.send(messages.Error(None, messages.BAD_MESSAGE, str(exc), LINE_HINT))
            return True
        if isinstance(message, messages.Submit):
            try:
                self.scheduler.submit(LOCAL, message, self.send)
            except DuplicateJob as exc:
                self.send(messages.Error(message.id, messages.BAD_MESSAGE, str(exc)))
        elif isinstance(message, messages.Cancel):
            if self.scheduler.cancel(LOCAL, message.id) in (CancelOutcome.UNKNOWN, CancelOutcome.FINISHED):
                log.info("cancel for %s: not running or queued", message.id)
        elif isinstance(message, messages.StatusRequest):
            self.send(self.scheduler.status(LOCAL))
        elif isinstance(message, messages.Release):
            self.scheduler.request_release(LOCAL, self.send)
        elif isinstance(message, messages.Shutdown):
            return False
        else:
            self.send(messages.Error(None, messages.BAD_MESSAGE,
                                     f"{message.type} is not a request the stdio backend takes", LINE_HINT))
        return True

    def read(self, stream: IO[bytes]) -> None:
        """Handle lines until Shutdown or the end of input; an over-long line is refused unread."""
        while True:
            try:
                line = framing.read_line(stream, framing.MAX_LINE)  # type: ignore[arg-type]
            except framing.LineTooLong as exc:
                self.send(messages.Error(None, messages.TOO_LARGE, str(exc), LINE_HINT))
                continue
            if line is None or not self.handle_line(line):
                return


def _protocol_stream() -> IO[str]:
    """Keep the real stdout for protocol lines and send everything else written to fd 1 to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def serve(device: str = "auto", precision: str = "auto", registry: str | None = None,
          allow_download: bool = False, allow_unsafe: bool = False, vram_budget: str = "auto",
          user_models: str | None = None) -> int:
    out = _protocol_stream()
    server = Server(out)
    try:
        from backend.runner import make_engine

        engine = server.scheduler.engine = make_engine(device, precision, registry, allow_download, allow_unsafe,
                                                       vram_budget, user_models)
    except ImportError as exc:
        server.send(messages.Error(None, messages.DEPENDENCY, f"the backend cannot import {exc.name}: {exc}",
                                   "run Setup Backend in the add-on preferences, or point "
                                   "SCENE_DIFFUSION_BACKEND_PYTHON at a Python with backend/requirements.txt"))
        return 3
    except Exception as exc:  # noqa: BLE001 - a bad device or registry is a message, not a trace
        code = getattr(exc, "code", messages.INVALID_PARAMS)
        server.send(messages.Error(None, code, str(exc), getattr(exc, "hint", "")))
        return 2
    from backend.diffusion.gpu_check import handshake_warnings

    warnings = handshake_warnings(engine.device, device) + engine.warnings
    for warning in warnings:
        log.warning("%s", warning)
    server.send(messages.Handshake(messages.PROTOCOL_VERSION, __version__, engine.device,
                                   engine.dtype, engine.versions, os.getpid(), warnings, engine.memory_label))
    server.scheduler.start()
    server.read(sys.stdin.buffer)
    # Shutdown request or EOF (the add-on went away): stop the running job at its next step.
    server.scheduler.stop(timeout=30)
    server.send(messages.Bye())
    out.close()
    return 0
