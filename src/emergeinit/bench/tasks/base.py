"""The one interface every task implements (classification, translation, a user's own).

A task is what a run trains and measures. The generic layers (config, study, the run
template, the report and the plots) ask the task, never its name, for:

- its config keys (:meth:`Task.schema`) and rules (:meth:`Task.check_config`), and what it
  accepts: built-in datasets, inits, optimizers, schedules, the metrics it measures, the
  plug-in kinds it takes;
- preflight (:meth:`Task.preflight`, :meth:`Task.check_runs`): everything a run would trip on,
  found before any run starts;
- run expansion (:meth:`Task.data_table`, :meth:`Task.model_spec`, :meth:`Task.run_tables`);
- one run, through the shared template in :mod:`emergeinit.bench.runner`: :meth:`Task.prepare`
  (data, model spec, example input, measure) then, after the template has built and
  initialized the model, :meth:`Task.train` (the training loop, built on
  :func:`emergeinit.bench.loop.train_loop`, and the run's metric columns);
- its report section (:meth:`Task.report_section`) and figures (:meth:`Task.plots`).

See ``docs/bench.md#your-own-task`` for a worked example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["Prepared", "RunContext", "Task"]

Row = dict[str, Any]
Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Prepared:
    """What a task prepares for one run before its model exists.

    ``spec`` is the model spec to build (``emergeinit.models.build_model``); ``example`` gives
    an example input once the model is built; ``sample(n)`` draws ``n`` training examples for
    data-dependent inits; ``measure(model)`` is log10 E on a fixed batch (``None``: not
    measured); ``notes`` are streamed once as ``note`` events; ``data`` is the task's own.
    """

    spec: str
    example: Callable[[], Any]
    sample: Sampler
    measure: Callable[[nn.Module], float | None] | None = None
    notes: list[str] = field(default_factory=list)
    data: Any = None


@dataclass
class RunContext:
    """What the run template hands :meth:`Task.train`.

    ``emit`` streams an event to ``metrics.jsonl``; ``save(state)`` writes a checkpoint of
    ``state`` (a dict of tensors and plain values; the template adds the init record and every
    random stream); ``resume`` is the checkpoint to continue from, or ``None``.
    """

    run: dict[str, Any]
    device: torch.device
    seed: int
    emit: Callable[[dict[str, Any]], None]
    on_progress: Callable[[int, int], None] | None
    resume: dict[str, Any] | None
    save: Callable[[dict[str, Any]], None] | None
    run_dir: Path | None
    data_dir: Path | None


class Task:
    """Base class of a task; the defaults suit a task that needs nothing special.

    Class attributes:
        name: the value of ``study.task``.
        datasets: the built-in values of ``data.dataset`` (its choices for this task).
        inits: the built-in inits it supports (``None``: every one).
        optimizers: the ``train.optimizer`` values it supports (``None``: every one, plug-ins
            included).
        schedules: the ``train.schedule`` values it supports.
        plugins: the plug-in kinds it accepts (``"init"``, ``"dataset"``, ``"optimizer"``).
        metrics: result columns it measures, which ``stats.primary`` and
            ``stats.select_metric`` may name (higher is better).
        columns: result columns it adds after the standard ones (``results.csv``).
        report_metrics: columns shown next to the primary metrics in the report's table.
        plot_metric: the y axis of the generic plots (accuracy vs alpha, vs lr, emergence).
        measures_emergence: whether ``measure.enabled`` applies (log10 E at init).
        data_parallel: whether its runs can train data-parallel under torchrun.
        diverged_rule: one line for the report on how a diverged run counts.
    """

    name: str = ""
    datasets: tuple[str, ...] = ()
    inits: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    schedules: tuple[str, ...] = ("none", "cosine")
    plugins: frozenset[str] = frozenset()
    metrics: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    report_metrics: tuple[str, ...] = ("test_loss",)
    plot_metric: str = ""
    measures_emergence: bool = False
    data_parallel: bool = False
    diverged_rule: str = "diverged runs keep the metrics they reached, so they weigh in every mean."

    # --- config ---------------------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """Config keys this task adds, as nested tables of :class:`~emergeinit.bench.schema.
        Field` (merged into the generic schema; a table of its own is best, e.g.
        ``{"toy": {"width": Field("int", 4)}}``)."""
        return {}

    def check_config(self, cfg: dict[str, Any]) -> None:
        """Rules across keys for a study of this task; raise ``ConfigError`` naming the key."""

    # --- preflight and expansion -------------------------------------------------------------

    def preflight(
        self, cfg: dict[str, Any], data_dir: Path | None
    ) -> tuple[dict[str, Any], list[str]]:
        """Check what can be checked before the study starts (files, plug-in datasets) and
        return the config to run (e.g. with a fallback dataset) and notices for the user."""
        return cfg, []

    def data_table(self, cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
        """The ``data`` table of a run on ``dataset``: everything its result depends on."""
        data = {k: cfg["data"][k] for k in ("train_size", "val_size", "test_size", "seed")}
        return {"dataset": dataset, **data}

    def model_spec(self, cfg: dict[str, Any], dataset: str, template: str) -> str:
        """The model spec of a run on ``dataset`` from a ``model.spec`` template."""
        return template

    def run_tables(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """Tables of the task's own that every run carries (part of its id)."""
        return {}

    def check_runs(self, runs: list[dict[str, Any]], data_dir: Path | None) -> None:
        """Problems every run would hit (e.g. subsets larger than the data)."""

    # --- one run ---------------------------------------------------------------------------

    def prepare(
        self,
        run: dict[str, Any],
        device: torch.device,
        data_dir: Path | None,
        run_dir: Path | None,
    ) -> Prepared:
        """Load the run's data and say which model to build; called before the model exists."""
        raise NotImplementedError

    def train(
        self,
        model: nn.Module,
        param_groups: list[dict[str, Any]] | None,
        prepared: Prepared,
        ctx: RunContext,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Train the initialized ``model``; return the run's metric columns (with ``status``
        ``ok`` or ``diverged`` and ``steps``) and its end state (the final checkpoint)."""
        raise NotImplementedError

    # --- the answer ------------------------------------------------------------------------

    def batch_text(self, cfg: dict[str, Any]) -> str:
        """How the report's header states the batch size."""
        return str(cfg["train"]["batch_size"])

    def report_section(
        self, cfg: dict[str, Any], rows: list[Row], run_dir: Callable[[str], Path]
    ) -> list[str]:
        """Markdown lines of the task's own section of ``report.md`` (after the generic ones)."""
        return []

    def plots(
        self, rows: list[Row], run_dir: Callable[[str], Path], folder: Path
    ) -> list[Path]:
        """The task's own figures (e.g. training curves per setting), written to ``folder``."""
        return []
