"""graph_emergence: Li's E(G, H) on explicit DAGs, exact and in log space (docs/measure.md,
"On a graph")."""

from __future__ import annotations

import itertools
import math
import re

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emergeinit.measure.graph as graph_module
from emergeinit.errors import ConfigError, GraphCycleError
from emergeinit.measure import EmergenceValue, graph_emergence

LOG_TOL = 1e-9


def brute_force(graph: nx.DiGraph, active: set[object], paths: str) -> int:
    """Enumerate, for every edge x -> s into H from outside, every path of G[H] from s."""
    sub = graph.subgraph(active)
    sinks = {n for n in sub if sub.out_degree(n) == 0}
    total = 0
    for x in graph:
        if x in active:
            continue
        for s in graph.successors(x):
            if s not in active:
                continue
            ends = [s, *[p[-1] for p in nx.all_simple_paths(sub, s, set(sub) - {s})]]
            total += len(ends) if paths == "all" else sum(e in sinks for e in ends)
    return total


@st.composite
def dags(draw: st.DrawFn) -> tuple[nx.DiGraph, set[object]]:
    n = draw(st.integers(1, 8))
    labels = draw(st.permutations([f"n{i}" for i in range(n)]))  # topological order hidden
    graph = nx.DiGraph()
    graph.add_nodes_from(labels)
    for j in range(n):
        for i in range(j):
            if draw(st.booleans()):
                graph.add_edge(labels[i], labels[j])
    active = {v for v in labels if draw(st.booleans())}
    return graph, active


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(dags(), st.sampled_from(["all", "maximal"]))
def test_exact_equals_path_enumeration(case: tuple[nx.DiGraph, set[object]], paths: str) -> None:
    graph, active = case
    expected = brute_force(graph, active, paths)
    value = graph_emergence(graph, active, paths=paths)  # type: ignore[arg-type]
    assert value.exact == expected
    assert isinstance(value.exact, int)
    assert value.log10 == (math.log10(expected) if expected else -math.inf)
    approx = graph_emergence(graph, active, paths=paths, exact=False)  # type: ignore[arg-type]
    assert approx.exact is None
    if expected:
        assert abs(approx.log10 - math.log10(expected)) < LOG_TOL
    else:
        assert approx.log10 == -math.inf


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(dags())
def test_input_forms_agree(case: tuple[nx.DiGraph, set[object]]) -> None:
    graph, active = case
    reference = graph_emergence(graph, active)
    as_dict = {n: list(graph.successors(n)) for n in graph}
    assert graph_emergence(as_dict, active) == reference
    edges = list(graph.edges)
    if set(active) <= {n for e in edges for n in e}:  # an edge list cannot name isolated nodes
        assert graph_emergence(edges, active) == reference
        assert graph_emergence(edges + edges, active) == reference  # a repeated edge counts once


def test_small_hand_cases() -> None:
    # a -> b -> c, H = {b, c}: from a, the paths of G[H] starting at b are (b) and (b, c).
    assert graph_emergence([("a", "b"), ("b", "c")], {"b", "c"}) == EmergenceValue(
        math.log10(2), 2
    )
    assert graph_emergence({"a": ["b"], "b": ["c"]}, {"b", "c"}, paths="maximal").exact == 1
    # diamond x -> {s, t} -> u with x outside H: P(s) = P(t) = 2 (itself, itself -> u)
    diamond = {"x": ["s", "t"], "s": ["u"], "t": ["u"], "u": []}
    assert graph_emergence(diamond, {"s", "t", "u"}).exact == 4
    assert graph_emergence(diamond, {"s", "t", "u"}, paths="maximal").exact == 2
    assert graph_emergence(diamond, set()).exact == 0
    assert graph_emergence(diamond, set()).log10 == -math.inf
    assert graph_emergence(diamond, set(diamond)).exact == 0  # nothing outside H


