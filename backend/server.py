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
from typing import IO, TYPE_CHECKING

from backend import __version__
from backend.engine_options import EngineOptions
from backend.scheduler import CancelOutcome, DuplicateJob, Scheduler
from contract import framing, messages

if TYPE_CHECKING:
    from backend.models.families import ModelSpec
    from backend.runner import Engine

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
        elif isinstance(message, messages.Preload):
            preload(self, message)
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


def serve(options: EngineOptions, user_models: str | None = None) -> int:
    out = _protocol_stream()
    server = Server(out)
    try:
        engine = server.scheduler.engine = options.make(user_models)
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

    warnings = handshake_warnings(engine.device, options.device) + engine.warnings
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


# Preload: the model a panel names, loaded while the artist is still typing (the add-on's "Start the backend
# early" preference). Weight files count twice: fp16 files load as fp32 on a CPU, and loading holds both copies.
_PRELOAD_LOADERS = {"text_to_image": "text_to_image", "intrinsics": "marigold", "normals": "marigold",
                    "image_to_3d": "image_to_3d"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


def preload(server: Server, request: messages.Preload) -> None:
    """Load ``request``'s model on the worker, answered by Status. Only when no job runs or waits and nothing
    is loaded, so a preload never unloads a warm model or delays work; refusals and failures are logged only.

    It rides on the scheduler's release request, whose answer the worker sends between jobs: releasing an
    empty cache frees nothing, and a job that arrives during the load waits for it instead of racing it."""
    scheduler, engine = server.scheduler, server.scheduler.engine
    status = scheduler.status(LOCAL)
    busy = engine is None or status.state != "idle" or bool(status.queued or status.loaded)
    if busy:
        log.info("preload of %s skipped: the backend is busy or has models loaded", request.model or request.role)
        server.send(status)
        return
    assert engine is not None

    def load(_released: messages.Message) -> None:  # the sink of the release request, on the worker thread
        try:
            spec = engine.registry.resolve(request.role, request.model or None)
            loader = _PRELOAD_LOADERS.get(spec.kind)
            refusal = _preload_refusal(engine, spec) if loader else f"a {spec.kind} model is not preloaded"
            if refusal or loader is None:
                log.info("preload of %s skipped: %s", spec.name, refusal)
            else:
                getattr(engine.models, loader)(spec)
                log.info("preloaded %s", spec.name)
        except Exception as exc:  # noqa: BLE001 - a failed preload is the first job's business, not a crash
            engine.models.release()
            log.warning("preload of %s failed: %s", request.model or request.role, exc)
        server.send(scheduler.status(LOCAL))

    scheduler.request_release(LOCAL, load)


def _preload_refusal(engine: Engine, spec: ModelSpec) -> str:
    """Why ``spec`` should not be loaded ahead of a job ("" when it may): not on disk (a preload never
    downloads), or less free memory where its weights go than twice their size on disk."""
    from backend.models.registry import locate

    found = locate(spec)
    if found is None:
        return "it is not on this computer (a preload never downloads)"
    files = [found] if found.is_file() else [f for f in found.rglob("*") if f.suffix in _WEIGHT_SUFFIXES]
    need = 2 * sum(f.stat().st_size for f in files)
    free = _free_memory(engine)
    if free is not None and need > free:
        return f"{need / 2**30:.1f} GB needed, {free / 2**30:.1f} GB free on {engine.device}"
    return ""


def _free_memory(engine: Engine) -> int | None:
    """Free bytes where pipelines load: the card's memory on CUDA (unless the plan offloads to the CPU), else
    the system's available memory; None when unknown."""
    offloads = engine.memory is not None and engine.memory.offloads
    if engine.device.startswith("cuda") and not offloads:
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(engine.device))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
