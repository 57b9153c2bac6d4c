"""The Backend panel's readiness lines: environment, expected device, models on disk (no bpy, no backend run)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from extension_package import import_addon_module

readiness = import_addon_module("addon.jobs.readiness")
sizes = import_addon_module("addon.jobs.model_sizes")
tc = import_addon_module("addon.jobs.torch_choice")

CUDA_CHOICE = tc.choose(tc.MachineProbe("Linux", "x86_64", "| NVIDIA-SMI 580.65.06  Driver Version: 580.65.06  "
                                                            "CUDA Version: 13.0 |"))
CPU_CHOICE = tc.choose(tc.MachineProbe("Linux", "x86_64"))


def fake_venv(root: Path, packages: dict[str, str], windows: bool = False) -> Path:
    """A venv's layout with empty dist-info folders for ``packages``; returns its python."""
    site = root / ("Lib/site-packages" if windows else "lib/python3.11/site-packages")
    site.mkdir(parents=True)
    for name, version in packages.items():
        (site / f"{name}-{version}.dist-info").mkdir()
    python = root / ("Scripts/python.exe" if windows else "bin/python")
    python.parent.mkdir(parents=True)
    python.write_text("")
    return python


def test_a_missing_managed_environment_asks_for_setup(tmp_path):
    env = readiness.env_status(tmp_path / "venv" / "bin" / "python", managed=True)
    assert env.ready is False and "not set up" in env.summary and "Setup Backend" in env.hint


def test_a_complete_environment_is_ready_with_its_versions(tmp_path):
    python = fake_venv(tmp_path / "venv", {"torch": "2.13.0+cu130", "diffusers": "0.42.1", "numpy": "2.3.0"})
    env = readiness.env_status(python, managed=True)
    assert env.ready is True and env.version("torch") == "2.13.0+cu130" and env.version("diffusers") == "0.42.1"
    assert "torch 2.13.0+cu130" in env.summary


def test_the_windows_layout_is_found_too(tmp_path):
    python = fake_venv(tmp_path / "venv", {"torch": "2.13.0+cu126", "diffusers": "0.42.0"}, windows=True)
    assert readiness.env_status(python, managed=True).ready is True


def test_a_half_installed_environment_names_what_it_lacks(tmp_path):
    python = fake_venv(tmp_path / "venv", {"torch": "2.13.0"})  # pip stopped before diffusers
    env = readiness.env_status(python, managed=True)
    assert env.ready is False and "lacks diffusers" in env.summary and "again" in env.hint


def test_a_configured_python_elsewhere_is_not_judged_by_a_guess(tmp_path):
    python = tmp_path / "conda" / "python.exe"
    python.parent.mkdir()
    python.write_text("")
    env = readiness.env_status(python, managed=False)
    assert env.ready is None and "when it starts" in env.hint
    assert readiness.env_status(tmp_path / "nowhere" / "python", managed=False).ready is False


def test_dist_info_names_are_normalized(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "Huggingface_Hub-0.30.0.dist-info").mkdir()
    assert readiness.installed_version([site], "huggingface-hub") == "0.30.0"
    assert readiness.installed_version([site], "torch") == ""


@pytest.mark.parametrize("torch_version, choice, preference, words", [
    ("2.13.0+cu130", CPU_CHOICE, "auto", ["cuda", "2.13.0+cu130"]),
    ("2.13.0+rocm7.2", CPU_CHOICE, "auto", ["ROCm"]),
    ("2.13.0+cpu", CUDA_CHOICE, "auto", ["cpu", "GPU goes unused"]),
    ("2.13.0+cpu", CPU_CHOICE, "auto", ["cpu (torch 2.13.0+cpu)"]),
    ("", CUDA_CHOICE, "auto", ["cuda", "after Setup Backend"]),
    ("2.13.0", tc.choose(tc.MachineProbe("Darwin", "arm64")), "auto", ["mps", "with torch 2.13.0"]),
    ("", None, "auto", ["detecting"]),
    ("2.13.0+cu130", CUDA_CHOICE, "cpu", ["cpu (set in the preferences)"]),
])
def test_expected_device(torch_version, choice, preference, words):
    env = readiness.EnvStatus(bool(torch_version), "", "", (("torch", torch_version),) if torch_version else ())
    line = readiness.expected_device(env, choice, preference)
    for word in words:
        assert word in line, (word, line)
    if "GPU goes unused" not in words:
        assert "unused" not in line


