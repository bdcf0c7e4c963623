"""What durability costs: one run of a study with and without checkpoints, and one checkpoint.

Three ways to run the same run (same seed, same data, same threads), timed as interleaved
repeats so drift on a shared machine hits all of them, medians reported:

- ``none``: the task without a journal (no checkpoint at all; metrics to a plain file);
- ``end``: :func:`execute_run` with ``train.checkpoint_every = 0`` (the final checkpoint only);
- ``every``: :func:`execute_run` with ``train.checkpoint_every = N``.

``(every - end) / checkpoints`` is the cost of one periodic checkpoint (metrics fsync, a
``torch.save`` of model + optimizer + RNG + loop state to a temp file, fsync, rename, folder
fsync); ``end - none`` the cost of the final one plus the journal.

    python benchmarks/checkpoint_cost.py [--preset default] [--every 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from emergeinit.bench import config
from emergeinit.bench.runner import execute_run, run_task
from emergeinit.bench.study import expand, resolve_datasets


def runs_of(preset: str) -> list[dict[str, Any]]:
    cfg, _ = resolve_datasets(config.load(preset), None)
    seen: dict[str, dict[str, Any]] = {}
    for run in expand(cfg):  # the first kaiming run of each model
        if run["init"]["name"] == "kaiming":
            seen.setdefault(run["model"], run)
    return list(seen.values())


def with_every(run: dict[str, Any], every: int) -> dict[str, Any]:
    return {**run, "train": {**run["train"], "checkpoint_every": every}}


def timed(mode: str, run: dict[str, Any], every: int, work: Path) -> float:
    folder = work / mode
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    if mode == "none":
        with (folder / "metrics.jsonl").open("w") as fh:
            run_task(run, lambda e: fh.write(json.dumps(e, default=repr) + "\n"), None, None)
    else:
        summary = execute_run(with_every(run, every if mode == "every" else 0), folder)
        assert summary["status"] in ("ok", "diverged"), summary
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for run in runs_of(args.preset):
            timed("end", run, args.every, work)  # warm-up: data cache, lazy imports
            times: dict[str, list[float]] = {"none": [], "end": [], "every": []}
            for r in range(args.repeats):
                order = ["none", "end", "every"]
                for mode in order if r % 2 == 0 else order[::-1]:
                    times[mode].append(timed(mode, run, args.every, work))
            med = {k: statistics.median(v) for k, v in times.items()}
            lines = (work / "every" / "metrics.jsonl").read_text().splitlines()
            steps = max(json.loads(line).get("step", 0) for line in lines)
            checkpoints = max(1, (steps - 1) // args.every)
            size = (work / "every" / "checkpoint.pt").stat().st_size
            print(f"{run['model']}: {steps} steps, checkpoint {size / 1e6:.2f} MB")
            print(
                f"  run wall time (median of {args.repeats}): no checkpoint {med['none']:.3f} s, "
                f"final only {med['end']:.3f} s ({med['end'] / med['none']:.3f}x), every "
                f"{args.every} steps {med['every']:.3f} s ({med['every'] / med['none']:.3f}x)"
            )
            print(
                f"  per periodic checkpoint: {(med['every'] - med['end']) / checkpoints * 1e3:.1f}"
                f" ms ({checkpoints} of them); final checkpoint + journal: "
                f"{(med['end'] - med['none']) * 1e3:.1f} ms"
            )


if __name__ == "__main__":
    main()
