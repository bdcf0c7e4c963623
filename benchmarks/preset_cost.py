"""What a study will cost: run a few of its runs (pilots), then extrapolate to the whole grid.

    python benchmarks/preset_cost.py results-adamw [--pilots 2] [--set key=value ...] [--full]
        [--workers 2] [--data-dir DIR]

The runs of the study are put in cost classes, (model, optimizer, init name): runs of one class
do the same work whatever their seed, alpha, lr or order. ``--pilots`` runs of each class (the
first in the study's order, so different seeds or options) are executed one after another in
this process with one torch thread (as each worker of ``emergeinit bench`` uses), in a scratch
folder. Each pilot's CPU time (``time.process_time``) is recorded besides its wall time: on a
shared machine the wall time grows with the load, the CPU time of a one-thread process much
less, so CPU seconds are the estimate of what a run costs on an idle core. The study's estimate
is the sum over classes of (runs in the class) x (median CPU seconds of its pilots), divided by
``--workers`` (idle cores), printed with the load average during the pilots.

It is an estimate: per-run costs vary with the seed only through divergence (a diverged run
stops early), and a loaded machine slows even CPU time somewhat (caches, memory bandwidth).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from emergeinit.bench import config
from emergeinit.bench.runner import execute_run
from emergeinit.bench.study import expand, preflight


def cost_class(run: dict[str, Any]) -> tuple[str, str, str]:
    return (run["model"], run["train"]["optimizer"], run["init"]["name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a preset name or a study .toml")
    parser.add_argument("--pilots", type=int, default=2, help="runs per cost class")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="idle cores to divide by")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    cfg = config.load(args.target, args.overrides, full=args.full)
    cfg, _ = preflight(cfg, args.data_dir)
    runs = expand(cfg)
    classes: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        classes[cost_class(run)].append(run)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = []
    total_cpu = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        for key, members in classes.items():
            cpu, wall = [], []
            for run in members[: args.pilots]:
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                summary = execute_run(run, Path(scratch) / run["run_id"], args.data_dir)
                cpu.append(time.process_time() - start_cpu)
                wall.append(time.perf_counter() - start_wall)
                if summary["status"] == "failed":
                    print(f"pilot {run['run_id']} failed: {summary.get('error')}", file=sys.stderr)
                    return 1
            median_cpu = statistics.median(cpu)
            total_cpu += median_cpu * len(members)
            rows.append((key, len(members), median_cpu, statistics.median(wall)))
    load_after = os.getloadavg()[0]
    print(
        f"study {cfg['study']['name']}: {len(runs)} runs in {len(classes)} cost classes; "
        f"{args.pilots} pilot(s) each, 1 torch thread; load average {load_before:.1f} before, "
        f"{load_after:.1f} after the pilots"
    )
    print()
    print("| model | optimizer | init | runs | CPU s/run (median) | wall s/run (median) |")
    print("|---|---|---|---:|---:|---:|")
    for (model, optimizer, init), count, cpu_s, wall_s in rows:
        print(f"| {model} | {optimizer} | {init} | {count} | {cpu_s:.2f} | {wall_s:.2f} |")
    print()
    minutes = total_cpu / args.workers / 60
    print(
        f"total {total_cpu / 60:.1f} CPU minutes; on {args.workers} idle cores about "
        f"{minutes:.1f} minutes of wall time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
