"""Metric sinks: every run's metrics also to TensorBoard or MLflow (``--log tensorboard``,
``--log mlflow``; ``run_study(..., log=[...])``).

``metrics.jsonl`` stays the record; a sink gets each run once, when its row is recorded: the
run's events (training loss, evaluations) as step-indexed scalars, its result row as final
metrics, its resolved run config as parameters. So sinks work with every executor (pool, Ray,
torchrun) without the workers knowing about them, and a resumed run is logged once, complete.

- ``tensorboard``: event files under ``<study>/tensorboard/<run_id>/`` (``tensorboard --logdir
  <study>/tensorboard``); needs the ``tensorboard`` package (``pip install
  "emergeinit[tensorboard]"``).
- ``mlflow``: one MLflow run per study run, in an experiment named after the study, at the
  tracking URI given (``--mlflow-uri``), else ``$MLFLOW_TRACKING_URI``, else a local SQLite
  file ``<study>/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///<study>/mlflow.db``);
  needs ``pip install "emergeinit[mlflow]"``. (MLflow 3 refuses its old ``./mlruns`` file
  store by default; a SQLite file is its local store now.)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError

__all__ = [
    "KINDS",
    "MlflowSink",
    "Sink",
    "TensorBoardSink",
    "check_available",
    "check_kinds",
    "make_sinks",
    "scalars",
]

KINDS = ("tensorboard", "mlflow")
log = logging.getLogger(__name__)

# Event fields that are coordinates or labels, not metrics.
_NOT_METRICS = {"event", "step", "epoch", "kind", "seconds", "wall_seconds", "status", "error"}


class Sink(Protocol):
    def log_run(
        self, run: Mapping[str, Any], row: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
    ) -> None: ...

    def close(self) -> None: ...


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def scalars(events: Iterable[Mapping[str, Any]]) -> list[tuple[str, float, int]]:
    """``(tag, value, step)`` of every numeric field of the stream's events: ``train/loss``,
    ``eval/test_acc``, ``valid/val_loss``, ... (events without a step are skipped)."""
    out = []
    for event in events:
        step = event.get("step")
        if not isinstance(step, int):
            continue
        for key, value in event.items():
            number = _number(value)
            if key not in _NOT_METRICS and number is not None:
                out.append((f"{event['event']}/{key}", number, step))
    return out


def _finals(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numeric metric columns (``result/<column>``)."""
    axes = {"run_id", "status", "task", "dataset", "model", "init", "base", "alpha", "pivot",
            "head", "optimizer", "lr", "seed", "epochs", "error"}  # fmt: skip
    out = {}
    for key, value in row.items():
        number = _number(value)
        if key not in axes and number is not None:
            out[f"result/{key}"] = number
    return out


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


class TensorBoardSink:
    """One event-file folder per run under ``<study>/tensorboard``."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--log tensorboard needs the tensorboard package: "
                "pip install 'emergeinit[tensorboard]'"
            ) from None
        self._writer = SummaryWriter
        self.folder = folder

    def log_run(
        self, run: Mapping[str, Any], row: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
    ) -> None:
        writer = self._writer(log_dir=str(self.folder / str(run["run_id"])))
        try:
            last = 0
            for tag, value, step in scalars(events):
                writer.add_scalar(tag, value, step)
                last = max(last, step)
            for tag, value in _finals(row).items():
                writer.add_scalar(tag, value, last)
            text = ", ".join(f"{k} = {v}" for k, v in _flatten(run).items())
            writer.add_text("config", text, 0)
        finally:
            writer.close()

    def close(self) -> None:
        pass


class MlflowSink:
    """One MLflow run per study run, in the experiment named after the study."""

    def __init__(self, uri: str, experiment: str) -> None:
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                "--log mlflow needs MLflow: pip install 'emergeinit[mlflow]'"
            ) from None
        self._entities = (Metric, Param)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id if found is not None else self.client.create_experiment(experiment)
        )

    def log_run(
        self, run: Mapping[str, Any], row: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
    ) -> None:
        metric_cls, param_cls = self._entities
        rid = str(run["run_id"])
        tags = {"emergeinit.run_id": rid, "status": str(row.get("status", ""))}
        for key in ("task", "dataset", "model", "init", "optimizer", "seed"):
            if row.get(key) not in (None, ""):
                tags[key] = str(row[key])
        created = self.client.create_run(self.experiment_id, run_name=rid, tags=tags)
        mid = created.info.run_id
        now = int(time.time() * 1000)
        params = [param_cls(k, v[:6000]) for k, v in _flatten(run).items() if k != "run_id"]
        metrics = [metric_cls(tag, value, now, step) for tag, value, step in scalars(events)]
        last = max((m.step for m in metrics), default=0)
        metrics += [metric_cls(tag, value, now, last) for tag, value in _finals(row).items()]
        for i in range(0, len(params), 100):  # MLflow's batch limits
            self.client.log_batch(mid, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(mid, metrics=metrics[i : i + 1000])
        self.client.set_terminated(mid, "FAILED" if row.get("status") == "failed" else "FINISHED")

    def close(self) -> None:
        pass


def check_kinds(kinds: Iterable[str]) -> list[str]:
    """The requested sinks, validated (before anything runs)."""
    out = []
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"--log must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind not in out:
            out.append(kind)
    return out


def check_available(kinds: Iterable[str]) -> None:
    """Raise :class:`ConfigError` (with the install line) unless each sink's package imports."""
    for kind in kinds:
        try:
            if kind == "tensorboard":
                import tensorboard  # noqa: F401
            else:
                import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"--log {kind} needs the {kind} package: pip install 'emergeinit[{kind}]'"
            ) from None


def make_sinks(
    kinds: Iterable[str], study_dir: Path, experiment: str, mlflow_uri: str | None = None
) -> list[Sink]:
    """The sinks ``kinds`` name, ready to log into ``study_dir``'s places."""
    sinks: list[Sink] = []
    for kind in check_kinds(kinds):
        if kind == "tensorboard":
            sinks.append(TensorBoardSink(study_dir / "tensorboard"))
        else:
            uri = (
                mlflow_uri
                or os.environ.get("MLFLOW_TRACKING_URI")
                or f"sqlite:///{(study_dir / 'mlflow.db').resolve()}"
            )
            sinks.append(MlflowSink(uri, experiment))
    return sinks
