"""The render-manager adapters in farm/: the Flamenco job type (run with Node.js against stand-ins for
Flamenco's `author`/`job` objects) and the Open Job Description template (`openjd check` and
`openjd run` with recording stand-ins for Blender and Python; the Batch step also for real)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAMENCO_SCRIPT = ROOT / "farm" / "flamenco" / "scene_diffusion.js"
HARNESS = Path(__file__).with_name("flamenco_harness.js")
TEMPLATE = ROOT / "farm" / "openjd" / "scene_diffusion.yaml"

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js (`node`) is not installed: the Flamenco "
                                                     "job compiler cannot be run")
_OPENJD = Path(sys.executable).with_name("openjd")
OPENJD = str(_OPENJD) if _OPENJD.exists() else shutil.which("openjd")
needs_openjd = pytest.mark.skipif(OPENJD is None, reason="openjd-cli is not installed "
                                                         "(pip install -r requirements-dev.txt)")

# The Flamenco batch task's `python -c` stand-in for `python -m backend` run from the checkout.
LAUNCHER = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module('backend', run_name='__main__', alter_sys=True)")


# ---------------------------------------------------------------- Flamenco

@dataclass(frozen=True)
class Compiled:
    job_type: dict[str, Any]
    tasks: list[dict[str, Any]]
    error: str | None

    def named(self, name: str) -> dict[str, Any]:
        return next(t for t in self.tasks if t["name"] == name)

    def args(self, name: str) -> list[str]:
        (command,) = self.named(name)["commands"]
        assert command["name"] == "exec"
        return [command["parameters"]["exe"], *command["parameters"]["args"]]


def compile_flamenco(settings: dict[str, Any]) -> Compiled:
    assert NODE is not None
    done = subprocess.run([NODE, str(HARNESS), str(FLAMENCO_SCRIPT)], input=json.dumps({"settings": settings}),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return Compiled(out["job_type"], out.get("tasks", []), out.get("error"))


BASE = {
    "blendfiles": "/shots/a b.blend\n/shots/c.blend",
    "script": "texture_batch.py",
    "script_args": '--prompt "mossy stone wall" --objects Wall "Big Rock" --seed 7',
    "jobs_dir": "/farm/jobs dir",
    "checkout": "/opt/scene diffusion",
    "python": "/opt/venv/bin/python",
    "blender": "{blender}",
}
SCRIPT = "/opt/scene diffusion/examples/texture_batch.py"
ARGS = ["--prompt", "mossy stone wall", "--objects", "Wall", "Big Rock", "--seed", "7"]


@needs_node
def test_flamenco_two_files_make_two_prepares_one_batch_two_applies():
    out = compile_flamenco(BASE)
    assert out.error is None
    names = [t["name"] for t in out.tasks]
    assert names == ["prepare-1-a b.blend", "prepare-2-c.blend", "batch", "apply-1-a b.blend", "apply-2-c.blend"]
    assert [t["type"] for t in out.tasks] == ["blender", "blender", "misc", "blender", "blender"]

    assert out.args("prepare-1-a b.blend") == [
        "{blender}", "-b", "/shots/a b.blend", "-P", SCRIPT, "--", "--prepare", "/farm/jobs dir", *ARGS]
    assert out.args("prepare-2-c.blend") == [
        "{blender}", "-b", "/shots/c.blend", "-P", SCRIPT, "--", "--prepare", "/farm/jobs dir", *ARGS]
    assert out.args("batch") == [
        "/opt/venv/bin/python", "-c", LAUNCHER, "/opt/scene diffusion",
        "batch", "--jobs", "/farm/jobs dir", "--ray", "auto", "--no-progress"]
    # No save folder: texture_batch.py saves each file over itself.
    assert out.args("apply-1-a b.blend") == [
        "{blender}", "-b", "/shots/a b.blend", "-P", SCRIPT, "--", "--apply", "/farm/jobs dir", *ARGS,
        "--save", "/shots/a b.blend"]
    assert out.args("apply-2-c.blend")[-2:] == ["--save", "/shots/c.blend"]

    assert out.named("prepare-1-a b.blend")["dependencies"] == []
    assert out.named("batch")["dependencies"] == ["prepare-1-a b.blend", "prepare-2-c.blend"]
    assert out.named("apply-1-a b.blend")["dependencies"] == ["batch"]
    assert out.named("apply-2-c.blend")["dependencies"] == ["batch"]


@needs_node
def test_flamenco_render_script_local_cluster_save_folder_and_extra_batch_arguments():
    out = compile_flamenco({**BASE, "blendfiles": "C:\\shots\\a.blend; D:/b.blend", "script": "batch_render.py",
                            "script_args": '["--prompt", "a cottage, snow", "--frames", "1-10", "--out", "R:/out"]',
                            "local_workers": 2, "batch_args": "--device cuda --registry '/models/my registry'",
                            "save_dir": "/ignored/for/renders"})
    assert out.error is None
    render = "/opt/scene diffusion/examples/batch_render.py"
    assert out.args("prepare-1-a.blend") == [
        "{blender}", "-b", "C:\\shots\\a.blend", "-P", render, "--", "--prepare", "/farm/jobs dir",
        "--prompt", "a cottage, snow", "--frames", "1-10", "--out", "R:/out"]
    assert out.args("batch")[4:] == ["batch", "--jobs", "/farm/jobs dir", "--local", "2", "--no-progress",
                                     "--device", "cuda", "--registry", "/models/my registry"]
    # batch_render.py writes its renders to --out: no --save.
    assert out.args("apply-2-b.blend") == [
        "{blender}", "-b", "D:/b.blend", "-P", render, "--", "--apply", "/farm/jobs dir",
        "--prompt", "a cottage, snow", "--frames", "1-10", "--out", "R:/out"]

    saved = compile_flamenco({**BASE, "save_dir": "/out/textured/"})
    assert saved.args("apply-1-a b.blend")[-2:] == ["--save", "/out/textured/a b.blend"]


@needs_node
def test_flamenco_falls_back_to_the_file_submitted_from_blender_and_to_defaults():
    out = compile_flamenco({"blendfile": "/storage/job-1/shot.flamenco.blend", "jobs_dir": "/jobs",
                            "checkout": "/sd", "script_args": "--prompt rust"})
    assert out.error is None
    assert [t["name"] for t in out.tasks] == ["prepare-1-shot.flamenco.blend", "batch",
                                              "apply-1-shot.flamenco.blend"]
    assert out.args("prepare-1-shot.flamenco.blend") == [
        "{blender}", "-b", "/storage/job-1/shot.flamenco.blend", "-P", "/sd/examples/texture_batch.py", "--",
        "--prepare", "/jobs", "--prompt", "rust"]
    assert out.args("batch") == ["python3", "-c", LAUNCHER, "/sd", "batch", "--jobs", "/jobs", "--ray", "auto",
                                 "--no-progress"]


@needs_node
def test_flamenco_shell_like_splitting_of_script_arguments():
    cases = {
        "--prompt 'it is \"quoted\"' --seed 3": ["--prompt", 'it is "quoted"', "--seed", "3"],
        '--prompt "say \\"hi\\" now"': ["--prompt", 'say "hi" now'],
        "--objects Big\\ Rock C:\\scenes\\x": ["--objects", "Big Rock", "C:\\scenes\\x"],
        '--negative-prompt ""  --steps\t20': ["--negative-prompt", "", "--steps", "20"],
    }
    for text, expected in cases.items():
        out = compile_flamenco({**BASE, "blendfiles": "/a.blend", "script_args": text})
        assert out.error is None, text
        assert out.args("prepare-1-a.blend")[8:] == expected, text


@pytest.mark.parametrize(("change", "message"), [
    ({"blendfiles": "", "blendfile": ""}, "no .blend files"),
    ({"blendfiles": " ; \n "}, "no .blend files"),
    ({"blendfiles": "/a.blend;/notes.txt"}, "not .blend files: /notes.txt"),
    ({"script": "other.py"}, "setting 'script' is 'other.py'"),
    ({"jobs_dir": "  "}, "setting 'jobs_dir' is empty"),
    ({"checkout": ""}, "setting 'checkout' is empty"),
    ({"python": ""}, "setting 'python' is empty"),
    ({"script_args": '--prompt "unclosed'}, "unclosed \" quote"),
    ({"script_args": "[1, 2]"}, "JSON array of strings"),
    ({"script_args": "--prepare /x"}, "must not hold --prepare"),
    ({"script_args": "--save /x.blend"}, "use 'save_dir'"),
    ({"local_workers": -1}, "'local_workers' is -1"),
    ({"local_workers": 1.5}, "'local_workers' is 1.5"),
    ({"ray_address": "", "local_workers": 0}, "set 'ray_address'"),
])
@needs_node
def test_flamenco_bad_settings_throw_a_clear_error(change, message):
    out = compile_flamenco({**BASE, **change})
    assert out.tasks == []
    assert out.error is not None and out.error.startswith("Scene Diffusion: ") and message in out.error


@needs_node
def test_flamenco_job_type_settings_are_what_the_manager_accepts():
    job_type = compile_flamenco(BASE).job_type
    assert job_type["label"]
    settings = job_type["settings"]
    keys = [s["key"] for s in settings]
    assert len(keys) == len(set(keys))
    assert {"blendfiles", "script", "script_args", "jobs_dir", "ray_address", "local_workers", "python",
            "checkout", "blender"} <= set(keys)
    for s in settings:  # Flamenco's AvailableJobSetting schema (pkg/api/flamenco-openapi.yaml)
        assert s["type"] in {"string", "int32", "float", "bool"}, s
        assert s.get("subtype") in {None, "file_path", "dir_path", "file_name", "hashed_file_path"}, s
        assert s.get("visible", "visible") in {"visible", "hidden", "submission", "web"}, s
        if "choices" in s:
            assert s["type"] == "string" and s.get("default") in s["choices"], s
        if "default" in s:
            assert isinstance(s["default"], int if s["type"] == "int32" else str), s


@needs_node
def test_flamenco_batch_command_runs_the_real_backend_from_another_folder(tmp_path):
    """The batch task's exact arguments (the launcher puts the checkout on sys.path) with this Python,
    from a folder that is not the checkout, on an empty jobs folder: nothing to do, exit 0."""
    pytest.importorskip("ray")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    out = compile_flamenco({**BASE, "jobs_dir": str(jobs), "checkout": str(ROOT), "python": sys.executable,
                            "local_workers": 1, "batch_args": "--device cpu"})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(out.args("batch"), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "batch: 0 done" in done.stdout
    assert (jobs / "batch.json").is_file()


# ---------------------------------------------------------------- Open Job Description

def _stand_in(path: Path, log: Path) -> str:
    """An executable that appends its name, arguments and PYTHONPATH to `log` as one JSON line."""
    path.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        with open({str(log)!r}, "a", encoding="utf-8") as f:
            f.write(json.dumps({{"exe": os.path.basename(sys.argv[0]), "args": sys.argv[1:],
                                "pythonpath": os.environ.get("PYTHONPATH")}}) + "\\n")
        """), encoding="utf-8")
    path.chmod(0o755)
    return str(path)


