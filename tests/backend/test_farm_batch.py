"""`python -m backend batch` on real Ray clusters on this machine, with the tiny models on the CPU."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from backend_process import OFFLINE_ENV, ROOT, BackendProcess
from farm_jobs import mixed_jobs, output_pixels, texture_job

from contract import jobfolder, messages

pytest.importorskip("ray")
RAY = Path(sys.executable).with_name("ray")


def _batch(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "backend", "batch", "--device", "cpu", "--no-progress", *args],
                            cwd=ROOT, env=env or OFFLINE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _summary(folder: Path) -> dict:
    return json.loads((folder / "batch.json").read_text())


def test_mixed_jobs_on_two_workers_match_the_local_backend(tiny_models, tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    mixed_jobs(jobs)
    reference = tmp_path / "reference"
    shutil.copytree(jobs, reference)

    code, log = _finish(_batch("--jobs", str(jobs), "--local", "2", "--registry", str(tiny_models)))
    assert code == 0, log
    summary = _summary(jobs)
    assert summary["counts"]["done"] == 8 and summary["counts"]["failed"] == 0
    assert len(summary["workers"]) == 2 and {w["shared_storage"] for w in summary["workers"]} == {True}
    assert {a["actor"] for j in summary["jobs"].values() for a in j["attempts"]} == {0, 1}  # both worked
    tasks_in_order = {}
    for entry in summary["jobs"].values():
        assert entry["status"] == "done" and entry["retries"] == 0
        tasks_in_order.setdefault(entry["attempts"][0]["actor"], []).append(entry["family"])

    # The same jobs one by one through the local backend (one thread, as each actor has one CPU).
    monkeypatch.setitem(OFFLINE_ENV, "OMP_NUM_THREADS", "1")
    backend = BackendProcess(tiny_models, "--device", "cpu")
    try:
        backend.until((messages.Handshake,))
        for job_dir in jobfolder.list_jobs(reference):
            record = jobfolder.read_job(job_dir)
            backend.send(messages.Submit(record["id"], record["task"], str(job_dir), record["request"]))
            final, _ = backend.until((messages.Result, messages.Error), timeout=300)
            assert isinstance(final, messages.Result), final
    finally:
        backend.close()
    for job_dir in jobfolder.list_jobs(jobs):
        farm, local = output_pixels(job_dir), output_pixels(reference / job_dir.name)
        assert farm and farm.keys() == local.keys(), job_dir.name
        for name in farm:
            assert (farm[name] == local[name]).all(), f"{job_dir.name}/{name} differs from the local backend's"

    # Run again: everything is done, nothing runs.
    code, log = _finish(_batch("--jobs", str(jobs), "--local", "1", "--registry", str(tiny_models)))
    assert code == 0 and "0 done, 8 skipped" in log, log


def test_a_killed_worker_s_job_is_retried_and_every_job_ends_once(tiny_models, tmp_path):
    jobs = tmp_path / "jobs"
    for seed in range(6):
        texture_job(jobs, seed, steps=12, size=128)
    proc = _batch("--jobs", str(jobs), "--local", "2", "--registry", str(tiny_models))
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            summary = _summary(jobs)
        except (OSError, ValueError):
            continue
        running = [j for j in summary["jobs"].values() if j["status"] == "running"]
        if running and summary["counts"]["done"] >= 1:  # warm workers, a job mid-way
            victim = running[0]
    assert victim is not None, "no job was seen running"
    os.kill(victim["attempts"][-1]["pid"], signal.SIGKILL)
    code, log = _finish(proc)
    assert code == 0, log
    summary = _summary(jobs)
    assert summary["counts"]["done"] == 6 and summary["counts"]["failed"] == 0
    entry = summary["jobs"][victim["name"]]
    assert entry["retries"] == 1 and entry["attempts"][0]["outcome"] == "lost"
    assert "Actor" in entry["attempts"][0]["error"] and entry["attempts"][1]["outcome"] == "done"
    assert entry["attempts"][1]["pid"] != victim["attempts"][-1]["pid"]
    for job_dir in jobfolder.list_jobs(jobs):
        record = jobfolder.read_job(job_dir)
        assert record["status"] == "done" and (job_dir / record["outputs"]["image"]).is_file()
        assert not list(job_dir.rglob(".*.tmp*")), "a half-written file was left"


@pytest.fixture()
def two_node_cluster():
    """A head and a second node started with `ray start` on loopback, with their own token."""
    port = str(30000 + secrets.randbelow(20000))
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**OFFLINE_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_TMPDIR": ray_dir}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", port,
                        "--include-dashboard=false", *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([str(RAY), "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                        *common], env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_jobs_spread_over_a_second_node(tiny_models, tmp_path, two_node_cluster):
    address, env = two_node_cluster
    jobs = tmp_path / "jobs"
    for seed in range(4):
        texture_job(jobs, seed)
    code, log = _finish(_batch("--jobs", str(jobs), "--ray", address, "--registry", str(tiny_models), env=env))
    assert code == 0, log
    summary = _summary(jobs)
    assert summary["counts"]["done"] == 4
    nodes = {w["node"] for w in summary["workers"]}
    assert len(nodes) == 2, summary["workers"]
    assert {j["attempts"][0]["node"] for j in summary["jobs"].values()} == nodes  # both nodes ran jobs


def test_jobs_shipped_through_ray_when_storage_is_not_shared(tiny_models, tmp_path):
    jobs = tmp_path / "jobs"
    mixed_jobs(jobs)
    code, log = _finish(_batch("--jobs", str(jobs), "--local", "1", "--transfer", "ship",
                               "--registry", str(tiny_models)))
    assert code == 0, log
    summary = _summary(jobs)
    assert summary["counts"]["done"] == 8 and summary["workers"][0]["shared_storage"] is False
    for job_dir in jobfolder.list_jobs(jobs):
        record = jobfolder.read_job(job_dir)
        assert record["status"] == "done" and (job_dir / jobfolder.LOG_FILE).is_file()
        assert all((job_dir / rel).is_file() for rel in _files(record["outputs"]))
        assert not (job_dir / ".farm-incoming").exists()


def _files(outputs: dict) -> list[str]:
    found: list[str] = []
    for value in outputs.values():
        if isinstance(value, str) and value:
            found.append(value)
        elif isinstance(value, dict):
            found += _files(value)
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    return found