def fake_cached_repo(cache: Path, repo_id: str, files: dict[str, int], incomplete: bool = False) -> int:
    """huggingface_hub's layout: content in blobs/, snapshots/<rev>/<name> linking to it. Returns the bytes."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for index, (name, size) in enumerate(files.items()):
        blob = blobs / f"{index:064x}"
        blob.write_bytes(b"\0" * size)
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, target.parent), target)
    if incomplete:
        (blobs / ("f" * 64 + ".incomplete")).write_bytes(b"\0" * 999)
    return sum(files.values()) + len("0123abcd")


def test_cached_repo_size_counts_blobs_once(tmp_path):
    cache = tmp_path / "hub"
    total = fake_cached_repo(cache, "lllyasviel/control_v11f1p_sd15_depth",
                             {"config.json": 300, "diffusion_pytorch_model.safetensors": 40_000})
    row = sizes.measure("controlnet_depth", "controlnet-depth", "lllyasviel/control_v11f1p_sd15_depth", cache)
    assert row.status == sizes.ON_DISK and row.size == total


def test_an_unfinished_download_is_partial_and_a_missing_one_is_to_download(tmp_path):
    cache = tmp_path / "hub"
    fake_cached_repo(cache, "openai/shap-e-img2img", {"model_index.json": 10}, incomplete=True)
    assert sizes.measure("image_to_3d", "shap-e", "openai/shap-e-img2img", cache).status == sizes.PARTIAL
    row = sizes.measure("normals", "marigold-normals", "prs-eth/marigold-normals-v1-1", cache)
    assert row.status == sizes.TO_DOWNLOAD and row.size == 0
    assert sizes.describe(row) == "normals: marigold-normals, to download"


def test_the_built_in_report_covers_every_panel_role(tmp_path):
    cache = tmp_path / "hub"
    total = fake_cached_repo(cache, "stable-diffusion-v1-5/stable-diffusion-v1-5",
                             {"model_index.json": 500, "unet/diffusion_pytorch_model.safetensors": 3 << 20})
    report = sizes.report(None, cache)
    assert [m.role for m in report.models] == ["text_to_image", "controlnet_depth", "controlnet_normal",
                                               "controlnet_canny", "intrinsics", "normals", "image_to_3d"]
    assert report.models[0].status == sizes.ON_DISK and report.on_disk == total
    assert report.missing == 6 and report.registry == "built-in registry"
    assert sizes.describe(report.models[0]) == "text_to_image: sd15, 3.0 MB"


def test_a_registry_file_with_an_sdxl_base_and_local_folders(tmp_path):
    folder = tmp_path / "models" / "my-sdxl"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.safetensors").write_bytes(b"\0" * 2048)
    registry = {"format": 1, "models": {
        "my-sdxl": {"source": "my-sdxl", "family": "sdxl", "kind": "text_to_image"},
        "depth-xl": {"source": "diffusers/controlnet-depth-sdxl-1.0", "family": "sdxl", "kind": "controlnet"},
        "gone": {"source": str(tmp_path / "deleted"), "family": "marigold", "kind": "normals"}},
        "roles": {"text_to_image": "my-sdxl", "controlnet_depth_sdxl": "depth-xl", "normals": "gone"}}
    (tmp_path / "models" / "registry.json").write_text(json.dumps(registry))
    report = sizes.report(str(tmp_path / "models"), tmp_path / "hub")
    by_role = {m.role: m for m in report.models}
    assert by_role["text_to_image"].status == sizes.ON_DISK and by_role["text_to_image"].size == 2048
    assert by_role["controlnet_depth_sdxl"].status == sizes.TO_DOWNLOAD
    assert by_role["controlnet_normal_sdxl"].status == sizes.UNDEFINED
    assert by_role["normals"].status == sizes.NO_FOLDER
    assert report.missing == 2  # the SDXL ControlNet and the deleted folder; undefined roles are not models


def test_an_unreadable_registry_is_a_problem_line(tmp_path):
    (tmp_path / "registry.json").write_text("{not json")
    report = sizes.report(str(tmp_path / "registry.json"), tmp_path / "hub")
    assert report.models == [] and "cannot read the model registry" in report.problem


def test_hub_cache_follows_huggingface_variables(tmp_path):
    assert sizes.hub_cache({"HF_HUB_CACHE": str(tmp_path / "a")}) == tmp_path / "a"
    assert sizes.hub_cache({"HF_HOME": str(tmp_path / "h")}) == tmp_path / "h" / "hub"
    assert sizes.hub_cache({"XDG_CACHE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "huggingface" / "hub"


def test_the_mirrored_built_in_registry_matches_the_backend():
    from backend.models.registry import default_registry

    backend = default_registry()
    mirrored = {role: (backend.roles[role], backend.models[backend.roles[role]].source,
                       backend.models[backend.roles[role]].family) for role in backend.roles}
    assert sizes.BUILTIN == mirrored


def test_the_cache_recomputes_on_a_change_or_after_its_time(tmp_path):
    now = [100.0]
    cache = readiness.ReadinessCache(clock=lambda: now[0], ttl=5.0)
    python = tmp_path / "venv" / "bin" / "python"
    inputs = readiness.Inputs(str(python), True, None, "auto", CPU_CHOICE, str(tmp_path / "hub"))
    first = cache.get(inputs)
    assert first.env.ready is False
    fake_venv(tmp_path / "venv", {"torch": "2.13.0+cpu", "diffusers": "0.42.0"})
    now[0] += 1.0
    assert cache.get(inputs) is first and cache.computed == 1  # draw after draw: no disk access
    now[0] += 5.0
    assert cache.get(inputs).env.ready is True and cache.computed == 2
    changed = readiness.Inputs(str(python), True, None, "cpu", CPU_CHOICE, str(tmp_path / "hub"))
    assert "set in the preferences" in cache.get(changed).device and cache.computed == 3


def test_the_model_menus_offer_every_built_in_text_to_image_model():
    """addon/model_options.py imports bpy; its BUILTIN_MODELS tuple is read from the source."""
    import ast

    from backend.models.registry import default_registry

    tree = ast.parse((Path(__file__).parents[2] / "addon" / "model_options.py").read_text(encoding="utf-8"))
    offered = next(ast.literal_eval(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", "") == "BUILTIN_MODELS" for t in node.targets))
    backend = default_registry()
    assert set(offered) == {name for name, spec in backend.models.items() if spec.kind == "text_to_image"}
