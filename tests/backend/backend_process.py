"""A real `python -m backend serve` process for tests, read line by line with timeouts."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from contract import messages

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def run_backend(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m backend ARGS`` from the checkout, offline, as a shell runs it."""
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=OFFLINE_ENV, capture_output=True,
                          text=True, timeout=timeout)


class BackendProcess:
    def __init__(self, registry: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--registry", str(registry), *extra],
            cwd=ROOT, env=OFFLINE_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream, sink) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink(line)
        sink(None)

    def send_raw(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line if line.endswith("\n") else line + "\n")
        self.proc.stdin.flush()

    def send(self, message: messages.Message) -> None:
        self.send_raw(messages.encode(message))

    def next(self, timeout: float = 60.0) -> messages.Message:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "backend closed stdout:\n" + "".join(s for s in self.stderr if s)
        json.loads(line)  # every stdout line is protocol JSON, nothing else
        return messages.decode(line)

    def until(self, kinds: tuple[type, ...], timeout: float = 60.0) -> tuple[messages.Message, list]:
        seen = []
        while True:
            message = self.next(timeout)
            seen.append(message)
            if isinstance(message, kinds):
                return message, seen

    def close(self) -> int:
        if self.proc.poll() is None:
            try:
                self.send(messages.Shutdown())
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def run_cancelled_at(engine: object, submit: messages.Submit, step: int) -> tuple[messages.Message, list[int]]:
    """Run ``submit`` in process and cancel it when progress reaches ``step``, as the server's reader does on a
    cancel line; returns the final message and the steps reported."""
    from backend.runner import run_job

    cancel = threading.Event()
    steps: list[int] = []

    def send(message: messages.Message) -> None:
        if isinstance(message, messages.Progress):
            steps.append(message.step)
            if message.step == step:
                cancel.set()

    return run_job(engine, submit, send, cancel), steps  # type: ignore[arg-type]
