"""The harness as a Python API: run a study from a notebook or a script, read its results.

>>> from emergeinit.bench import run_study                                  # doctest: +SKIP
>>> study = run_study("smoke", out="runs/smoke", overrides=["train.seeds=3"])  # doctest: +SKIP
>>> study.rows[0]["test_acc_final"], study.report_path                    # doctest: +SKIP

``emergeinit bench`` is a thin layer over :func:`run_study` (it adds the progress bars and the
exit status). Everything is validated before anything runs (config keys, model specs, data,
plug-ins, the device, each model's memory and emergence scales, the grid's size); a problem is
a :class:`~emergeinit.errors.ConfigError` that names the key. A run that crashes does not stop
the study: its row says ``failed``. Ctrl-C or SIGTERM stops it cleanly
(:class:`StudyInterrupted`). See ``docs/bench.md#python-api``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from ..errors import ConfigError
from . import config as cfgmod
from . import sinks as sinkmod
from .answer import AnswerEntry
from .checkpoint import read_events
from .executors import (
    Callbacks,
    Executor,
    RayExecutor,
    auto_workers,
    make_executor,
    threads_per_worker,
)
from .files import atomic_write_text
from .interrupts import StudyInterrupted, stop_on_signals
from .labels import label
from .store import ResultsStore, ResultsStoreError
from .study import (
    StudyDir,
    check_runs,
    columns,
    count_runs,
    environment,
    expand,
    plugin_info,
    plugin_label,
    preflight,
    result_row,
)

__all__ = [
    "DATA_DIR_ENV",
    "Observer",
    "Study",
    "StudyBusyError",
    "StudyInterrupted",
    "TooManyRunsError",
    "load_study",
    "run_study",
    "run_text",
]

DATA_DIR_ENV = "EMERGEINIT_DATA_DIR"
#: The largest grid a study runs without ``--max-runs`` (``max_runs=``) saying so.
MAX_RUNS = 10_000
#: Grids from this size on get a notice with their run count before they are expanded.
LARGE_GRID = 10_000
logger = logging.getLogger(__name__)


class StudyBusyError(ConfigError):
    """Another process is driving this study directory right now."""


class TooManyRunsError(ConfigError):
    """The grid has more runs than ``max_runs`` (``--max-runs``) allows."""


@dataclass(frozen=True)
class Study:
    """A study directory and what it holds.

    ``dir`` is the directory, ``config`` the resolved config it was run with; ``rows`` reads
    ``results.csv`` (each row a dict, numbers as numbers, empty cells as ``None``),
    ``to_pandas()`` gives the same as a ``pandas.DataFrame``, ``report_path`` is ``report.md``,
    ``verdicts`` the Answer's verdicts as data.
    """

    dir: Path
    config: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per run, in the study's run order, read through the store's validated
        load: damaged lines and repeated run ids are named in a ``ResultsWarning`` and never
        counted (the last row of a run id counts)."""
        return StudyDir(self.dir).results(self.config).rows

    @property
    def report_path(self) -> Path:
        return self.dir / "report.md"

    @property
    def verdicts(self) -> list[AnswerEntry]:
        """Every comparison against the baseline on every primary metric, as the report's
        Answer shows it: ``entry.setting``, ``entry.init``, ``entry.metric``, ``entry.word``
        (better, worse, equivalent or inconclusive), ``entry.config`` (the compared
        configuration's axes), ``entry.verdict`` (the numbers: :class:`.verdict.Verdict`);
        ``entry.to_dict()`` for a table. Empty without a baseline. Computed from the
        directory, so it is current while a study runs too."""
        from .report import study_answer

        return study_answer(self.dir).entries

    @property
    def failed(self) -> list[str]:
        """Run ids whose row says ``failed`` (their tracebacks are in ``runs/<id>/error.txt``)."""
        return [r["run_id"] for r in self.rows if r["status"] == "failed"]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The metrics stream of one run (``runs/<id>/metrics.jsonl``)."""
        return read_events(self.dir / "runs" / run_id)

    def to_pandas(self) -> Any:
        """``results.csv`` as a ``pandas.DataFrame`` (needs pandas), loaded as :attr:`rows`."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Study.to_pandas() needs pandas: pip install pandas") from None
        results = StudyDir(self.dir).results(self.config)
        return pd.DataFrame(results.rows, columns=list(results.header) or None)


def load_study(path: str | Path) -> Study:
    """The study in directory ``path`` (written by :func:`run_study` or ``emergeinit bench``)."""
    folder = Path(path)
    return Study(folder, StudyDir(folder).load_config())


