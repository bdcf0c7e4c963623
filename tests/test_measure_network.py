"""measure_emergence against the closed form and explicit neuron graphs (docs/measure.md,
"On a network")."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from brute_force import (
    Graph,
    SpecNet,
    activity_sets,
    conv_size,
    cross_dp,
    cross_enumerate,
    dense_closed_form,
    explicit_graph,
    li_dp,
    li_enumerate,
    log10,
    near_threshold,
    pool_size,
)
from helpers import assert_unchanged, snapshot
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import emergeinit.measure.capture as capture_module
import emergeinit.measure.network as network_module
import emergeinit.measure.structure as structure_module
from emergeinit.errors import ConfigError, TracingError, UnsupportedModuleError
from emergeinit.measure import EmergenceResult, measure_emergence

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


LOG_TOL = 1e-9
ACTS = ["relu", "frelu", "mrelu", "tanh", "gelu", "leaky", "sigmoid", "silu"]
BASE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def examples(n: int) -> settings:
    return settings(BASE, max_examples=n)


def assert_logs_close(got: list[float], expected: list[float]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if e == -math.inf:
            assert g == -math.inf
        else:
            assert math.isfinite(g) and abs(g - e) < LOG_TOL, (got, expected)


def check_against_graph(
    net: SpecNet, shape: tuple[int, ...], x: torch.Tensor, tau: float = 0.05,
    granularities: tuple[bool, ...] = (False, True),
) -> None:  # fmt: skip
    """Both forms, both activity modes, at each granularity, equal DPs on the explicit graph.

    A combination whose averaged activity lies within rounding of ``tau`` is skipped (see
    ``near_threshold``); per-sample neuron activity is never averaged, so it is always checked.
    """
    values = net.replay(x)
    for channel in granularities:
        graph = explicit_graph(net, shape, channel)
        for mean in (False, True):
            if near_threshold(values, tau, channel=channel, mean=mean):
                continue
            actives = activity_sets(graph, values, tau, channel=channel, mean=mean)
            for form, dp in (("cross", cross_dp), ("li", li_dp)):
                result = measure_emergence(
                    net, x, tau=tau, form=form,  # type: ignore[arg-type]
                    activity="mean" if mean else "per_sample",
                    granularity="channel" if channel else "neuron",
                )  # fmt: skip
                assert_logs_close(result.log10_e.tolist(), [log10(dp(graph, a)) for a in actives])


# ---------------------------------------------------------------------------------------------
# the closed form of dense layered networks


def dense_counts(net: SpecNet, x: torch.Tensor, tau: float) -> tuple[list[int], list[list[int]]]:
    widths = [x.shape[1]] + [op[1] for op in net.spec if op[0] == "linear"]
    values = net.replay(x)
    actives = [[widths[0]] * x.shape[0]]
    actives += [(v > tau).sum(dim=1).tolist() for v in values[:-1]]
    actives.append([widths[-1]] * x.shape[0])
    return widths, [list(col) for col in zip(*actives)]


@st.composite
def mlp_specs(draw: st.DrawFn, extras: bool = True) -> tuple[list[tuple[Any, ...]], int]:
    spec: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 4))):
        spec.append(("linear", draw(st.integers(1, 6))))
        if extras and draw(st.booleans()):
            spec.append(("bn",))
        if extras and draw(st.integers(0, 3)) == 0:
            spec.append(("dropout",))
        spec.append(("act", draw(st.sampled_from(ACTS))))
    spec.append(("linear", draw(st.integers(1, 4))))
    return spec, draw(st.integers(1, 6))


@examples(60)
@given(mlp_specs(), st.integers(0, 2**16), st.sampled_from([0.0, 0.05, 0.3]))
def test_dense_closed_form_exact(
    case: tuple[list[tuple[Any, ...]], int], seed: int, tau: float
) -> None:
    spec, width = case
    torch.manual_seed(seed)
    net = SpecNet(spec, (width,)).eval()
    x = torch.randn(4, width)
    widths, per_sample = dense_counts(net, x, tau)
    expected = [log10(dense_closed_form(widths, actives)) for actives in per_sample]
    result = measure_emergence(net, x, tau=tau)
    assert_logs_close(result.log10_e.tolist(), expected)


def test_closed_form_by_hand() -> None:
    # 2 inputs -> 3 (one active) -> 2 outputs: E = (3 - 1) * 2 = 4 paths, all of length one.
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.tensor([1.0, -1.0, 0.0]))
    result = measure_emergence(net, torch.randn(5, 2))
    assert result.log10_e.tolist() == pytest.approx([math.log10(4)] * 5, abs=LOG_TOL)
    assert dense_closed_form([2, 3, 2], [2, 1, 2]) == 4
    assert result.active_fraction == {"input": 1.0, "0": pytest.approx(1 / 3), "2": 1.0}
    assert result.node_counts == {"input": 2, "0": 3, "2": 2}


def test_huge_deep_wide_mlp_stays_finite() -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(199):
        linear = nn.Linear(512, 512)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        layers += [linear, nn.ReLU()]
    layers.append(nn.Linear(512, 10))
    net = nn.Sequential(*layers)
    x = torch.randn(3, 512)
    result = measure_emergence(net, x)
    assert torch.isfinite(result.log10_e).all()
    assert (result.log10_e > 308).all()
    # the same closed form in Python integers (hundreds of digits)
    with torch.no_grad():
        h = x
        actives = [[512] * 3]
        for module in layers[:-1]:
            h = module(h)
            if isinstance(module, nn.ReLU):
                actives.append((h > 0.05).sum(dim=1).tolist())
    actives.append([10] * 3)
    widths = [512] * 200 + [10]
    for b in range(3):
        exact = dense_closed_form(widths, [a[b] for a in actives])
        assert abs(result.log10_e[b].item() - math.log10(exact)) < LOG_TOL
    li = measure_emergence(net, x, form="li")
    assert torch.isfinite(li.log10_e).all()


# ---------------------------------------------------------------------------------------------
# random networks against explicit graphs


@examples(40)
@given(mlp_specs(), st.integers(0, 2**16))
def test_random_mlp_equals_explicit_graph(
    case: tuple[list[tuple[Any, ...]], int], seed: int
) -> None:
    spec, width = case
    torch.manual_seed(seed)
    net = SpecNet(spec, (width,)).eval()
    check_against_graph(net, (width,), torch.randn(3, width))


@st.composite
def conv_specs(draw: st.DrawFn, nd: int = 2) -> tuple[list[tuple[Any, ...]], tuple[int, ...]]:
    channels = draw(st.integers(1, 3))
    size = draw(st.integers(4, 7))
    shape = (channels, *[size] * nd)
    spec: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "block"] if nd == 2 else
                                    ["conv", "conv", "pool"]))  # fmt: skip
        if kind == "conv":
            k = draw(st.integers(1, 3))
            stride, pad, dil = draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(
                st.integers(1, 2)
            )
            groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
            out = groups * draw(st.integers(1, 4 // groups if groups < 4 else 1))
            if conv_size(size, k, stride, pad, dil) < 1:
                k, stride, pad, dil = 1, 1, 0, 1
            spec.append(("conv", out, k, stride, pad, dil, groups))
            channels, size = out, conv_size(size, k, stride, pad, dil)
            if draw(st.booleans()):
                spec.append(("bn",))
            if draw(st.integers(0, 3)) == 0:  # pooling before the nonlinearity
                k, s = draw(st.integers(2, 3)), draw(st.integers(1, 2))
                if pool_size(size, k, s, 0, 1, False) >= 1:
                    spec.append(("maxpool", k, s, 0, 1, False))
                    size = pool_size(size, k, s, 0, 1, False)
            spec.append(("act", draw(st.sampled_from(ACTS))))
        elif kind == "pool":
            k = draw(st.integers(2, 3))
            stride, dil = draw(st.integers(1, 2)), draw(st.integers(1, 2))
            pad = draw(st.integers(0, k // 2))
            ceil = draw(st.booleans())
            if draw(st.booleans()):
                op: tuple[Any, ...] = ("maxpool", k, stride, pad, dil, ceil)
            else:
                op, dil = ("avgpool", k, stride, pad, ceil), 1
            if pool_size(size, k, stride, pad, dil, ceil) < 1:
                continue
            spec.append(op)
            size = pool_size(size, k, stride, pad, dil, ceil)
        else:
            out, stride = draw(st.integers(1, 4)), draw(st.integers(1, 2))
            spec.append(("block", out, stride))
            channels, size = out, conv_size(size, 3, stride, 1, 1)
    tail = draw(st.sampled_from(["flatten", "view", "gap", "adaptive", "adaptive_max", "conv"]))
    if tail == "conv":
        spec.append(("conv", draw(st.integers(1, 3)), 1, 1, 0, 1, 1))
        return spec, shape
    if tail.startswith("adaptive"):
        spec += [(tail, draw(st.integers(1, 3))), ("flatten",)]
    else:
        spec.append((tail,))
    spec.append(("linear", draw(st.integers(1, 3))))
    return spec, shape


def build(spec: list[tuple[Any, ...]], shape: tuple[int, ...], functional: bool) -> SpecNet:
    net = SpecNet(spec, shape, functional)
    with torch.no_grad():
        try:
            net(torch.zeros(2, *shape))
        except RuntimeError:  # an invalid combination the strategy did not foresee
            assume(False)
    return net


@pytest.mark.slow
@examples(120)
@given(conv_specs(), st.integers(0, 2**16), st.booleans(), st.booleans())
def test_random_cnn_equals_explicit_graph(
    case: tuple[list[tuple[Any, ...]], tuple[int, ...]], seed: int, functional: bool, train: bool
) -> None:
    spec, shape = case
    torch.manual_seed(seed)
    net = build(spec, shape, functional)
    net.train(train)
    if train:  # dropout-free in training mode: BatchNorm uses batch statistics
        assume(all(op[0] != "dropout" for op in spec))
    check_against_graph(net, shape, torch.randn(3, *shape))


@pytest.mark.slow
@examples(40)
@given(conv_specs(nd=1), st.integers(0, 2**16), st.booleans())
def test_random_conv1d_equals_explicit_graph(
    case: tuple[list[tuple[Any, ...]], tuple[int, ...]], seed: int, functional: bool
) -> None:
    spec, shape = case
    torch.manual_seed(seed)
    net = build(spec, shape, functional).eval()
    check_against_graph(net, shape, torch.randn(3, *shape))


@pytest.mark.parametrize(
    "spec",
    [
        # overlapping max windows with dilation and ceil mode, then overlapping average windows
        [("conv", 2, 2, 1, 0, 2, 1), ("maxpool", 3, 1, 1, 2, True), ("act", "mrelu"),
         ("avgpool", 3, 2, 1, True), ("conv", 2, 2, 1, 1, 1, 1), ("act", "relu"), ("gap",),
         ("linear", 2)],
        # ResNet stages: identity shortcut, then a strided 1x1 downsample shortcut
        [("conv", 3, 3, 1, 1, 1, 1), ("act", "relu"), ("block", 3, 1), ("block", 4, 2),
         ("adaptive", 2), ("view",), ("linear", 3)],
        # groups, adaptive windows that overlap (5 -> 3), flatten before the nonlinearity
        [("conv", 4, 3, 1, 1, 1, 2), ("act", "relu"), ("adaptive", 3),
         ("conv", 6, 1, 1, 0, 1, 2), ("flatten",), ("act", "tanh"), ("linear", 2)],
    ],
)
def test_named_structures_equal_explicit_graph(spec: list[tuple[Any, ...]]) -> None:
    torch.manual_seed(1)
    shape = (2, 5, 5)
    net = SpecNet(spec, shape).eval()
    check_against_graph(net, shape, torch.randn(4, *shape))


def test_conv3d_equals_explicit_graph() -> None:
    torch.manual_seed(4)
    spec = [("conv", 2, 2, 1, 1, 1, 1), ("act", "relu"), ("conv", 4, 2, 2, 1, 2, 2),
            ("act", "tanh"), ("gap",), ("linear", 2)]  # fmt: skip
    shape = (2, 3, 4, 3)
    net = SpecNet(spec, shape).eval()
    check_against_graph(net, shape, torch.randn(3, *shape))


def test_linear_on_positions_is_one_dense_net_per_position() -> None:
    # A Linear on (batch, T, D) connects features within each of the T positions only: the
    # neuron graph is T disjoint dense networks, so E adds up over the positions.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2))
    x = torch.randn(3, 2, 4)
    for form in ("cross", "li"):
        both = measure_emergence(net, x, form=form).log10_e  # type: ignore[arg-type]
        first = measure_emergence(net, x[:, 0], form=form).log10_e  # type: ignore[arg-type]
        second = measure_emergence(net, x[:, 1], form=form).log10_e  # type: ignore[arg-type]
        expected = torch.logaddexp(first * math.log(10), second * math.log(10)) / math.log(10)
        assert torch.allclose(both, expected, rtol=0, atol=LOG_TOL)


def test_reference_dp_equals_path_enumeration() -> None:
    # Validate the references themselves on tiny graphs: DP = walking every path = networkx.
    torch.manual_seed(3)
    for spec, shape in [
        ([("linear", 3), ("act", "relu"), ("linear", 3), ("act", "tanh"), ("linear", 2)], (3,)),
        ([("conv", 2, 2, 1, 1, 1, 1), ("act", "relu"), ("maxpool", 2, 1, 0, 1, False),
          ("conv", 2, 2, 1, 0, 1, 2), ("act", "relu"), ("flatten",), ("linear", 2)], (2, 3, 3)),
    ]:  # fmt: skip
        net = SpecNet(spec, shape).eval()
        graph = explicit_graph(net, shape)
        for active in activity_sets(graph, net.replay(torch.randn(3, *shape)), 0.05):
            assert cross_dp(graph, active) == cross_enumerate(graph, active)
            assert li_dp(graph, active) == li_enumerate(graph, active)
            if all(m == 1 for preds in graph.preds for m in preds.values()):
                assert cross_dp(graph, active) == networkx_cross(graph, active)


def networkx_cross(graph: Graph, active: list[bool]) -> int:
    g = nx.DiGraph()
    g.add_nodes_from(range(graph.size))
    g.add_edges_from((u, v) for v, preds in enumerate(graph.preds) for u in preds)
    targets = [v for v in range(graph.size) if active[v]]
    return sum(
        len(list(nx.all_simple_paths(g, x, targets)))
        for x in range(graph.size)
        if not active[x]
    )


def test_li_form_equals_graph_emergence_on_the_explicit_graph() -> None:
    from emergeinit.measure import graph_emergence

    torch.manual_seed(5)
    spec = [("conv", 3, 2, 1, 0, 1, 1), ("act", "relu"), ("conv", 2, 2, 2, 1, 1, 1),
            ("act", "relu"), ("flatten",), ("linear", 3)]  # fmt: skip
    shape = (2, 5, 5)
    net = SpecNet(spec, shape).eval()
    x = torch.randn(3, *shape)
    graph = explicit_graph(net, shape)
    edges = [(u, v) for v, preds in enumerate(graph.preds) for u in preds]
    result = measure_emergence(net, x, form="li")
    for b, active in enumerate(activity_sets(graph, net.replay(x), 0.05)):
        h = {v for v in range(graph.size) if active[v]}
        expected = graph_emergence({v: [] for v in range(graph.size)} | _succ(edges), h)
        assert abs(result.log10_e[b].item() - expected.log10) < LOG_TOL


def _succ(edges: list[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for u, v in edges:
        out.setdefault(u, []).append(v)
    return out


class Fork(nn.Module):
    """One layer feeding two convolutions with different groups (2 and 3): demand lcm = 6."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.a = nn.Conv2d(6, 4, 3, groups=2)
        self.b = nn.Conv2d(6, 3, 1, stride=2, groups=3)
        self.head = nn.Linear(4 * 2 * 2 + 3 * 2 * 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.stem(x))
        a = F.relu(self.a(h))
        b = F.relu(self.b(h))
        return self.head(torch.cat([a.flatten(1), b.flatten(1)], dim=1))


