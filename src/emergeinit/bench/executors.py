"""Where runs execute: in this process, in a pool of worker processes, or on a Ray cluster.

All call :func:`.runner.execute_run` and report through the same three callbacks, so the study
loop (results, progress) does not know which one it drives; the driver alone writes
``results.csv``, workers write only their runs' folders. Each pool worker pins its torch
thread count, so N workers x T threads never oversubscribe the cores (and results do not depend
on how many runs happen to share the machine).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import itertools
import multiprocessing as mp
import os
import queue
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..errors import ConfigError
from . import tasks
from .interrupts import holding_sigint
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
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_here(
    run: dict[str, Any], run_dir: Callable[[str], Path], data_dir: Path | None, cb: Callbacks
) -> dict[str, Any]:
    """One run in this process, reported through ``cb``; returns its summary."""
    rid: str = run["run_id"]
    cb.on_start(run)

    def progress(step: int, total: int) -> None:
        cb.on_progress(rid, step, total)

    summary = execute_run(run, run_dir(rid), data_dir, progress)
    cb.on_done(run, summary)
    return summary


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
                run_here(run, run_dir, data_dir, cb)
        finally:
            torch.set_num_threads(previous)


_messages: Any = None  # the pool worker's queue back to the driver (set by _init_worker)


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this process when its parent dies (even by SIGKILL), so a
    killed study leaves no orphan still writing a run that its rerun will resume."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(threads: int, messages: Any, parent: int, task_refs: dict[str, str]) -> None:
    global _messages
    # The driver stops its workers itself (Ctrl-C in a terminal reaches every process of the
    # group): a worker never turns SIGINT into a traceback. Held back since its start already.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _messages = messages
    tasks.adopt(task_refs)  # tasks the driver registered by hand, not only the built-in ones
    torch.set_num_threads(threads)
    # Inter-op threads are irrelevant for these eager models but would add idle threads.
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def _work(run: dict[str, Any], path: Path, data_dir: Path | None) -> dict[str, Any]:
    rid = run["run_id"]
    messages = _messages
    messages.put(("start", rid, 0, 0))
    return execute_run(run, path, data_dir, lambda s, t: messages.put(("progress", rid, s, t)))


class PoolExecutor:
    """Runs in ``workers`` spawned processes with ``threads`` torch threads each.

    Runs are handed out a few at a time (never more than ``2 * workers`` pending), so a grid
    of a million runs costs no more to start, or to stop, than a small one. Workers ignore
    SIGINT; when the driver stops (Ctrl-C, SIGTERM, an error) it terminates them: each run
    resumes from its last checkpoint on the next start.
    """

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
        # A plain queue handed to each worker at start-up (no manager process, which would
        # outlive a killed driver).
        messages = ctx.Queue()
        pool = cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self.threads, messages, os.getpid(), tasks.portable()),
        )
        waiting = iter(runs)
        pending: dict[cf.Future[dict[str, Any]], dict[str, Any]] = {}

        def refill() -> None:
            for run in itertools.islice(waiting, 2 * self.workers - len(pending)):
                # Processes started here never see SIGINT (see .interrupts).
                with holding_sigint():
                    future = pool.submit(_work, run, run_dir(run["run_id"]), data_dir)
                pending[future] = run

        try:
            refill()
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
                refill()
            self._drain(messages, by_id, cb)
        except BaseException:
            _stop(pool)
            raise
        else:
            pool.shutdown(wait=True)
        finally:
            messages.close()
            messages.cancel_join_thread()  # never wait on a queue a killed worker may hold

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


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel what has not started and terminate the workers (a run killed
    mid-way resumes from its last checkpoint). ``shutdown`` alone would wait for every run
    under way to finish."""
    # The pool offers no public way to stop work under way: its process table is the one
    # handle on the workers.
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        with contextlib.suppress(OSError, ValueError):
            process.terminate()
    for process in workers:
        with contextlib.suppress(OSError, ValueError):
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def auto_workers(num_runs: int) -> int:
    """One single-threaded worker per core (capped by the runs to do).

    The harness's models are small: several one-thread processes beat one multi-threaded
    process, and single threads do not collapse when other jobs share the cores (measured:
    2 threads on 2 busy cores ran a 6-layer MLP step 5x slower than 1 thread).
    """
    return max(1, min(os.cpu_count() or 1, num_runs))


