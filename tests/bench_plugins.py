"""Plug-ins the harness tests name by import path (``bench_plugins:...``): an init, a dataset
and an optimizer as a user would write them, and a few that break the rules on purpose."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from emergeinit.bench import InitContext


def half_kaiming(model: nn.Module, ctx: InitContext) -> None:
    """Kaiming-normal weights halved, zero biases, drawn from the run's init generator."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=ctx.generator)
            with torch.no_grad():
                module.weight.mul_(0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


half_kaiming.name = "half-kaiming"  # type: ignore[attr-defined]  # the label in results


def slow_last_layer(model: nn.Module, ctx: InitContext) -> list[dict[str, Any]]:
    """PyTorch's default weights; the last Linear layer trains at a tenth of the lr."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    last = {id(p) for p in layers[-1].parameters()}
    rest = [p for p in model.parameters() if id(p) not in last]
    return [
        {"params": rest},
        {"params": list(layers[-1].parameters()), "lr": ctx.train["lr"] * 0.1},
    ]


def blobs(data: dict[str, Any]) -> dict[str, Any]:
    """Three Gaussian blobs in six features (NumPy arrays, N x F)."""
    rng = np.random.default_rng(data["seed"] + data.get("options", {}).get("shift", 0))
    centres = rng.normal(0.0, 3.0, size=(3, 6))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, size=n)
        return (centres[y] + rng.normal(size=(n, 6))).astype(np.float32), y

    train_x, train_y = draw(400)
    test_x, test_y = draw(120)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


blobs.name = "blobs"  # type: ignore[attr-defined]


def tiny_images(data: dict[str, Any]) -> dict[str, Any]:
    """Two classes of 1 x 4 x 4 images as torch tensors (N x C x H x W)."""
    g = torch.Generator().manual_seed(data["seed"])
    x = torch.randn(200, 1, 4, 4, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return {"train_x": x[:150], "train_y": y[:150], "test_x": x[150:], "test_y": y[150:]}


def rmsprop(param_groups: list[dict[str, Any]], train: dict[str, Any]) -> torch.optim.Optimizer:
    """RMSprop at the run's learning rate (a plug-in optimizer)."""
    return torch.optim.RMSprop(param_groups, lr=train["lr"])


rmsprop.family = "adam"  # type: ignore[attr-defined]  # scales updates like Adam


def sgd_no_family(param_groups: list[dict[str, Any]], train: dict[str, Any]) -> Any:
    return torch.optim.SGD(param_groups, lr=train["lr"])


# --- plug-ins that break the rules ------------------------------------------------------------


def returns_a_number(model: nn.Module, ctx: InitContext) -> int:
    return 42


def foreign_parameters(model: nn.Module, ctx: InitContext) -> list[dict[str, Any]]:
    return [{"params": [nn.Parameter(torch.zeros(3))]}]


def ragged(data: dict[str, Any]) -> dict[str, Any]:
    return {"train_x": np.zeros((10, 3)), "train_y": np.zeros(9, dtype=int),
            "test_x": np.zeros((4, 3)), "test_y": np.zeros(4, dtype=int)}  # fmt: skip


def float_labels(data: dict[str, Any]) -> dict[str, Any]:
    return {"train_x": np.zeros((10, 3)), "train_y": np.zeros(10),
            "test_x": np.zeros((4, 3)), "test_y": np.zeros(4)}  # fmt: skip


def not_an_optimizer(param_groups: list[dict[str, Any]], train: dict[str, Any]) -> str:
    return "adam"


NOT_CALLABLE = 3