def test_fork_into_different_groups_and_concatenation() -> None:
    from brute_force import _conv, _new_array

    torch.manual_seed(2)
    net = Fork().eval()
    x = torch.randn(3, 1, 4, 4)
    graph = Graph()
    state = _new_array([1, 4, 4])
    for idx in np.ndindex(state.shape):
        state[idx] = Counter({graph.add({}, -1): 1})
    layer = [0]
    h = _conv(graph, state, 6, 3, 1, 1, 1, 1, layer, False)
    layer[0] += 1
    a = _conv(graph, h, 4, 3, 1, 0, 1, 2, layer, False)
    layer[0] += 1
    b = _conv(graph, h, 3, 1, 2, 0, 1, 3, layer, False)
    layer[0] += 1
    merged: Counter[int] = Counter()
    for item in [*a.flat, *b.flat]:
        merged.update(item)
    for _ in range(2):
        graph.add(dict(merged), 3)
    with torch.no_grad():
        hv = torch.tanh(net.stem(x))
        values = [hv, F.relu(net.a(hv)), F.relu(net.b(hv)), net(x)]
    for form, dp in (("cross", cross_dp), ("li", li_dp)):
        result = measure_emergence(net, x, form=form)  # type: ignore[arg-type]
        expected = [log10(dp(graph, act)) for act in activity_sets(graph, values, 0.05)]
        assert_logs_close(result.log10_e.tolist(), expected)


