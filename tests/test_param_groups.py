"""The learning-rate form reproduces the weight form's steps (docs/method.md, lr form)."""

from __future__ import annotations

import pytest
import torch
from helpers import relu_mlp
from torch import nn

from emergeinit import emergence_init_, emergence_param_groups
from emergeinit.errors import ConfigError


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    data = torch.Generator().manual_seed(11)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=data, dtype=torch.float64)
        y = torch.randn(16, 3, generator=data, dtype=torch.float64)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("sgd", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)),
        ("adam", lambda params, lr: torch.optim.Adam(params, lr=lr, eps=1e-30)),
    ],
)
def test_lr_form_matches_weight_form(kind: str, make) -> None:  # type: ignore[no-untyped-def]
    alpha, lr = 1.6, 0.01
    torch.manual_seed(0)
    weight_form = relu_mlp([6, 16, 16, 16, 16, 3], dtype=torch.float64)
    rate_form = relu_mlp([6, 16, 16, 16, 16, 3], dtype=torch.float64)
    report = emergence_init_(weight_form, alpha, generator=torch.Generator().manual_seed(4))
    emergence_init_(rate_form, 1.0, generator=torch.Generator().manual_seed(4))
    groups = emergence_param_groups(rate_form, alpha, optimizer=kind, lr=lr)  # type: ignore[arg-type]
    power = 2 if kind == "sgd" else 1
    assert [g["lr_multiplier"] for g in groups] == pytest.approx(
        [u.scale ** (-power) for u in report.units]
    )
    start = {k: v.detach().clone() for k, v in rate_form.named_parameters()}
    _train(weight_form, make(weight_form.parameters(), lr), steps=5)
    _train(rate_form, make(groups, lr), steps=5)
    scaled = dict(weight_form.named_parameters())
    plain = dict(rate_form.named_parameters())
    for unit in report.units:
        key = f"{unit.name}.weight"
        torch.testing.assert_close(scaled[key], plain[key] * unit.scale, rtol=1e-5, atol=1e-12)
        assert not torch.allclose(plain[key], start[key])  # the steps did move the weights
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(weight_form(x), rate_form(x), rtol=1e-5, atol=1e-10)


def test_groups_cover_every_trainable_parameter_once() -> None:
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)
    )
    model[0].bias.requires_grad_(False)
    groups = emergence_param_groups(model, 2.0, head=False)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert [g["name"] for g in groups] == ["0", "3", "rest"]
    assert [g["lr_multiplier"] for g in groups] == [4.0, 0.25, 1.0]
    assert "lr" not in groups[0]
    torch.optim.SGD(groups, lr=0.1)  # accepted as-is by PyTorch


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("sgd", lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd)),
        ("adam", lambda p, lr, wd: torch.optim.Adam(p, lr=lr, eps=1e-30, weight_decay=wd)),
        ("adamw", lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, eps=1e-30, weight_decay=wd)),
    ],
)
def test_lr_form_with_weight_decay_matches_weight_form(kind: str, make) -> None:  # type: ignore[no-untyped-def]
    """The groups' weight_decay keeps the equivalence exact (docs/method.md)."""
    alpha, lr, wd = 1.6, 0.01, 0.3
    torch.manual_seed(0)
    weight_form = relu_mlp([6, 16, 16, 16, 16, 3], dtype=torch.float64)
    rate_form = relu_mlp([6, 16, 16, 16, 16, 3], dtype=torch.float64)
    report = emergence_init_(weight_form, alpha, generator=torch.Generator().manual_seed(4))
    emergence_init_(rate_form, 1.0, generator=torch.Generator().manual_seed(4))
    groups = emergence_param_groups(
        rate_form,
        alpha,
        optimizer=kind,  # type: ignore[arg-type]
        lr=lr,
        weight_decay=wd,
    )
    decay_power = 1 if kind == "adamw" else 2
    assert [g["weight_decay"] for g in groups] == pytest.approx(
        [wd * u.scale**decay_power for u in report.units]
    )
    _train(weight_form, make(weight_form.parameters(), lr, wd), steps=5)
    _train(rate_form, make(groups, lr, wd), steps=5)
    scaled = dict(weight_form.named_parameters())
    plain = dict(rate_form.named_parameters())
    for unit in report.units:
        key = f"{unit.name}.weight"
        torch.testing.assert_close(scaled[key], plain[key] * unit.scale, rtol=1e-5, atol=1e-12)


def test_optimizer_wide_weight_decay_breaks_the_equivalence() -> None:
    """Why the groups carry their own decay: one optimizer-wide value is not the same run."""
    alpha, lr, wd = 1.6, 0.01, 0.3
    torch.manual_seed(0)
    weight_form = relu_mlp([6, 16, 16, 3], dtype=torch.float64)
    rate_form = relu_mlp([6, 16, 16, 3], dtype=torch.float64)
    report = emergence_init_(weight_form, alpha, generator=torch.Generator().manual_seed(4))
    emergence_init_(rate_form, 1.0, generator=torch.Generator().manual_seed(4))
    groups = emergence_param_groups(rate_form, alpha, optimizer="adamw", lr=lr)
    assert all("weight_decay" not in g for g in groups)
    _train(weight_form, torch.optim.AdamW(weight_form.parameters(), lr=lr, weight_decay=wd), 5)
    _train(rate_form, torch.optim.AdamW(groups, lr=lr, weight_decay=wd), 5)
    key = f"{report.units[0].name}.weight"
    scaled, plain = dict(weight_form.named_parameters()), dict(rate_form.named_parameters())
    assert not torch.allclose(scaled[key], plain[key] * report.units[0].scale, rtol=1e-5)


def test_adamw_has_adam_multipliers() -> None:
    model = relu_mlp([4, 8, 8, 2])
    adam = emergence_param_groups(model, 2.0, optimizer="adam")
    adamw = emergence_param_groups(model, 2.0, optimizer="adamw")
    assert [g["lr_multiplier"] for g in adamw] == [g["lr_multiplier"] for g in adam]
    assert [g["lr_multiplier"] for g in adamw] == [2.0, 1.0, 0.5]  # e = -1, 0, 1 (no biases)
    torch.optim.AdamW(adamw, lr=1e-3)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_weight_decay(bad: object) -> None:
    with pytest.raises(ConfigError, match="weight_decay"):
        emergence_param_groups(relu_mlp([4, 8, 2]), 2.0, weight_decay=bad)  # type: ignore[arg-type]
