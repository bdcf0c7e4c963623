"""The ``emergeinit bench`` and ``emergeinit report`` commands, as plain functions: a thin layer
over the Python API (:mod:`.api`) that adds progress bars, messages and the exit status.

``emergeinit/cli.py`` wraps these in typer commands and imports this module lazily, so the core
CLI never pays for (or depends on) the harness. Exit status: 0 when every run finished (a
diverged run is a result), 1 when a run crashed, 2 on an invalid config or study directory,
130 when interrupted. This is the only layer of the harness that prints.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .api import DATA_DIR_ENV, device_override, load_study, run_study, run_text
from .executors import Executor

__all__ = ["DATA_DIR_ENV", "device_override", "run_bench", "run_report"]


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


class _Messages(logging.Handler):
    """The harness's log records on stderr as ``error: ...`` / ``warning: ...`` lines (the
    stream is looked up per record, so a test's captured stderr gets them)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _messages(quiet: bool) -> Iterator[None]:
    """Show the harness's warnings and errors (only errors when quiet) while a command runs."""
    logger = logging.getLogger("emergeinit")
    handler = _Messages(logging.ERROR if quiet else logging.WARNING)
    logger.addHandler(handler)
    previous = logger.level
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


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
    log: list[str] | None = None,
    mlflow_uri: str | None = None,
) -> int:
    """Run (or resume) a study (:func:`.api.run_study`); print the study directory last.
    Returns the exit status."""
    with _messages(quiet):
        try:
            study = run_study(
                target,
                out=out,
                overrides=list(set_ or []),
                workers=workers,
                executor=executor,
                quiet=quiet,
                full=full,
                data_dir=data_dir,
                device=device,
                log=log or [],
                mlflow_uri=mlflow_uri,
                address=address,
                cpus_per_run=cpus_per_run,
                gpus_per_run=gpus_per_run,
                max_retries=max_retries,
                observer=_Progress(quiet),
            )
        except ConfigError as exc:
            _error(str(exc))
            return 2
        except KeyboardInterrupt as exc:
            where = getattr(exc, "path", out)
            _error(f"interrupted; finished runs are saved, rerun with --out {where} to resume")
            return 130
    if not quiet:
        _print_answer(study.dir)
    print(study.dir)
    return 1 if study.failed else 0


def run_report(study_dir: Path, quiet: bool = False) -> int:
    """Regenerate ``report.md`` and the plots of an existing study directory; print its
    Answer (unless ``quiet``), then the report's path."""
    from .report import write_report

    try:
        study = load_study(study_dir)
        if not (study.dir / "results.csv").is_file():
            raise ConfigError(f"{study_dir} has no results.csv yet; run the study first")
    except ConfigError as exc:
        _error(str(exc))
        return 2
    report = write_report(study.dir)
    if not quiet:
        _print_answer(study.dir)
    print(report)
    return 0


def _print_answer(path: Path) -> None:
    """The report's Answer on the terminal: the table (verdicts coloured) and its sentences."""
    from rich.console import Console

    from .answer import print_answer
    from .report import study_answer

    answer = study_answer(path)
    if answer.baseline:
        print_answer(answer.entries, answer.baseline, Console(highlight=False))


class _Progress:
    """The CLI's observer: notices on stderr, a bar over runs and one bar per active run
    (rich); silent when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.total = 0
        self.completed = 0
        self.tasks: dict[str, Any] = {}

    def notice(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr)

    def begin(self, name: str, total: int, done: int, todo: int, path: Path) -> None:
        self.total, self.completed = total, done
        if not self.quiet:
            print(f"study {name}: {total} runs, {done} already finished, {todo} to run -> {path}")

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

    def start(self, run: dict[str, Any]) -> None:
        if not self.quiet:
            self.tasks[run["run_id"]] = self.bar.add_task(f"  {run_text(run)}", total=None)

    def advance(self, rid: str, step: int, total: int) -> None:
        if not self.quiet and rid in self.tasks:
            self.bar.update(self.tasks[rid], completed=step, total=total)

    def finish(self, run: dict[str, Any], summary: dict[str, Any]) -> None:
        if not self.quiet:
            task = self.tasks.pop(run["run_id"], None)
            if task is not None:
                self.bar.remove_task(task)
            self.bar.advance(self.runs)

    def end(self, ran: int, seconds: float, report: Path) -> None:
        if not self.quiet:
            print(f"{ran} runs in {seconds:.1f} s; report: {report}")
