"""LoRAs, samplers and reference images through the job runner (the path the add-on's jobs take), their
provenance in job.json and the EXR headers, the licence policy, the command line and the artist's checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_process import BackendProcess, run_backend

from backend.imaging.exr import read_exr
from backend.imaging.image_io import read_image, write_png
from contract import jobfolder, messages
from contract.tasks import lora_input, reference_input

SIZE = 64


def _job(engine: Any, root: Path, task: str, request: dict[str, Any],
         files: dict[str, Path] | None = None) -> tuple[messages.Message, Path]:
    from backend.runner import run_job

    job_dir = jobfolder.create_job(root, task, request)
    for relative, source in (files or {}).items():
        (job_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        os.link(source, job_dir / relative)  # as the add-on places them: the same file, no copy
    submit = messages.Submit(jobfolder.read_job(job_dir)["id"], task, str(job_dir), request)
    return run_job(engine, submit, lambda m: None), job_dir


def _texture(engine: Any, root: Path, files: dict[str, Path] | None = None, **options: Any) -> tuple[np.ndarray, Path]:
    request = {"prompt": "weathered planks", "width": SIZE, "height": SIZE, "steps": 3, "seed": 5,
               "preview_every": 0, **options}
    final, job_dir = _job(engine, root, "texture", request, files)
    assert isinstance(final, messages.Result), final
    return read_image(job_dir / final.outputs["image"]), job_dir


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def lora_a(tiny_models: Path) -> Path:
    return tiny_models / "loras" / "sd15-style-a.safetensors"


def test_a_lora_changes_the_texture_and_its_sha_is_recorded_in_job_json_and_the_exr(engine, tiny_models, lora_a,
                                                                                       tmp_path):
    base, _ = _texture(engine, tmp_path)
    relative = lora_input(0, lora_a.name)
    styled, job_dir = _texture(engine, tmp_path, {relative: lora_a},
                               loras=[{"file": relative, "weight": 1.0, "name": lora_a.name}])
    assert np.abs(styled - base).max() > 0.02
    record = jobfolder.read_job(job_dir)
    (lora,) = record["models"]["loras"]
    assert lora["sha256"] == _sha(lora_a) and lora["name"] == lora_a.name and lora["weight"] == 1.0
    base_model = record["models"]["text_to_image"]
    assert base_model["name"] == "sd15-tiny" and len(base_model["sha256"]) == 64
    header = json.loads(read_exr(job_dir / "outputs" / "texture.exr").attributes["models"])
    assert {m.get("sha256") for m in header} >= {_sha(lora_a), base_model["sha256"]}
    # The next job without it is the base model again, exactly: nothing stayed on the cached pipeline.
    again, _ = _texture(engine, tmp_path)
    assert np.array_equal(again, base)


def test_the_sampler_is_per_job_and_recorded(engine, tmp_path):
    default, job_dir = _texture(engine, tmp_path)
    assert jobfolder.read_job(job_dir)["options"]["scheduler"] == "dpmpp_2m_karras"  # the family's default
    euler_a, job_dir = _texture(engine, tmp_path, scheduler="euler_a")
    assert jobfolder.read_job(job_dir)["options"]["scheduler"] == "euler_a"
    assert read_exr(job_dir / "outputs" / "texture.exr").attributes["scheduler"] == "euler_a"
    assert not np.array_equal(default, euler_a)
    again, _ = _texture(engine, tmp_path)
    assert np.array_equal(again, default)


def test_a_reference_image_steers_the_texture_through_the_ip_adapter(engine, tmp_path):
    base, _ = _texture(engine, tmp_path)
    ramp = np.zeros((48, 48, 3), np.float32)
    ramp[..., 0] = np.linspace(0, 1, 48)[None, :]
    reference = write_png(tmp_path / "ref.png", ramp)
    styled, job_dir = _texture(engine, tmp_path, {reference_input(".png"): reference},
                               reference=reference_input(".png"), reference_strength=1.0)
    assert np.abs(styled - base).max() > 0.01
    record = jobfolder.read_job(job_dir)
    assert record["models"]["ip_adapter"]["name"] == "ip-adapter-sd15-tiny"
    assert record["options"]["reference_strength"] == 1.0
    again, _ = _texture(engine, tmp_path)
    assert np.array_equal(again, base)


def test_an_sdxl_lora_on_an_sd15_job_is_refused_before_loading(engine, tiny_models, tmp_path):
    lora = tiny_models / "loras" / "sdxl-style.safetensors"
    relative = lora_input(0, lora.name)
    engine.models.release()
    final, job_dir = _job(engine, tmp_path, "texture", {"prompt": "x", "width": SIZE, "height": SIZE, "steps": 2,
                                                        "loras": [{"file": relative, "name": lora.name}]},
                          {relative: lora})
    assert isinstance(final, messages.Error) and final.code == messages.MODEL_FAMILY, final
    assert "SDXL" in final.message and "SD 1.5" in final.message
    assert engine.models.loaded() == []
    assert jobfolder.read_job(job_dir)["status"] == "failed"


def _registry_with(tiny_models: Path, tmp_path: Path, **changes: Any) -> Path:
    data = json.loads((tiny_models / "registry.json").read_text())
    for entry in data["models"].values():
        entry["source"] = str(tiny_models / entry["source"])
        if entry.get("config"):
            entry["config"] = str(tiny_models / entry["config"])
    data["models"]["sd15-tiny"].update(changes)
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data))
    return path


def test_commercial_work_refuses_a_non_commercial_model_before_loading(tiny_models, tmp_path):
    from backend.runner import make_engine

    engine = make_engine("cpu", "fp32", str(_registry_with(tiny_models, tmp_path, licence="cc-by-nc-4.0")))
    request = {"prompt": "x", "width": SIZE, "height": SIZE, "steps": 2}
    final, _ = _job(engine, tmp_path / "jobs", "texture", {**request, "commercial": True})
    assert isinstance(final, messages.Error) and final.code == messages.MODEL_LICENCE, final
    assert "sd15-tiny" in final.message and "cc-by-nc-4.0" in final.message
    assert "Commercial Work" in final.hint
    assert engine.models.loaded() == []
    final, job_dir = _job(engine, tmp_path / "jobs", "texture", request)  # not for commercial work: fine
    assert isinstance(final, messages.Result), final
    assert jobfolder.read_job(job_dir)["models"]["text_to_image"]["licence"] == "cc-by-nc-4.0"


def test_the_command_line_takes_loras_and_a_reference(tiny_models, lora_a, tmp_path):
    out = tmp_path / "job"
    reference = write_png(tmp_path / "ref.png", np.full((32, 32, 3), 0.3, np.float32))
    done = run_backend("texture", "--prompt", "planks", "--width", "64", "--height", "64", "--steps", "2",
                       "--seed", "3", "--lora", f"{lora_a}:0.6", "--reference", str(reference),
                       "--scheduler", "unipc", "--out", str(out), "--registry", str(tiny_models))
    assert done.returncode == 0, done.stderr
    placed = out / lora_input(0, lora_a.name)
    assert placed.stat().st_ino == lora_a.stat().st_ino  # linked, not copied
    record = jobfolder.read_job(out)
    assert record["request"]["loras"] == [{"file": lora_input(0, lora_a.name), "weight": 0.6, "name": lora_a.name}]
    assert record["request"]["reference"] == "inputs/reference.png" and record["options"]["scheduler"] == "unipc"
    missing = run_backend("texture", "--prompt", "x", "--lora", str(tmp_path / "nope.safetensors"),
                          "--out", str(tmp_path / "j2"))
    assert missing.returncode == 2 and "no such LoRA file" in missing.stderr
    assert not (tmp_path / "j2").exists()


def test_the_artists_checkpoints_join_the_registry_and_bad_ones_are_warnings(tiny_models, tmp_path):
    checkpoint = tiny_models / "checkpoints" / "sd15-tiny.safetensors"
    listing = tmp_path / "user_models.json"
    listing.write_text(json.dumps({"format": 1, "models": {
        "my-checkpoint": {"source": str(checkpoint), "family": "auto", "kind": "text_to_image"},
        "gone": {"source": str(tmp_path / "deleted.safetensors"), "family": "sd15"}}}))
    config = _registry_with(tiny_models, tmp_path)
    backend = BackendProcess(config, "--device", "cpu", "--user-models", str(listing))
    try:
        hello = backend.next(timeout=120)
        assert isinstance(hello, messages.Handshake), hello
        assert any("gone" in w and "does not exist" in w for w in hello.warnings), hello.warnings
        assert hello.memory  # the VRAM mode in force is always said
    finally:
        backend.close()
    from backend.models import load_registry
    from backend.models.user_models import merge_user_models

    merged, warnings = merge_user_models(load_registry(config), listing)
    assert merged.models["my-checkpoint"].family == "sd15" and len(warnings) == 1
    from backend.runner import make_engine

    engine = make_engine("cpu", "fp32", str(config), user_models=str(listing))
    final, job_dir = _job(engine, tmp_path / "jobs", "texture", {"prompt": "x", "width": SIZE, "height": SIZE,
                                                                 "steps": 2, "model": "my-checkpoint"})
    assert isinstance(final, messages.Result), final
    used = jobfolder.read_job(job_dir)["models"]["text_to_image"]
    assert used["name"] == "my-checkpoint" and used["sha256"] == _sha(checkpoint)


def test_bad_model_files_are_clear_errors_and_the_server_keeps_serving(tiny_models, lora_a, tmp_path):
    """A truncated LoRA, a LoRA for no layer of the model, a LoRA given as a checkpoint, an unknown sampler: each
    an error naming the file or value, then the same backend process runs a plain job."""
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(lora_a.read_bytes()[: lora_a.stat().st_size // 2])
    unmatched = tiny_models / "loras" / "sd15-unmatched.safetensors"
    registry = json.loads((tiny_models / "registry.json").read_text())
    for entry in registry["models"].values():
        entry["source"] = str(tiny_models / entry["source"])
        entry.pop("config", None)
    registry["models"]["not-a-checkpoint"] = {"source": str(lora_a), "family": "sd15",
                                              "config": str(tiny_models / "sd15-tiny")}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    base = {"prompt": "x", "width": SIZE, "height": SIZE, "steps": 2, "seed": 1, "preview_every": 0}

    def submit(request: dict[str, Any], files: dict[str, Path] | None = None) -> messages.Submit:
        job_dir = jobfolder.create_job(tmp_path / "jobs", "texture", request)
        for relative, source in (files or {}).items():
            (job_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, job_dir / relative)
        return messages.Submit(jobfolder.read_job(job_dir)["id"], "texture", str(job_dir), request)

    lora = lora_input(0, "x.safetensors")
    cases = [({**base, "loras": [{"file": lora}]}, {lora: truncated}, "truncated"),
             ({**base, "loras": [{"file": lora}]}, {lora: unmatched}, "fits no layer"),
             ({**base, "model": "not-a-checkpoint"}, {}, "LoRA"),
             ({**base, "scheduler": "dpm_fast"}, {}, "scheduler must be one of")]
    server = BackendProcess(tmp_path / "registry.json", "--device", "cpu")
    try:
        assert isinstance(server.next(timeout=120), messages.Handshake)
        for request, files, words in cases:
            server.send(submit(request, files))
            final, _ = server.until((messages.Result, messages.Error), timeout=120)
            assert isinstance(final, messages.Error), final
            assert words in final.message, final.message
        server.send(submit(base))
        final, _ = server.until((messages.Result, messages.Error), timeout=120)
        assert isinstance(final, messages.Result), final
    finally:
        assert server.close() == 0


def test_the_6gb_budget_keeps_attention_sliced_around_reference_jobs(tiny_models, tmp_path):
    """IP-Adapter loading replaces attention processors and unloading puts plain ones back: the budget's
    slicing must come back for the jobs after a reference job (on the CPU the 6 GB mode tiles and slices)."""
    from backend.runner import make_engine

    engine = make_engine("cpu", "fp32", str(tiny_models), vram_budget="6gb")
    assert engine.memory is not None and engine.memory.attention_slicing and "6 GB" in engine.memory_label

    def processors() -> set[str]:
        unet = engine.models.text_to_image(engine.registry.resolve("text_to_image")).unet
        return {type(p).__name__ for p in unet.attn_processors.values()}

    reference = write_png(tmp_path / "ref.png", np.full((32, 32, 3), 0.5, np.float32))
    plain, _ = _texture(engine, tmp_path)
    assert processors() == {"SlicedAttnProcessor"}
    for _ in range(2):  # the second reference job finds the adapter loaded: it must still be in the attention
        guided, _ = _texture(engine, tmp_path, {reference_input(".png"): reference}, reference=reference_input(".png"))
        assert any("IPAdapter" in name for name in processors()) and not np.array_equal(guided, plain)
    again, _ = _texture(engine, tmp_path)
    assert processors() == {"SlicedAttnProcessor"} and np.array_equal(again, plain)
