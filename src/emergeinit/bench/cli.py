"""The ``emergeinit bench`` and ``emergeinit report`` commands, as plain functions.

``emergeinit/cli.py`` wraps these in typer commands and imports this module lazily, so the core
CLI never pays for (or depends on) the harness. Exit status: 0 when every run finished (a
diverged run is a result), 1 when a run crashed, 2 on an invalid config or study directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import config as cfgmod
from .checkpoint import remove_stale_temps
from .executors import (
    Callbacks,
    Executor,
    RayExecutor,
    auto_workers,
    make_executor,
    threads_per_worker,
)
from .study import (
    StudyDir,
    atomic_write,
    check_runs,
    columns,
    environment,
    expand,
    resolve_datasets,
    result_row,
    write_results,
)

DATA_DIR_ENV = "EMERGEINIT_DATA_DIR"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _run_text(run: dict[str, Any]) -> str:
    from .report import label

    init = run["init"]
    shown = label(
        {"init": init["name"], **{k: init.get(k) for k in ("base", "alpha", "pivot", "head")}}
    )
    return f"{run['model']} {shown} lr={run['train']['lr']:g} seed={run['seed']}"


def device_override(device: str | None) -> list[str]:
    """``--device`` as the ``--set`` it stands for (the device is part of each run's config)."""
    if device is None:
        return []
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return [f'train.device="{device}"']


def run_bench(
    target: str | None = None,
    out: Path | None = None,
    set_: list[str] | None = None,
    workers: int = 0,
    quiet: bool = False,
    data_dir: Path | None = None,
    full: bool = False,
    *,
    device: str | None = None,
    executor: str | Executor = "local",
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    max_retries: int = 2,
) -> int:
    """Run (or resume) a study; print the study directory last. Returns the exit status.

    ``full`` applies the study's ``[full]`` table (the full-size run) before ``set_``.
    ``device`` overrides ``train.device``. ``executor``: ``"local"`` (this process or a pool of
    ``workers``), ``"ray"`` (one Ray task per run at ``address`` with ``cpus_per_run`` /
    ``gpus_per_run``, retried ``max_retries`` times), or an executor object (the DDP driver's).
    """
    try:
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0 (0 = one per core), got {workers}")
        if isinstance(executor, str) and executor not in ("local", "ray"):
            raise ConfigError(f"--executor must be local or ray, got {executor!r}")
        if address is not None and executor != "ray":
            raise ConfigError("--address is the Ray cluster's address: add --executor ray")
        runner: Executor | None = None if isinstance(executor, str) else executor
        if executor == "ray":
            runner = RayExecutor(address, cpus_per_run, gpus_per_run, max_retries, quiet)
        cfg = cfgmod.load(target, [*(set_ or []), *device_override(device)], full=full)
        if data_dir is None and os.environ.get(DATA_DIR_ENV):
            data_dir = Path(os.environ[DATA_DIR_ENV])
        cfg, notices = resolve_datasets(cfg, data_dir)
        if out is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{cfg['study']['name']}-{stamp}"
        runs = expand(cfg)
        check_runs(runs, data_dir)
        study = StudyDir(out)
        study.claim(cfg)
    except ConfigError as exc:
        _error(str(exc))
        return 2
    with study.lock() as mine:
        if not mine:
            _error(f"another 'emergeinit bench' is running on {study.path}; wait for it to end")
            return 2
        return _drive(cfg, runs, study, notices, workers, quiet, data_dir, runner)


def _drive(
    cfg: dict[str, Any],
    runs: list[dict[str, Any]],
    study: StudyDir,
    notices: list[str],
    workers: int,
    quiet: bool,
    data_dir: Path | None,
    runner: Executor | None,
) -> int:
    """The study loop, run while holding the study's lock (it alone writes results.csv)."""
    if not quiet:
        for notice in notices:
            print(notice, file=sys.stderr)

    remove_stale_temps(study.path, "results.csv")
    done = study.finished_rows()
    todo = [r for r in runs if r["run_id"] not in done]
    rows: dict[str, dict[str, Any]] = dict(done)
    cols = columns(cfg)
    if workers == 0:
        workers = auto_workers(len(todo))
    threads = threads_per_worker(workers) if workers > 1 else 0
    env = environment(workers, threads or _torch_threads(), data_dir, notices)
    env["executor"] = type(runner).__name__ if runner is not None else "local"
    atomic_write(study.path / "environment.json", json.dumps(env, indent=2))
    if not quiet:
        print(
            f"study {cfg['study']['name']}: {len(runs)} runs, {len(done)} already finished, "
            f"{len(todo)} to run -> {study.path}"
        )

    order = [r["run_id"] for r in runs]
    failed: list[str] = []
    start = time.perf_counter()

    def record(run: dict[str, Any], summary: dict[str, Any]) -> None:
        rows[run["run_id"]] = result_row(run, summary)
        if summary["status"] == "failed":
            failed.append(run["run_id"])
            _error(
                f"run {run['run_id']} ({_run_text(run)}) crashed: {summary.get('error')}"
                f"; traceback in {study.run_dir(run['run_id']) / 'error.txt'}"
            )
        write_results(study.results_path, [rows[i] for i in order if i in rows], cols)

    try:
        with _Progress(quiet, len(runs), len(done)) as progress:

            def on_done(run: dict[str, Any], summary: dict[str, Any]) -> None:
                record(run, summary)
                progress.finish(run["run_id"])

            callbacks = Callbacks(
                on_start=lambda run: progress.start(run["run_id"], _run_text(run)),
                on_progress=progress.advance,
                on_done=on_done,
            )
            (runner or make_executor(workers)).execute(todo, study.run_dir, data_dir, callbacks)
    except KeyboardInterrupt:
        _error(f"interrupted; finished runs are saved, rerun with --out {study.path} to resume")
        return 130

    from .report import write_report

    report = write_report(study.path)
    if not quiet:
        print(f"{len(todo)} runs in {time.perf_counter() - start:.1f} s; report: {report}")
    print(study.path)
    return 1 if failed else 0


def run_report(study_dir: Path) -> int:
    """Regenerate ``report.md`` and the plots of an existing study directory."""
    from .report import write_report

    try:
        study = StudyDir(study_dir)
        study.load_config()
        if not study.results_path.is_file():
            raise ConfigError(f"{study_dir} has no results.csv yet; run the study first")
    except ConfigError as exc:
        _error(str(exc))
        return 2
    print(write_report(study.path))
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class _Progress:
    """A bar over runs and one bar per active run (rich); silent when quiet."""

    def __init__(self, quiet: bool, total: int, completed: int) -> None:
        self.quiet = quiet
        self.total = total
        self.completed = completed
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        if not self.quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), transient=False,
            )  # fmt: skip
            self.bar.__enter__()
            self.runs = self.bar.add_task("runs", total=self.total, completed=self.completed)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self.bar.__exit__(None, None, None)

    def start(self, rid: str, text: str) -> None:
        if not self.quiet:
            self.tasks[rid] = self.bar.add_task(f"  {text}", total=None)

    def advance(self, rid: str, step: int, total: int) -> None:
        if not self.quiet and rid in self.tasks:
            self.bar.update(self.tasks[rid], completed=step, total=total)

    def finish(self, rid: str) -> None:
        if not self.quiet:
            task = self.tasks.pop(rid, None)
            if task is not None:
                self.bar.remove_task(task)
            self.bar.advance(self.runs)
