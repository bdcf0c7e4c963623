"""One run: data -> model -> init -> train -> a result row, with its metrics streamed to disk.

A run is described entirely by its resolved run config (see :func:`.study.expand`); everything
random in it derives from the run seed through named streams, so a run repeats bit for bit on
CPU and, for one seed, every init sees the same data order and the same base-init draws.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import build_model, example_input
from .data import Splits, load_splits
from .inits import InitContext, apply_init
from .train import MetricSink, build_optimizer, train_classification

Progress = Callable[[int, int], None]


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one named random stream of a run."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to(splits: Splits, device: torch.device) -> Splits:
    if device.type == "cpu":
        return splits
    moved = {
        k: getattr(splits, k).to(device)
        for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    }
    return Splits(name=splits.name, shape=splits.shape, classes=splits.classes, **moved)


def _measurer(run: dict[str, Any], splits: Splits) -> Callable[[nn.Module], float | None] | None:
    """log10 E on a fixed validation batch, if the measure module exists (it is optional)."""
    cfg = run["measure"]
    if not cfg["enabled"]:
        return None
    try:
        from ..measure import measure_emergence
    except ImportError:
        return None
    inputs = splits.val_x[: cfg["examples"]]

    def measure(model: nn.Module) -> float | None:
        # Training mode, as SPEC 2.2 allows: BatchNorm uses batch statistics, as in training.
        was_training = model.training
        model.train()
        try:
            result = measure_emergence(
                model, inputs, tau=cfg["tau"], granularity=cfg["granularity"]
            )
            value = float(result.log10_e_mean)
        finally:
            model.train(was_training)
        return value if value == value and abs(value) != float("inf") else None

    return measure


def classification(
    run: dict[str, Any],
    emit: MetricSink,
    data_dir: Path | None,
    on_progress: Progress | None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """The classification task: returns the run's metric columns."""
    seed = run["seed"]
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
    log10_e_init = measure(model) if measure is not None else None
    emit({"event": "init", "seconds": init_seconds, "log10_e": log10_e_init, **outcome.info})

    params = outcome.param_groups if outcome.param_groups is not None else model.parameters()
    optimizer = build_optimizer(params, run["train"], run["train"]["lr"])
    summary = train_classification(
        model,
        optimizer,
        splits,
        run["train"],
        generator=generator(seed, "data-order"),
        emit=emit,
        measure=measure if run["measure"]["during_training"] else None,
        on_progress=on_progress,
    )
    summary.update(log10_e_init=log10_e_init, init_seconds=init_seconds)
    return summary


def translation(
    run: dict[str, Any],
    emit: MetricSink,
    data_dir: Path | None,
    on_progress: Progress | None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """The translation task (issue 5), imported lazily: it needs sacrebleu and sentencepiece."""
    from .translation.task import run_translation

    return run_translation(run, emit, data_dir, on_progress, run_dir)


# Task name -> function(run, emit, data_dir, on_progress, run_dir).
TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "classification": classification,
    "translation": translation,
}


def execute_run(
    run: dict[str, Any],
    run_dir: Path,
    data_dir: Path | None = None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one config, stream ``run_dir/metrics.jsonl``, and return its result row.

    Never raises for a failure inside the run: the row says ``failed`` and ``run_dir/error.txt``
    holds the traceback, so one crash does not stop a study.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(run, indent=2, sort_keys=True))
    start = time.perf_counter()
    with (run_dir / "metrics.jsonl").open("w", encoding="utf-8") as stream:

        def emit(event: dict[str, Any]) -> None:
            stream.write(json.dumps(event, default=_jsonable) + "\n")
            stream.flush()

        try:
            summary = TASKS[run["task"]](run, emit, data_dir, on_progress, run_dir)
            error = ""
        except Exception as exc:  # a crashed run is a result row, not a crashed study
            (run_dir / "error.txt").write_text(traceback.format_exc())
            summary = {"status": "failed"}
            error = f"{type(exc).__name__}: {exc}"
        summary["wall_seconds"] = time.perf_counter() - start
        emit(
            {
                "event": "end",
                "status": summary["status"],
                "error": error,
                "wall_seconds": summary["wall_seconds"],
            }
        )
    summary["error"] = error
    return summary


def _jsonable(value: Any) -> Any:
    if isinstance(value, (torch.Tensor,)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)