# ---------------------------------------------------------------------------------------------
# reading the structure


class Functional(nn.Module):
    """F.relu, torch.flatten and a residual +: invisible to module hooks, visible to fx."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(x))
        h = F.relu(self.c2(h) + h)
        return self.fc(torch.flatten(h, 1))


def test_functional_ops_and_residual_addition_are_seen() -> None:
    torch.manual_seed(0)
    net = Functional()
    spec_twin = SpecNet([("conv", 3, 3, 1, 1, 1, 1), ("act", "relu"), ("conv", 3, 3, 1, 1, 1, 1),
                         ("flatten",), ("linear", 2)], (2, 4, 4))  # fmt: skip
    x = torch.randn(3, 2, 4, 4)
    with_residual = measure_emergence(net, x)
    # the skip edge adds paths: E exceeds that of the same layers without the +
    pairs = zip(["mods.0", "mods.2", "mods.4"], [net.c1, net.c2, net.fc])
    spec_twin.load_state_dict(
        {f"{n}.{p}": getattr(m, p) for n, m in pairs for p in ("weight", "bias")}
    )
    assert (with_residual.log10_e > measure_emergence(spec_twin, x).log10_e).all()
    assert list(with_residual.node_counts) == ["input", "c1", "c2", "fc"]


def test_pooling_before_the_nonlinearity_reads_the_value_before_pooling() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    net = nn.Sequential(conv, nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    x = torch.randn(5, 1, 4, 4)
    result = measure_emergence(net, x)
    with torch.no_grad():
        expected = float((conv(x) > 0.05).float().mean())
    assert result.active_fraction["0"] == pytest.approx(expected)


def test_same_padding_equals_explicit_padding() -> None:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(2, 3, 3, padding="same"), nn.ReLU(), nn.Flatten(),
                      nn.Linear(3 * 25, 2))  # fmt: skip
    b = copy.deepcopy(a)
    b[0].padding = (1, 1)
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(measure_emergence(a, x).log10_e, measure_emergence(b, x).log10_e)


def test_multiple_inputs() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.out(F.relu(self.fc(torch.cat([a, b], dim=1))))

    torch.manual_seed(0)
    two = Two()
    one = nn.Sequential(two.fc, nn.ReLU(), two.out)
    a, b = torch.randn(4, 2), torch.randn(4, 3)
    got = measure_emergence(two, (a, b))
    assert torch.equal(got.log10_e, measure_emergence(one, torch.cat([a, b], 1)).log10_e)
    assert list(got.node_counts) == ["input:a", "input:b", "fc", "out"]
    with pytest.raises(TracingError, match="missing 1 required positional argument"):
        measure_emergence(two, a)


def test_sequential_fallback_when_fx_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Flatten(),
                        nn.Linear(8, 2)))  # fmt: skip
    x = torch.randn(3, 1, 4, 4)
    reference = measure_emergence(net, x)
    assert reference.traced_with == "fx"

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated tracing failure")

    monkeypatch.setattr(capture_module._Tracer, "trace", fail)
    exported = measure_emergence(copy.deepcopy(net), x)
    assert exported.traced_with == "export"
    torch.testing.assert_close(exported.log10_e, reference.log10_e, rtol=0, atol=1e-12)
    monkeypatch.setattr(torch.export, "export", fail)
    fallback = copy.deepcopy(net)
    got = measure_emergence(fallback, x)
    assert got.traced_with == "sequential"
    assert torch.equal(got.log10_e, reference.log10_e)
    assert list(got.node_counts) == ["input", "0", "2.1"]
    with pytest.raises(UnsupportedModuleError, match="simulated tracing failure"):
        measure_emergence(Functional(), torch.randn(2, 2, 4, 4))


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.emb = nn.Embedding(4, 3)
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x) * torch.sigmoid(self.b(x))  # gating: a product of two neuron values
        h = torch.softmax(h, dim=1)  # mixes features before a weight layer
        return self.out(h + F.linear(x, self.out.weight.t()[:3, :3]))


@pytest.mark.parametrize(
    ("model", "inputs", "names"),
    [
        (Gated(), torch.randn(2, 3), ["mul", "softmax", "linear"]),
        (nn.Sequential(nn.LSTM(3, 3)), torch.randn(2, 4, 3), ["0 (LSTM)"]),
        (nn.Sequential(nn.Conv1d(1, 2, 1), nn.ReflectionPad1d(1), nn.Flatten(),
                       nn.Linear(10, 1)), torch.randn(2, 1, 3), ["1 (ReflectionPad1d)"]),
        (nn.Sequential(nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular"), nn.Flatten(),
                       nn.Linear(3, 1)), torch.randn(2, 1, 3), ["0 (Conv1d)"]),
    ],
)  # fmt: skip
def test_unsupported_modules_are_listed(
    model: nn.Module, inputs: torch.Tensor, names: list[str]
) -> None:
    with pytest.raises(UnsupportedModuleError) as info:
        measure_emergence(model, inputs)
    for name in names:
        assert name in str(info.value)


class TorchAttention(nn.Module):
    """torch's attention modules and functions, and attention written out, between layers."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)
        self.encoder = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
        self.transformer = nn.Transformer(4, 2, 1, 1, 8, dropout=0.0, batch_first=True)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "MultiheadAttention":
            h = self.mha(x, x, x, need_weights=False)[0]
        elif self.kind == "TransformerEncoderLayer":
            h = self.encoder(x)
        elif self.kind == "Transformer":
            h = self.transformer(x, x)
        elif self.kind == "scaled_dot_product_attention":
            h = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))
        else:
            h = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2), -1) @ self.v(x)
        return self.out(h)


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize(
    "kind", ["MultiheadAttention", "TransformerEncoderLayer", "Transformer",
             "scaled_dot_product_attention", "written out"],
)  # fmt: skip
def test_attention_is_refused_with_the_reason(kind: str, capture: str) -> None:
    torch.manual_seed(0)
    model = TorchAttention(kind).eval()
    before = snapshot(model)
    with pytest.raises(UnsupportedModuleError) as info:
        measure_emergence(model, torch.randn(2, 3, 4), capture=capture)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("the emergence measure does not support attention"), message
    assert "docs/measure.md, 'Attention'" in message
    assert_unchanged(model, before)


