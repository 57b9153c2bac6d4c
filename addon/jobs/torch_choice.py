"""Which torch build the managed backend environment gets: CUDA, ROCm, Apple MPS or CPU.

No bpy. Every fact about the machine comes in through :class:`MachineProbe`, so tests fake each
platform; :func:`probe_machine` gathers the real facts (``nvidia-smi`` output, ROCm folders).

Builds that torch 2.13 publishes (source: the Release Compatibility Matrix row added to
pytorch/pytorch RELEASE.md in https://github.com/pytorch/pytorch/pull/187075, and the 2.13.0
get-started module mirrored in https://github.com/PyTorchKR/pytorch.kr/pull/102): stable CUDA 12.6
and 13.0, experimental CUDA 13.2, ROCm 7.2 (Linux only). CUDA 12.8 was dropped in 2.12. CUDA wheels
exist for Linux x86_64/aarch64 and Windows x86_64. When the pin in backend/requirements.txt moves,
revisit these tables.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

TORCH_INDEX = "https://download.pytorch.org/whl"
# Newest first. Automatic picks among the stable builds only; the experimental one (fewer CI runs) is
# there for an artist who asks for it in the preferences.
CUDA_BUILDS: tuple[tuple[int, int], ...] = ((13, 0), (12, 6))
CUDA_EXPERIMENTAL: tuple[tuple[int, int], ...] = ((13, 2),)
ROCM_BUILD = "7.2"
AUTO, CPU, ROCM = "auto", "cpu", "rocm"
CUDA_KIND, MPS_KIND = "cuda", "mps"

_DRIVER = re.compile(r"Driver Version:\s*([0-9][0-9.]*)")
_CUDA = re.compile(r"CUDA Version:\s*([0-9]+)\.([0-9]+)")
_GPU_NAME = re.compile(r"^\|\s*\d+\s+(.+?)\s{2,}", re.MULTILINE)


def cuda_tag(version: tuple[int, int]) -> str:
    return f"cu{version[0]}{version[1]}"


def override_items() -> list[tuple[str, str, str]]:
    """The preference's enum items: Automatic, CPU, each CUDA build, ROCm."""
    items = [(AUTO, "Automatic", "Detect the GPU: NVIDIA -> CUDA, AMD on Linux -> ROCm, Apple Silicon -> MPS, "
                                 "else CPU"),
             (CPU, "CPU", "The default package index's torch: CPU only on Windows, Apple MPS on Apple Silicon")]
    for version in CUDA_BUILDS + CUDA_EXPERIMENTAL:
        tag = cuda_tag(version)
        note = " (experimental)" if version in CUDA_EXPERIMENTAL else ""
        items.append((tag, f"CUDA {version[0]}.{version[1]}{note}",
                      f"PyTorch's {tag} build: NVIDIA driver supporting CUDA {version[0]}.{version[1]} or newer"))
    items.append((ROCM, f"ROCm {ROCM_BUILD}", "PyTorch's ROCm build for AMD GPUs (Linux only)"))
    return items


@dataclass(frozen=True)
class MachineProbe:
    """The facts the choice depends on. ``nvidia_smi``: the output of ``nvidia-smi`` (None: not on PATH
    or it failed); ``rocm``: a ROCm installation was found (``rocminfo`` on PATH or /opt/rocm)."""

    system: str  # platform.system(): "Windows", "Linux", "Darwin"
    machine: str  # platform.machine(): "AMD64", "x86_64", "arm64", "aarch64"
    nvidia_smi: str | None = None
    rocm: bool = False
    rocm_version: str = ""


@dataclass(frozen=True)
class NvidiaDriver:
    version: str  # "560.94"
    cuda: tuple[int, int] | None  # the newest CUDA the driver runs, (12, 6)
    gpu: str = ""  # the first GPU's name, when the table shows it


