"""The managed environment set-up (what scene_diffusion.setup_backend runs), offline."""

from __future__ import annotations

import sys

from extension_package import import_addon_module

setup = import_addon_module("addon.jobs.setup")


def test_creates_a_venv_and_installs_a_requirements_file(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing to download in a test\n")
    venv = tmp_path / "venv"
    run = setup.SetupRun(venv, venv / "bin" / "python", requirements, base_python=sys.executable).start()
    assert run.wait(timeout=300) == 0, run.tail()
    assert (venv / "bin" / "python").exists()
    assert run.fraction == 1.0 and run.message.startswith("ready")


def test_a_failing_install_reports_the_step_and_pip_output(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{tmp_path / 'missing-1.0-py3-none-any.whl'}\n")
    venv = tmp_path / "venv"
    run = setup.SetupRun(venv, venv / "bin" / "python", requirements, base_python=sys.executable).start()
    code = run.wait(timeout=300)
    assert code not in (0, None)
    assert "failed" in run.message and "pip install" in run.message
    assert "missing-1.0-py3-none-any.whl" in run.tail()


def test_requirements_shipped_with_the_backend_pin_torch():
    lines = setup.REQUIREMENTS.read_text().splitlines()
    assert "torch==2.13.0" in lines  # an unpinned torch resolves to gigabytes of CUDA wheels
    assert setup.count_requirements(setup.REQUIREMENTS) >= 5