class ConstantProduct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 3))
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(x @ self.weight))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_product_with_a_constant_is_not_called_attention(capture: str) -> None:
    with pytest.raises(UnsupportedModuleError) as info:
        measure_emergence(ConstantProduct(), torch.randn(2, 3),
                          capture=capture)  # type: ignore[arg-type]  # fmt: skip
    message = str(info.value)
    assert "matrix product with a constant" in message
    assert "nn.Linear" in message
    assert "attention" not in message


class Outputs:
    """A model output that torch.export cannot flatten (like a Hugging Face key-value cache)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.__dict__.update(tensors)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.aux = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> Any:
        h = torch.relu(self.fc(x))
        return self.head(h), self.aux(h)


class TwoHeadsInAnObject(TwoHeads):
    def forward(self, x: torch.Tensor) -> Any:
        logits, aux = super().forward(x)
        return Outputs(logits=logits, aux=aux)


def test_an_output_export_cannot_flatten_is_dropped_and_the_graph_kept() -> None:
    torch.manual_seed(0)
    plain = TwoHeads()
    wrapped = TwoHeadsInAnObject()
    wrapped.load_state_dict(plain.state_dict())
    x = {"x": torch.randn(6, 3)}
    with pytest.raises(Exception, match="Outputs"):  # what the fallback is for
        torch.export.export(wrapped, (), x, strict=False)
    want = measure_emergence(plain, x)
    got = measure_emergence(wrapped, x)
    assert got.traced_with == want.traced_with == "export"
    # both heads kept (neither is an output of the wrapped graph), named as in the model
    assert list(got.node_counts) == list(want.node_counts) == ["input", "fc", "head", "aux"]
    assert torch.equal(got.log10_e, want.log10_e)


def test_a_layer_on_a_constant_is_refused() -> None:
    class Query(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Parameter(torch.randn(1, 3))
            self.proj = nn.Linear(3, 3)
            self.fc = nn.Linear(3, 3)
            self.out = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(F.relu(self.fc(x) + self.proj(self.query)))

    with pytest.raises(UnsupportedModuleError, match="proj"):
        measure_emergence(Query(), torch.randn(2, 3))


def test_softmax_after_the_last_layer_is_allowed() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.LogSoftmax(dim=1))
    plain = nn.Sequential(*list(net)[:3])
    x = torch.randn(3, 3)
    assert torch.equal(measure_emergence(net, x).log10_e, measure_emergence(plain, x).log10_e)


def test_broadcast_before_the_nonlinearity_is_an_error() -> None:
    class Broadcast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 1)
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(F.relu(self.fc(x) + torch.zeros(1, 4)))

    with pytest.raises(UnsupportedModuleError, match="fc"):
        measure_emergence(Broadcast(), torch.randn(2, 3))


# ---------------------------------------------------------------------------------------------
# mode, state and options


def test_caller_mode_is_used_and_state_is_restored() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5),
                        nn.Flatten(), nn.Linear(12, 2))  # fmt: skip
    x = torch.randn(6, 1, 4, 4) * 3 + 1
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    train = measure_emergence(net, x)
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert net.training
    assert all(p.grad is None for p in net.parameters())
    with torch.no_grad():  # training mode: activity from batch statistics
        expected = float((F.relu(net[1](net[0](x))) > 0.05).float().mean())
    net.load_state_dict(before)
    assert train.active_fraction["0"] == pytest.approx(expected)
    net.eval()
    evaluated = measure_emergence(net, x)
    assert not net.training
    assert evaluated.active_fraction["0"] != pytest.approx(expected)


def test_buffers_written_in_eval_mode_are_restored() -> None:
    # Eval-mode BatchNorm buffers are not copied (PyTorch's norm layers only read them then);
    # any other module's, or a norm subclass with its own forward, are restored.
    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x

    class DriftingNorm(nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.running_mean.add_(1.0)
            return super().forward(x)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), DriftingNorm(3), Counting(),
                        nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)).eval()  # fmt: skip
    before = copy.deepcopy(net.state_dict())
    measure_emergence(net, torch.randn(6, 1, 4, 4), capture="fx")
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_convolutional_networks_are_probed_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # Integer weights and inputs: every activation is an integer whatever the summation order
    # of either layout, so with tau between integers both layouts read the same activity.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-2, 3, p.shape))
    x = torch.randint(-3, 4, (5, 3, 8, 8)).float()
    mlp = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    layouts: list[bool] = []
    run_probe = structure_module.Structure.run_probe

    def spy(self: Any, *args: Any, channels_last: bool = False, **kwargs: Any) -> Any:
        layouts.append(channels_last)
        return run_probe(self, *args, channels_last=channels_last, **kwargs)

    monkeypatch.setattr(structure_module.Structure, "run_probe", spy)
    fast = measure_emergence(net, x, tau=0.5)
    measure_emergence(mlp, torch.randn(3, 4))
    assert layouts == [True, False]
    monkeypatch.setattr(network_module, "_probe_channels_last", lambda structure, call: False)
    plain = measure_emergence(net, x, tau=0.5)
    assert layouts[-1] is False
    assert torch.isfinite(fast.log10_e).all()
    torch.testing.assert_close(fast.log10_e, plain.log10_e, rtol=0, atol=1e-12)
    assert fast.active_fraction == plain.active_fraction


def test_a_model_that_needs_default_strides_is_measured_as_its_inputs_lie() -> None:
    # Convolutional networks are probed channels last on CPU; ``view`` on such a value fails,
    # and the probe falls back to the inputs' own layout, with the same result.
    class Viewing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3 * 5 * 5, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x))
            return self.fc(h.view(h.shape[0], -1))

    class Flattening(Viewing):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    torch.manual_seed(0)
    viewing = Viewing()
    flattening = Flattening()
    flattening.load_state_dict(viewing.state_dict())
    x = torch.randn(4, 2, 5, 5)
    with pytest.raises(RuntimeError, match="view"):
        viewing(x.contiguous(memory_format=torch.channels_last))
    got = measure_emergence(viewing, x)
    want = measure_emergence(flattening, x)
    torch.testing.assert_close(got.log10_e, want.log10_e, rtol=0, atol=1e-12)
    assert got.active_fraction == want.active_fraction


class ZeroPadded(nn.Module):
    """Hugging Face's TF-style padding: padding by nothing before 1x1 convolutions; with
    ``write``, the padded value's source is written in place after the copy was taken."""

    def __init__(self, write: bool = False, pad: bool = True) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 6, 3, padding=1)
        self.b, self.c = nn.Conv2d(6, 4, 1), nn.Conv2d(4, 3, 1)
        self.write, self.pad = write, pad

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(pixel_values))
        p = F.pad(h, (0, 0, 0, 0)) if self.pad else h
        if self.write:
            h.mul_(2.0)  # the copy p keeps the values before this
        h = torch.relu(self.b(p))
        return self.c(F.pad(h, (0, 0, 0, 0)) if self.pad else h)