@dataclass(frozen=True)
class TorchChoice:
    kind: str  # "cuda", "rocm", "mps" or "cpu"
    index_url: str | None  # None: the default package index
    reason: str  # one line for the artist: what was found and what gets installed
    build: str = ""  # "cu130", "rocm7.2"; "" for the default index
    warning: str = ""  # a known problem with this machine (no wheels, a driver too old), or ""

    def pip_args(self, pin: str) -> list[str]:
        """The arguments after ``pip install`` that install torch ``pin`` ("torch==2.13.0") from this build.

        An exact pin gets the build's local label ("torch==2.13.0+cu130"): an environment that already holds
        2.13.0+cpu then gets the CUDA build instead of "already satisfied", and requirements.txt's plain
        ``torch==2.13.0`` is satisfied by it afterwards (PEP 440 ignores the label when the pin has none)."""
        if not self.index_url:
            return [pin]
        exact = "==" in pin and "+" not in pin and "*" not in pin
        return [f"{pin}+{self.build}" if exact and self.build else pin, "--index-url", self.index_url]


def parse_nvidia_smi(output: str) -> NvidiaDriver | None:
    """Driver version and the CUDA version from ``nvidia-smi``'s header; None when no driver line is there."""
    driver = _DRIVER.search(output)
    if driver is None:
        return None
    cuda = _CUDA.search(output)
    name = _GPU_NAME.search(output)
    gpu = name.group(1).strip() if name else ""
    return NvidiaDriver(driver.group(1), (int(cuda.group(1)), int(cuda.group(2))) if cuda else None,
                        "" if gpu.startswith(("GPU", "N/A")) else gpu)


def _rocm_version(root: Path) -> str:
    try:
        return (root / ".info" / "version").read_text(encoding="utf-8").strip().split("-")[0]
    except OSError:
        return ""


def probe_machine(timeout: float = 5.0) -> MachineProbe:
    """The real facts of this computer. Runs ``nvidia-smi`` (a few hundred milliseconds): call it off the
    UI thread, see :func:`automatic`."""
    output = None
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            run = subprocess.run([exe], capture_output=True, text=True, timeout=timeout, check=False)
            output = run.stdout if run.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            output = None
    system = platform.system()
    rocm_root = Path("/opt/rocm")
    rocm = system == "Linux" and (shutil.which("rocminfo") is not None or rocm_root.is_dir())
    return MachineProbe(system, platform.machine(), output, rocm, _rocm_version(rocm_root) if rocm else "")


def _default(kind: str, reason: str, warning: str = "") -> TorchChoice:
    return TorchChoice(kind, None, reason, "", warning)


def _cuda(version: tuple[int, int], reason: str) -> TorchChoice:
    tag = cuda_tag(version)
    return TorchChoice(CUDA_KIND, f"{TORCH_INDEX}/{tag}", reason, tag)


def _no_gpu(probe: MachineProbe) -> TorchChoice:
    if probe.system == "Darwin":
        if probe.machine in ("arm64", "aarch64"):
            return _default(MPS_KIND, "Apple Silicon: the default torch uses the GPU through Metal (MPS)")
        return _default(CPU, "Intel Mac: CPU only",
                        "PyTorch publishes no macOS x86_64 wheels after torch 2.2, so torch 2.13 will not install "
                        "here: use a remote backend")
    return _default(CPU, "No NVIDIA or AMD GPU found: installing the CPU build (slow)")


