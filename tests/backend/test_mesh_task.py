"""`python -m backend mesh` and `import-mesh`: image to 3D with the tiny Shap-E model, meshes from other
tools, their outputs in the job folder, their errors, and cancel."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from backend_process import run_backend
from PIL import Image

from backend.diffusion.steps import forwards_reported
from backend.errors import JobCancelled
from backend.geometry.mesh_data import MeshData, signed_volume
from backend.geometry.mesh_files import load_npz, read_mesh, write_glb
from backend.tasks.context import JobContext
from contract import jobfolder, messages


def disc_png(path: Path, size: int = 80, mode: str = "RGB") -> Path:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - 42) ** 2 + (xx - 36) ** 2 < 20 ** 2
    pixels = np.full((size, size, 3), 128, np.uint8)
    pixels[inside] = (200, 60, 40)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def test_mesh_from_a_picture_writes_glb_ply_and_npz(tiny_models: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    done = run_backend("mesh", "--image", str(disc_png(tmp_path / "ball.png")), "--steps", "3", "--seed", "7",
                "--frame-size", "40", "--out", str(job), "--registry", str(tiny_models))
    assert done.returncode == 0, done.stderr
    record = jobfolder.read_job(job)
    assert record["status"] == "done" and record["seed"] == 7
    model = record["models"]["image_to_3d"]
    assert {k: model[k] for k in ("name", "family", "kind", "tiny", "source")} == {
        "name": "shap-e-img2img-tiny", "family": "shap_e", "kind": "image_to_3d", "tiny": True,
        "source": str(tiny_models / "shap-e-img2img-tiny")}
    assert len(model["sha256"]) == 64  # provenance: the folder's weights and configs
    assert record["request"]["source"] == "inputs/image.png" and (job / "inputs" / "image.png").is_file()
    info = record["info"]
    assert info["vertices"] > 100 and info["faces"] > 100 and info["frame_size"] == 40
    assert info["flipped_normals"] is False  # the tiny lookup table already winds faces outward
    assert set(record["outputs"]) == {"mesh", "glb", "ply", "subject"}
    assert {"load_s", "generate_s", "run_s"} <= set(record["timings"])

    with np.load(job / record["outputs"]["mesh"]) as data:
        assert sorted(data.files) == ["colors", "face_sizes", "face_vertices", "vertices"]
        assert data["vertices"].dtype == np.float32 and data["face_vertices"].dtype == np.int32
    mesh = load_npz(job / "outputs" / "mesh.npz")
    assert (mesh.vertex_count, mesh.face_count) == (info["vertices"], info["faces"]) and mesh.triangles_only
    assert signed_volume(mesh) > 0  # normals point out
    assert mesh.colors is not None and 0.0 <= mesh.colors.min() and mesh.colors.max() <= 1.0
    for name in ("glb", "ply"):  # the files hold the same mesh, the same way up
        other = read_mesh(job / record["outputs"][name])
        assert (other.vertex_count, other.face_count) == (mesh.vertex_count, mesh.face_count), name
        assert np.allclose(other.vertices, mesh.vertices, atol=1e-6), name
    subject = np.asarray(Image.open(job / "outputs" / "subject.png"))
    assert subject.shape[0] == subject.shape[1] and (subject[0, 0] == 255).all()  # centred on white
    assert "5/6" in done.stderr or "6/6" in done.stderr  # Heun: 2 x 3 - 1 prior steps + the surface


def test_mesh_input_errors_are_clear(tiny_models: Path, tmp_path: Path) -> None:
    clear = tmp_path / "clear.png"
    Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(clear)
    done = run_backend("mesh", "--image", str(clear), "--out", str(tmp_path / "a"), "--registry", str(tiny_models))
    assert done.returncode == 1 and "fully transparent" in done.stderr
    assert jobfolder.read_job(tmp_path / "a")["status"] == "failed"

    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(flat)
    done = run_backend("mesh", "--image", str(flat), "--out", str(tmp_path / "b"), "--registry", str(tiny_models))
    assert done.returncode == 1 and "no subject found" in done.stderr

    done = run_backend("mesh", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "c"))
    assert done.returncode == 2 and "no such image" in done.stderr
    done = run_backend("mesh", "--image", str(flat), "--frame-size", "4", "--out", str(tmp_path / "d"))
    assert done.returncode == 2 and "frame_size" in done.stderr


def test_import_mesh_from_a_glb(tmp_path: Path) -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], np.float32)
    triangles = [[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]
    source = write_glb(tmp_path / "tool.glb", MeshData.from_triangles(vertices, triangles, np.ones((5, 4))))
    job = tmp_path / "job"
    done = run_backend("import-mesh", "--file", str(source), "--out", str(job))
    assert done.returncode == 0, done.stderr
    record = jobfolder.read_job(job)
    assert record["status"] == "done" and record["outputs"] == {"mesh": "outputs/mesh.npz"}
    assert record["info"]["vertices"] == 5 and record["info"]["faces"] == 6 and record["info"]["colors"]
    assert record["imported"] == {"name": source.name, "format": "glb"}
    mesh = load_npz(job / "outputs" / "mesh.npz")
    assert np.allclose(mesh.vertices, vertices, atol=1e-6)

    done = run_backend("import-mesh", "--file", str(tmp_path / "none.glb"), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "no such file" in done.stderr


# --- in process: the task's errors and cancel through the job runner ----------------------------


def _submit(root: Path, task: str, request: dict) -> messages.Submit:
    job_dir = jobfolder.create_job(root, task, request)
    return messages.Submit(jobfolder.read_job(job_dir)["id"], task, str(job_dir), request)


@pytest.mark.parametrize("name,content,message", [
    ("model.stl", b"solid nothing\n", "unsupported format"),
    ("broken.ply", b"\x00\x01 not a ply", "is not a readable PLY file"),
    ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "has no faces"),
])
def test_import_mesh_errors_are_invalid_params(engine, tmp_path: Path, name: str, content: bytes,  # type: ignore[no-untyped-def]
                                               message: str) -> None:
    from backend.runner import run_job

    request = {"source": f"inputs/mesh/{name}", "name": name}  # the file as a job input, as the add-on copies it
    submit = _submit(tmp_path / "jobs", "import_mesh", request)
    (Path(submit.job_dir) / "inputs" / "mesh").mkdir()
    (Path(submit.job_dir) / request["source"]).write_bytes(content)
    final = run_job(engine, submit, lambda m: None)
    assert isinstance(final, messages.Error) and final.code == messages.INVALID_PARAMS
    assert message in final.message and name in final.message
    assert jobfolder.read_job(submit.job_dir)["status"] == "failed"


def test_cancel_stops_the_mesh_job_at_the_next_prior_step(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from backend.runner import run_job

    root = tmp_path / "jobs"
    submit = _submit(root, "mesh", {"steps": 20, "seed": 1})
    disc_png(Path(submit.job_dir) / "inputs" / "image.png")
    cancel = threading.Event()
    steps: list[int] = []

    def send(message: messages.Message) -> None:
        if isinstance(message, messages.Progress) and message.step:
            steps.append(message.step)
            if message.step == 3:
                cancel.set()  # what the server's reader does on a cancel line

    final = run_job(engine, submit, send, cancel)
    assert isinstance(final, messages.Cancelled)
    assert steps == [1, 2, 3]
    assert jobfolder.read_job(submit.job_dir)["status"] == "cancelled"
    assert not (Path(submit.job_dir) / "outputs" / "mesh.npz").exists()


def test_step_hook_reports_and_raises_once_cancelled(tmp_path: Path) -> None:
    reported: list[tuple[int, int]] = []
    ctx = JobContext(id="j", job_dir=tmp_path, registry=None, models=None, device="cpu",  # type: ignore[arg-type]
                     dtype="fp32", report=lambda step, total, preview, message: reported.append((step, total)))
    layer = torch.nn.Linear(2, 2)
    with forwards_reported(ctx, layer, total=5) as count:
        layer(torch.zeros(1, 2))
        layer(torch.zeros(1, 2))
        ctx.cancel_event.set()
        with pytest.raises(JobCancelled):
            layer(torch.zeros(1, 2))
    assert count == [2] and reported == [(1, 5), (2, 5)]
    layer(torch.zeros(1, 2))  # the hook is gone afterwards
    assert reported == [(1, 5), (2, 5)]