def test_huge_layered_graph_exact_and_log_space() -> None:
    # 160 layers of 10 nodes, complete between consecutive layers; H = everything but layer 0.
    # Each of the 10 inactive nodes reaches 10 nodes of layer 1; P(s in layer l) counts the
    # paths from s through the remaining layers: sum_{d=0}^{159-l} 10^d.
    width, depth = 10, 160
    edges = [
        ((layer, i), (layer + 1, j))
        for layer in range(depth - 1)
        for i in range(width)
        for j in range(width)
    ]
    active = {(layer, i) for layer in range(1, depth) for i in range(width)}
    p_layer1 = sum(width**d for d in range(depth - 1))
    expected = width * width * p_layer1
    value = graph_emergence(edges, active)
    assert value.exact == expected
    assert value.log10 > 160
    approx = graph_emergence(edges, active, exact=False)
    assert abs(approx.log10 - math.log10(expected)) < LOG_TOL
    assert math.isfinite(approx.log10)


def test_log_space_does_not_overflow_past_float_range() -> None:
    # 2 nodes per layer, 1200 layers: counts ~ 2^1200 > 1e308 still give a finite log.
    edges = [((layer, i), (layer + 1, j)) for layer in range(1200) for i in (0, 1) for j in (0, 1)]
    active = {(layer, i) for layer in range(1, 1201) for i in (0, 1)}
    exact = graph_emergence(edges, active, exact=True)
    approx = graph_emergence(edges, active, exact=False)
    assert exact.exact is not None and exact.log10 > 308
    assert math.isfinite(approx.log10)
    assert abs(approx.log10 - exact.log10) < LOG_TOL


def test_default_switches_to_log_space_above_the_edge_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    edges = [(0, 1), (1, 2), (2, 3)]
    assert graph_emergence(edges, {1, 2, 3}).exact == 3
    monkeypatch.setattr(graph_module, "EXACT_EDGE_LIMIT", 2)
    value = graph_emergence(edges, {1, 2, 3})
    assert value.exact is None
    assert abs(value.log10 - math.log10(3)) < LOG_TOL
    assert graph_emergence(edges, {1, 2, 3}, exact=True).exact == 3


def _cycle_in_message(message: str) -> list[str]:
    match = re.search(r"cycle: (.*?);", message)
    assert match, message
    return [part.strip() for part in match.group(1).split("->")]


@pytest.mark.parametrize(
    "edges",
    [
        [(0, 1), (1, 2), (2, 3), (3, 1), (3, 4)],
        [("a", "a")],
        [(5, 6), (6, 5), (0, 5), (6, 7)],
    ],
)
def test_cycle_raises_naming_a_real_cycle(edges: list[tuple[object, object]]) -> None:
    with pytest.raises(GraphCycleError) as info:
        graph_emergence(edges, set())
    named = _cycle_in_message(str(info.value))
    assert named[0] == named[-1] and len(named) >= 2
    as_repr = {(repr(u), repr(v)) for u, v in edges}
    assert all((u, v) in as_repr for u, v in itertools.pairwise(named))


def test_cycle_is_an_error_for_networkx_graphs_too() -> None:
    graph = nx.DiGraph([(1, 2), (2, 3), (3, 1)])
    with pytest.raises(GraphCycleError):
        graph_emergence(graph, {1})


@pytest.mark.parametrize(
    ("graph", "active", "kwargs", "message"),
    [
        (nx.Graph([(0, 1)]), {1}, {}, "directed"),
        (nx.MultiDiGraph([(0, 1), (0, 1)]), {1}, {}, "multigraph"),
        ([(0, 1)], {7}, {}, "not in it: 7"),
        ([(0, 1)], {1}, {"paths": "longest"}, "paths must be one of"),
        ([(0, 1)], {1}, {"exact": 1}, "exact must be"),
        ([(0, 1, 2)], {1}, {}, "pair"),
        ("ab", {"a"}, {}, "DiGraph"),
        (42, {1}, {}, "DiGraph"),
        ({0: 1}, {0}, {}, "successors of 0"),
    ],
)
def test_bad_inputs_raise_config_error(
    graph: object, active: set[object], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        graph_emergence(graph, active, **kwargs)  # type: ignore[arg-type]


def test_value_is_frozen_and_printable() -> None:
    value = graph_emergence([(0, 1)], {1})
    with pytest.raises(AttributeError):
        value.log10 = 3.0  # type: ignore[misc]
    assert str(value) == "E = 1"
    assert str(EmergenceValue(400.5)) == "E = 10^400.500000"
