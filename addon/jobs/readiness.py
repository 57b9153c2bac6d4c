"""What the Backend panel says before the first job: is the environment ready, which device, which models.

No bpy and no torch: the environment is checked by looking for torch's and diffusers' ``.dist-info``
folders in its site-packages (importing torch in Blender is never an option), the device comes from
the installed torch's build label (``2.13.0+cu130``) or, before setup, from :mod:`.torch_choice`.
:class:`ReadinessCache` recomputes at most every few seconds or when a setting changes, so a panel's
``draw`` (every redraw) stays cheap.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import model_sizes
from .torch_choice import CPU, CUDA_KIND, MPS_KIND, ROCM, TorchChoice

REQUIRED = ("torch", "diffusers")
TTL_S = 5.0


@dataclass(frozen=True)
class EnvStatus:
    ready: bool | None  # None: a Python outside the managed environment whose packages were not found
    summary: str
    hint: str = ""
    versions: tuple[tuple[str, str], ...] = ()  # (package, version) of REQUIRED found

    def version(self, package: str) -> str:
        return dict(self.versions).get(package, "")


@dataclass(frozen=True)
class Readiness:
    env: EnvStatus
    device: str  # what the backend will most likely use, said before its handshake
    models: model_sizes.ModelsReport


def site_packages(prefix: Path) -> list[Path]:
    """A virtual environment's (or an installation's) package folders: POSIX and Windows layouts."""
    found = [*prefix.glob("lib/python3*/site-packages"), *prefix.glob("lib/python3*/dist-packages"),
             prefix / "Lib" / "site-packages"]
    return [p for p in found if p.is_dir()]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def installed_version(folders: list[Path], package: str) -> str:
    """The version of ``package`` from its ``NAME-VERSION.dist-info`` folder name, or ""."""
    want = _normalized(package)
    for folder in folders:
        for info in folder.glob("*.dist-info"):
            name, _, version = info.name[: -len(".dist-info")].partition("-")
            if _normalized(name) == want and version:
                return version
    return ""


def env_status(python: Path, managed: bool) -> EnvStatus:
    """Whether ``python`` (the managed venv's, or the one configured) can run the backend."""
    setup_hint = "Run Setup Backend in the add-on preferences"
    if not python.exists():
        if managed:
            return EnvStatus(False, "Backend environment not set up yet", setup_hint)
        return EnvStatus(False, f"Backend Python not found: {python}", "Fix Backend Python in the preferences")
    folders = site_packages(python.parent.parent)
    versions = tuple((p, v) for p in REQUIRED if (v := installed_version(folders, p)))
    missing = [p for p in REQUIRED if p not in dict(versions)]
    if not missing:
        shown = ", ".join(f"{p} {v}" for p, v in versions)
        return EnvStatus(True, f"Backend environment ready ({shown})", "", versions)
    if managed:
        return EnvStatus(False, f"Backend environment lacks {' and '.join(missing)}",
                         f"{setup_hint} again", versions)
    # A system or conda Python keeps its packages elsewhere: the backend's start will tell.
    return EnvStatus(None, f"Backend Python {python.name} found; {' and '.join(missing)} not seen beside it",
                     "The backend checks its packages when it starts", versions)


def build_kind(torch_version: str) -> str:
    """cuda / rocm / cpu from torch's local version label; "" when the version has none (a PyPI build)."""
    label = torch_version.partition("+")[2]
    if label.startswith("cu"):
        return CUDA_KIND
    if label.startswith("rocm"):
        return ROCM
    return CPU if label == "cpu" else ""


def expected_device(env: EnvStatus, choice: TorchChoice | None, preference: str = "auto") -> str:
    """A short line for the panel: the device preference, else the installed build, else what setup installs."""
    if preference != "auto":
        return f"{preference} (set in the preferences)"
    torch_version = env.version("torch")
    kind = build_kind(torch_version)
    if kind == CUDA_KIND:
        return f"cuda (torch {torch_version})"
    if kind == ROCM:
        return f"AMD GPU through ROCm (torch {torch_version})"
    if kind == CPU:
        gpu = choice is not None and choice.kind in (CUDA_KIND, ROCM)
        return f"cpu (torch {torch_version})" + (": the GPU goes unused, run Setup Backend" if gpu else "")
    if choice is None:
        return "detecting the GPU…"
    names = {CUDA_KIND: "cuda", ROCM: "AMD GPU through ROCm", MPS_KIND: "mps (Apple GPU)", CPU: "cpu"}
    verb = "with torch " + torch_version if torch_version else "after Setup Backend"
    return f"{names.get(choice.kind, choice.kind)} ({verb})"


def compute(python: Path, managed: bool, registry: str | None, choice: TorchChoice | None,
            preference: str = "auto", cache: Path | None = None) -> Readiness:
    env = env_status(python, managed)
    return Readiness(env, expected_device(env, choice, preference), model_sizes.report(registry, cache))


@dataclass(frozen=True)
class Inputs:
    """Everything a Readiness depends on: a change recomputes at once."""

    python: str
    managed: bool
    registry: str | None
    preference: str
    choice: TorchChoice | None
    cache: str


class ReadinessCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = TTL_S) -> None:
        self._clock, self._ttl = clock, ttl
        self._inputs: Inputs | None = None
        self._value: Readiness | None = None
        self._at = 0.0
        self.computed = 0  # how many times it recomputed (tests)

    def get(self, inputs: Inputs) -> Readiness:
        now = self._clock()
        if self._value is None or inputs != self._inputs or now - self._at >= self._ttl:
            self._value = compute(Path(inputs.python), inputs.managed, inputs.registry, inputs.choice,
                                  inputs.preference, Path(inputs.cache))
            self._inputs, self._at = inputs, now
            self.computed += 1
        return self._value

    def clear(self) -> None:
        self._value = None


cache = ReadinessCache()
