"""The backend server over its real pipe, with tiny models."""

from __future__ import annotations

import pytest
from backend_process import BackendProcess

from contract import jobfolder, messages


@pytest.fixture(scope="module")
def server(tiny_models):
    proc = BackendProcess(tiny_models)
    yield proc
    proc.close()


def _job(tmp_path, **params) -> messages.Submit:
    request = {"prompt": "weathered oak planks", "width": 64, "height": 64, "steps": 4, "seed": 3, **params}
    job_dir = jobfolder.create_job(tmp_path, "texture", request)
    return messages.Submit(jobfolder.read_job(job_dir)["id"], "texture", str(job_dir), request)


def test_handshake_comes_first(server):
    hello = server.next(timeout=120)
    assert isinstance(hello, messages.Handshake)
    assert hello.protocol == messages.PROTOCOL_VERSION
    assert hello.device == "cpu" and hello.dtype == "fp32"
    assert {"torch", "diffusers", "transformers"} <= set(hello.versions)


def test_texture_job_streams_progress_with_previews_and_writes_outputs(server, tmp_path):
    submit = _job(tmp_path, preview_every=2)
    server.send(submit)
    result, seen = server.until((messages.Result, messages.Error))
    assert isinstance(result, messages.Result), result
    assert isinstance(seen[0], messages.Accepted)
    progress = [m for m in seen if isinstance(m, messages.Progress)]
    assert [p.step for p in progress] == [1, 2, 3, 4] and {p.total for p in progress} == {4}
    previews = [p.preview for p in progress if p.preview]
    assert previews == ["outputs/previews/step-0002.png", "outputs/previews/step-0004.png"]
    job_dir = tmp_path / submit.job_dir
    assert all((job_dir / p).is_file() for p in previews)
    assert (job_dir / result.outputs["image"]).is_file()
    record = jobfolder.read_job(job_dir)
    assert record["status"] == "done" and record["seed"] == 3
    assert record["models"]["text_to_image"]["family"] == "sd15"
    assert record["backend"]["versions"]["torch"]
    assert {"load_s", "generate_s", "run_s"} <= set(record["timings"])
    assert "job" in (job_dir / "backend.log").read_text()


def test_same_seed_gives_the_same_image(server, tmp_path):
    from backend.imaging.image_io import read_image

    images = []
    for sub in ("a", "b"):
        submit = _job(tmp_path / sub)
        server.send(submit)
        result, _ = server.until((messages.Result, messages.Error))
        images.append(read_image(f"{submit.job_dir}/{result.outputs['image']}"))
    assert (images[0] == images[1]).all()


def test_malformed_lines_get_an_error_and_the_server_keeps_serving(server):
    server.send_raw("this is not json")
    error = server.next()
    assert isinstance(error, messages.Error) and error.code == messages.BAD_MESSAGE and error.id is None
    server.send_raw('{"type": "handshake", "protocol": 1, "backend_version": "x", "device": "cpu", "dtype": "x"}')
    assert server.next().code == messages.BAD_MESSAGE
    server.send(messages.StatusRequest())
    status = server.next()
    assert isinstance(status, messages.Status) and status.state == "idle"
    assert status.loaded == ["sd15-tiny"]  # pipelines stay loaded between jobs


def test_release_unloads_pipelines_between_jobs(server, tmp_path):
    server.send(_job(tmp_path))
    server.until((messages.Result, messages.Error))
    server.send(messages.Release())
    status, _ = server.until((messages.Status,))  # sent once the models are gone
    assert status.loaded == []
    server.send(_job(tmp_path / "again"))  # and the next job loads them again
    result, _ = server.until((messages.Result, messages.Error))
    assert isinstance(result, messages.Result)


def test_invalid_params_and_unknown_task_are_job_errors(server, tmp_path):
    server.send(_job(tmp_path / "a", width=100))
    error, _ = server.until((messages.Error, messages.Result))
    assert error.code == messages.INVALID_PARAMS and "multiple of 8" in error.message
    submit = _job(tmp_path / "b")
    server.send(messages.Submit(submit.id, "paint", submit.job_dir, {}))
    error, _ = server.until((messages.Error, messages.Result))
    assert error.code == messages.UNKNOWN_TASK and "texture" in error.hint


def test_missing_model_names_it_and_says_how_to_fix(server, tmp_path):
    server.send(_job(tmp_path, model="no-such-model"))
    error, _ = server.until((messages.Error, messages.Result))
    assert error.code == messages.MODEL_MISSING and "no-such-model" in error.message
    assert error.hint
    assert jobfolder.read_job(_job_dir(tmp_path))["status"] == "failed"


def _job_dir(root):
    (job,) = jobfolder.list_jobs(root)
    return job


def test_cancel_stops_at_the_next_step_without_a_result(server, tmp_path):
    submit = _job(tmp_path, steps=200, width=128, height=128)
    server.send(submit)
    _, before = server.until((messages.Progress,))
    server.send(messages.Cancel(submit.id))
    final, after = server.until((messages.Cancelled, messages.Result, messages.Error))
    assert isinstance(final, messages.Cancelled)
    steps = [m.step for m in before + after if isinstance(m, messages.Progress)]
    assert max(steps) < 200
    job_dir = tmp_path / submit.job_dir
    assert jobfolder.read_job(job_dir)["status"] == "cancelled"
    assert not (job_dir / "outputs" / "texture.png").exists()


