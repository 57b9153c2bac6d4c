"""What a job costs beyond its diffusion: the same tiny texture job on six paths, in one run.

    python bench/job_overhead.py [--jobs 12] [--size 64] [--steps 2] [--quick] [--profile] [--no-timer]

1. pipeline      the text-to-image pipeline called in this process (no job folder, no files)
2. in-process    the task through ``backend.runner.run_job`` in this process: job folder, job.json, PNG and EXR
                 outputs, preview PNGs, the per-job log (what every other path runs too)
3. stdio         a ``python -m backend serve`` process: one Submit line in, Accepted/Progress/Result lines out
4. add-on        the add-on's supervisor and client (no bpy) driving their own backend process, as a background
                 Blender script does: Job, submit, run_until_done, typed outputs
5. add-on timer  the same supervisor ticked every 0.1 s, as Blender's window timer did before issue 16
6. timer hinted  ticked at ``Supervisor.tick_interval`` instead, as addon/jobs/service.py does now: 0.01 s
                 just after the submit and once the job's last step is done, else 0.1 s

Every job includes creating its job folder, as the add-on does. The paths take turns, one job each per round,
so the noise of a shared machine falls on all of them alike; the first round (warm-up) is reported apart and
the rest give medians. The diffusion's own noise (tens of ms here) would swamp a few ms of overhead, so the
overhead is paired within each job: wall time minus the task's own time in job.json (started -> ended), minus
the same for the in-process path. The plain difference of the per-job medians is printed beside it.
Goal (issue 16): the add-on path's overhead under 10 ms per job.

``--profile`` also runs the add-on path under cProfile (this process only: the client and supervisor side) and
prints the functions that took the most time. Models: tiny ones (`make-tiny`) unless SCENE_DIFFUSION_MODELS
names a registry.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from extension_package import import_addon_module  # noqa: E402

from backend import __version__  # noqa: E402
from contract import jobfolder, messages  # noqa: E402
from devtools.bench_models import registry_for_bench  # noqa: E402

supervisor_mod = import_addon_module("addon.jobs.supervisor")
client_mod = import_addon_module("addon.jobs.client")
tasks_mod = import_addon_module("contract.tasks")  # the add-on's own copy of the contract

GOAL_MS = 10.0
TIMER_INTERVAL = 0.1  # addon/jobs/service.py BUSY_INTERVAL: the window's timer while a job runs


@dataclass(frozen=True)
class Timing:
    """One job, in seconds: wall time from creating its folder to holding its result, and from job.json
    the task's own ``run_s``, the wait before it started and the delay from its end to the result in hand."""

    wall: float
    task: float
    before: float = 0.0
    after: float = 0.0

    @classmethod
    def of(cls, job_dir: Path, began: float, wall: float) -> Timing:
        """``began``: time.time() when the job was created; called as soon as the result is in hand."""
        now, record = time.time(), jobfolder.read_job(job_dir)
        started, ended = record["started"], record["ended"]  # run_s, unrounded
        return cls(wall, ended - started, started - began, now - ended)


JobRun = Callable[[int], Timing]  # seed -> one job's timing


