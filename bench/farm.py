"""Farm batches: the same tiny jobs on one Ray actor and on two, and the batch path against a warm local backend.

    python bench/farm.py [--jobs 16] [--size 128] [--steps 8]

Four runs in one process, on copies of the same job folders: the warm local backend (``python -m backend serve``
on stdio, one thread, jobs submitted one after another), ``run_batch`` with ``--local 1`` and with ``--local 2``
(each actor one CPU), and as the ceiling two local backends side by side on half the jobs each (what two one-thread
workers get out of this machine with no farm at all). Throughput counts from the first job's start to the last
job's end in batch.json (cluster and actor start-up are printed apart: a farm pays them once per batch). Per-job
overhead of the batch path: its seconds per job with one actor minus the local backend's, both on one thread.
Models: tiny ones unless SCENE_DIFFUSION_MODELS names a registry. On this 2-core machine the goal is ratio >= 1.7x
for two actors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import __version__  # noqa: E402
from backend.engine_options import EngineOptions  # noqa: E402
from backend.farm.batch import BatchOptions, run_batch  # noqa: E402
from contract import jobfolder, messages  # noqa: E402
from devtools.bench_models import registry_for_bench  # noqa: E402


def make_jobs(folder: Path, count: int, size: int, steps: int) -> None:
    for seed in range(count):
        jobfolder.create_job(folder, "texture", {"prompt": f"mossy stone {seed}", "width": size, "height": size,
                                                 "steps": steps, "seed": seed, "seamless_x": True,
                                                 "seamless_y": True})


@dataclass(frozen=True)
class Rate:
    """One way of running the jobs: start-up, the first job of each worker (it loads the model) and after."""

    startup: float  # s until the first job began (process, cluster, actors)
    first: float  # s of each worker's first job, the longest (model load included)
    warm: float  # jobs per minute once every worker has run its first job
    overall: float  # jobs per minute from the first job's start to the last's end, loads included


def warm_rate(runs: list[list[tuple[float, float]]]) -> tuple[float, float, float]:
    """(longest first job s, warm jobs/min, overall jobs/min) from each worker's (start, end) per job. Warm: from
    the moment every worker has loaded its model (ended its first job) to the last job's end, counting the part of
    each later job inside that window."""
    first = max(jobs[0][1] - jobs[0][0] for jobs in runs)
    warm_from = max(jobs[0][1] for jobs in runs)
    last = max(jobs[-1][1] for jobs in runs)
    inside = sum((end - max(start, warm_from)) / (end - start)
                 for jobs in runs for start, end in jobs[1:] if end > warm_from)
    count = sum(len(jobs) for jobs in runs)
    began = min(jobs[0][0] for jobs in runs)
    return first, inside / (last - warm_from) * 60.0, count / (last - began) * 60.0


def local_backend(folder: Path, registry: str) -> tuple[float, list[tuple[float, float]]]:
    """(start-up s, (start, end) per job) through one warm `python -m backend serve`, one thread."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--device", "cpu", "--registry", registry],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def until(kinds: tuple[type, ...]) -> messages.Message:
        for line in proc.stdout:  # type: ignore[union-attr]
            message = messages.decode(line)
            if isinstance(message, kinds):
                return message
        raise RuntimeError("the backend closed its output")

    until((messages.Handshake,))
    ready = time.time()
    times = []
    for job_dir in jobfolder.list_jobs(folder):
        record = jobfolder.read_job(job_dir)
        began = time.time()
        proc.stdin.write(messages.encode(messages.Submit(record["id"], "texture", str(job_dir),
                                                         record["request"])) + "\n")
        proc.stdin.flush()
        final = until((messages.Result, messages.Error))
        assert isinstance(final, messages.Result), final
        times.append((began, time.time()))
    proc.stdin.close()
    proc.wait(timeout=60)
    return ready - started, times


def local(folders: list[Path], registry: str) -> Rate:
    """Warm local backends, one per folder, side by side: with two, the most two one-thread workers get out of
    this machine without any farm (its memory bandwidth and the OS included)."""
    with ThreadPoolExecutor(len(folders)) as pool:
        runs = list(pool.map(lambda f: local_backend(f, registry), folders))
    return Rate(max(start for start, _ in runs), *warm_rate([times for _, times in runs]))


def batch(folder: Path, registry: str, workers: int) -> Rate:
    began = time.time()
    summary = run_batch(BatchOptions(folder, local=workers, engine=EngineOptions(device="cpu", registry=registry),
                                     progress=False))
    entries = list(summary.jobs.values())
    assert all(e.status == "done" for e in entries), [(e.name, e.status, e.error) for e in entries]
    per_actor: dict[int, list[tuple[float, float]]] = {}
    for entry in entries:
        attempt = entry.attempts[-1]
        per_actor.setdefault(attempt.actor, []).append((attempt.started, entry.ended or 0.0))
    runs = [sorted(times) for times in per_actor.values()]
    return Rate(min(t[0][0] for t in runs) - began, *warm_rate(runs))


def show(label: str, rate: Rate) -> None:
    print(f"{label}: {rate.warm:.1f} jobs/min warm ({60.0 / rate.warm * 1000:.0f} ms/job), "
          f"{rate.overall:.1f} jobs/min with the model loads; start-up {rate.startup:.1f} s, "
          f"first job {rate.first:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    registry = registry_for_bench(ROOT, __version__)
    with tempfile.TemporaryDirectory(prefix="bench_farm_") as tmp:
        base = Path(tmp) / "base"
        make_jobs(base, args.jobs, args.size, args.steps)
        folders = {name: shutil.copytree(base, Path(tmp) / name) for name in ("local", "one", "two")}
        halves = [Path(tmp) / "half_a", Path(tmp) / "half_b"]
        for index, job_dir in enumerate(jobfolder.list_jobs(base)):
            shutil.copytree(job_dir, halves[index % 2] / job_dir.name)
        single = local([folders["local"]], registry)
        pair = local(halves, registry)
        one = batch(folders["one"], registry, 1)
        two = batch(folders["two"], registry, 2)
    print(f"{args.jobs} texture jobs, {args.size}^2, {args.steps} steps, tiny models, CPU, {os.cpu_count()} cores")
    show("warm local backend (1 thread)", single)
    show("two local backends side by side (no farm: this machine's ceiling for two workers)", pair)
    show("batch, 1 actor", one)
    show("batch, 2 actors", two)
    print(f"this machine, two workers over one without a farm: ratio {pair.warm / single.warm:.1f}x")
    print(f"two actors over one: ratio {two.warm / one.warm:.1f}x warm, {two.overall / one.overall:.1f}x with "
          f"the loads (goal >= 1.7x); against the two side-by-side backends: ratio {two.warm / pair.warm:.2f}x")
    overhead = 60.0 / one.warm - 60.0 / single.warm
    print(f"batch path overhead per warm job over the warm local backend: {overhead * 1000:.0f} ms "
          f"(ratio {single.warm / one.warm:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
