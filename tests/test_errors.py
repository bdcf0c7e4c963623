"""Every bad input raises a typed error that says what to do, and the model is left untouched."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import assert_unchanged, relu_mlp, snapshot
from torch import nn

from emergeinit import emergence_init_, emergence_param_groups
from emergeinit.errors import (
    ConfigError,
    EmergeInitError,
    MetaTensorError,
    NonFiniteWeightWarning,
    NotWritableError,
    NoUnitsError,
    ScaleRangeError,
    TracingError,
)


def _bn_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)
    )


CASES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"alpha": 0}, ConfigError, "alpha"),
    ({"alpha": -2.0}, ConfigError, "alpha"),
    ({"alpha": float("nan")}, ConfigError, "alpha"),
    ({"alpha": float("inf")}, ConfigError, "alpha"),
    ({"alpha": "2"}, ConfigError, "alpha"),
    ({"alpha": True}, ConfigError, "alpha"),
    ({"alpha": 1 + 2j}, ConfigError, "alpha"),
    ({"alpha": 2.0, "base": "he_normal"}, ConfigError, "base must be one of"),
    ({"alpha": 2.0, "units": "neurons"}, ConfigError, "units must be one of"),
    ({"alpha": 2.0, "pivot": 1.0}, ConfigError, "pivot"),
    ({"alpha": 2.0, "even": "odd"}, ConfigError, "even must be one of"),
    ({"alpha": 2.0, "head": "no"}, ConfigError, "head"),
    ({"alpha": 2.0, "nonlinearity": "swish"}, ConfigError, "nonlinearity"),
    ({"alpha": 2.0, "zero_bias": 1}, ConfigError, "zero_bias"),
    ({"alpha": 2.0, "generator": 42}, ConfigError, "generator"),
    ({"alpha": 2.0, "groups": [["0"], ["missing"]]}, ConfigError, "not a module"),
    ({"alpha": 2.0, "units": "blocks"}, ConfigError, "no transformer block"),
    ({"alpha": 2.0, "example_input": torch.randn(4, 5)}, TracingError, "example_input"),
    ({"alpha": 2.0, "example_input": torch.randn(1, 4)}, TracingError, "at least 2"),
    ({"alpha": 1e-40}, ScaleRangeError, "unit .0.: scale .*overflows torch.float32"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), CASES)
def test_bad_input_leaves_model_untouched(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    model = _bn_model()
    before = snapshot(model)
    with pytest.raises(error, match=match) as caught:
        emergence_init_(model, **kwargs)
    assert isinstance(caught.value, EmergeInitError)
    assert_unchanged(model, before)
    assert model.training


@pytest.mark.parametrize(("kwargs", "error", "match"), CASES[:7] + CASES[8:12])
def test_param_groups_validate_too(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        emergence_param_groups(_bn_model(), **kwargs)


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        emergence_init_(_bn_model(), alpha=-1)


def test_not_a_module() -> None:
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        emergence_init_("model", 2.0)  # type: ignore[arg-type]


def test_no_eligible_unit() -> None:
    model = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4))
    before = snapshot(model)
    with pytest.raises(NoUnitsError, match="no module the rule can scale"):
        emergence_init_(model, 2.0)
    assert_unchanged(model, before)


def test_head_off_with_one_unit() -> None:
    with pytest.raises(NoUnitsError, match="head=False"):
        emergence_init_(nn.Linear(3, 2), 2.0, head=False)


def test_scale_overflow_in_half_precision_names_the_unit() -> None:
    model = relu_mlp([4, 8, 8, 8, 8, 8, 8, 2]).half()
    before = snapshot(model)
    # pivot near 0: exponents 0..6; std * 10**5 * 8 sigma passes 65504 first at unit 5
    with pytest.raises(ScaleRangeError, match=r"unit .10.*overflow.*torch.float16"):
        emergence_init_(model, 10.0, pivot=0.01)
    assert_unchanged(model, before)


def test_kept_weights_that_would_overflow() -> None:
    model = relu_mlp([4, 8, 8, 2]).half()
    with torch.no_grad():  # the last unit is multiplied by 100: 1000 * 100 > 65504
        model[4].weight.fill_(1000.0)
    before = snapshot(model)
    with pytest.raises(ScaleRangeError, match="unit '4'"):
        emergence_init_(model, 100.0, base="keep")
    assert_unchanged(model, before)


def test_meta_device() -> None:
    with torch.device("meta"):
        model = relu_mlp([4, 8, 2])
    with pytest.raises(MetaTensorError, match="meta device"):
        emergence_init_(model, 2.0)


def test_lazy_module() -> None:
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(MetaTensorError, match="forward pass"):
        emergence_init_(model, 2.0)


def test_generator_on_wrong_device() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to put a generator elsewhere")
    model = relu_mlp([4, 8, 2])
    before = snapshot(model)
    with pytest.raises(ConfigError, match="generator"):
        emergence_init_(model, 2.0, generator=torch.Generator(device="cuda"))
    assert_unchanged(model, before)


def test_bad_lr() -> None:
    for lr in (0.0, -1.0, float("nan"), "0.1"):
        with pytest.raises(ConfigError, match="lr"):
            emergence_param_groups(relu_mlp([4, 8, 2]), 2.0, lr=lr)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="optimizer"):
        emergence_param_groups(relu_mlp([4, 8, 2]), 2.0, optimizer="rmsprop")  # type: ignore[arg-type]


def _with_inference_layer(first: bool) -> nn.Sequential:
    """An MLP one of whose layers was built under torch.inference_mode()."""
    with torch.inference_mode():
        frozen = nn.Linear(4, 4)
    layers: list[nn.Module] = [nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU()]
    return nn.Sequential(frozen, *layers) if first else nn.Sequential(*layers, frozen)


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("traced", [False, True])
def test_inference_tensor_is_refused_before_any_draw(first: bool, traced: bool) -> None:
    model = _with_inference_layer(first)
    before = snapshot(model)
    x = torch.randn(3, 4) if traced else None
    with pytest.raises(NotWritableError, match="inference tensor"):
        emergence_init_(model, 2.0, example_input=x)
    assert_unchanged(model, before)
    # inside inference mode the same tensors can be written: the call goes through
    with torch.inference_mode():
        emergence_init_(model, 2.0, example_input=x)


def test_batchnorm_built_under_inference_mode_fails_the_trace_cleanly() -> None:
    with torch.inference_mode():
        norm = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(4, 4), norm, nn.Linear(4, 2))
    before = snapshot(model)
    with pytest.raises(TracingError, match="inference"):
        emergence_init_(model, 2.0, example_input=torch.randn(3, 4))
    assert_unchanged(model, before)


def test_inference_bias_is_refused_when_it_would_be_zeroed() -> None:
    model = relu_mlp([4, 8, 2], bias=True)
    with torch.inference_mode():
        frozen_bias = torch.ones(2)
    model[2].bias = nn.Parameter(frozen_bias, requires_grad=False)
    before = snapshot(model)
    with pytest.raises(NotWritableError, match=r"'2 bias'"):
        emergence_init_(model, 2.0)
    assert_unchanged(model, before)
    emergence_init_(model, 2.0, zero_bias=False)  # nothing to write in the bias: fine


def test_expanded_parameter_is_refused() -> None:
    model = relu_mlp([4, 8, 2])
    model[2].weight = nn.Parameter(torch.randn(1, 8).expand(2, 8))
    before = snapshot(model)
    with pytest.raises(NotWritableError, match="share memory"):
        emergence_init_(model, 2.0)
    assert_unchanged(model, before)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("shape", [(4, 0), (0, 4)])
@pytest.mark.parametrize("base", ["kaiming_normal", "xavier_uniform", "orthogonal", "keep"])
def test_empty_weight_is_a_config_error(shape: tuple[int, int], base: str) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(*shape), nn.Linear(shape[1], 2))
    before = snapshot(model)
    with pytest.raises(ConfigError, match="is empty"):
        emergence_init_(model, 2.0, base=base)  # type: ignore[arg-type]
    assert_unchanged(model, before)
    with pytest.raises(ConfigError, match="is empty"):
        emergence_init_(nn.Linear(*shape), 2.0, base=base)  # type: ignore[arg-type]


def test_keep_warns_about_non_finite_weights_and_scales_the_rest() -> None:
    model = relu_mlp([4, 8, 8, 2])
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
        model[2].weight[1, 1] = float("inf")
    before = snapshot(model)
    with pytest.warns(NonFiniteWeightWarning, match=r"'2\.weight'.* 2 non-finite"):
        report = emergence_init_(model, 2.0, base="keep")
    scale = {u.name: u.scale for u in report.units}
    finite = torch.isfinite(before["2.weight"])
    assert torch.equal(model[2].weight[finite], before["2.weight"][finite] * scale["2"])
    assert torch.equal(model[0].weight, before["0.weight"] * scale["0"])


def test_keep_range_check_uses_the_finite_values() -> None:
    model = relu_mlp([4, 8, 2]).half()
    with torch.no_grad():
        model[2].weight.fill_(1000.0)
        model[2].weight[0, 0] = float("inf")
    before = snapshot(model)
    with pytest.warns(NonFiniteWeightWarning), pytest.raises(ScaleRangeError, match="1e\\+03"):
        emergence_init_(model, 100.0, base="keep")
    assert_unchanged(model, before)
