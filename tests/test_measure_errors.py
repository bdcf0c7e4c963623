"""Bad input to the measure: a typed error naming the fix, the model untouched; NaN in, NaN out."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from helpers import assert_unchanged, snapshot
from torch import nn

import emergeinit.measure.network as network_module
from emergeinit.errors import (
    ConfigError,
    EmergeInitError,
    MetaTensorError,
    TracingError,
    UnsupportedModuleError,
)
from emergeinit.measure import EmergenceTracker, graph_emergence, measure_emergence

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )  # fmt: skip


class ShapeChecked(nn.Module):
    """fx cannot trace the shape check; torch.export reads it (and any bad shape fails both)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 4:
            raise ValueError(f"expected 4 features, got {x.shape[-1]}")
        return self.out(torch.relu(self.fc(x)))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else self.fc(-x)


X = torch.randn(3, 2, 4, 4)

CASES: list[tuple[Any, Any, dict[str, Any], type[Exception], str]] = [
    # (model, inputs, options, error, message)
    ("a model", X, {}, ConfigError, r"model must be a torch\.nn\.Module, got str"),
    (None, X, {}, ConfigError, r"torch\.nn\.Module, got NoneType"),
    (cnn, torch.randn(3, 2, 5, 4), {}, TracingError, "forward pass failed.*shapes"),
    (cnn, torch.randn(3, 3, 4, 4), {}, TracingError, "Pass a batch the model accepts"),
    (cnn, torch.randn(3, 2, 4), {}, TracingError, "forward pass failed"),
    (cnn, torch.randint(0, 3, (3, 2, 4, 4)), {}, TracingError, "forward pass failed"),
    (ShapeChecked, torch.randn(3, 5), {}, TracingError, "expected 4 features, got 5"),
    (cnn, [], {}, ConfigError, "non-empty"),
    (cnn, {}, {}, ConfigError, "non-empty"),
    (cnn, "x", {}, ConfigError, "got str"),
    (cnn, None, {}, ConfigError, "got NoneType"),
    (cnn, torch.tensor(1.0), {}, ConfigError, "first dimension that indexes samples"),
    (cnn, torch.randn(0, 2, 4, 4), {}, ConfigError, "first dimension"),
    (cnn, [X, 3], {}, ConfigError, "positional inputs must be tensors"),
    (cnn, (X, torch.randn(2, 2, 4, 4)), {}, ConfigError, "same batch size"),
    (cnn, {0: X}, {}, ConfigError, "parameter names"),
    (cnn, {"flag": True}, {}, ConfigError, "hold no tensor"),
    (cnn, X.to("meta"), {}, MetaTensorError, "meta device"),
    (cnn, X, {"capture": "jit"}, ConfigError, "capture must be one of"),
    (cnn, {"input": X}, {"capture": "fx"}, ConfigError, "positional tensor inputs only"),
    (cnn, X, {"tau": "0.1"}, ConfigError, "tau must be"),
    (DataDependent, torch.randn(3, 4), {}, UnsupportedModuleError,
     "(?s)could not read the structure.*data-dependent"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "inputs", "options", "error", "message"), CASES)
