"""How long a study takes to expand its grid into runs, now and before, up to 10^6 runs.

Grids of the ``smoke`` preset (kaiming, emergence, xavier) with ``init.alpha`` and
``train.seeds`` stretched to N runs. Timed in the same process, the two expansions
alternating, medians of the repeats:

- ``expand``: :func:`emergeinit.bench.study.expand` (run ids hashed from JSON fragments built
  once per table, runs sharing their tables, the cyclic garbage collector paused);
- ``before``: the expansion as it was before (a frozen copy below: every run's tables copied,
  its id from ``json.dumps`` of the whole run), checked to give the same runs and ids;
- ``count``: :func:`emergeinit.bench.study.count_runs`, what ``--max-runs`` is checked
  against before anything is expanded;
- the memory the expanded runs hold: every object they reach, each counted once
  (``sys.getsizeof``), for both expansions.

    python benchmarks/grid_expansion.py [--sizes 10000,100000,1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from emergeinit.bench import config, optim, tasks
from emergeinit.bench.study import _init_tables, count_runs, expand, run_id


def expand_before(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """``study.expand`` as it was before grids were sped up (frozen copy)."""
    task = tasks.get(cfg["study"]["task"])
    train = {k: v for k, v in cfg["train"].items() if k not in ("seeds", "lr")}
    if train["optimizer"] in ("adam", "adamw"):
        for key in optim.SGD_ONLY:
            train.pop(key)
    runs = []
    for dataset in cfg["data"]["dataset"]:
        data_table = task.data_table(cfg, dataset)
        for template in cfg["model"]["spec"]:
            spec = task.model_spec(cfg, dataset, template)
            for lr in cfg["train"]["lr"]:
                for init_name in cfg["init"]["names"]:
                    for init in _init_tables(cfg, init_name):
                        for seed in cfg["train"]["seeds"]:
                            run = {
                                "task": cfg["study"]["task"],
                                "data": data_table,
                                "model": spec,
                                "init": init,
                                "train": {**train, "lr": lr},
                                "measure": dict(cfg["measure"]),
                                "seed": seed,
                                **task.run_tables(cfg),
                            }
                            run["run_id"] = run_id(run)
                            runs.append(run)
    return runs


def grid(size: int) -> dict[str, Any]:
    """A smoke grid of ``size`` runs: 3 inits, size/1010 seeds, 1000 alphas for emergence."""
    alphas = ",".join(str(1 + i / 1000) for i in range(1, 1001))
    return config.load("smoke", [f"init.alpha=[{alphas}]", f"train.seeds={size // 1002}"])


def held(runs: list[dict[str, Any]]) -> int:
    """Bytes of every object ``runs`` reaches (dicts, lists, strings, numbers), each once."""
    seen: set[int] = set()
    total = 0
    stack: list[Any] = [runs]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
    return total


def timed(fn: Callable[[dict[str, Any]], Any], cfg: dict[str, Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(cfg)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| runs | count_runs | expand | before | before / expand | held | held before |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        cfg = grid(size)
        total = count_runs(cfg)
        count = statistics.median(timed(count_runs, cfg)[0] for _ in range(5))
        now, before = [], []
        for _ in range(args.repeats):
            seconds, runs = timed(expand, cfg)
            now.append(seconds)
            del runs
            gc.collect()
            seconds, old = timed(expand_before, cfg)
            before.append(seconds)
            gc.collect()
        fresh = expand(cfg)
        assert len(fresh) == total and [r["run_id"] for r in fresh] == [r["run_id"] for r in old]
        assert all(a == b for a, b in zip(fresh, old))
        memory, memory_before = held(fresh), held(old)
        del fresh, old
        gc.collect()
        a, b = statistics.median(now), statistics.median(before)
        print(f"| {total:,} | {count * 1e6:.0f} µs | {a:.2f} s | {b:.2f} s | {b / a:.1f}x "
              f"| {memory / 1e6:,.0f} MB | {memory_before / 1e6:,.0f} MB |")  # fmt: skip


if __name__ == "__main__":
    main()
