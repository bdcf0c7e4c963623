"""The ``emergeinit bench`` and ``emergeinit report`` commands, as plain functions: a thin layer
over the Python API (:mod:`.api`) that adds progress bars, messages and the exit status.

``emergeinit/cli.py`` wraps these in typer commands and imports this module lazily, so the core
CLI never pays for (or depends on) the harness. Exit status: 0 when every run finished (a
diverged run is a result), 1 when a run crashed (or a file could not be written), 2 on an
invalid config or study directory, 130 when interrupted by Ctrl-C (SIGINT), 143 by SIGTERM.
This is the only layer of the harness that prints; every problem is one ``error: ...``
paragraph on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EmergeInitError
from .api import (
    DATA_DIR_ENV,
    MAX_RUNS,
    Study,
    device_override,
    load_study,
    run_study,
    run_text,
)
from .executors import Executor
from .interrupts import StudyInterrupted, stop_on_signals
from .store import ResultsWarning
from .study import StudyDir

__all__ = ["DATA_DIR_ENV", "device_override", "run_bench", "run_report"]


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


class _Messages(logging.Handler):
    """The harness's log records on stderr as ``error: ...`` / ``warning: ...`` lines (the
    stream is looked up per record, so a test's captured stderr gets them)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)


_show_others = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    """A ``ResultsWarning`` as one ``warning: ...`` line; any other warning as Python shows it."""
    if issubclass(category, ResultsWarning):
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        _show_others(message, category, *args, **kw)


@contextlib.contextmanager
def _messages(quiet: bool) -> Iterator[None]:
    """Show the harness's warnings and errors (only errors when quiet) while a command runs.
    What the load of results.csv found (damaged lines, repeated run ids) is shown even when
    quiet: it is about the results themselves. Ctrl-C and SIGTERM stop the command once
    (later ones are ignored: the command is about to exit)."""
    logger = logging.getLogger("emergeinit")
    handler = _Messages(logging.ERROR if quiet else logging.WARNING)
    logger.addHandler(handler)
    previous = logger.level
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    try:
        with warnings.catch_warnings(), stop_on_signals(restore_after_stop=False):
            warnings.simplefilter("always", ResultsWarning)
            warnings.showwarning = _show_warning  # restored by catch_warnings
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _stopped(exc: KeyboardInterrupt) -> int:
    """The one line an interrupt prints, and its exit status."""
    if not isinstance(exc, StudyInterrupted):  # before the study's driver took over
        exc = StudyInterrupted(None, getattr(exc, "signum", 2), "preparing")
    _error(exc.message())
    return exc.exit_status


def run_bench(
    target: str | None = None,
    out: Path | str | None = None,
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
    max_runs: int = MAX_RUNS,
) -> int:
    """Run (or resume) a study (:func:`.api.run_study`); print the study directory last.
    Returns the exit status."""
    with _messages(quiet):
        study = None
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
                max_runs=max_runs,
                observer=_Progress(quiet),
            )
            # One more load of results.csv (the report made its own): the exit status and the
            # Answer both come from it.
            with warnings.catch_warnings():  # the report's load has just named them
                warnings.simplefilter("ignore", ResultsWarning)
                rows = study.rows
            failed = any(r["status"] == "failed" for r in rows)
            if not quiet:
                _print_answer(study, rows)
        except ConfigError as exc:
            _error(str(exc))
            return 2
        except KeyboardInterrupt as exc:
            if study is not None:  # after the study ended: it is complete
                _error(f"interrupted after the study ended; its results are in {study.dir}")
                return 128 + int(getattr(exc, "signum", 2))
            return _stopped(exc)
        except EmergeInitError as exc:
            _error(str(exc))
            return 1
        except OSError as exc:  # a file of the study could not be written (a full disk)
            where = f" ({exc.filename})" if exc.filename else ""
            _error(
                f"{exc.strerror or exc}{where}; finished runs are saved. Free the space (or "
                "fix the permissions) and rerun the same command to resume"
            )
            return 1
        print(study.dir)
        return 1 if failed else 0


def run_report(study_dir: Path, quiet: bool = False) -> int:
    """Regenerate ``report.md`` and the plots of an existing study directory; print its
    Answer (unless ``quiet``), then the report's path. What results.csv holds never makes it
    fail: damaged lines and repeated run ids are named (in the report and on stderr) and never
    counted."""
    from .report import write_report

    with _messages(quiet=False):
        try:
            study = load_study(study_dir)
            if not (study.dir / "results.csv").is_file():
                raise ConfigError(f"{study_dir} has no results.csv yet; run the study first")
            report = write_report(study.dir)
            if not quiet:
                with warnings.catch_warnings():  # the report's load has just named them
                    warnings.simplefilter("ignore", ResultsWarning)
                    rows = study.rows
                _print_answer(study, rows)
            print(report)
        except ConfigError as exc:
            _error(str(exc))
            return 2
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", 2)
            what = "interrupted (Ctrl-C)" if signum == 2 else "terminated (SIGTERM)"
            _error(
                f"{what} while writing the report; report.md is as it was (it is replaced "
                f"whole or not at all). To write it, rerun: emergeinit report {study_dir}"
            )
            return 128 + int(signum)
        except OSError as exc:
            _error(f"cannot write the report of {study_dir}: {exc.strerror or exc}")
            return 1
    return 0


def _print_answer(study: Study, rows: list[dict[str, Any]]) -> None:
    """The report's Answer on the terminal (the table, verdicts coloured, and its sentences),
    judged from ``rows``, the study's results as loaded."""
    from rich.console import Console

    from .answer import print_answer
    from .report import answer_of

    plugins = StudyDir(study.dir).environment().get("plugins", {})
    answer = answer_of(study.config, rows, plugins)
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