def probe_pads(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    structure = structure_module.read_structure(model, capture_module.model_inputs(inputs))
    graph = structure.probe_module(0.5, True, False)[0].graph
    return sum(1 for node in graph.nodes if "pad" in str(node.target))


def integer_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Small integer weights: with integer inputs every activation is an integer whatever the
    layout or summation order, so with ``tau`` between integers the activity reads the same."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randint(-2, 3, v.shape, generator=generator).float()
            for k, v in model.state_dict().items()}  # fmt: skip


def integer_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"pixel_values": torch.randint(-3, 4, (4, 2, 5, 5), generator=generator).float()}


def test_padding_by_nothing_is_not_copied_by_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ZeroPadded()
    state = integer_state(model, 0)
    model.load_state_dict(state)
    inputs = integer_inputs()
    got = measure_emergence(model, inputs, tau=0.5)
    assert probe_pads(model, inputs) == 0
    unpadded = ZeroPadded(pad=False)
    unpadded.load_state_dict(state)
    want = measure_emergence(unpadded, inputs, tau=0.5)
    torch.testing.assert_close(got.log10_e, want.log10_e, rtol=0, atol=1e-12)
    # An in-place write between the copy and its reader: that copy is kept (the other goes).
    writing = ZeroPadded(write=True)
    writing.load_state_dict(state)
    written = measure_emergence(writing, inputs, tau=0.5)
    assert probe_pads(writing, inputs) == 1
    monkeypatch.setattr(structure_module, "_skip_zero_padding", lambda *args: None)
    for net, result in ((model, got), (writing, written)):
        fresh = ZeroPadded(write=net.write)
        fresh.load_state_dict(state)
        assert probe_pads(fresh, inputs) == 2
        plain = measure_emergence(fresh, inputs, tau=0.5)
        torch.testing.assert_close(result.log10_e, plain.log10_e, rtol=0, atol=1e-12)


