"""``python -m backend batch``: the command line of backend/farm (Ray is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_batch_command(sub: Any, engine_options: Any) -> None:
    batch = sub.add_parser(
        "batch", help="run a folder of job folders (or a JSON-lines file of requests) on a Ray cluster",
        description="Run every job of a batch once, on Ray actors holding a warm engine each (one per GPU, else "
                    "one per CPU). Jobs already done are skipped: run it again to resume. Writes batch.json.")
    batch.add_argument("--jobs", required=True, type=Path,
                       help="a folder of job folders (as the add-on or examples/ --prepare write them), or a "
                            'JSON-lines file of {"task", "params", "id", "inputs"} requests')
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--ray", metavar="ADDRESS", help="join this Ray cluster ('auto': the one on this machine)")
    where.add_argument("--local", type=int, metavar="N", help="start a local Ray cluster with N workers (default 1)")
    batch.add_argument("--out", type=Path, help="where batch.json (and a JSON-lines file's job folders) go "
                                                "(default: the jobs folder; for a file, FILE-jobs/ beside it)")
    batch.add_argument("--workers", type=int, help="actors on a cluster (default: one per GPU, else one per CPU)")
    batch.add_argument("--transfer", choices=("auto", "ship"), default="auto",
                       help="auto: jobs run in place on nodes that see the folder and travel through Ray "
                            "elsewhere; ship: always through Ray")
    batch.add_argument("--max-retries", type=int, default=2, help="retries of a job whose worker died")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    engine_options(batch)


def run_batch_command(args: argparse.Namespace) -> int:
    try:
        import ray  # noqa: F401 - only to say what to install
    except ModuleNotFoundError:
        print("error: the batch command needs Ray: pip install -r backend/requirements-farm.txt", file=sys.stderr)
        return 2
    from backend.engine_options import EngineOptions
    from backend.farm.batch import BatchOptions, run_batch

    if args.local is not None and args.local < 1 or args.workers is not None and args.workers < 1:
        print("error: --local and --workers take a number from 1", file=sys.stderr)
        return 2
    if args.max_retries < 0:
        print("error: --max-retries takes a number from 0", file=sys.stderr)
        return 2
    engine = EngineOptions.from_args(args)
    options = BatchOptions(args.jobs, args.out, args.ray, args.local, args.workers, args.transfer,
                           args.max_retries, engine, progress=not args.no_progress)
    try:
        summary = run_batch(options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    counts = summary.counts()
    print(f"batch: {counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed, "
          f"{counts['cancelled']} cancelled; {summary.path}")
    for entry in summary.jobs.values():
        if entry.status == "failed":
            print(f"  {entry.name}: {entry.error}", file=sys.stderr)
    return 0 if counts["failed"] == 0 and counts["cancelled"] == 0 else 1