def openjd_run(params: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    assert OPENJD is not None
    command = [OPENJD, "run", str(TEMPLATE), "--job-param", json.dumps(params), *extra]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)


@needs_openjd
def test_openjd_template_passes_check():
    assert OPENJD is not None
    done = subprocess.run([OPENJD, "check", str(TEMPLATE)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_openjd
@pytest.mark.skipif(os.name == "nt", reason="the stand-ins are scripts with a #! line")
def test_openjd_run_calls_each_step_with_its_arguments_in_dependency_order(tmp_path):
    log = tmp_path / "calls.jsonl"
    blender = _stand_in(tmp_path / "blender", log)
    python = _stand_in(tmp_path / "python", log)
    checkout, jobs = tmp_path / "check out", tmp_path / "jobs dir"
    checkout.mkdir()
    jobs.mkdir()
    files = [str(tmp_path / "a b.blend"), str(tmp_path / "c.blend")]
    args = ["--prompt", "mossy stone wall", "--objects", "Wall", "Big Rock"]
    done = openjd_run({"BlendFiles": files, "ScriptArgs": args, "JobsDir": str(jobs), "Checkout": str(checkout),
                       "Blender": blender, "Python": python, "BatchArgs": ["--device", "cpu"]})
    assert done.returncode == 0, done.stdout + done.stderr

    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    script = f"{checkout}/examples/texture_batch.py"
    stages = [c["args"][5] if c["exe"] == "blender" else "batch" for c in calls]
    assert stages == ["--prepare", "--prepare", "batch", "--apply", "--apply"]  # the dependency order
    prepares, batch, applies = calls[:2], calls[2], calls[3:]
    assert sorted(c["args"] for c in prepares) == sorted(
        ["-b", f, "-P", script, "--", "--prepare", str(jobs), *args] for f in files)
    assert batch == {"exe": "python", "pythonpath": str(checkout),
                     "args": ["-m", "backend", "batch", "--jobs", str(jobs), "--ray", "auto", "--no-progress",
                              "--device", "cpu"]}
    assert sorted(c["args"] for c in applies) == sorted(
        ["-b", f, "-P", script, "--", "--apply", str(jobs), *args, "--save", f] for f in files)


@needs_openjd
@pytest.mark.skipif(os.name == "nt", reason="the stand-ins are scripts with a #! line")
def test_openjd_render_script_local_workers_and_save_folder(tmp_path):
    log = tmp_path / "calls.jsonl"
    blender = _stand_in(tmp_path / "blender", log)
    python = _stand_in(tmp_path / "python", log)
    files = [str(tmp_path / "shot.blend")]
    common = {"BlendFiles": files, "JobsDir": str(tmp_path), "Checkout": str(tmp_path), "Blender": blender,
              "Python": python, "LocalWorkers": 2}
    done = openjd_run({**common, "Script": "batch_render.py", "ScriptArgs": ["--prompt", "a cottage",
                                                                             "--out", str(tmp_path / "r")]})
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert calls[1]["args"] == ["-m", "backend", "batch", "--jobs", str(tmp_path), "--local", "2", "--no-progress"]
    assert calls[2]["args"] == ["-b", files[0], "-P", f"{tmp_path}/examples/batch_render.py", "--", "--apply",
                                str(tmp_path), "--prompt", "a cottage", "--out", str(tmp_path / "r")]

    log.unlink()
    done = openjd_run({**common, "SaveDir": str(tmp_path / "saved")}, "--step", "Apply", "--no-run-dependencies")
    assert done.returncode == 0, done.stdout + done.stderr
    (apply,) = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert apply["args"][-2:] == ["--save", str(tmp_path / "saved" / "shot.blend")]


@needs_openjd
def test_openjd_refuses_an_empty_file_list_and_an_unknown_script(tmp_path):
    common = {"JobsDir": str(tmp_path), "Checkout": str(tmp_path)}
    empty = openjd_run({**common, "BlendFiles": []})
    assert empty.returncode != 0 and "BlendFiles" in empty.stdout + empty.stderr
    unknown = openjd_run({**common, "BlendFiles": [str(tmp_path / "a.blend")], "Script": "other.py"})
    assert unknown.returncode != 0 and "allowedValues" in unknown.stdout + unknown.stderr


@needs_openjd
def test_openjd_batch_step_runs_the_real_backend_on_an_empty_jobs_folder(tmp_path):
    pytest.importorskip("ray")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    done = openjd_run({"BlendFiles": [str(tmp_path / "a.blend")], "JobsDir": str(jobs), "Checkout": str(ROOT),
                       "Python": sys.executable, "LocalWorkers": 1, "BatchArgs": ["--device", "cpu"]},
                      "--step", "Batch", "--no-run-dependencies")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "batch: 0 done" in done.stdout
    assert (jobs / "batch.json").is_file()