def test_bad_input_is_a_typed_error_and_leaves_the_model_untouched(
    model: Any, inputs: Any, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    model = model() if isinstance(model, type) or callable(model) else model
    before = snapshot(model) if isinstance(model, nn.Module) else None
    with pytest.raises(error, match=message) as caught:
        measure_emergence(model, inputs, **options)
    assert isinstance(caught.value, EmergeInitError)
    if isinstance(model, nn.Module):
        assert before is not None
        assert_unchanged(model, before)  # BatchNorm statistics included (training mode)
        assert model.training


def test_a_model_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(MetaTensorError, match=r"'0\.weight' is on the meta device.*to_empty"):
        measure_emergence(model, torch.randn(2, 4))


def test_the_tracker_validates_its_probe() -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        EmergenceTracker({})
    with pytest.raises(ConfigError, match="same batch size"):
        EmergenceTracker((torch.randn(2, 3), torch.randn(3, 3)))


@pytest.mark.parametrize(
    ("graph", "active", "message"),
    [
        ([(0, 1)], None, "active must be an iterable of nodes.*got NoneType"),
        ([(0, 1)], "ab", "active must be an iterable.*got str"),
        ([(0, 1)], 1, "got int"),
        ([(0, 1)], [[1]], "hashable"),
        ([([0], 1)], {1}, "hashable"),
        (None, set(), "got None"),
    ],
)
def test_graph_emergence_bad_arguments(graph: Any, active: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        graph_emergence(graph, active)


# ---------------------------------------------------------------------------------------------
# non-finite inputs, weights and activations: nan, with a warning


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_input_sample_gets_nan_and_the_others_keep_their_value(bad: float) -> None:
    model = mlp().eval()
    x = torch.randn(4, 4)
    clean = measure_emergence(model, x[[0, 2, 3]])
    x[1, 2] = bad
    with pytest.warns(RuntimeWarning, match="1 of 4 samples have non-finite"):
        result = measure_emergence(model, x)
    assert math.isnan(result.log10_e[1])
    torch.testing.assert_close(result.log10_e[[0, 2, 3]], clean.log10_e, rtol=0, atol=1e-12)
    assert math.isnan(result.log10_e_mean) and math.isnan(result.log10_e_std)


def test_activity_mean_makes_every_sample_nan() -> None:
    x = torch.randn(4, 4)
    x[0, 0] = math.nan
    with pytest.warns(RuntimeWarning, match="activity='mean'"):
        result = measure_emergence(mlp(), x, activity="mean")
    assert torch.isnan(result.log10_e).all()


@pytest.mark.parametrize("where", ["0.weight", "4.bias", "4.weight"])
def test_a_non_finite_parameter_makes_every_sample_nan(where: str) -> None:
    model = mlp()
    with torch.no_grad():
        model.get_parameter(where).view(-1)[0] = math.nan
    before = snapshot(model)
    with pytest.warns(RuntimeWarning, match="4 of 4 samples"):
        result = measure_emergence(model, torch.randn(4, 4))
    assert torch.isnan(result.log10_e).all()
    for key, value in model.state_dict().items():  # nan == nan for this comparison
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_value_in_a_large_weight_makes_every_sample_nan(bad: float) -> None:
    # A weight this large is summed where it lies (not copied with the small tensors).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 2))  # fmt: skip
    assert model[2].weight.numel() >= network_module._ALONE
    with torch.no_grad():
        model[2].weight[100, 200] = bad
    with pytest.warns(RuntimeWarning, match="3 of 3 samples"):
        result = measure_emergence(model, torch.randn(3, 4))
    assert torch.isnan(result.log10_e).all()


def test_the_parameter_check_reads_every_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network_module, "_BATCH", 100)  # the small tensors: several batches
    all_finite = network_module._all_finite
    torch.manual_seed(0)
    large = torch.randn(network_module._ALONE)
    small = [torch.randn(300), *(torch.randn(30) for _ in range(10))]  # one past a batch alone
    others = [
        torch.full((network_module._ALONE,), 6e4, dtype=torch.float16),  # sums past 65504
        torch.full((network_module._ALONE,), 3e38),  # finite; its float32 sum is not
        torch.ones(2, 2, dtype=torch.float64),
        torch.arange(4),  # integers: never checked
        torch.empty(0),
    ]
    assert all_finite([large, *small, *others])
    for bad in (math.nan, math.inf, -math.inf):
        for index, tensor in enumerate([large, small[7], *others[:3]]):
            broken = tensor.clone()
            broken.view(-1)[1] = bad
            tensors = [large, *small, *others[:3], broken]
            assert not all_finite(tensors), (bad, index)


def test_a_non_finite_buffer_makes_every_sample_nan() -> None:
    model = cnn().eval()
    with torch.no_grad():
        model[1].running_var[0] = math.inf
    with pytest.warns(RuntimeWarning):
        result = measure_emergence(model, X)
    assert torch.isnan(result.log10_e).all()


def test_activations_that_overflow_give_nan() -> None:
    # Finite weights and inputs, but the first layer's outputs overflow float32 for sample 0.
    model = mlp().eval()
    with torch.no_grad():
        model[0].weight.fill_(1e30)
        model[0].bias.zero_()
    x = torch.full((3, 4), 1e-30)
    x[0] = 1e10
    with pytest.warns(RuntimeWarning, match="1 of 3"):
        result = measure_emergence(model, x)
    assert math.isnan(result.log10_e[0]) and not torch.isnan(result.log10_e[1:]).any()


def test_huge_finite_activations_are_not_mistaken_for_overflow() -> None:
    # Each activation is finite (about 1e38) but their float32 sum is not: the cheap check
    # flags the sample, the exact check clears it.
    model = mlp().eval()
    with torch.no_grad():
        model[0].weight.fill_(1e37)
        model[0].bias.zero_()
    x = torch.ones(2, 4) * 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = measure_emergence(model, x)
    assert not torch.isnan(result.log10_e).any()


class InPlaceAlias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h.add_(self.b(x))  # h changed in place, then used through the same name
        return self.out(h)


class OutOfPlace(InPlaceAlias):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.out(h + self.b(x))


def test_an_in_place_addition_used_again() -> None:
    # fx keeps the old name's node for the later use, which would miss b's paths: refused.
    # torch.export rewrites the later use to the addition's result: the right number.
    torch.manual_seed(0)
    net, x = InPlaceAlias(), torch.randn(4, 3)
    with pytest.raises(UnsupportedModuleError, match="in-place addition"):
        measure_emergence(net, x, capture="fx")
    twin = OutOfPlace()
    twin.load_state_dict(net.state_dict())
    expected = measure_emergence(twin, x).log10_e
    exported = measure_emergence(net, x, capture="export").log10_e
    torch.testing.assert_close(exported, expected, rtol=0, atol=1e-12)
    automatic = measure_emergence(net, x)  # fx refuses it, torch.export reads it
    assert automatic.traced_with == "export"
    torch.testing.assert_close(automatic.log10_e, expected, rtol=0, atol=1e-12)
