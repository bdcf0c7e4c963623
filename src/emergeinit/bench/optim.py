"""A run's optimizer and learning-rate schedule, from its ``train`` table.

``train.optimizer`` is ``sgd`` (momentum, optional Nesterov), ``adam``, ``adamw``
(``torch.optim.AdamW`` with ``train.weight_decay`` as its decoupled weight decay), or a plug-in
``"package.module:function"`` called as ``function(param_groups, train_table)`` that returns a
``torch.optim.Optimizer`` (see ``docs/bench.md#a-plug-in-optimizer``).

Each optimizer belongs to a *family*, ``sgd`` or ``adam``, which says how a per-layer scale of
the weights maps to learning-rate multipliers (``emergence-lr``: ``alpha**(-2 e)`` for SGD,
``alpha**(-e)`` for Adam, see ``docs/method.md#why-it-can-matter``) and which look-ahead step
GradInit takes. AdamW is in the Adam family; a plug-in declares its family with a ``family``
attribute (needed only when ``emergence-lr`` or ``gradinit`` runs with it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import ConfigError
from . import plugins

__all__ = [
    "BUILTIN",
    "build_optimizer",
    "build_scheduler",
    "check_optimizer",
    "family",
    "param_groups",
]

BUILTIN = ("sgd", "adam", "adamw")
FAMILIES = ("sgd", "adam")
#: ``train`` keys that only SGD reads: left out of Adam-family runs (and their ids).
SGD_ONLY = ("momentum", "nesterov")


def family(train: Mapping[str, Any]) -> str:
    """``"sgd"`` or ``"adam"``: the family of the run's optimizer."""
    name = train["optimizer"]
    if name == "sgd":
        return "sgd"
    if name in ("adam", "adamw"):
        return "adam"
    fn = plugins.resolve("optimizer", name, "train.optimizer")
    declared = getattr(fn, "family", None)
    if declared not in FAMILIES:
        raise ConfigError(
            f"train.optimizer: plug-in {name!r} has no family attribute (got {declared!r}); "
            "emergence-lr and gradinit need to know how it scales updates: set "
            f"{name.rpartition(':')[2]}.family = 'sgd' or 'adam'"
        )
    return str(declared)


def param_groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    """Parameters or parameter groups as a list of groups (what a plug-in receives)."""
    items = list(params)
    if items and all(isinstance(g, Mapping) for g in items):
        return [dict(g) for g in items]
    return [{"params": items}]


def build_optimizer(
    params: Iterable[Any], train: Mapping[str, Any], lr: float
) -> torch.optim.Optimizer:
    """The run's optimizer over ``params`` (parameters or parameter groups) at base ``lr``."""
    name = train["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=train["momentum"],
            nesterov=train["nesterov"] and train["momentum"] > 0,
            weight_decay=train["weight_decay"],
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=train["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=train["weight_decay"])
    fn = plugins.resolve("optimizer", name, "train.optimizer")
    optimizer = fn(param_groups(params), {**train, "lr": lr})
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"train.optimizer: plug-in {name!r} returned {type(optimizer).__name__}, not a "
            "torch.optim.Optimizer; return e.g. torch.optim.RMSprop(param_groups, lr=train['lr'])"
        )
    return optimizer


def check_optimizer(train: Mapping[str, Any]) -> None:
    """Preflight of a plug-in optimizer: it resolves, and builds an optimizer over one group."""
    if train["optimizer"] in BUILTIN:
        return
    probe = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    try:
        build_optimizer(probe, train, train["lr"])
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"train.optimizer: plug-in {train['optimizer']!r} raised {type(exc).__name__}: "
            f"{exc} when called as fn(param_groups, train_table)"
        ) from None


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: Mapping[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warmup then constant or cosine decay, as a multiplier on every group's lr.

    A multiplier keeps ``emergence-lr``'s per-group ratios intact through the schedule.
    """
    warmup = train["warmup_steps"]
    if train["schedule"] == "none" and warmup == 0:
        return None
    cosine = train["schedule"] == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