class Observer(Protocol):
    """What a study's driver reports as it goes (the CLI shows progress bars with it)."""

    def notice(self, text: str) -> None: ...

    def begin(self, name: str, total: int, done: int, todo: int, path: Path) -> None: ...

    def __enter__(self) -> Observer: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def start(self, run: dict[str, Any]) -> None: ...

    def advance(self, rid: str, step: int, total: int) -> None: ...

    def finish(self, run: dict[str, Any], summary: dict[str, Any]) -> None: ...

    def end(self, ran: int, seconds: float, report: Path) -> None: ...


class LogObserver:
    """The API's observer: notices and progress as ``logging`` records (silent when quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def notice(self, text: str) -> None:
        if not self.quiet:
            logger.warning(text)

    def begin(self, name: str, total: int, done: int, todo: int, path: Path) -> None:
        if not self.quiet:
            logger.info(
                "study %s: %d runs, %d already finished, %d to run -> %s",
                name, total, done, todo, path,
            )  # fmt: skip

    def __enter__(self) -> LogObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, run: dict[str, Any]) -> None:
        pass

    def advance(self, rid: str, step: int, total: int) -> None:
        pass

    def finish(self, run: dict[str, Any], summary: dict[str, Any]) -> None:
        if not self.quiet:
            logger.info("run %s (%s): %s", run["run_id"], run_text(run), summary["status"])

    def end(self, ran: int, seconds: float, report: Path) -> None:
        if not self.quiet:
            logger.info("%d runs in %.1f s; report: %s", ran, seconds, report)


def run_text(run: dict[str, Any]) -> str:
    """One line naming a run: model, init (with its options), optimizer, lr and seed."""
    init = run["init"]
    shown = label(
        {
            "init": plugin_label("init", init["name"]),
            **{k: init.get(k) for k in ("base", "alpha", "pivot", "head", "order", "units")},
        }
    )
    train = run["train"]
    optimizer = plugin_label("optimizer", train["optimizer"])
    return f"{run['model']} {shown} {optimizer} lr={train['lr']:g} seed={run['seed']}"


def device_override(device: str | None) -> list[str]:
    """``--device`` as the ``--set`` it stands for (the device is part of each run's config)."""
    if device is None:
        return []
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return [f'train.device="{device}"']


class _Recorder:
    """The one place where a finished run's row is recorded: one line appended to
    ``results.csv`` (flushed and fsynced: O(1) in the study's size, see :mod:`.store`), then
    every metric sink."""

    def __init__(
        self, study: StudyDir, store: ResultsStore, sinks: Sequence[sinkmod.Sink]
    ) -> None:
        self.study = study
        self.store = store
        self.sinks = sinks

    def record(self, run: dict[str, Any], summary: dict[str, Any]) -> None:
        rid = run["run_id"]
        row = result_row(run, summary)
        if summary["status"] == "failed":
            logger.error(
                "run %s (%s) crashed: %s; traceback in %s",
                rid, run_text(run), summary.get("error"), self.study.run_dir(rid) / "error.txt",
            )  # fmt: skip
        try:
            self.store.append(row)
        except ResultsStoreError as exc:  # a value that would not read back (a task's bug)
            logger.error("run %s: %s; recorded as failed", rid, exc)
            row = result_row(run, {"status": "failed", "error": f"ResultsStoreError: {exc}"})
            self.store.append(row)
        if self.sinks:
            events = read_events(self.study.run_dir(rid))
            for sink in self.sinks:
                try:
                    sink.log_run(run, row, events)
                except Exception as exc:  # a tracking server down must not stop the study
                    logger.error("run %s: %s failed: %s", rid, type(sink).__name__, exc)


class _State:
    """Where the driver is, for the message of an interrupt."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.phase = "preparing"
        self.finished = 0
        self.total = 0

    def interrupted(self, exc: KeyboardInterrupt) -> StudyInterrupted:
        signum = getattr(exc, "signum", signal.SIGINT)
        return StudyInterrupted(self.path, signum, self.phase, self.finished, self.total)


def _make_executor(
    executor: str | Executor,
    address: str | None,
    cpus_per_run: float,
    gpus_per_run: float,
    max_retries: int,
    quiet: bool,
) -> Executor | None:
    if isinstance(executor, str) and executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if address is not None and executor != "ray":
        raise ConfigError("--address is the Ray cluster's address: add --executor ray")
    if executor == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run, max_retries, quiet)
    return None if isinstance(executor, str) else executor


def run_study(
    target: str | Path | Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    overrides: Iterable[str] = (),
    workers: int = 0,
    executor: str | Executor = "local",
    quiet: bool = True,
    full: bool = False,
    data_dir: str | Path | None = None,
    device: str | None = None,
    log: Iterable[str] = (),
    mlflow_uri: str | None = None,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    max_retries: int = 2,
    max_runs: int = MAX_RUNS,
    observer: Observer | None = None,
) -> Study:
    """Run (or resume) a study and write its report; return the :class:`Study`.

    Args:
        target: a preset name (``"smoke"``), a TOML file, or the config itself as a dict;
            ``None`` = the ``default`` preset.
        out: the study directory (default ``runs/<study>-<time>``); an existing one with the
            same config resumes (finished runs are skipped, interrupted ones continue).
        overrides: ``"key.path=VALUE"`` strings, as ``--set`` (``VALUE`` a TOML literal).
        workers: ``0`` = one single-threaded process per core, ``1`` = this process, ``N``.
        executor: ``"local"``, ``"ray"`` (with ``address``, ``cpus_per_run``,
            ``gpus_per_run``, ``max_retries``) or an executor object.
        quiet: no notices or progress records (errors are logged regardless).
        full: apply the study's ``[full]`` table before ``overrides``.
        data_dir: where file datasets live (default ``$EMERGEINIT_DATA_DIR``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for ``train.device``.
        log: metric sinks, ``"tensorboard"`` and/or ``"mlflow"`` (at ``mlflow_uri``).
        max_runs: the largest grid to run (as ``--max-runs``); a larger one is refused before
            it is expanded.
        observer: receives notices and progress (the CLI's progress bars).

    Raises:
        ConfigError: an invalid config, plug-in, dataset, device, model (scales out of range,
            too large for memory) or study directory, before any run.
        TooManyRunsError: the grid has more than ``max_runs`` runs.
        StudyBusyError: another process drives this study directory right now.
        StudyInterrupted: Ctrl-C (SIGINT) or SIGTERM; finished runs are saved, the same call
            resumes. Its ``signum`` says which, ``message()`` says what was saved.
    """
    state = _State()
    with stop_on_signals():
        try:
            return _run_study(
                target, out, overrides, workers, executor, quiet, full, data_dir, device, log,
                mlflow_uri, address, cpus_per_run, gpus_per_run, max_retries, max_runs,
                observer or LogObserver(quiet), state,
            )  # fmt: skip
        except StudyInterrupted:
            raise
        except KeyboardInterrupt as exc:
            raise state.interrupted(exc) from None


def _check_arguments(workers: int, max_runs: int, out: str | Path | None) -> None:
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0 = one per core), got {workers}")
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ConfigError(f"--max-runs must be an integer >= 1, got {max_runs!r}")
    if out is not None and not str(out).strip():
        raise ConfigError(
            "--out: empty; give the study directory, or leave --out out for "
            "runs/<study>-<time>"
        )


def _grid_text(cfg: dict[str, Any], total: int) -> str:
    """The grid's axes and their sizes: ``data.dataset 1 x model.spec 2 x ...``."""
    grid = cfgmod.learning_rates(cfg)
    lrs = "train.lr" if len(grid) == 1 else "train.optimizer x lr"
    sizes = {
        "data.dataset": len(cfg["data"]["dataset"]),
        "model.spec": len(cfg["model"]["spec"]),
        lrs: sum(len(v) for v in grid.values()),
        "train.seeds": len(cfg["train"]["seeds"]),
    }
    settings = total // math.prod(sizes.values())
    init = cfg["init"]
    per = math.prod(len(init[k]) for k in cfgmod.EMERGENCE_AXES)
    shown = f"init settings {settings}"
    if per > 1:
        shown += (
            f" (init.{' x '.join(cfgmod.EMERGENCE_AXES)} = {per} per emergence init"
            + (", some excluded)" if init["exclude"] else ")")
        )
    parts = [f"{k} {v}" for k, v in sizes.items() if k != "train.seeds"]
    return " x ".join([*parts, shown, f"train.seeds {sizes['train.seeds']}"])


def _run_study(
    target: str | Path | Mapping[str, Any] | None,
    out: str | Path | None,
    overrides: Iterable[str],
    workers: int,
    executor: str | Executor,
    quiet: bool,
    full: bool,
    data_dir: str | Path | None,
    device: str | None,
    log: Iterable[str],
    mlflow_uri: str | None,
    address: str | None,
    cpus_per_run: float,
    gpus_per_run: float,
    max_retries: int,
    max_runs: int,
    observer: Observer,
    state: _State,
) -> Study:
    _check_arguments(workers, max_runs, out)
    runner = _make_executor(executor, address, cpus_per_run, gpus_per_run, max_retries, quiet)
    kinds = sinkmod.check_kinds(log)
    cfg = cfgmod.load(target, [*overrides, *device_override(device)], full=full)
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir = os.environ[DATA_DIR_ENV]
    folder = Path(data_dir) if data_dir is not None else None
    cfg, notices = preflight(cfg, folder)
    name = cfg["study"]["name"]
    total = count_runs(cfg)
    if total > max_runs:
        raise TooManyRunsError(
            f"study {name!r} has {total:,} runs ({_grid_text(cfg, total)}), more than --max-runs "
            f"{max_runs:,}; to run them all, add --max-runs {total} (Python: "
            f"run_study(..., max_runs={total})), or make an axis shorter"
        )
    if total >= LARGE_GRID:
        observer.notice(f"study {name}: {total:,} runs in the grid; expanding them")
    cpus = os.cpu_count() or 1
    if workers > cpus and runner is None:
        observer.notice(
            f"NOTICE: --workers {workers} is more than the {cpus} CPU cores here: the runs "
            "share the cores (each worker runs 1 torch thread); --workers 0 starts one per core"
        )
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{name}-{stamp}"
    runs = expand(cfg)
    concurrency = 1 if runner is not None else (workers or auto_workers(len(runs)))
    # Ray runs train on the cluster's nodes: this machine's device and memory say nothing.
    here = not isinstance(runner, RayExecutor)
    for notice in check_runs(runs, folder, concurrency=concurrency, here=here):
        observer.notice(notice)
    study = StudyDir(Path(out))
    sinkmod.check_available(kinds)
    study.claim(cfg)
    state.path, state.total = study.path, len(runs)
    with study.lock() as mine:
        if not mine:
            raise StudyBusyError(
                f"another 'emergeinit bench' is running on {study.path}; wait for it to end"
            )
        sinks = sinkmod.make_sinks(kinds, study.path, name, mlflow_uri)
        _drive(cfg, runs, study, notices, workers, folder, runner, sinks, observer, state)
    return Study(study.path, cfg)


def _drive(
    cfg: dict[str, Any],
    runs: list[dict[str, Any]],
    study: StudyDir,
    notices: list[str],
    workers: int,
    data_dir: Path | None,
    runner: Executor | None,
    sinks: Sequence[sinkmod.Sink],
    observer: Observer,
    state: _State,
) -> None:
    """The study loop, run while holding the study's lock (it alone writes results.csv)."""
    from .report import write_report

    for notice in notices:
        observer.notice(notice)
    # The repairing load: damaged lines and superseded rows set aside, named in a warning.
    with ResultsStore(study.results_path, columns(cfg)) as store:
        assert store.results is not None
        done = store.results.finished()
        todo = [r for r in runs if r["run_id"] not in done]
        state.finished = len(runs) - len(todo)
        recorder = _Recorder(study, store, sinks)
        if workers == 0:
            workers = auto_workers(len(todo))
        threads = threads_per_worker(workers) if workers > 1 else 0
        env = environment(workers, threads or _torch_threads(), data_dir, notices)
        env["executor"] = type(runner).__name__ if runner is not None else "local"
        env["plugins"] = plugin_info(cfg)
        atomic_write_text(study.path / "environment.json", json.dumps(env, indent=2))
        observer.begin(cfg["study"]["name"], len(runs), len(done), len(todo), study.path)
        start = time.perf_counter()
        # A pool's workers import torch before their first run starts (seconds).
        pooled = runner is None and workers > 1
        state.phase = "starting the workers" if pooled else "training"
        with observer:

            def on_start(run: dict[str, Any]) -> None:
                state.phase = "training"
                observer.start(run)

            def on_done(run: dict[str, Any], summary: dict[str, Any]) -> None:
                recorder.record(run, summary)
                if summary["status"] != "failed":
                    state.finished += 1
                observer.finish(run, summary)

            callbacks = Callbacks(on_start=on_start, on_progress=observer.advance,
                                  on_done=on_done)  # fmt: skip
            (runner or make_executor(workers)).execute(todo, study.run_dir, data_dir, callbacks)
    for sink in sinks:
        sink.close()
    state.phase = "writing the report"
    report = write_report(study.path, live=False)
    observer.end(len(todo), time.perf_counter() - start, report)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
