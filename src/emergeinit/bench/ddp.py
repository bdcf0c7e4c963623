"""Data-parallel runs under ``torchrun``: one study, every run trained by N processes at once.

::

    torchrun --standalone --nproc_per_node 2 -m emergeinit.bench.ddp smoke --out runs/ddp

This module is the torchrun entry point only; the in-run primitives (process group, batch
shards, the identical-weights check) are in :mod:`.runtime`. Every rank loads the same config
and builds the same model from the same seeds; the emergence init therefore gives the same
weights everywhere, and :func:`.runtime.check_identical` proves it (a SHA-256 of every parameter
and buffer, all-gathered) before DistributedDataParallel wraps the model. Each rank draws the
run's one data permutation and trains on ``batch[rank::world]`` of every global batch, so N ranks
together take the single-process step (same global batch, the gradients averaged by DDP). Rank 0
is the study's driver: it alone writes the study directory (``results.csv``, ``metrics.jsonl``,
checkpoints) and tells the other ranks which run comes next; they hold no files and receive a
resumed run's checkpoint from rank 0.

Backend: gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``, BatchNorm converted to
SyncBatchNorm there; on CPU each rank normalizes over its own shard, as plain DDP does).
A run that crashes on any rank ends the job: its row is recorded, the process exits non-zero
and torchrun stops the other ranks; rerunning the command resumes. See
``docs/scaling.md#one-run-data-parallel-under-torchrun``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from ..errors import ConfigError
from . import tasks
from .executors import Callbacks, run_here
from .runner import execute_run
from .runtime import Distributed, resolve_device, share

__all__ = ["LeaderExecutor", "main"]


class _Crashed(Exception):
    """A run failed under DDP: the job stops so torchrun can stop the other ranks."""


class LeaderExecutor:
    """Rank 0's executor: announce each run to the other ranks, then train it with them."""

    def execute(
        self,
        runs: Sequence[dict[str, Any]],
        run_dir: Callable[[str], Path],
        data_dir: Path | None,
        cb: Callbacks,
    ) -> None:
        for run in runs:
            share((run, str(run_dir(run["run_id"])), str(data_dir) if data_dir else None))
            if run_here(run, run_dir, data_dir, cb)["status"] == "failed":
                raise _Crashed(run["run_id"])


def _follow() -> int:
    while True:
        message = share(None)
        if message is None:
            return 0
        run, path, data_dir = message
        summary = execute_run(run, Path(path), Path(data_dir) if data_dir else None, writer=False)
        if summary["status"] == "failed":
            print(
                f"error: rank {dist.get_rank()}: run {run['run_id']} crashed: {summary['error']}",
                file=sys.stderr,
            )
            return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node N -m emergeinit.bench.ddp",
        description="Run (or resume) a study with every run data-parallel over the processes "
        "torchrun starts. Options as for 'emergeinit bench'.",
    )
    p.add_argument("target", nargs="?", default=None, help="a preset or a study FILE.toml")
    p.add_argument("--out", default=None, help="study directory (default runs/<study>-<time>)")
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--full", action="store_true", help="apply the study's [full] table")
    p.add_argument("--log", action="append", default=[], choices=("tensorboard", "mlflow"))
    return p


def main(argv: list[str] | None = None) -> int:
    from . import config as cfgmod
    from .api import device_override
    from .cli import run_bench

    args = _parser().parse_args(argv)
    if "WORLD_SIZE" not in os.environ:
        print(
            "error: start this under torchrun, e.g. torchrun --standalone --nproc_per_node 2 "
            "-m emergeinit.bench.ddp smoke --out runs/ddp",
            file=sys.stderr,
        )
        return 2
    overrides = [*args.set_, *device_override(args.device)]
    world = int(os.environ["WORLD_SIZE"])
    # Every rank reads the same config, so every rank fails the same way, before any collective.
    try:
        cfg = cfgmod.load(args.target, overrides, full=args.full)
        task = tasks.get(cfg["study"]["task"])
        if not task.data_parallel:
            raise ConfigError(f"study.task: {task.name} runs cannot train data-parallel yet")
        Distributed(0, world, 0, "").shard(cfg["train"]["batch_size"])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = resolve_device(cfg["train"]["device"])
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if dist.get_rank() != 0:
            return _follow()
        try:
            code = run_bench(
                args.target,
                Path(args.out) if args.out else None,
                overrides,
                workers=1,
                quiet=args.quiet,
                data_dir=Path(args.data_dir) if args.data_dir else None,
                full=args.full,
                executor=LeaderExecutor(),
                log=args.log,
            )
        except _Crashed:
            return 1  # the others wait inside that run; exiting lets torchrun stop them
        except BaseException:
            traceback.print_exc()
            return 1
        share(None)  # the study is over (or was refused): release the other ranks
        return code
    finally:
        dist.destroy_process_group()


def _end_process(code: int) -> NoReturn:
    """Leave without the interpreter's shutdown: every file is written and closed by now.

    A DistributedDataParallel wrapper keeps gloo's process group (and its worker threads)
    alive past ``destroy_process_group``; racing the interpreter's finalization, those threads
    now and then aborted rank 0 after its study had completed ("terminate called without an
    active exception": once in CI, once in 98 two-rank smoke studies on a loaded 2-core machine).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _end_process(main())
