"""Where runs execute: in this process, or in a pool of worker processes.

Both call :func:`.runner.execute_run` and report through the same three callbacks, so the study
loop (results, progress) does not know which one it drives. Each pool worker pins its torch
thread count, so N workers x T threads never oversubscribe the cores (and results do not depend
on how many runs happen to share the machine).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .runner import execute_run

OnStart = Callable[[dict[str, Any]], None]
OnProgress = Callable[[str, int, int], None]
OnDone = Callable[[dict[str, Any], dict[str, Any]], None]


@dataclass
class Callbacks:
    on_start: OnStart
    on_progress: OnProgress
    on_done: OnDone


def threads_per_worker(workers: int) -> int:
    import os

    return max(1, (os.cpu_count() or 1) // max(1, workers))


class LocalExecutor:
    """Runs one after another in this process."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def execute(
        self,
        runs: Sequence[dict[str, Any]],
        run_dir: Callable[[str], Path],
        data_dir: Path | None,
        cb: Callbacks,
    ) -> None:
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            for run in runs:
                rid: str = run["run_id"]
                cb.on_start(run)

                def progress(step: int, total: int, rid: str = rid) -> None:
                    cb.on_progress(rid, step, total)

                cb.on_done(run, execute_run(run, run_dir(rid), data_dir, progress))
        finally:
            torch.set_num_threads(previous)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    # Inter-op threads are irrelevant for these eager models but would add idle threads.
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def _work(run: dict[str, Any], path: Path, data_dir: Path | None, messages: Any) -> dict[str, Any]:
    rid = run["run_id"]
    messages.put(("start", rid, 0, 0))
    return execute_run(run, path, data_dir, lambda s, t: messages.put(("progress", rid, s, t)))


class PoolExecutor:
    """Runs in ``workers`` spawned processes with ``threads`` torch threads each."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.workers = workers
        self.threads = threads or threads_per_worker(workers)

    def execute(
        self,
        runs: Sequence[dict[str, Any]],
        run_dir: Callable[[str], Path],
        data_dir: Path | None,
        cb: Callbacks,
    ) -> None:
        by_id = {r["run_id"]: r for r in runs}
        # spawn, not fork: forking a process that has started torch's thread pools can hang.
        ctx = mp.get_context("spawn")
        with (
            ctx.Manager() as manager,
            cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(self.threads,),
            ) as pool,
        ):
            messages = manager.Queue()
            pending = {
                pool.submit(_work, r, run_dir(r["run_id"]), data_dir, messages): r for r in runs
            }
            while pending:
                done, _ = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                self._drain(messages, by_id, cb)
                for future in done:
                    run = pending.pop(future)
                    try:
                        summary = future.result()
                    except Exception as exc:  # the worker process itself died
                        summary = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                    cb.on_done(run, summary)
            self._drain(messages, by_id, cb)

    @staticmethod
    def _drain(messages: Any, by_id: dict[str, dict[str, Any]], cb: Callbacks) -> None:
        while True:
            try:
                kind, rid, step, total = messages.get_nowait()
            except queue.Empty:
                return
            if kind == "start":
                cb.on_start(by_id[rid])
            else:
                cb.on_progress(rid, step, total)


def auto_workers(num_runs: int) -> int:
    """One single-threaded worker per core (capped by the runs to do).

    The harness's models are small: several one-thread processes beat one multi-threaded
    process, and single threads do not collapse when other jobs share the cores (measured:
    2 threads on 2 busy cores ran a 6-layer MLP step 5x slower than 1 thread).
    """
    import os

    return max(1, min(os.cpu_count() or 1, num_runs))


def make_executor(workers: int) -> LocalExecutor | PoolExecutor:
    """``workers == 1``: in-process; more: a process pool with fixed torch threads per worker."""
    if workers <= 1:
        return LocalExecutor()
    return PoolExecutor(workers)
