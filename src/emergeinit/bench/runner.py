"""One run: data -> model -> init -> train -> a result row, with its metrics streamed to disk.

A run is described entirely by its resolved run config (see :func:`.study.expand`); everything
random in it derives from the run seed through named streams, so a run repeats bit for bit on
CPU and, for one seed, every init sees the same data order and the same base-init draws.

Runs are durable (:mod:`.checkpoint`): a classification run checkpoints every
``train.checkpoint_every`` steps and at the end, and :func:`execute_run` on a run directory
that holds a checkpoint continues from it, bit for bit. Translation runs do the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..measure import measure_emergence
from ..models import build_model, example_input
from . import ddp
from .checkpoint import CheckpointError, RunJournal, capture_rng, exclusive, restore_rng
from .data import Splits, load_splits
from .inits import InitContext, apply_init
from .train import MetricSink, Progress, _finite_or_none, build_optimizer, train_classification


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one named random stream of a run."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream))


def _device(name: str) -> torch.device:
    """``auto`` = CUDA when available; under DDP each rank takes ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    group = ddp.current()
    if device.type == "cuda" and device.index is None and group is not None:
        device = torch.device("cuda", group.local_rank)
    return device


def _to(splits: Splits, device: torch.device) -> Splits:
    if device.type == "cpu":
        return splits
    moved = {
        k: getattr(splits, k).to(device)
        for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    }
    return Splits(name=splits.name, shape=splits.shape, classes=splits.classes, **moved)


def _measurer(run: dict[str, Any], splits: Splits) -> Callable[[nn.Module], float | None] | None:
    """log10 E on a fixed validation batch, or None when the study turns the measure off."""
    cfg = run["measure"]
    if not cfg["enabled"]:
        return None
    inputs = splits.val_x[: cfg["examples"]]

    def measure(model: nn.Module) -> float | None:
        # Training mode (docs/measure.md, "Mode and state"): BatchNorm uses batch statistics.
        was_training = model.training
        model.train()
        try:
            result = measure_emergence(
                model, inputs, tau=cfg["tau"], granularity=cfg["granularity"]
            )
            value = float(result.log10_e_mean)
        finally:
            model.train(was_training)
        return _finite_or_none(value)

    return measure


def classification(
    run: dict[str, Any],
    emit: MetricSink,
    data_dir: Path | None,
    on_progress: Progress | None,
    run_dir: Path | None = None,
    journal: RunJournal | None = None,
) -> dict[str, Any]:
    """The classification task: returns the run's metric columns.

    With a ``journal`` it checkpoints, and continues from ``journal.resumed`` when set: the
    model is rebuilt and initialized again (deterministic, and it rebuilds ``emergence-lr``'s
    parameter groups), then every state is overwritten from the checkpoint.
    """
    seed = run["seed"]
    resume = journal.resumed if journal is not None else None
    device = _device(run["train"]["device"])
    splits = _to(load_splits(run["data"]["dataset"], run["data"], data_dir), device)
    spec = run["model"]
    torch.manual_seed(derive_seed(seed, "model"))
    model = build_model(spec).to(device)
    example = example_input(spec, batch_size=8, generator=generator(seed, "example"))
    if isinstance(example, torch.Tensor):
        example = example.to(device)
    init_data = generator(seed, "init-data")

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(splits.train_y), (n,), generator=init_data).to(device)
        return splits.train_x[idx], splits.train_y[idx]

    ctx = InitContext(
        spec=spec,
        example_input=example,
        settings=run["init"],
        train=run["train"],
        generator=generator(seed, "init"),
        sample=sample,
        seed=seed,
    )
    start = time.perf_counter()
    outcome = apply_init(run["init"]["name"], model, ctx)
    init_seconds = time.perf_counter() - start
    measure = _measurer(run, splits)
    if resume is None:
        log10_e_init = measure(model) if measure is not None else None
        emit({"event": "init", "seconds": init_seconds, "log10_e": log10_e_init, **outcome.info})
    else:  # measured, and streamed, by the attempt that wrote the checkpoint
        try:
            init_seconds, log10_e_init = resume["init"]["seconds"], resume["init"]["log10_e"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"does not fit this run (no init record: {exc!r})") from exc

    group = ddp.current()
    train_model: nn.Module | None = None
    if group is not None:
        digest = ddp.check_identical(model)
        if resume is None:
            emit({"event": "ddp", "world_size": group.world, "backend": group.backend,
                  "weights_sha256": digest})  # fmt: skip
        model = ddp.prepare(model, device)
        train_model = group.wrap(model, device)

    params = outcome.param_groups if outcome.param_groups is not None else model.parameters()
    optimizer = build_optimizer(params, run["train"], run["train"]["lr"])
    init_state = {"seconds": init_seconds, "log10_e": log10_e_init}

    def save(state: dict[str, Any]) -> None:
        assert journal is not None
        journal.save({**state, "init": init_state, "rng": capture_rng(device)})

    if resume is not None:
        try:
            restore_rng(resume["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"does not fit this run ({type(exc).__name__}: {exc})") from exc
    summary, end = train_classification(
        model,
        optimizer,
        splits,
        run["train"],
        generator=generator(seed, "data-order"),
        emit=emit,
        measure=measure if run["measure"]["during_training"] else None,
        on_progress=on_progress,
        resume=resume,
        on_checkpoint=save if journal is not None else None,
        train_model=train_model,
        shard=group.shard(run["train"]["batch_size"]) if group is not None else None,
    )
    summary.update(log10_e_init=log10_e_init, init_seconds=init_seconds)
    if journal is not None:
        journal.save({**end, "init": init_state, "rng": capture_rng(device)}, finished=True,
                     summary=summary)  # fmt: skip
    return summary


def translation(
    run: dict[str, Any],
    emit: MetricSink,
    data_dir: Path | None,
    on_progress: Progress | None,
    run_dir: Path | None = None,
    journal: RunJournal | None = None,
) -> dict[str, Any]:
    """The translation task (docs/translation.md), imported lazily: it needs sacrebleu and
    sentencepiece."""
    from .translation.task import run_translation

    return run_translation(run, emit, data_dir, on_progress, run_dir, journal)


# Task name -> function(run, emit, data_dir, on_progress, run_dir, journal); every task
# checkpoints through its journal.
TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "classification": classification,
    "translation": translation,
}


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
    stop a study. ``writer=False`` (DDP ranks other than 0) writes nothing.
    """
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(run, indent=2, sort_keys=True))
        (run_dir / "error.txt").unlink(missing_ok=True)
    with _run_lock(run_dir, run["run_id"], writer):
        journal = RunJournal(run_dir, run["run_id"], writer=writer)
        journal.resumed = ddp.share(journal.open())  # under DDP, rank 0's decision for all
        try:
            summary = _attempt(run, journal, data_dir, on_progress, run_dir)
            error = ""
        except Exception as exc:  # a crashed run is a result row, not a crashed study
            if writer:
                (run_dir / "error.txt").write_text(traceback.format_exc())
            else:
                traceback.print_exc()
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
    task = TASKS[run["task"]]
    try:
        return task(run, journal.emit, data_dir, on_progress, run_dir, journal=journal)
    except CheckpointError as exc:
        if state is None:
            raise
        journal.restart(f"checkpoint {journal.checkpoint_path} {exc}")
        return task(run, journal.emit, data_dir, on_progress, run_dir, journal=journal)


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
    print(f"run {rid}: waiting for another process that holds {path}", file=sys.stderr, flush=True)
    with exclusive(path, wait=True):
        yield
