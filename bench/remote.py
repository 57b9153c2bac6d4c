"""The remote backend against the local one: per-job overhead and upload throughput, in one run.

    python bench/remote.py [--jobs 8] [--size 2048]

1. The same tiny texture jobs (64², 2 steps) through the add-on's supervisor twice: with the local
   backend subprocess (stdio) and with a remote server on loopback (TLS, token, pinned certificate).
   A job's overhead is its wall time from submit to result minus the task's own time on the backend
   (``timings.run_s`` in job.json): what the transport, the queue and the bookkeeping cost.
2. A 2048² multilayer passes EXR (RGBA + Z + normal, as Blender's render writes them) uploaded
   through the add-on's transfer connection (chunks, SHA-256 checked on the server) against a
   plain loopback socket copy of the same bytes to another process; also to an ``--insecure``
   server, which shows what TLS costs.

Models: tiny ones (`make-tiny`) unless SCENE_DIFFUSION_MODELS names a registry. Goals (issue 11):
remote overhead under 20 ms per job beyond the local one; upload at least half the plain copy's rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from extension_package import import_addon_module  # noqa: E402

from backend import __version__  # noqa: E402
from contract import jobfolder  # noqa: E402
from devtools.bench_models import registry_for_bench  # noqa: E402
from devtools.remote_server import RemoteServer  # noqa: E402

supervisor_mod = import_addon_module("addon.jobs.supervisor")
client_mod = import_addon_module("addon.jobs.client")
remote_mod = import_addon_module("addon.jobs.remote_connection")
transfers_mod = import_addon_module("addon.jobs.transfers")
tasks_mod = import_addon_module("contract.tasks")

SINK = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
left = int(sys.argv[1])
buffer = bytearray(1 << 20)
while left:
    n = conn.recv_into(buffer, min(left, len(buffer)))
    if not n:
        break
    left -= n
conn.sendall(b"k")
"""


def per_job_overhead(sup, folder: Path, jobs: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Milliseconds of each job's wall time not spent in the task itself (after one warm-up job)."""
    overheads = []
    for index in range(jobs + 1):
        request = {"prompt": "bench", "width": 64, "height": 64, "steps": 2, "seed": index, "preview_every": 0}
        job_dir = jobfolder.create_job(folder, "texture", request)
        job = supervisor_mod.Job(jobfolder.read_job(job_dir)["id"], job_dir, tasks_mod.TextureParams(**request))
        started = time.perf_counter()
        sup.submit(job)
        sup.run_until_done(job, timeout=300)
        wall = time.perf_counter() - started
        if job.state != supervisor_mod.DONE:
            raise SystemExit(f"job failed: {job.error}")
        if index:  # the first one loads the pipeline
            run_s = jobfolder.read_job(job_dir)["timings"]["run_s"]
            overheads.append((wall - run_s) * 1000)
    return overheads


def passes_exr(path: Path, size: int) -> Path:
    """Smooth render-like passes with a little noise, written by the backend's EXR writer (zip)."""
    from backend.imaging.exr import write_exr

    rng = np.random.default_rng(int(time.time()))  # new content each run: nothing already on the server
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgba = np.stack([x, y, (x + y) / 2, np.ones_like(x)], axis=-1) + rng.normal(0, 0.02, (size, size, 4))
    depth = (5 + 3 * y + 0.01 * rng.normal(size=(size, size))).astype(np.float32)
    normal = np.stack([x - 0.5, y - 0.5, np.full_like(x, 0.7)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return write_exr(path, {"": rgba.astype(np.float32), "depth": depth, "normal": normal.astype(np.float32)},
                     half={"", "normal"}, compression="zip", channel_names={"depth": ("Z",), "normal": ("X", "Y", "Z")})


def plain_copy_s(data: bytes) -> float:
    import socket

    sink = subprocess.Popen([sys.executable, "-c", SINK, str(len(data))], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    port = int(sink.stdout.readline())
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(data)
        sock.recv(1)
    elapsed = time.perf_counter() - started
    sink.wait()
    return elapsed


def upload_s(config, job_dir: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds to hash the inputs, seconds to upload them until the server stored them)."""
    started = time.perf_counter()
    plan = transfers_mod.plan_upload(job_dir)
    hashed = time.perf_counter()
    transfers = transfers_mod.Transfers(config, lambda: True)
    try:
        transfers.upload(plan, lambda done: None)
    finally:
        transfers.close()
    return hashed - started, time.perf_counter() - hashed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()

    registry = registry_for_bench(ROOT, __version__)
    os.environ["HF_HUB_OFFLINE"] = "1"
    work = Path(tempfile.mkdtemp(prefix="scene_diffusion_bench_remote_"))
    server = RemoteServer(work / "tls", Path(registry), "--max-upload-mb", "4096")
    insecure = RemoteServer(work / "plain", Path(registry), "--insecure", "--max-upload-mb", "4096")
    try:
        def remote(srv: RemoteServer, plain: bool = False):  # type: ignore[no-untyped-def]
            return remote_mod.RemoteConfig(address=srv.address, token=srv.token, known_servers=work / "known.json",
                                           insecure=plain, handshake_timeout=120)

        local_config = client_mod.LaunchConfig(python=sys.executable, log_path=work / "local.log", registry=registry,
                                               device="cpu", handshake_timeout=300, extra_env={"HF_HUB_OFFLINE": "1"})
        results = {}
        transports = (("local subprocess", lambda: local_config), ("remote, TLS on loopback", lambda: remote(server)))
        for name, make in transports:
            sup = supervisor_mod.Supervisor(make)
            try:
                results[name] = per_job_overhead(sup, work / name.split()[0], args.jobs)
            finally:
                sup.stop()
        print(f"{args.jobs} tiny texture jobs (64x64, 2 steps) each, models: {registry}")
        for name, values in results.items():
            print(f"  {name:<26} overhead per job: median {statistics.median(values):7.1f} ms, "
                  f"mean {statistics.mean(values):7.1f} ms")
        local_ms = statistics.median(results["local subprocess"])
        remote_ms = statistics.median(results["remote, TLS on loopback"])
        print(f"  remote beyond local: {remote_ms - local_ms:+.1f} ms per job (goal: under 20 ms)")
        print(f"  ratio remote / local overhead: {remote_ms / local_ms:.1f}x")

        job_dir = jobfolder.create_job(work / "upload", "render", {})
        exr = passes_exr(job_dir / "inputs" / "passes.exr", args.size)
        data = exr.read_bytes()
        size_mb = len(data) / 1e6
        plain = min(plain_copy_s(data) for _ in range(3))
        hash_s, tls_s = upload_s(remote(server), job_dir)
        exr.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # other content, so the second server gets it all too
        _, insecure_s = upload_s(remote(insecure, plain=True), job_dir)
        print(f"\nupload of a {args.size}x{args.size} multilayer passes EXR ({size_mb:.1f} MB, zip):")
        print(f"  {'plain loopback socket copy':<34} {size_mb / plain:8.0f} MB/s")
        print(f"  {'remote upload, TLS':<34} {size_mb / tls_s:8.0f} MB/s  (+ {hash_s * 1000:.0f} ms hashing first)")
        print(f"  {'remote upload, --insecure':<34} {size_mb / insecure_s:8.0f} MB/s")
        print(f"  ratio TLS upload / plain copy: {plain / tls_s:.2f}x (goal: at least 0.5x)")
        print(f"  ratio insecure upload / plain copy: {plain / insecure_s:.2f}x")
    finally:
        server.stop()
        insecure.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
