"""A run's ``init.order`` and ``init.units`` reach the emergence inits, and ``emergence-lr``
takes each built-in optimizer's own form, weight decay included (docs/method.md, "The
learning-rate form"; docs/bench.md#exactly-what-each-init-is)."""

from __future__ import annotations

import pytest
import torch

from emergeinit import emergence_init_
from emergeinit.bench import config
from emergeinit.bench.feasibility import check_scales
from emergeinit.bench.inits import InitContext, apply_init
from emergeinit.bench.study import expand
from emergeinit.errors import ConfigError
from emergeinit.models import build_model, example_input

SPEC = "resnet:1x8x8-4x1-8x1-8x1-10"  # a stem, three blocks, two projection shortcuts
SETTINGS = {"alpha": 1.5, "pivot": 0.5, "head": True, "base": "kaiming_normal", "even": "integer"}


def _ctx(settings: dict, **train: object) -> InitContext:
    return InitContext(
        spec=SPEC, example_input=example_input(SPEC, 4), settings={**SETTINGS, **settings},
        train={"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, **train},
        generator=torch.Generator().manual_seed(0),
        sample=lambda n: (torch.zeros(n, 1, 8, 8), torch.zeros(n, dtype=torch.long)), seed=0,
    )  # fmt: skip


def _exponents(info: dict) -> dict[str, float]:
    return {name: exponent for name, exponent, _ in info["units"]}


def test_graph_order_gives_each_shortcut_its_block_first_convolution_exponent() -> None:
    call = _exponents(apply_init("emergence", build_model(SPEC), _ctx({"order": "call"})).info)
    graph = _exponents(apply_init("emergence", build_model(SPEC), _ctx({"order": "graph"})).info)
    projections = [name for name in graph if ".shortcut." in name]
    assert projections == ["blocks.1.shortcut.0", "blocks.2.shortcut.0"]
    for name in projections:
        block = name.split(".shortcut.")[0]
        assert graph[name] == graph[f"{block}.conv1"]
        assert call[name] > call[f"{block}.conv2"]  # call order puts it after conv2
    # 10 units: 10 levels in call order, 8 distinct depths in graph order.
    assert len(set(call.values())) == 10 and len(set(graph.values())) == 8


def test_the_settings_reach_the_init_exactly_as_emergence_init_would_take_them() -> None:
    for order, units in (("graph", "auto"), ("call", "blocks"), ("call", "auto")):
        model, reference = build_model(SPEC), build_model(SPEC)
        reference.load_state_dict(model.state_dict())
        outcome = apply_init("emergence", model, _ctx({"order": order, "units": units}))
        report = emergence_init_(
            reference, 1.5, order=order, units=units, example_input=example_input(SPEC, 4),
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert outcome.info["units"] == [(u.name, u.exponent, u.scale) for u in report.units]
        for a, b in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.equal(a, b)


def test_blocks_as_units_scale_a_whole_block_alike() -> None:
    info = apply_init("emergence", build_model(SPEC), _ctx({"units": "blocks"})).info
    assert [name for name, _, _ in info["units"]] == [
        "stem.0", "blocks.0", "blocks.1", "blocks.2", "fc"
    ]  # fmt: skip


def test_emergence_lr_groups_follow_the_order_too() -> None:
    outcome = apply_init("emergence-lr", build_model(SPEC), _ctx({"order": "graph"}))
    multiplier = dict(outcome.info["groups"])
    assert multiplier["blocks.1.shortcut.0"] == multiplier["blocks.1.conv1"]
    assert multiplier["blocks.2.shortcut.0"] == multiplier["blocks.2.conv1"]


@pytest.mark.parametrize(
    ("optimizer", "power", "decay_power"),
    [("sgd", 2.0, 2.0), ("adam", 1.0, 2.0), ("adamw", 1.0, 1.0)],
)
def test_emergence_lr_takes_each_optimizers_own_form_with_its_decay(
    optimizer: str, power: float, decay_power: float
) -> None:
    outcome = apply_init(
        "emergence-lr", build_model(SPEC), _ctx({}, optimizer=optimizer, weight_decay=0.01)
    )
    assert outcome.param_groups is not None
    scaled = [g for g in outcome.param_groups if g["name"] != "rest"]
    assert scaled
    for group in scaled:
        scale = 1.5 ** group["exponent"]
        assert group["lr_multiplier"] == pytest.approx(scale ** (-power), rel=1e-12)
        # AdamW's decoupled decay: wd * c; L2 decay (sgd, adam): wd * c**2.
        assert group["weight_decay"] == pytest.approx(0.01 * scale**decay_power, rel=1e-12)
    rest = next(g for g in outcome.param_groups if g["name"] == "rest")
    assert rest["weight_decay"] == 0.01


def test_a_plug_in_optimizer_gets_its_family_multipliers_and_keeps_its_own_decay() -> None:
    outcome = apply_init(
        "emergence-lr", build_model(SPEC),
        _ctx({}, optimizer="bench_plugins:rmsprop", weight_decay=0.01),
    )  # fmt: skip
    assert outcome.param_groups is not None
    for group in outcome.param_groups:
        assert "weight_decay" not in group  # the optimizer's own setting applies
        assert group["lr_multiplier"] == pytest.approx(1.5 ** -group["exponent"], rel=1e-12)


def test_the_scale_preflight_plans_with_the_runs_units() -> None:
    # alpha 1e10 over 10 layer units reaches 1e10**5 (past float32); over 5 blocks, 1e10**2.
    overrides = [f"model.spec='{SPEC}'", "init.alpha=1e10", "init.names=['kaiming','emergence']"]
    with pytest.raises(ConfigError, match=r"init\.alpha: alpha = 1e\+10 does not fit"):
        check_scales(expand(config.load("smoke", overrides)))
    check_scales(expand(config.load("smoke", [*overrides, "init.units='blocks'"])))