class RayUnavailableError(ConfigError):
    """``--executor ray`` without Ray installed."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "--executor ray needs Ray, which is not installed: pip install 'emergeinit[ray]'"
        ) from None
    return ray


class RunFailedError(RuntimeError):
    """Raised inside a Ray task for a failed run, so that Ray's task retries apply to it."""


def _ray_task(
    run: dict[str, Any], path: str, data_dir: str | None, threads: int, task_refs: dict[str, str]
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    tasks.adopt(task_refs)
    summary = execute_run(run, Path(path), Path(data_dir) if data_dir else None)
    if summary["status"] == "failed":
        raise RunFailedError(summary["error"])
    return summary


def _ray_error(exc: BaseException) -> str:
    """The root cause of a Ray failure in one line (Ray wraps it with a remote traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RunFailedError):
        return str(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"


class RayExecutor:
    """Each run is a Ray task with declared resources, retried up to ``max_retries`` times.

    Connects to the cluster at ``address`` (``"auto"`` = the one ``ray start`` set up on this
    machine; ``None`` = ``$RAY_ADDRESS`` or a new local instance, stopped afterwards). Tasks
    write their run folders themselves, so on a cluster the study directory must be on a
    filesystem every node mounts at the same path; results come back to the driver, which
    writes ``results.csv`` as each task ends. A run that fails (an exception, or its worker
    or node dying) is retried, resuming from its last checkpoint; after the last retry its row
    says ``failed`` with the error.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 2,
        quiet: bool = False,
    ) -> None:
        if num_cpus <= 0 or num_gpus < 0 or max_retries < 0:
            raise ConfigError(
                "--cpus-per-run must be > 0, --gpus-per-run and --max-retries >= 0; got "
                f"{num_cpus}, {num_gpus}, {max_retries}"
            )
        self.ray = _import_ray()
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.quiet = quiet

    def execute(
        self,
        runs: Sequence[dict[str, Any]],
        run_dir: Callable[[str], Path],
        data_dir: Path | None,
        cb: Callbacks,
    ) -> None:
        import logging

        ray = self.ray
        started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "logging_level": logging.WARNING if self.quiet else logging.INFO,
                "log_to_driver": not self.quiet,
            }
            if self.address is None:  # a local instance of our own: no dashboard to serve
                options["include_dashboard"] = False
            ray.init(address=self.address, **options)
            started = True
        try:
            task = ray.remote(_ray_task).options(
                num_cpus=self.num_cpus,
                num_gpus=self.num_gpus,
                max_retries=self.max_retries,
                retry_exceptions=True,
            )
            threads = max(1, int(self.num_cpus))
            folder = str(data_dir.resolve()) if data_dir else None
            refs = tasks.portable()
            pending = {
                task.remote(r, str(run_dir(r["run_id"]).resolve()), folder, threads, refs): r
                for r in runs
            }
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in done:
                        run = pending.pop(ref)
                        try:
                            summary = ray.get(ref)
                        except Exception as exc:  # retries used up: the run is a failed row
                            summary = {"status": "failed", "error": _ray_error(exc)}
                        cb.on_done(run, summary)
            finally:
                for ref in pending:  # interrupted: do not leave tasks running on the cluster
                    ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()


class Executor(Protocol):
    def execute(
        self,
        runs: Sequence[dict[str, Any]],
        run_dir: Callable[[str], Path],
        data_dir: Path | None,
        cb: Callbacks,
    ) -> None: ...


def make_executor(workers: int) -> Executor:
    """``workers == 1``: in-process; more: a process pool with fixed torch threads per worker."""
    if workers <= 1:
        return LocalExecutor()
    return PoolExecutor(workers)
