"""The backend process seen from the add-on: start it, talk JSON lines, notice when it dies.

No bpy here (and no torch): the supervisor drives this from Blender's timers, and tests
drive it from plain Python. A reader thread moves stdout lines into a queue so nothing on
Blender's main thread ever blocks on the pipe.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ...contract import messages as msg

EXT_ROOT = Path(__file__).resolve().parents[2]  # the extension root, the folder holding backend/


@dataclass(frozen=True)
class LaunchConfig:
    python: str
    log_path: Path
    registry: str | None = None
    device: str = "auto"
    precision: str = "auto"
    allow_download: bool = False
    allow_unsafe: bool = False
    handshake_timeout: float = 120.0
    vram_budget: str = "auto"  # auto, high, 12gb, 8gb, 6gb: how the backend trades speed for GPU memory
    user_models: str | None = None  # the artist's checkpoints as a registry file the backend merges
    # What that file holds, so a changed list makes a different config (the supervisor restarts on a change).
    user_model_entries: tuple[tuple[str, str, str], ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)

    def make_client(self) -> BackendClient:
        return BackendClient(self)

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "backend", "serve", "--device", self.device, "--precision", self.precision]
        if self.registry:
            cmd += ["--registry", self.registry]
        if self.vram_budget != "auto":  # the backend's default
            cmd += ["--vram-budget", self.vram_budget]
        if self.user_models:
            cmd += ["--user-models", self.user_models]
        if self.allow_download:
            cmd.append("--allow-download")
        if self.allow_unsafe:
            cmd.append("--allow-unsafe")
        return cmd


class Inbox:
    """Messages a reader thread received, taken by the supervisor on Blender's main thread without blocking;
    the handshake is noted on the way. Shared by the local and the remote client. None ends the stream."""

    def __init__(self) -> None:
        self.handshake: msg.Handshake | None = None
        self._messages: queue.Queue[msg.Message | None] = queue.Queue()

    def messages(self) -> list[msg.Message]:
        """Everything that has arrived, without waiting."""
        out: list[msg.Message] = []
        while True:
            try:
                item = self._messages.get_nowait()
            except queue.Empty:
                return out
            if item is not None:
                self._note(item)
                out.append(item)

    def wait_message(self, timeout: float) -> msg.Message | None:
        """Block up to ``timeout`` seconds for one message (background mode only)."""
        try:
            item = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is not None:
            self._note(item)
        return item

    def _note(self, item: msg.Message) -> None:
        if isinstance(item, msg.Handshake):
            self.handshake = item


class BackendClient(Inbox):
    def __init__(self, config: LaunchConfig) -> None:
        super().__init__()
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_lock = threading.Lock()

    def start(self) -> None:
        """Start the process; returns at once (the handshake arrives as a message)."""
        if not Path(self.config.python).exists():
            raise FileNotFoundError(f"backend Python not found: {self.config.python}")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(PYTHONPATH=str(EXT_ROOT), PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        env.update(self.config.extra_env)
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.config.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.config.command(), cwd=EXT_ROOT, env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        threading.Thread(target=self._read, name="scene-diffusion-reader", daemon=True).start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                message = msg.decode(raw)
            except msg.ProtocolError as exc:
                text = raw.decode("utf-8", "replace").strip()[:200]
                message = msg.Error(None, msg.BAD_MESSAGE,
                                         f"backend wrote a non-protocol line ({exc}): {text}")
            self._messages.put(message)
        self._messages.put(None)  # end of stream

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def returncode(self) -> int | None:
        """None while the process runs; its exit status once it has ended."""
        return self._proc.poll() if self._proc else None

    def send(self, message: msg.Message) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise BrokenPipeError("backend not started")
        with self._write_lock:
            self._proc.stdin.write(msg.encode(message).encode("utf-8"))
            self._proc.stdin.flush()

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.config.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                tail = deque(handle.read().decode("utf-8", "replace").splitlines(), maxlen=lines)
        except OSError:
            return ""
        return "\n".join(tail)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask for a clean shutdown, then terminate, then kill."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            self.send(msg.Shutdown())
            proc.stdin.close()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
