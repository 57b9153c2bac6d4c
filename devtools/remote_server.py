"""A real `python -m backend serve --listen` process on loopback, for tests, the demo and benchmarks.

The server gets its own root (job folders, content store, token, certificate) under a folder
the test names, and nothing else of the client's: the client's job folders reach it only by
upload. The port is whatever the system gave (``--listen 127.0.0.1:0``), read from the first
line the server prints.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from devtools.backend_python import backend_python

ROOT = Path(__file__).resolve().parents[1]  # the checkout
LISTENING = re.compile(r"listening on (\S+):(\d+)")
FINGERPRINT = re.compile(r"SHA256:([0-9a-fA-F:]+)")


class RemoteServer:
    """The server for ``folder``: its root (jobs, content store) in ``folder/root``, token and certificate
    beside ``folder/token`` unless ``token_file`` says otherwise."""

    def __init__(self, folder: Path, registry: Path, *extra: str, token_file: Path | None = None,
                 start_timeout: float = 180.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.root = folder / "root"
        self.token_file = token_file or folder / "token"
        self.command = [backend_python(), "-m", "backend", "serve", "--listen", "127.0.0.1:0",
                        "--token-file", str(self.token_file), "--root", str(self.root),
                        "--registry", str(registry), "--device", "cpu", *extra]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.start_timeout = start_timeout
        self.port = 0
        self.fingerprint = ""  # 64 hex digits, as the server printed it (TLS only)
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        """Start the process and wait for its "listening on" line (a restart gets a new port)."""
        self.stdout, self.stderr = [], []
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, ready), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, None), daemon=True).start()
        if not ready.wait(self.start_timeout) or not self.port:
            self.kill()
            raise RuntimeError("the remote backend did not start:\n" + self.output()[-4000:])
        if "(TLS)" in self.stdout[0] and not self.wait_for(lambda: len(self.stdout) > 1, 10):
            raise RuntimeError("the remote backend printed no certificate fingerprint:\n" + self.output()[-4000:])
        found = FINGERPRINT.search("".join(self.stdout[1:2]))
        self.fingerprint = found.group(1).replace(":", "").lower() if found else ""

    @property
    def banner(self) -> list[str]:
        return list(self.stdout)

    def _pump(self, stream, lines: list[str], ready: threading.Event | None) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            lines.append(line)
            found = LISTENING.search(line) if ready is not None and not self.port else None
            if found:
                self.port = int(found.group(2))
                ready.set()  # type: ignore[union-attr]
        if ready is not None:
            ready.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.token_file.read_text(encoding="utf-8").strip()

    @property
    def jobs_root(self) -> Path:
        return self.root / "jobs"

    def output(self) -> str:
        return "".join(self.stdout + self.stderr)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the machine died, nothing is cleaned up."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(30)
        self.port = 0

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.port = 0
        return self.proc.wait()

    def wait_for(self, predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False