class Bench:
    def __init__(self, registry: str, size: int, steps: int, work: Path) -> None:
        self.registry, self.work = registry, work
        self.request = {"prompt": "slate roof", "width": size, "height": size, "steps": steps}
        self.backend: subprocess.Popen[bytes] | None = None
        self.supervisor: object = None

    # -- 1. the bare pipeline ---------------------------------------------------------------

    def start_in_process(self) -> None:
        from backend.runner import make_engine

        self.engine = make_engine("cpu", "fp32", self.registry)
        self.spec = self.engine.registry.resolve("text_to_image", None)

    def pipeline(self, seed: int) -> float:
        import torch

        started = time.perf_counter()
        pipe = self.engine.models.text_to_image(self.spec)
        pipe(prompt=self.request["prompt"], num_inference_steps=self.request["steps"], guidance_scale=7.5,
             width=self.request["width"], height=self.request["height"], output_type="np",
             generator=torch.Generator(device="cpu").manual_seed(seed))
        elapsed = time.perf_counter() - started
        return Timing(elapsed, elapsed)

    # -- 2. the task in this process --------------------------------------------------------

    def in_process(self, seed: int) -> tuple[float, float]:
        from backend.runner import run_job

        began, started = time.time(), time.perf_counter()
        job_dir, job_id = self._new_job(seed)
        final = run_job(self.engine, messages.Submit(job_id, "texture", str(job_dir), {**self.request, "seed": seed}),
                        lambda _message: None)
        elapsed = time.perf_counter() - started
        assert isinstance(final, messages.Result), final
        return Timing.of(job_dir, began, elapsed)

    # -- 3. the stdio server ------------------------------------------------------------------

    def start_stdio(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        self.backend = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--device", "cpu", "--precision", "fp32",
             "--registry", self.registry], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.work / "stdio-backend.log", "ab"))  # noqa: SIM115 - the process keeps it
        handshake = self._next_line()
        assert isinstance(handshake, messages.Handshake), handshake

    def _next_line(self) -> messages.Message:
        assert self.backend is not None and self.backend.stdout is not None
        line = self.backend.stdout.readline()
        assert line, "the stdio backend closed its output; see stdio-backend.log"
        return messages.decode(line)

    def stdio(self, seed: int) -> tuple[float, float]:
        assert self.backend is not None and self.backend.stdin is not None
        began, started = time.time(), time.perf_counter()
        job_dir, job_id = self._new_job(seed)
        line = messages.encode(messages.Submit(job_id, "texture", str(job_dir), {**self.request, "seed": seed}))
        self.backend.stdin.write(line.encode("utf-8"))
        self.backend.stdin.flush()
        while True:
            message = self._next_line()
            if isinstance(message, (messages.Result, messages.Error)):
                break
        elapsed = time.perf_counter() - started
        assert isinstance(message, messages.Result), message
        return Timing.of(job_dir, began, elapsed)

    # -- 4. the add-on's supervisor and client ------------------------------------------------

    def start_addon(self) -> None:
        config = client_mod.LaunchConfig(python=sys.executable, log_path=self.work / "addon-backend.log",
                                         registry=self.registry, device="cpu", precision="fp32",
                                         extra_env={"HF_HUB_OFFLINE": "1"})
        self.supervisor = supervisor_mod.Supervisor(lambda: config)
        self.supervisor.ensure_started()
        deadline = time.monotonic() + 300
        while self.supervisor.handshake is None and time.monotonic() < deadline:
            message = self.supervisor.client.wait_message(0.1)
            if message is not None:
                self.supervisor._handle(message)
            self.supervisor.tick()
        assert self.supervisor.handshake is not None, "the add-on's backend sent no handshake"

    def addon(self, seed: int) -> tuple[float, float]:
        began, started = time.time(), time.perf_counter()
        request = {**self.request, "seed": seed}
        job_dir = jobfolder.create_job(self.work / "jobs", "texture", request)
        job = supervisor_mod.Job(job_dir.name.rsplit("-", 1)[-1], job_dir, tasks_mod.TextureParams(**request))
        self.supervisor.submit(job)
        self.supervisor.run_until_done(job, timeout=300)
        elapsed = time.perf_counter() - started
        assert job.state == supervisor_mod.DONE and job.outputs is not None, job.error
        return Timing.of(job_dir, began, elapsed)

    def addon_timer(self, seed: int) -> Timing:
        """The same, supervised the way Blender's window does it: a timer calls tick() every TIMER_INTERVAL s."""
        return self._ticked(seed, lambda: TIMER_INTERVAL)

    def addon_timer_hinted(self, seed: int) -> Timing:
        """The same with the timer's next interval from Supervisor.tick_interval (quick ticks near the end)."""
        return self._ticked(seed, lambda: self.supervisor.tick_interval(TIMER_INTERVAL))

    def _ticked(self, seed: int, interval: Callable[[], float]) -> Timing:
        began, started = time.time(), time.perf_counter()
        request = {**self.request, "seed": seed}
        job_dir = jobfolder.create_job(self.work / "jobs", "texture", request)
        job = supervisor_mod.Job(job_dir.name.rsplit("-", 1)[-1], job_dir, tasks_mod.TextureParams(**request))
        self.supervisor.submit(job)
        while not job.finished:
            time.sleep(interval())
            self.supervisor.tick()
        elapsed = time.perf_counter() - started
        assert job.state == supervisor_mod.DONE and job.outputs is not None, job.error
        return Timing.of(job_dir, began, elapsed)

    # -- shared ----------------------------------------------------------------------------

    def _new_job(self, seed: int) -> tuple[Path, str]:
        job_dir = jobfolder.create_job(self.work / "jobs", "texture", {**self.request, "seed": seed})
        return job_dir, job_dir.name.rsplit("-", 1)[-1]

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.backend is not None and self.backend.stdin is not None:
            self.backend.stdin.write(messages.encode(messages.Shutdown()).encode("utf-8"))
            self.backend.stdin.close()
            self.backend.wait(30)


