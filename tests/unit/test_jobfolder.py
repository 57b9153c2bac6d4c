import json
import os

import pytest

from contract import jobfolder


def test_create_job_layout_and_record(tmp_path):
    job = jobfolder.create_job(tmp_path, "texture", {"prompt": "x"})
    assert (job / "inputs").is_dir() and (job / "outputs").is_dir()
    record = jobfolder.read_job(job)
    assert record["status"] == "queued" and record["task"] == "texture"
    assert record["request"] == {"prompt": "x"}
    assert job.name.endswith(f"-texture-{record['id']}")


def test_create_job_at_a_given_folder_refuses_an_existing_job(tmp_path):
    job = jobfolder.create_job(tmp_path, "texture", {}, at=tmp_path / "out")
    assert job == tmp_path / "out"
    with pytest.raises(FileExistsError, match="already holds a job"):
        jobfolder.create_job(tmp_path, "texture", {}, at=tmp_path / "out")


def test_update_merges_dicts_one_level(tmp_path):
    job = jobfolder.create_job(tmp_path, "texture", {})
    jobfolder.update_job(job, timings={"load_s": 1.0}, status="running")
    record = jobfolder.update_job(job, timings={"run_s": 2.0})
    assert record["timings"] == {"load_s": 1.0, "run_s": 2.0}
    assert json.loads((job / "job.json").read_text())["status"] == "running"


def test_atomic_write_leaves_no_temporary_files_and_keeps_old_content_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    jobfolder.atomic_write_text(target, "first")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        jobfolder.atomic_write_text(target, "second")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_prune_keeps_newest_and_never_running_jobs(tmp_path):
    jobs = []
    for i in range(5):
        job = jobfolder.create_job(tmp_path, "texture", {}, job_id=f"j{i}", at=tmp_path / f"2026-{i}")
        jobfolder.update_job(job, status="done" if i != 1 else "running")
        jobs.append(job)
    removed = jobfolder.prune_jobs(tmp_path, keep=2, protect={jobs[2]})
    assert removed == [jobs[0]]
    assert [p.name for p in jobfolder.list_jobs(tmp_path)] == ["2026-1", "2026-2", "2026-3", "2026-4"]
