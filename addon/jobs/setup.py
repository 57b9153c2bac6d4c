"""The managed backend environment: a virtual environment with backend/requirements.txt.

No bpy: the operator drives a SetupRun from a timer (or waits for it in background mode)
and shows ``message`` and ``fraction`` as progress.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from .client import EXT_ROOT

REQUIREMENTS = EXT_ROOT / "backend" / "requirements.txt"


def count_requirements(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.lstrip().startswith("#"))


class SetupRun:
    """Create ``venv`` with ``base_python`` and pip-install ``requirements`` into it."""

    def __init__(self, venv: Path, python_in_venv: Path, requirements: Path = REQUIREMENTS,
                 base_python: str = sys.executable) -> None:
        self.venv, self.python, self.requirements = venv, python_in_venv, requirements
        self.steps = [
            [base_python, "-m", "venv", str(venv)],
            [str(python_in_venv), "-m", "pip", "install", "--progress-bar", "off", "-r", str(requirements)],
        ]
        self.expected = max(1, count_requirements(requirements))
        self.collected = 0
        self.message = "starting"
        self.output: list[str] = []
        self.returncode: int | None = None
        self._cancel = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="scene-diffusion-setup", daemon=True)

    @property
    def fraction(self) -> float:
        return min(0.99, self.collected / (self.expected * 2)) if self.returncode is None else 1.0

    def start(self) -> SetupRun:
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self.returncode

    def cancel(self) -> None:
        self._cancel.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def _run(self) -> None:
        for index, command in enumerate(self.steps):
            if self._cancel.is_set():
                self.returncode = -1
                self.message = "cancelled"
                return
            self.message = ("creating the environment", "installing requirements")[index]
            self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                line = line.rstrip()
                self.output.append(line)
                # pip prints "Collecting X" then "Installing collected packages": one tick each.
                if index == 1 and line.startswith(("Collecting ", "Requirement already satisfied")):
                    self.collected += 1
                    self.message = line[:80]
            code = self._proc.wait()
            if code != 0:
                self.returncode = code
                self.message = f"failed: {' '.join(command[:4])} exited with {code}"
                return
        self.returncode = 0
        self.message = f"ready: {self.python}"

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.output[-lines:])
