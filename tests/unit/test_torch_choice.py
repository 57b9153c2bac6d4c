"""The torch build Setup Backend installs on each kind of machine, and the pip commands it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from extension_package import import_addon_module

tc = import_addon_module("addon.jobs.torch_choice")
setup = import_addon_module("addon.jobs.setup")


def smi(driver: str, cuda: str | None, gpu: str = "NVIDIA GeForce RTX 4070", model: str = "WDDM") -> str:
    """nvidia-smi's table as drivers print it (the header line, then the first GPU's row)."""
    cuda_part = f"CUDA Version: {cuda}" if cuda else ""
    return (
        "Mon Jan  6 10:00:00 2025\n"
        "+-----------------------------------------------------------------------------------------+\n"
        f"| NVIDIA-SMI {driver}                 Driver Version: {driver}         {cuda_part}     |\n"
        "|-----------------------------------------+------------------------+----------------------+\n"
        "| GPU  Name                  Driver-Model | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n"
        "|=========================================+========================+======================|\n"
        f"|   0  {gpu}      {model}  |   00000000:01:00.0  On |                  N/A |\n"
        "| 30%   41C    P8             12W /  200W |     812MiB /  12282MiB |      3%      Default |\n"
    )


WINDOWS_NVIDIA = tc.MachineProbe("Windows", "AMD64", smi("560.94", "12.6"))
LINUX_NEW_DRIVER = tc.MachineProbe("Linux", "x86_64", smi("580.65.06", "13.0", "NVIDIA H200", "On"))
LINUX_NEWER_DRIVER = tc.MachineProbe("Linux", "x86_64", smi("595.10", "13.3", "NVIDIA RTX PRO 6000", "On"))
LINUX_OLD_DRIVER = tc.MachineProbe("Linux", "x86_64", smi("565.57.01", "12.7", "NVIDIA GeForce RTX 3090", "Off"))
LINUX_TOO_OLD = tc.MachineProbe("Linux", "x86_64", smi("535.183.01", "12.2", "Tesla T4", "Off"))
LINUX_ROCM = tc.MachineProbe("Linux", "x86_64", None, rocm=True, rocm_version="6.4.1")
MAC_ARM = tc.MachineProbe("Darwin", "arm64")
MAC_INTEL = tc.MachineProbe("Darwin", "x86_64")
LINUX_CPU = tc.MachineProbe("Linux", "x86_64")
WINDOWS_CPU = tc.MachineProbe("Windows", "AMD64")


@pytest.mark.parametrize("probe, kind, url, words", [
    (WINDOWS_NVIDIA, "cuda", "https://download.pytorch.org/whl/cu126",
     ["NVIDIA driver 560.94", "NVIDIA GeForce RTX 4070", "CUDA 12.6", "cu126 build"]),
    (LINUX_NEW_DRIVER, "cuda", "https://download.pytorch.org/whl/cu130", ["580.65.06", "CUDA 13.0", "cu130"]),
    (LINUX_NEWER_DRIVER, "cuda", "https://download.pytorch.org/whl/cu130", ["CUDA 13.3", "cu130"]),
    (LINUX_OLD_DRIVER, "cuda", "https://download.pytorch.org/whl/cu126", ["CUDA 12.7", "cu126"]),
    (LINUX_ROCM, "rocm", "https://download.pytorch.org/whl/rocm7.2", ["ROCm 6.4.1", "rocm7.2"]),
    (MAC_ARM, "mps", None, ["Apple Silicon", "MPS"]),
    (MAC_INTEL, "cpu", None, ["Intel Mac"]),
    (LINUX_CPU, "cpu", None, ["No NVIDIA or AMD GPU", "CPU"]),
    (WINDOWS_CPU, "cpu", None, ["No NVIDIA or AMD GPU", "CPU"]),
], ids=["windows-nvidia", "linux-driver-580", "linux-driver-newer-than-every-build", "linux-driver-565",
        "linux-rocm", "macos-arm64", "macos-x86", "linux-cpu", "windows-cpu"])
def test_automatic_choice_per_platform(probe, kind, url, words):
    choice = tc.choose(probe)
    assert (choice.kind, choice.index_url) == (kind, url)
    for word in words:
        assert word in choice.reason, (word, choice.reason)


def test_the_reason_reads_as_the_brief_asks():
    assert tc.choose(WINDOWS_NVIDIA).reason.startswith("NVIDIA driver 560.94 (NVIDIA GeForce RTX 4070) supports "
                                                       "CUDA 12.6: installing the cu126 build")


def test_a_driver_too_old_for_every_build_falls_back_to_the_cpu_and_says_so():
    choice = tc.choose(LINUX_TOO_OLD)
    assert choice.kind == "cpu" and choice.index_url is None
    assert "CUDA 12.2" in choice.reason and "older than the oldest torch build (CUDA 12.6)" in choice.reason
    assert "Update the NVIDIA driver" in choice.warning


def test_intel_macs_are_warned_that_no_wheels_exist():
    assert "macOS x86_64" in tc.choose(MAC_INTEL).warning
    assert tc.choose(MAC_ARM).warning == ""


def test_nvidia_smi_without_a_cuda_line_keeps_the_cpu_build():
    choice = tc.choose(tc.MachineProbe("Windows", "AMD64", smi("560.94", None)))
    assert choice.kind == "cpu" and "no CUDA version" in choice.reason


def test_nvidia_smi_is_not_trusted_on_macos_and_rocm_is_linux_only():
    assert tc.choose(tc.MachineProbe("Darwin", "arm64", smi("560.94", "12.6"))).kind == "mps"
    assert tc.choose(tc.MachineProbe("Windows", "AMD64", None, rocm=True)).kind == "cpu"


def test_nvidia_wins_over_rocm_when_both_are_present():
    probe = tc.MachineProbe("Linux", "x86_64", smi("580.65.06", "13.0"), rocm=True)
    assert tc.choose(probe).build == "cu130"


def test_parse_nvidia_smi_reads_driver_cuda_and_gpu():
    driver = tc.parse_nvidia_smi(smi("580.65.06", "13.0", "NVIDIA H200", "On"))
    assert driver == tc.NvidiaDriver("580.65.06", (13, 0), "NVIDIA H200")
    assert tc.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the driver") is None


@pytest.mark.parametrize("override, kind, build", [
    ("cpu", "cpu", ""), ("cu126", "cuda", "cu126"), ("cu130", "cuda", "cu130"), ("cu132", "cuda", "cu132"),
    ("rocm", "rocm", "rocm7.2"),
])
def test_overrides_win_over_detection(override, kind, build):
    choice = tc.choose(LINUX_NEW_DRIVER if override == "cpu" else LINUX_CPU, override)
    assert (choice.kind, choice.build) == (kind, build)
    assert "preferences" in choice.reason


def test_impossible_overrides_fall_back_with_a_reason():
    assert tc.choose(MAC_ARM, "cu130").kind == "cpu"
    assert "Linux only" in tc.choose(WINDOWS_NVIDIA, "rocm").reason
    with pytest.raises(ValueError):
        tc.choose(LINUX_CPU, "cu999")


def test_every_override_item_is_understood():
    identifiers = [item[0] for item in tc.override_items()]
    assert identifiers[0] == "auto" and "cpu" in identifiers and "rocm" in identifiers
    for identifier in identifiers:
        tc.choose(LINUX_CPU, identifier)  # none raises
    assert len(set(identifiers)) == len(identifiers)


def test_pip_args_label_the_pin_with_the_build():
    cuda = tc.choose(WINDOWS_NVIDIA)
    assert cuda.pip_args("torch==2.13.0") == ["torch==2.13.0+cu126", "--index-url",
                                              "https://download.pytorch.org/whl/cu126"]
    assert tc.choose(LINUX_ROCM).pip_args("torch==2.13.0")[0] == "torch==2.13.0+rocm7.2"
    assert cuda.pip_args("torch>=2.13") == ["torch>=2.13", "--index-url", "https://download.pytorch.org/whl/cu126"]
    assert tc.choose(LINUX_CPU).pip_args("torch==2.13.0") == ["torch==2.13.0"]


def test_the_pin_comes_from_the_shipped_requirements(tmp_path):
    assert tc.pinned_torch(setup.REQUIREMENTS) == "torch==2.13.0"
    other = tmp_path / "requirements.txt"
    other.write_text("# torch is pinned\ntorchvision==0.28\ntorch == 2.14.1  # the pin\ndiffusers\n")
    assert tc.pinned_torch(other) == "torch==2.14.1"
    other.write_text("diffusers\n")
    with pytest.raises(ValueError):
        tc.pinned_torch(other)


def _commands(choice, tmp_path: Path) -> list[list[str]]:
    venv = tmp_path / "venv"
    steps = setup.setup_steps("/usr/bin/python3", venv, venv / "bin" / "python", setup.REQUIREMENTS, choice)
    return [step.command for step in steps]


def test_cpu_setup_runs_todays_two_commands(tmp_path):
    venv, python = tmp_path / "venv", str(tmp_path / "venv" / "bin" / "python")
    assert _commands(tc.choose(LINUX_CPU), tmp_path) == [
        ["/usr/bin/python3", "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "--progress-bar", "off", "-r", str(setup.REQUIREMENTS)],
    ]
    assert _commands(tc.choose(MAC_ARM), tmp_path) == _commands(tc.choose(LINUX_CPU), tmp_path)


def test_cuda_setup_installs_torch_from_its_index_first(tmp_path):
    python = str(tmp_path / "venv" / "bin" / "python")
    commands = _commands(tc.choose(WINDOWS_NVIDIA), tmp_path)
    assert len(commands) == 3
    assert commands[1] == [python, "-m", "pip", "install", "--progress-bar", "off", "torch==2.13.0+cu126",
                           "--index-url", "https://download.pytorch.org/whl/cu126"]
    assert commands[2][-2:] == ["-r", str(setup.REQUIREMENTS)] and "--index-url" not in commands[2]


def test_a_setup_run_says_what_it_chose_before_it_starts(tmp_path):
    choice = tc.choose(LINUX_TOO_OLD)
    run = setup.SetupRun(tmp_path / "venv", tmp_path / "venv" / "bin" / "python", base_python=sys.executable,
                         choice=choice)  # never started: nothing is installed
    assert run.message == choice.reason
    assert run.output[0] == f"torch build: {choice.reason}" and "Update the NVIDIA driver" in run.output[1]
    assert [step.label for step in run.plan] == ["creating the environment", "installing requirements"]
    cuda = setup.SetupRun(tmp_path / "v", tmp_path / "v" / "bin" / "python", choice=tc.choose(LINUX_NEW_DRIVER))
    assert [step.label for step in cuda.plan][1] == "installing torch (cu130)"