def _nvidia(probe: MachineProbe, driver: NvidiaDriver) -> TorchChoice:
    gpu = f" ({driver.gpu})" if driver.gpu else ""
    if driver.cuda is None:
        return _default(CPU, f"NVIDIA driver {driver.version}{gpu} found, but nvidia-smi shows no CUDA version: "
                             "installing the CPU build",
                        "Choose a CUDA build in the preferences if the driver supports one")
    have = f"{driver.cuda[0]}.{driver.cuda[1]}"
    usable = [v for v in CUDA_BUILDS if v <= driver.cuda]
    if not usable:
        oldest = CUDA_BUILDS[-1]
        return _default(CPU, f"NVIDIA driver {driver.version}{gpu} supports CUDA {have}, older than the oldest "
                             f"torch build (CUDA {oldest[0]}.{oldest[1]}): installing the CPU build",
                        f"Update the NVIDIA driver to one supporting CUDA {oldest[0]}.{oldest[1]} or newer, then run "
                        "Setup Backend again to use the GPU")
    best = usable[0]
    return _cuda(best, f"NVIDIA driver {driver.version}{gpu} supports CUDA {have}: installing the "
                       f"{cuda_tag(best)} build")


def choose(probe: MachineProbe, override: str = AUTO) -> TorchChoice:
    """The torch build for ``probe``'s machine, or the one ``override`` names (see :func:`override_items`)."""
    if override == CPU:
        return _default(CPU, "Torch Build set to CPU in the preferences")
    if override == ROCM:
        if probe.system != "Linux":
            return _default(CPU, f"ROCm builds exist for Linux only, not {probe.system}: installing the CPU build")
        return TorchChoice(ROCM, f"{TORCH_INDEX}/rocm{ROCM_BUILD}", "Torch Build set to ROCm in the preferences",
                           f"rocm{ROCM_BUILD}")
    for version in CUDA_BUILDS + CUDA_EXPERIMENTAL:
        if override == cuda_tag(version):
            if probe.system == "Darwin":
                return _default(CPU, "There are no CUDA builds for macOS: installing the default build")
            return _cuda(version, f"Torch Build set to CUDA {version[0]}.{version[1]} in the preferences")
    if override != AUTO:
        raise ValueError(f"unknown torch build {override!r}")
    driver = parse_nvidia_smi(probe.nvidia_smi) if probe.nvidia_smi and probe.system != "Darwin" else None
    if driver is not None:
        return _nvidia(probe, driver)
    if probe.rocm and probe.system == "Linux":
        found = f"ROCm {probe.rocm_version}" if probe.rocm_version else "ROCm"
        return TorchChoice(ROCM, f"{TORCH_INDEX}/rocm{ROCM_BUILD}",
                           f"{found} found: installing the rocm{ROCM_BUILD} build", f"rocm{ROCM_BUILD}")
    return _no_gpu(probe)


def pinned_torch(requirements: Path) -> str:
    """The torch line of backend/requirements.txt ("torch==2.13.0"), the one place the pin is written."""
    for line in requirements.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if re.match(r"torch\s*(==|>=|~=|<|$)", text):
            return text.replace(" ", "")
    raise ValueError(f"{requirements} has no torch line")


class _Detection:
    """:func:`probe_machine` once per session, on a thread: the hardware does not change while Blender runs,
    and drawing must never wait for nvidia-smi."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probe: MachineProbe | None = None
        self._thread: threading.Thread | None = None

    def probe(self) -> MachineProbe | None:
        with self._lock:
            if self._probe is None and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scene-diffusion-gpu-probe", daemon=True)
                self._thread.start()
            return self._probe

    def wait(self, timeout: float = 10.0) -> MachineProbe | None:
        self.probe()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._probe

    def _run(self) -> None:
        try:
            found = probe_machine()
        except Exception:  # noqa: BLE001 - a broken probe means "nothing found", never a crash in a draw
            found = MachineProbe(platform.system(), platform.machine())
        with self._lock:
            self._probe = found


_detection = _Detection()


def automatic(override: str = AUTO, wait: bool = False) -> TorchChoice | None:
    """The choice for this computer; None while the probe still runs (``wait``: block for it)."""
    probe = _detection.wait() if wait else _detection.probe()
    if probe is None and wait:  # nvidia-smi hung: decide without it rather than block setup
        probe = MachineProbe(platform.system(), platform.machine())
    return None if probe is None else choose(probe, override)
