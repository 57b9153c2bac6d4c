"""The managed backend environment: a virtual environment with backend/requirements.txt.

No bpy: the operator drives a SetupRun from a timer (or waits for it in background mode)
and shows ``message`` and ``fraction`` as progress. torch comes first, from the build
:mod:`.torch_choice` picked (PyTorch's CUDA or ROCm index); the default index (CPU, Apple MPS)
keeps the single ``pip install -r requirements.txt`` step.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .client import EXT_ROOT
from .torch_choice import CPU, TorchChoice, pinned_torch

REQUIREMENTS = EXT_ROOT / "backend" / "requirements.txt"


def count_requirements(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.lstrip().startswith("#"))


DEFAULT_CHOICE = TorchChoice(CPU, None, "torch from the default package index")


@dataclass(frozen=True)
class Step:
    label: str  # the progress message while it runs
    command: list[str]
    counts: bool = False  # pip: each "Collecting" line is a tick of progress


def setup_steps(base_python: str, venv: Path, python_in_venv: Path, requirements: Path,
                choice: TorchChoice) -> list[Step]:
    """The venv, then torch from the chosen index when there is one, then the rest of the requirements."""
    pip = [str(python_in_venv), "-m", "pip", "install", "--progress-bar", "off"]
    steps = [Step("creating the environment", [base_python, "-m", "venv", str(venv)])]
    if choice.index_url:
        steps.append(Step(f"installing torch ({choice.build})", [*pip, *choice.pip_args(pinned_torch(requirements))],
                          counts=True))
    steps.append(Step("installing requirements", [*pip, "-r", str(requirements)], counts=True))
    return steps


class SetupRun:
    """Create ``venv`` with ``base_python`` and pip-install torch (the ``choice``) and ``requirements`` into it."""

    def __init__(self, venv: Path, python_in_venv: Path, requirements: Path = REQUIREMENTS,
                 base_python: str = sys.executable, choice: TorchChoice = DEFAULT_CHOICE) -> None:
        self.venv, self.python, self.requirements, self.choice = venv, python_in_venv, requirements, choice
        self.plan = setup_steps(base_python, venv, python_in_venv, requirements, choice)
        self.steps = [step.command for step in self.plan]
        # torch's own step collects torch and its dependencies: about as many ticks again.
        self.expected = max(1, count_requirements(requirements)) * (2 if choice.index_url else 1)
        self.collected = 0
        self.message = choice.reason
        self.output: list[str] = [f"torch build: {choice.reason}"]
        if choice.warning:
            self.output.append(f"warning: {choice.warning}")
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
        for step in self.plan:
            command = step.command
            if self._cancel.is_set():
                self.returncode = -1
                self.message = "cancelled"
                return
            self.message = step.label
            self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                line = line.rstrip()
                self.output.append(line)
                # pip prints "Collecting X" then "Installing collected packages": one tick each.
                if step.counts and line.startswith(("Collecting ", "Requirement already satisfied")):
                    self.collected += 1
                    self.message = line[:80]
            code = self._proc.wait()
            if code != 0:
                self.returncode = code
                self.message = f"failed: {' '.join(command[:4])} exited with {code}"
                return
        self.returncode = 0
        self.message = f"ready: {self.python} ({self.choice.build or 'default'} torch build)"

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.output[-lines:])
