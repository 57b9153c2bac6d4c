"""The add-on's client and supervisor (no bpy) against a real backend process."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time

import pytest
from extension_package import import_addon_module

from contract import jobfolder

supervisor_mod = import_addon_module("addon.jobs.supervisor")
client_mod = import_addon_module("addon.jobs.client")
tasks_mod = import_addon_module("contract.tasks")  # the add-on's own copy of the contract


def _config(tmp_path, tiny_models, python=sys.executable, timeout=120.0):
    return client_mod.LaunchConfig(python=str(python), log_path=tmp_path / "logs" / "backend.log",
                                   registry=str(tiny_models), handshake_timeout=timeout,
                                   extra_env={"HF_HUB_OFFLINE": "1"})


def _job(tmp_path, **params):
    request = {"prompt": "slate roof", "width": 64, "height": 64, "steps": 4, "seed": 5, **params}
    job_dir = jobfolder.create_job(tmp_path / "jobs", "texture", request)
    return supervisor_mod.Job(jobfolder.read_job(job_dir)["id"], job_dir, tasks_mod.TextureParams(**request))


@pytest.fixture
def sup(tmp_path, tiny_models):
    s = supervisor_mod.Supervisor(lambda: _config(tmp_path, tiny_models))
    yield s
    s.stop()


def test_job_runs_to_a_result_and_calls_back(sup, tmp_path):
    landed = []
    job = _job(tmp_path)
    job.on_result = lambda j, outputs: landed.append(outputs.image)
    sup.submit(job)
    assert job.state == supervisor_mod.STARTING  # queued until the handshake arrives
    sup.run_until_done(job, timeout=120)
    assert job.state == supervisor_mod.DONE, job.error
    assert landed == ["outputs/texture.png"] and (job.job_dir / landed[0]).is_file()
    assert job.step == job.total == 4 and job.preview is not None and job.preview.is_file()
    assert sup.handshake is not None and sup.state == "ready"


def test_backend_death_mid_job_is_reported_within_two_seconds(sup, tmp_path):
    job = _job(tmp_path, steps=200, width=128, height=128)
    sup.submit(job)
    deadline = time.monotonic() + 120
    while job.step == 0 and time.monotonic() < deadline:
        sup.tick()
        time.sleep(0.05)
    assert job.state == supervisor_mod.RUNNING
    os.kill(sup.client.pid, signal.SIGKILL)
    killed = time.monotonic()
    while not job.finished and time.monotonic() - killed < 5:
        sup.tick()
        time.sleep(0.1)  # the add-on's timer interval
    assert time.monotonic() - killed < 2.0
    assert job.state == supervisor_mod.FAILED
    assert "exited with code -9" in job.error.message
    assert "job" in job.error.log_tail  # the backend's last log lines
    assert jobfolder.read_job(job.job_dir)["status"] == "failed"

    # The next submit starts a fresh backend.
    retry = _job(tmp_path)
    sup.submit(retry)
    sup.run_until_done(retry, timeout=120)
    assert retry.state == supervisor_mod.DONE, retry.error


def test_cancel_ends_the_job_without_result(sup, tmp_path):
    job = _job(tmp_path, steps=200, width=128, height=128)
    job.on_result = lambda *_: pytest.fail("a cancelled job must not apply a result")
    sup.submit(job)
    while job.step == 0:
        sup.tick()
        time.sleep(0.05)
    sup.cancel(job.id)
    sup.run_until_done(job, timeout=60)
    assert job.state == supervisor_mod.CANCELLED
    assert jobfolder.read_job(job.job_dir)["status"] == "cancelled"


def test_timer_ticks_quickly_only_while_a_result_may_be_near(sup, tmp_path):
    busy = 0.1  # the window timer's interval while a job runs (addon/jobs/service.py)
    assert sup.tick_interval(busy) == busy  # no job
    job = _job(tmp_path, steps=200, width=128, height=128)
    sup.submit(job)
    assert sup.tick_interval(busy) == supervisor_mod.QUICK_INTERVAL  # just submitted: a short job ends soon
    deadline = time.monotonic() + 120
    while (job.step == 0 or time.monotonic() - job.submitted < supervisor_mod.QUICK_AFTER_SUBMIT) \
            and time.monotonic() < deadline:
        sup.tick()
        time.sleep(0.02)
    assert job.state == supervisor_mod.RUNNING and 0 < job.step < job.total
    assert sup.tick_interval(busy) == busy  # denoising: nothing to apply for a while
    job.step = job.total  # the last step reported: only decoding and writing files remain
    assert sup.tick_interval(busy) == supervisor_mod.QUICK_INTERVAL
    sup.cancel(job.id)
    sup.run_until_done(job, timeout=60)
    assert sup.tick_interval(busy) == busy  # finished jobs do not keep the timer quick


def _fake_python(tmp_path, body: str):
    """An executable standing in for a broken interpreter."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_missing_handshake_is_an_error_not_a_hang(tmp_path, tiny_models):
    python = _fake_python(tmp_path, "echo 'stuck loading CUDA' >&2; sleep 60")
    sup = supervisor_mod.Supervisor(lambda: _config(tmp_path, tiny_models, python, timeout=1.0))
    job = sup.submit(_job(tmp_path))
    started = time.monotonic()
    sup.run_until_done(job, timeout=30)
    assert time.monotonic() - started < 5
    assert job.state == supervisor_mod.FAILED
    assert "did not answer within 1 s" in job.error.message
    assert "stuck loading CUDA" in job.error.log_tail
    assert sup.client is None


