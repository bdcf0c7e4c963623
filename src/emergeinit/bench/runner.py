"""One run: the template every task runs through, with its metrics streamed to disk.

    seed -> task.prepare (data) -> build the model -> init -> (resume) -> task.train -> result

A run is described entirely by its resolved run config (see :func:`.study.expand`); everything
random in it derives from the run seed through named streams (:mod:`.runtime`), so a run repeats
bit for bit on CPU and, for one seed, every init sees the same data order and the same base-init
draws. The template owns what every task shares: the device, the model's seed, the init and its
timing, the init record in the stream, checkpoints (with every random stream) and resuming.

Runs are durable (:mod:`.checkpoint`): a run checkpoints every ``train.checkpoint_every`` steps
and at the end, and :func:`execute_run` on a run directory that holds a checkpoint continues
from it, bit for bit (see ``docs/scaling.md#resume-and-durability``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..models import build_model
from . import runtime, tasks
from .checkpoint import CheckpointError, RunJournal, capture_rng, exclusive
from .inits import InitContext, InitOutcome, apply_init

__all__ = ["Progress", "execute_run", "probe_init", "run_task"]

Progress = Callable[[int, int], None]
MetricSink = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)


def _initialize(
    task: tasks.Task, run: dict[str, Any], data_dir: Path | None, run_dir: Path | None
) -> tuple[torch.device, tasks.Prepared, torch.nn.Module, InitOutcome, float]:
    """The template's first half: data, then the model built from the run's ``model`` stream,
    then the init (timed), all on the run's device."""
    seed = run["seed"]
    device = runtime.resolve_device(run["train"]["device"])
    prepared = task.prepare(run, device, data_dir, run_dir)
    torch.manual_seed(runtime.derive_seed(seed, "model"))
    model = build_model(prepared.spec).to(device)
    ctx = InitContext(
        spec=prepared.spec,
        example_input=prepared.example(),
        settings=run["init"],
        train=run["train"],
        generator=runtime.generator(seed, "init"),
        sample=prepared.sample,
        seed=seed,
    )
    start = time.perf_counter()
    outcome = apply_init(run["init"]["name"], model, ctx)
    return device, prepared, model, outcome, time.perf_counter() - start


def probe_init(run: dict[str, Any], data_dir: Path | None) -> None:
    """Preflight of a plug-in init: build ``run``'s model and initialize it exactly as the run
    will (a :class:`~emergeinit.errors.ConfigError` says what is wrong), then drop it."""
    _initialize(tasks.get(run["task"]), run, data_dir, None)


def run_task(
    run: dict[str, Any],
    emit: MetricSink,
    data_dir: Path | None,
    on_progress: Progress | None,
    run_dir: Path | None = None,
    journal: RunJournal | None = None,
) -> dict[str, Any]:
    """One run of its task, through the template; returns the run's metric columns.

    With a ``journal`` it checkpoints, and continues from ``journal.resumed`` when set: the
    model is rebuilt and initialized again (deterministic, and it rebuilds ``emergence-lr``'s
    parameter groups), then every state is overwritten from the checkpoint.
    """
    task = tasks.get(run["task"])
    resume = journal.resumed if journal is not None else None
    if resume is not None and not isinstance(resume.get("init"), dict):
        raise CheckpointError("does not fit this run (no init record)")
    device, prepared, model, outcome, init_seconds = _initialize(task, run, data_dir, run_dir)
    if resume is None:
        for note in prepared.notes:  # a resumed run's notes are in the stream already
            emit({"event": "note", "text": note})
        log10_e_init = prepared.measure(model) if prepared.measure is not None else None
        emit({"event": "init", "seconds": init_seconds, "log10_e": log10_e_init, **outcome.info})
    else:  # measured, and streamed, by the attempt that wrote the checkpoint
        try:
            init_seconds, log10_e_init = resume["init"]["seconds"], resume["init"]["log10_e"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"does not fit this run (no init record: {exc!r})") from exc
    init_state = {"seconds": init_seconds, "log10_e": log10_e_init}

    def save(state: dict[str, Any]) -> None:
        assert journal is not None
        journal.save({**state, "init": init_state, "rng": capture_rng(device)})

    ctx = tasks.RunContext(
        run=run,
        device=device,
        seed=run["seed"],
        emit=emit,
        on_progress=on_progress,
        resume=resume,
        save=save if journal is not None else None,
        run_dir=run_dir,
        data_dir=data_dir,
    )
    summary, end = task.train(model, outcome.param_groups, prepared, ctx)
    summary.update(log10_e_init=log10_e_init, init_seconds=init_seconds)
    if journal is not None:
        journal.save({**end, "init": init_state, "rng": capture_rng(device)}, finished=True,
                     summary=summary)  # fmt: skip
    return summary


def execute_run(
    run: dict[str, Any],
    run_dir: Path,
    data_dir: Path | None = None,
    on_progress: Progress | None = None,
    *,
    writer: bool = True,
) -> dict[str, Any]:
    """Run one config, stream ``run_dir/metrics.jsonl``, and return its result row.

    Resumes from ``run_dir/checkpoint.pt`` when there is a usable one (a finished run's
    checkpoint returns its summary at once). Never raises for a failure inside the run: the
    row says ``failed`` and ``run_dir/error.txt`` holds the traceback, so one crash does not
    stop a study. ``writer=False`` (data-parallel ranks other than 0) writes nothing.
    """
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(run, indent=2, sort_keys=True))
        (run_dir / "error.txt").unlink(missing_ok=True)
    with _run_lock(run_dir, run["run_id"], writer):
        journal = RunJournal(run_dir, run["run_id"], writer=writer)
        journal.resumed = runtime.share(journal.open())  # data-parallel: rank 0 decides
        try:
            summary = _attempt(run, journal, data_dir, on_progress, run_dir)
            error = ""
        except Exception as exc:  # a crashed run is a result row, not a crashed study
            if writer:
                (run_dir / "error.txt").write_text(traceback.format_exc())
            else:
                log.exception("run %s crashed", run["run_id"])
            summary = {"status": "failed"}
            error = f"{type(exc).__name__}: {exc}"
        summary["wall_seconds"] = journal.wall_seconds()
        journal.emit(
            {
                "event": "end",
                "status": summary["status"],
                "error": error,
                "wall_seconds": summary["wall_seconds"],
            }
        )
        journal.close()
    summary["error"] = error
    return summary


def _attempt(
    run: dict[str, Any],
    journal: RunJournal,
    data_dir: Path | None,
    on_progress: Progress | None,
    run_dir: Path,
) -> dict[str, Any]:
    state = journal.resumed
    if state is not None and state["finished"]:
        return dict(state["summary"])  # trained to the end; only its row was not recorded
    try:
        return run_task(run, journal.emit, data_dir, on_progress, run_dir, journal=journal)
    except CheckpointError as exc:
        if state is None:
            raise
        journal.restart(f"checkpoint {journal.checkpoint_path} {exc}")
        return run_task(run, journal.emit, data_dir, on_progress, run_dir, journal=journal)


@contextlib.contextmanager
def _run_lock(run_dir: Path, rid: str, writer: bool) -> Iterator[None]:
    """One process per run directory: a second one (an orphan of a killed study, a retried
    Ray task) waits until the first is gone, then resumes from its checkpoint."""
    if not writer:
        yield
        return
    path = run_dir / ".lock"
    with exclusive(path, wait=False) as held:
        if held:
            yield
            return
    log.warning("run %s: waiting for another process that holds %s", rid, path)
    with exclusive(path, wait=True):
        yield