def test_mean_activity_gives_one_value_for_the_batch() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    result = measure_emergence(net, torch.randn(7, 4), activity="mean")
    assert result.log10_e.shape == (7,)
    assert (result.log10_e == result.log10_e[0]).all()
    assert result.log10_e_std == 0.0


def test_result_api() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8, 3))  # fmt: skip
    result = measure_emergence(net.eval(), torch.randn(5, 1, 4, 4))
    assert isinstance(result, EmergenceResult)
    assert result.num_parameters == 2 * 9 + 2 + 2 + 2 + 8 * 3 + 3  # biases and BN included
    assert result.log10_e.dtype == torch.float64 and result.batch_size == 5
    assert result.log10_e_mean == pytest.approx(result.log10_e.mean().item())
    assert result.log10_e_std == pytest.approx(result.log10_e.std(correction=0).item())
    assert result.log10_relative == pytest.approx(
        result.log10_e_mean - math.log10(result.num_parameters)
    )
    assert result.node_counts == {"input": 16, "0": 8, "4": 3}
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    text = str(result)
    assert "log10 E" in text and "input" in text and "parameters" in text
    with pytest.raises(AttributeError):
        result.tau = 1.0  # type: ignore[misc]
    channel = measure_emergence(net, torch.randn(5, 1, 4, 4), granularity="channel")
    assert channel.node_counts == {"input": 1, "0": 2, "4": 3}