def test_backend_that_exits_at_once_reports_exit_code_and_log(tmp_path, tiny_models):
    python = _fake_python(tmp_path, "echo 'ModuleNotFoundError: No module named torch' >&2; exit 3")
    sup = supervisor_mod.Supervisor(lambda: _config(tmp_path, tiny_models, python))
    job = sup.submit(_job(tmp_path))
    sup.run_until_done(job, timeout=30)
    assert job.state == supervisor_mod.FAILED
    assert "exited with code 3" in job.error.message
    assert "No module named torch" in job.error.log_tail


def test_protocol_mismatch_is_a_clear_message(tmp_path, tiny_models):
    line = '{"type":"handshake","protocol":999,"backend_version":"9","device":"cpu","dtype":"fp32"}'
    python = _fake_python(tmp_path, f"echo '{line}'; sleep 60")
    sup = supervisor_mod.Supervisor(lambda: _config(tmp_path, tiny_models, python))
    job = sup.submit(_job(tmp_path))
    sup.run_until_done(job, timeout=30)
    assert job.state == supervisor_mod.FAILED
    assert "protocol 999" in job.error.message and "update" in job.error.hint


def test_missing_interpreter_fails_the_job_with_a_hint(tmp_path, tiny_models):
    sup = supervisor_mod.Supervisor(lambda: _config(tmp_path, tiny_models, tmp_path / "nope" / "python"))
    job = sup.submit(_job(tmp_path))
    assert job.state == supervisor_mod.FAILED
    assert "backend Python not found" in job.error.message and "Setup Backend" in job.error.hint


def test_dependency_error_from_backend_keeps_its_message(tmp_path, tiny_models):
    line = ('{"type":"error","id":null,"code":"dependency",'
            '"message":"the backend cannot import torch","hint":"run Setup Backend"}')
    python = _fake_python(tmp_path, f"echo '{line}'; exit 3")
    sup = supervisor_mod.Supervisor(lambda: _config(tmp_path, tiny_models, python))
    job = sup.submit(_job(tmp_path))
    sup.run_until_done(job, timeout=30)
    assert job.state == supervisor_mod.FAILED
    assert "cannot import torch" in job.error.message and job.error.hint == "run Setup Backend"
    sup.tick()
    assert "cannot import torch" in sup.last_error.message


def test_a_job_whose_backend_died_before_accepting_it_goes_to_a_fresh_backend(sup, tmp_path):
    warm = _job(tmp_path)
    sup.submit(warm)
    sup.run_until_done(warm, timeout=120)
    assert warm.state == supervisor_mod.DONE, warm.error
    first_pid = sup.client.pid
    # Stopped, the backend cannot answer Accepted; the submit lands in its pipe; then it dies.
    os.kill(first_pid, signal.SIGSTOP)
    job = _job(tmp_path)
    sup.submit(job)
    assert job.sent and not job.accepted
    os.kill(first_pid, signal.SIGKILL)
    sup.run_until_done(job, timeout=120)
    assert job.state == supervisor_mod.DONE, job.error
    assert job.resent and sup.starts == 2 and sup.client.pid != first_pid
    assert jobfolder.read_job(job.job_dir)["status"] == "done"
