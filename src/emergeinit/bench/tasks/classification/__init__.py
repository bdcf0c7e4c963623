"""The classification task: an image or feature classifier trained with cross-entropy, scored
by validation and test accuracy (see docs/bench.md).

Datasets are the built-in ones of :mod:`emergeinit.bench.data` or a plug-in
``"package.module:function"``; inits, optimizers and datasets may all be plug-ins. The training
loop is in :mod:`.train`, the training-curve figures in :mod:`.plots`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...schema import Field, shape
from ..base import Prepared, RunContext, Task

__all__ = ["ClassificationTask", "fill_spec"]

Row = dict[str, Any]

#: The classification datasets built into the harness.
DATASETS = ("fashion-mnist", "digits", "cifar10", "synthetic")
#: Result columns a classification study can declare primary or select on.
METRICS = (
    "val_acc_epoch1",
    "test_acc_epoch1",
    "val_acc_final",
    "test_acc_final",
    "test_loss",
    "train_loss_final",
    "log10_e_init",
    "log10_e_final",
    "init_seconds",
    "train_seconds",
)


def fill_spec(template: str, dims: tuple[int, ...], classes: int) -> str:
    """Fill ``{features}`` (C*H*W or F), ``{shape}`` (``CxHxW`` or ``F``) and ``{classes}`` in
    a model spec from the dataset.

    >>> fill_spec("mlp:{features}-32-{classes}", (1, 8, 8), 4)
    'mlp:64-32-4'
    """
    return (
        template.replace("{features}", str(math.prod(dims)))
        .replace("{shape}", "x".join(str(d) for d in dims))
        .replace("{classes}", str(classes))
    )


def _fit_sizes(data: dict[str, Any], name: str, data_dir: Path | None) -> list[str]:
    """Shrink subset sizes meant for the replaced dataset to what the fallback holds."""
    from ...data import pool_sizes

    train_pool, test_pool = pool_sizes(name, data, data_dir)
    if data["val_size"] + data["train_size"] < train_pool and data["test_size"] <= test_pool:
        return []
    data["val_size"] = min(data["val_size"], train_pool // 4)
    data["train_size"] = min(data["train_size"], train_pool - data["val_size"])
    data["test_size"] = min(data["test_size"], test_pool)
    return [
        f"NOTICE: subset sizes shrunk to fit {name}: train_size {data['train_size']}, val_size "
        f"{data['val_size']}, test_size {data['test_size']} (0 = all)."
    ]


def resolve_datasets(
    cfg: dict[str, Any], data_dir: Path | None
) -> tuple[dict[str, Any], list[str]]:
    """Replace missing file datasets by ``data.fallback`` (with a notice), or fail clearly;
    call every plug-in dataset once and check what it returns."""
    from ...data import DataFileError, idx, is_available
    from ...data import cifar10 as cifar

    out = json.loads(json.dumps(cfg))
    notices: list[str] = []
    datasets: list[str] = []
    for name in cfg["data"]["dataset"]:
        if name not in DATASETS:  # a plug-in: raises ConfigError naming data.dataset
            from ...data import dataset_shape

            dataset_shape(name, _data_table(cfg, name))
            datasets.append(name)
            continue
        if is_available(name, data_dir):
            datasets.append(name)
            continue
        how = idx.HOW_TO_GET if name == "fashion-mnist" else cifar.HOW_TO_GET
        fallback = cfg["data"]["fallback"]
        if not fallback:
            raise DataFileError(f"dataset {name!r} not found; {how}")
        notices.append(
            f"NOTICE: {name} data not found ({data_dir or 'default location'}); this study "
            f"uses {fallback} instead. To run on {name}: {how}."
        )
        if fallback not in datasets:
            datasets.append(fallback)
        notices += _fit_sizes(out["data"], fallback, data_dir)
    out["data"]["dataset"] = datasets
    return out, notices


def _data_table(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    data = {k: cfg["data"][k] for k in ("train_size", "val_size", "test_size", "seed")}
    data["dataset"] = name
    if name == "synthetic":
        data["synthetic"] = dict(cfg["data"]["synthetic"])
    if name not in DATASETS:  # a plug-in gets its own settings too (built-ins have none)
        data["options"] = dict(cfg["data"]["options"])
    return data


def _measurer(run: dict[str, Any], val_x: torch.Tensor) -> Callable[[nn.Module], float | None]:
    """log10 E on a fixed validation batch."""
    from ....measure import measure_emergence
    from .train import finite_or_none

    cfg = run["measure"]
    inputs = val_x[: cfg["examples"]]

    def measure(model: nn.Module) -> float | None:
        # Training mode, as docs/measure.md#mode-and-state describes: BatchNorm uses batch
        # statistics, as in training.
        was_training = model.training
        model.train()
        try:
            result = measure_emergence(
                model, inputs, tau=cfg["tau"], granularity=cfg["granularity"]
            )
            value = float(result.log10_e_mean)
        finally:
            model.train(was_training)
        return finite_or_none(value)

    return measure


class ClassificationTask(Task):
    """Image and feature classification with cross-entropy (the paper's experiments)."""

    name = "classification"
    datasets = DATASETS
    plugins = frozenset({"init", "dataset", "optimizer"})
    metrics = METRICS
    report_metrics = ("val_acc_final", "test_loss")
    plot_metric = "test_acc_final"
    measures_emergence = True
    data_parallel = True
    diverged_rule = (
        "diverged runs keep the accuracy of the diverged model (non-finite outputs count "
        "as wrong) so they weigh in every mean."
    )

    def schema(self) -> dict[str, Any]:
        return {
            "data": {
                "fallback": Field(
                    "str", "", choices=("", *DATASETS), doc="used when a file dataset is missing"
                ),
                "synthetic": {
                    "classes": Field("int", 10, low=2),
                    "shape": Field("int_list", [1, 8, 8], check=shape, whole=True),
                    "train": Field("int", 2048, low=16, doc="examples generated for train + val"),
                    "test": Field("int", 512, low=16),
                    "noise": Field("float", 1.0, low=0.0),
                },
            },
        }

    def check_config(self, cfg: dict[str, Any]) -> None:
        from ....errors import ConfigError

        if cfg["data"]["fallback"] in cfg["data"]["dataset"]:
            raise ConfigError("data.fallback: must differ from the datasets it replaces")

    def preflight(
        self, cfg: dict[str, Any], data_dir: Path | None
    ) -> tuple[dict[str, Any], list[str]]:
        return resolve_datasets(cfg, data_dir)

    def data_table(self, cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
        return _data_table(cfg, dataset)

    def model_spec(self, cfg: dict[str, Any], dataset: str, template: str) -> str:
        from ...data import dataset_shape

        dims, classes = dataset_shape(dataset, _data_table(cfg, dataset))
        return fill_spec(template, dims, classes)

    def check_runs(self, runs: list[dict[str, Any]], data_dir: Path | None) -> None:
        from ....errors import ConfigError
        from ...data import pool_sizes

        seen: set[str] = set()
        tables: set[int] = set()  # runs of one dataset share their data table: skip by identity
        for run in runs:
            data = run["data"]
            if id(data) in tables:
                continue
            tables.add(id(data))
            key = json.dumps(data, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            train_pool, test_pool = pool_sizes(data["dataset"], data, data_dir)
            if data["val_size"] + data["train_size"] > train_pool - (data["train_size"] == 0):
                raise ConfigError(
                    f"data.train_size + data.val_size: {data['train_size']} + "
                    f"{data['val_size']} exceed the {train_pool} training examples of "
                    f"{data['dataset']}"
                )
            if data["test_size"] > test_pool:
                raise ConfigError(
                    f"data.test_size: {data['test_size']} exceeds the {test_pool} test examples "
                    f"of {data['dataset']}"
                )

    def prepare(
        self,
        run: dict[str, Any],
        device: torch.device,
        data_dir: Path | None,
        run_dir: Path | None,
    ) -> Prepared:
        from ....models import example_input
        from ...data import load_splits
        from ...runtime import generator
        from .train import to_device

        seed = run["seed"]
        splits = to_device(load_splits(run["data"]["dataset"], run["data"], data_dir), device)
        spec = run["model"]
        init_data = generator(seed, "init-data")

        def example() -> Any:
            x = example_input(spec, batch_size=8, generator=generator(seed, "example"))
            return x.to(device) if isinstance(x, torch.Tensor) else x

        def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randint(len(splits.train_y), (n,), generator=init_data).to(device)
            return splits.train_x[idx], splits.train_y[idx]

        measure = _measurer(run, splits.val_x) if run["measure"]["enabled"] else None
        return Prepared(spec=spec, example=example, sample=sample, measure=measure, data=splits)

    def train(
        self,
        model: nn.Module,
        param_groups: list[dict[str, Any]] | None,
        prepared: Prepared,
        ctx: RunContext,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from ... import runtime
        from ...optim import build_optimizer
        from .train import train_classification

        run, emit = ctx.run, ctx.emit
        group = runtime.current()
        train_model: nn.Module | None = None
        if group is not None:
            digest = runtime.check_identical(model)
            if ctx.resume is None:
                emit({"event": "ddp", "world_size": group.world, "backend": group.backend,
                      "weights_sha256": digest})  # fmt: skip
            model = runtime.prepare(model, ctx.device)
            train_model = group.wrap(model, ctx.device)
        params = param_groups if param_groups is not None else model.parameters()
        optimizer = build_optimizer(params, run["train"], run["train"]["lr"])
        if ctx.resume is not None:
            from ...checkpoint import CheckpointError, restore_rng

            try:
                restore_rng(ctx.resume["rng"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(
                    f"does not fit this run ({type(exc).__name__}: {exc})"
                ) from exc
        return train_classification(
            model,
            optimizer,
            prepared.data,
            run["train"],
            generator=runtime.generator(ctx.seed, "data-order"),
            emit=emit,
            measure=prepared.measure if run["measure"]["during_training"] else None,
            on_progress=ctx.on_progress,
            resume=ctx.resume,
            on_checkpoint=ctx.save,
            train_model=train_model,
            shard=group.shard(run["train"]["batch_size"]) if group is not None else None,
        )

    def plots(
        self, rows: list[Row], run_dir: Callable[[str], Path], folder: Path
    ) -> list[Path]:
        from .plots import curves

        return curves(rows, run_dir, folder)