def test_a_shared_parameter_is_counted_once() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    net[2].weight = net[0].weight  # tied, as in weight-tied models
    result = measure_emergence(net, torch.randn(3, 4))
    assert result.num_parameters == sum(p.numel() for p in net.parameters()) == 16 + 4 + 4 + 10


def test_no_inactive_neuron_gives_minus_infinity() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1))
    result = measure_emergence(net, torch.randn(4, 2), tau=-1.0)
    assert (result.log10_e == -math.inf).all()
    assert result.log10_e_std == 0.0


def test_structure_cache_follows_the_model() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(4, 3)
    first = measure_emergence(net, x)
    assert len(first.node_counts) == 4
    net[2] = nn.Identity()  # the structure changes: no stale cache
    net[4] = nn.Linear(4, 2)
    assert len(measure_emergence(net, x).node_counts) == 3


def test_the_cached_probe_reads_the_current_weights() -> None:
    # Captured by torch.export (keyword inputs), the probe takes the model's parameters and
    # buffers as inputs, read once: they must be the model's own tensors, so a change in place
    # (a training step, load_state_dict) or a new parameter shows in the next measure.
    model = ZeroPadded().eval()
    model.load_state_dict(integer_state(model, 0))
    inputs = integer_inputs()
    first = measure_emergence(model, inputs, tau=0.5)
    state = integer_state(model, 1)
    fresh = ZeroPadded().eval()
    fresh.load_state_dict(state)
    model.load_state_dict(state)  # copies into the same tensors
    got = measure_emergence(model, inputs, tau=0.5)
    assert not torch.allclose(got.log10_e, first.log10_e)
    want = measure_emergence(fresh, inputs, tau=0.5)
    torch.testing.assert_close(got.log10_e, want.log10_e, rtol=0, atol=1e-12)
    weight = torch.randint(-2, 3, model.b.weight.shape, generator=torch.Generator().manual_seed(2))
    model.b.weight = nn.Parameter(weight.float())  # a new tensor
    fresh.b.weight = nn.Parameter(weight.float())
    got = measure_emergence(model, inputs, tau=0.5)
    want = measure_emergence(fresh, inputs, tau=0.5)
    torch.testing.assert_close(got.log10_e, want.log10_e, rtol=0, atol=1e-12)