def profile_addon(bench: Bench, jobs: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for seed in range(jobs):
        bench.addon(1000 + seed)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


def report(times: dict[str, list[Timing]], args: argparse.Namespace, registry: str) -> float:
    """Print the table and the ratios; returns the add-on path's overhead in ms."""
    def ms(name: str, value: Callable[[Timing], float]) -> float:
        return statistics.median(value(t) for t in times[name][1:]) * 1000

    wall = {name: ms(name, lambda t: t.wall) for name in times}
    # Wall time minus the task's own time, job by job: the diffusion's noise cancels out within each job.
    outside = {name: ms(name, lambda t: t.wall - t.task) for name in times}
    print(f"texture {args.size}x{args.size}, {args.steps} steps, {len(times['pipeline']) - 1} warm jobs per path "
          f"(medians, ms), cpu fp32, models: {registry}")
    print(f"{'path':<13} {'first':>8} {'per job':>8} {'task':>8} {'outside':>8} {'before':>7} {'after':>7} "
          f"{'overhead':>9} {'paired':>7}")
    for name, runs in times.items():
        cells = [f"{runs[0].wall * 1000:8.1f}", f"{wall[name]:8.2f}"]
        if name != "pipeline":
            cells += [f"{ms(name, lambda t: t.task):8.2f}", f"{outside[name]:8.2f}",
                      f"{ms(name, lambda t: t.before):7.2f}", f"{ms(name, lambda t: t.after):7.2f}"]
        if name not in ("pipeline", "in-process"):
            cells += [f"{wall[name] - wall['in-process']:9.2f}", f"{outside[name] - outside['in-process']:7.2f}"]
        print(f"{name:<13} " + " ".join(cells))
    print("  task: run_s in job.json; outside = per job - task; before: job folder made -> task started; after: task "
          "ended -> result in hand; overhead = per job - in-process per job; paired = outside - in-process outside")
    print(f"in-process over the bare pipeline (files, job.json, previews, log): "
          f"{wall['in-process'] - wall['pipeline']:.2f} ms/job, ratio {wall['in-process'] / wall['pipeline']:.2f}x")
    for name in [n for n in times if n not in ("pipeline", "in-process")]:
        print(f"{name} / in-process: ratio {wall[name] / wall['in-process']:.3f}x per job, "
              f"ratio {outside[name] / outside['in-process']:.1f}x outside the task")
    overhead = outside["add-on"] - outside["in-process"]
    verdict = "under" if overhead < GOAL_MS else "NOT under"
    print(f"add-on overhead (paired) {overhead:.2f} ms/job: {verdict} the {GOAL_MS:.0f} ms goal")
    for name, how in (("add-on timer", f"a tick every {TIMER_INTERVAL:.2f} s, as service.py did before"),
                      ("timer hinted", "ticks at Supervisor.tick_interval(), as service.py does now")):
        if name in times:
            timer = outside[name] - outside["in-process"]
            print(f"{name} overhead (paired, {how}) {timer:.2f} ms/job: "
                  f"{'under' if timer < GOAL_MS else 'NOT under'} the {GOAL_MS:.0f} ms goal")
    return overhead


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=12, help="warm jobs per path (after one warm-up job)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 warm jobs per path")
    parser.add_argument("--profile", action="store_true", help="also profile the add-on path (client side)")
    parser.add_argument("--no-timer", action="store_true", help="leave out the timer-driven add-on path")
    args = parser.parse_args()
    jobs = 4 if args.quick else args.jobs

    registry = registry_for_bench(ROOT, __version__)
    os.environ["HF_HUB_OFFLINE"] = "1"
    work = Path(tempfile.mkdtemp(prefix="scene_diffusion_overhead_"))
    bench = Bench(registry, args.size, args.steps, work)
    paths: dict[str, JobRun] = {"pipeline": bench.pipeline, "in-process": bench.in_process,
                                "stdio": bench.stdio, "add-on": bench.addon}
    if not args.no_timer:
        paths["add-on timer"] = bench.addon_timer
        paths["timer hinted"] = bench.addon_timer_hinted
    times: dict[str, list[Timing]] = {name: [] for name in paths}
    try:
        bench.start_in_process()
        bench.start_stdio()
        bench.start_addon()
        for round_index in range(jobs + 1):  # round 0 warms every path up (pipeline loading, first files)
            for name, run in paths.items():
                times[name].append(run(round_index))
        profile = profile_addon(bench, min(jobs, 6)) if args.profile else ""
    finally:
        bench.stop()
    report(times, args, registry)
    if profile:
        print("\nadd-on path, client side (cProfile, by own time):\n" + profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