def test_queued_job_can_be_cancelled_before_it_starts(server, tmp_path):
    first, second = _job(tmp_path / "1", steps=30, width=128, height=128), _job(tmp_path / "2")
    server.send(first)
    server.send(second)
    server.send(messages.Cancel(second.id))
    cancelled, seen = server.until((messages.Cancelled,))
    assert cancelled.id == second.id
    accepted = [m for m in seen if isinstance(m, messages.Accepted)]
    assert accepted[-1].id == second.id and accepted[-1].queued == 1
    server.send(messages.Cancel(first.id))
    final, _ = server.until((messages.Cancelled, messages.Result))
    assert final.id == first.id


def test_sdxl_family_runs_through_the_same_task(server, tmp_path):
    submit = _job(tmp_path, model="sdxl-tiny")
    server.send(submit)
    result, _ = server.until((messages.Result, messages.Error))
    assert isinstance(result, messages.Result), result
    assert jobfolder.read_job(submit.job_dir)["models"]["text_to_image"]["family"] == "sdxl"


def test_shutdown_answers_bye_and_exits_zero(tiny_models):
    proc = BackendProcess(tiny_models)
    assert isinstance(proc.next(timeout=120), messages.Handshake)
    proc.send(messages.Shutdown())
    assert isinstance(proc.next(), messages.Bye)
    assert proc.proc.wait(30) == 0


def test_end_of_input_stops_the_backend(tiny_models):
    """When Blender dies its end of the pipe closes; the backend must not linger."""
    proc = BackendProcess(tiny_models)
    assert isinstance(proc.next(timeout=120), messages.Handshake)
    proc.proc.stdin.close()
    assert proc.proc.wait(30) == 0


def test_bad_registry_is_an_error_message_not_a_traceback(tmp_path):
    proc = BackendProcess(tmp_path / "missing.json")
    error = proc.next(timeout=120)
    assert isinstance(error, messages.Error) and "missing.json" in error.message
    assert proc.proc.wait(30) != 0


# -- hardening: nothing ill-typed reaches the worker, and the worker outlives any job ----------------


def _run_ok(server, tmp_path) -> None:
    submit = _job(tmp_path, steps=2)
    server.send(submit)
    result, _ = server.until((messages.Result, messages.Error))
    assert isinstance(result, messages.Result) and result.id == submit.id, result


def test_ill_typed_submits_are_bad_messages_and_a_job_still_runs(server, tmp_path):
    server.send_raw('{"type": "submit", "id": "a1", "task": "texture", "job_dir": 42, "params": {}}')
    error = server.next()
    assert error.code == messages.BAD_MESSAGE and error.id is None and "job_dir" in error.message
    server.send_raw('{"type": "submit", "id": "a2", "task": ["texture"], "job_dir": "/tmp/x", "params": {}}')
    error = server.next()
    assert error.code == messages.BAD_MESSAGE and "task" in error.message
    _run_ok(server, tmp_path)


def test_an_over_long_line_is_refused_unread_and_reading_goes_on(server, tmp_path):
    server.send_raw("x" * (5 * 1024 * 1024))
    error = server.next()
    assert isinstance(error, messages.Error) and error.code == messages.TOO_LARGE and error.id is None
    _run_ok(server, tmp_path)


def test_a_job_that_breaks_outside_its_task_does_not_stop_the_worker(server, tmp_path):
    broken = _job(tmp_path / "broken")
    (tmp_path / "broken" / broken.job_dir / jobfolder.JOB_FILE).write_text("not json")  # run_job itself raises
    server.send(broken)
    error, _ = server.until((messages.Error, messages.Result))
    assert error.id == broken.id and error.code == messages.INTERNAL
    gone = _job(tmp_path / "gone")
    import shutil

    shutil.rmtree(gone.job_dir)  # a folder deleted between submit and run
    server.send(gone)
    error, _ = server.until((messages.Error, messages.Result))
    assert error.id == gone.id
    _run_ok(server, tmp_path / "fine")


WORKER_DIES = """
import time
import backend.runner
from backend.scheduler import Scheduler
from contract import messages

def run_job(*args, **kwargs):
    raise SystemExit("not an Exception: escapes the per-job guard and ends the worker thread")

backend.runner.run_job = run_job
scheduler = Scheduler()
scheduler.engine = object()
scheduler.connected("local")
scheduler.start()
scheduler.submit("local", messages.Submit("dies", "texture", "/nowhere"), lambda message: None)
time.sleep(30)
print("still here: the process did not exit")
"""


def test_a_dead_worker_thread_ends_the_process_non_zero():
    """Never a backend whose reader answers while no job can run again: the supervisor restarts an exited one."""
    import subprocess
    import sys

    from backend_process import OFFLINE_ENV, ROOT

    from backend.scheduler import WORKER_DIED_EXIT

    proc = subprocess.run([sys.executable, "-c", WORKER_DIES], cwd=ROOT, env=OFFLINE_ENV, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == WORKER_DIED_EXIT, proc.stdout + proc.stderr
    assert "still here" not in proc.stdout and "worker thread died" in proc.stderr