def test_the_cache_does_not_keep_the_model_alive() -> None:
    import gc
    import weakref

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    for tau in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]:
        measure_emergence(net, torch.randn(2, 3), tau=tau)
    structure = structure_module.read_structure(net, capture_module.model_inputs(torch.randn(2, 3)))
    assert len(structure._probes) <= structure_module._MAX_PROBES
    ref = weakref.ref(net)
    del net, structure
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"form": "paths"}, "form must be one of"),
        ({"activity": "max"}, "activity must be one of"),
        ({"granularity": "layer"}, "granularity must be one of"),
        ({"tau": float("nan")}, "tau must be"),
        ({"tau": True}, "tau must be"),
    ],
)
def test_bad_options(kwargs: dict[str, object], message: str) -> None:
    net = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=message):
        measure_emergence(net, torch.randn(2, 2), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("inputs", [[], "x", torch.tensor(1.0), [torch.randn(2, 2), 3]])
def test_bad_inputs(inputs: object) -> None:
    with pytest.raises(ConfigError):
        measure_emergence(nn.Sequential(nn.Linear(2, 2)), inputs)  # type: ignore[arg-type]


def test_no_weight_layer() -> None:
    with pytest.raises(UnsupportedModuleError, match="no Linear or Conv"):
        measure_emergence(nn.Sequential(nn.ReLU()), torch.randn(2, 2))
