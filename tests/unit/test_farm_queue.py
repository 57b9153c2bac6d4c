"""The farm's pure parts: which job an idle actor takes, and how a batch's jobs are found."""

from __future__ import annotations

import json

from backend.farm.jobs import collect, family_of
from backend.farm.order import FamilyQueue
from contract import jobfolder


def test_an_actor_keeps_its_family_and_others_open_the_largest_free_group():
    queue: FamilyQueue[str] = FamilyQueue()
    for key, item in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"), ("b", "b2"), ("b", "b3")]:
        queue.put(key, item)
    assert queue.take("a") == ("a", "a1")  # its own family first
    assert queue.take(None, busy=frozenset({"a"})) == ("b", "b1")  # the largest group nobody runs
    assert queue.take("c") == ("c", "c1")
    assert queue.take("c", busy=frozenset({"b"})) == ("a", "a2")  # c is empty; b is busy elsewhere
    queue.put("b", "retried", front=True)
    assert queue.take("b") == ("b", "retried")  # a retried job goes first
    assert [queue.take("b")[1], queue.take("b")[1]] == ["b2", "b3"]
    assert queue.take("b") is None and len(queue) == 0


def test_family_is_the_model_then_the_task():
    assert family_of("texture", {"model": "sdxl"}) == "sdxl:texture"
    assert family_of("render", {}) == "default:render"


def test_a_folder_of_jobs_skips_done_ones_and_reports_broken_ones(tmp_path):
    done = jobfolder.create_job(tmp_path, "texture", {"prompt": "a", "width": 64, "height": 64})
    jobfolder.update_job(done, status="done")
    queued = jobfolder.create_job(tmp_path, "pbr", {"source": "inputs/a.png"})
    broken = jobfolder.create_job(tmp_path, "texture", {"prompt": "a", "width": 7})
    jobs, bad = collect(tmp_path, tmp_path)
    assert {(j.name, j.done) for j in jobs} == {(done.name, True), (queued.name, False)}
    assert [b.name for b in bad] == [broken.name] and "width" in bad[0].reason


def test_request_lines_become_job_folders_once_and_bad_lines_are_jobs_that_failed(tmp_path):
    (tmp_path / "wall.png").write_bytes(b"png")
    lines = [
        {"task": "pbr", "id": "wall", "params": {"source": "inputs/wall.png"},
         "inputs": {"inputs/wall.png": "wall.png"}},
        {"task": "texture", "params": {"prompt": "moss", "width": 64, "height": 64}},
        {"task": "texture", "id": "wall", "params": {"prompt": "again"}},
        {"task": "pbr", "params": {"source": "inputs/x.png"}, "inputs": {"../x.png": "wall.png"}},
        {"task": "nope"},
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    out = tmp_path / "out"
    out.mkdir()
    jobs, bad = collect(requests, out)
    assert [j.name for j in jobs] == ["wall", "line-00002-texture"]
    assert (out / "wall" / "inputs" / "wall.png").read_bytes() == b"png"
    assert jobfolder.read_job(out / "wall")["request"]["source"] == "inputs/wall.png"
    reasons = {b.name: b.reason for b in bad}
    assert "used by an earlier line" in reasons["line-00003"]
    assert "'..'" in reasons["line-00004"] and "unknown task" in reasons["line-00005"]
    assert "line-00006" in reasons
    jobfolder.update_job(out / "wall", status="done")
    again, _ = collect(requests, out)  # a second run finds the folders it made
    assert [(j.name, j.done) for j in again] == [("wall", True), ("line-00002-texture", False)]
