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
from .executors import Callbacks, auto_workers, make_executor, threads_per_worker
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


def run_bench(
    target: str | None = None,
    out: Path | None = None,
    set_: list[str] | None = None,
    workers: int = 0,
    quiet: bool = False,
    data_dir: Path | None = None,
) -> int:
    """Run (or resume) a study; print the study directory last. Returns the exit status."""
    try:
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0 (0 = one per core), got {workers}")
        cfg = cfgmod.load(target, set_ or [])
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
    if not quiet:
        for notice in notices:
            print(notice, file=sys.stderr)

    done = study.finished_rows()
    todo = [r for r in runs if r["run_id"] not in done]
    rows: dict[str, dict[str, Any]] = dict(done)
    cols = columns(cfg)
    if workers == 0:
        workers = auto_workers(len(todo))
    threads = threads_per_worker(workers) if workers > 1 else 0
    env = environment(workers, threads or _torch_threads(), data_dir, notices)
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
            make_executor(workers).execute(todo, study.run_dir, data_dir, callbacks)
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
