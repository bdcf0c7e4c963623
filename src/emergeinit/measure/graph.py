r"""Li's emergence E(G, H) on an explicit directed acyclic graph (arXiv 2311.17403).

See docs/measure.md, "On a graph".

For a DAG ``G`` and a node subset ``H`` (the observed / active part)

.. math::

    E(G, H) = \sum_{x \in G \setminus H} \; \sum_{s \in \mathrm{succ}(x) \cap H} P_H(s),

where ``P_H(s)`` is the number of directed paths of the induced subgraph ``G[H]`` that start at
``s``; the one-node path counts, so ``P_H(s) = 1 + sum_{t in succ_H(s)} P_H(t)``. With
``paths="maximal"`` only paths that end at a sink of ``G[H]`` count:
``P_H(s) = 1`` at a sink of ``G[H]``, else ``sum_{t in succ_H(s)} P_H(t)``.

The graph is a simple directed graph: a repeated edge in an edge list counts once, as it does in
``networkx.DiGraph(edges)``. networkx is optional; it is never imported here, a graph object is
recognised by its ``succ`` / ``is_directed`` attributes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..errors import ConfigError, GraphCycleError
from ..schedule import check_choice

PathMode = Literal["all", "maximal"]

# Python integers stay fast enough up to about this many edges; above it the default is log space.
EXACT_EDGE_LIMIT = 100_000


@dataclass(frozen=True)
class EmergenceValue:
    """The value of E(G, H).

    Attributes:
        log10: ``log10 E`` as a float, always present (``-inf`` when ``E = 0``).
        exact: ``E`` as a Python integer when it was computed exactly, else ``None``.
    """

    log10: float
    exact: int | None = None

    def __str__(self) -> str:
        if self.exact is not None and self.exact < 10**15:
            return f"E = {self.exact}"
        return f"E = 10^{self.log10:.6f}"


def graph_emergence(
    graph: Any,
    active: Iterable[Hashable],
    *,
    paths: PathMode = "all",
    exact: bool | None = None,
) -> EmergenceValue:
    r"""Li's emergence ``E(G, H)`` of a directed acyclic graph ``G`` with active node set ``H``.

    ``E(G, H) = sum_{x in G \ H} sum_{s in succ(x) ∩ H} P_H(s)``, with ``P_H(s)`` the number of
    paths of ``G[H]`` starting at ``s`` (one-node path included; ``paths="maximal"``: only those
    ending at a sink of ``G[H]``).

    Args:
        graph: a ``networkx.DiGraph`` (or any object with ``nodes``, ``succ`` and
            ``is_directed()``), a mapping ``{node: iterable of successors}`` (a key with no
            successors is an isolated node), or an iterable of ``(u, v)`` edges.
        active: the node set ``H``; every node must belong to the graph.
        paths: ``"all"`` (default) or ``"maximal"``.
        exact: ``True`` counts in Python integers, ``False`` in log space (float64);
            ``None`` (default) is exact when the graph has at most 100,000 edges.

    Returns:
        An :class:`EmergenceValue` with ``log10`` always and ``exact`` when computed exactly.

    Raises:
        GraphCycleError: the graph has a directed cycle; the message names one.
        ConfigError: a bad option, an undirected or multi graph, ``active`` that is not an
            iterable of hashable nodes (``None``, a string), or an active node not in the graph.

    Example:
        >>> # a -> b -> c with only b, c active: paths of G[H] from b are (b) and (b, c).
        >>> graph_emergence([("a", "b"), ("b", "c")], {"b", "c"})
        EmergenceValue(log10=0.3010299956639812, exact=2)
        >>> graph_emergence({"a": ["b"], "b": ["c"]}, {"b", "c"}, paths="maximal").exact
        1
    """
    check_choice("paths", paths, get_args(PathMode))
    if exact is not None and not isinstance(exact, bool):
        raise ConfigError(f"exact must be True, False or None; got {exact!r}.")

    if graph is None:
        raise ConfigError("graph must be a DiGraph, a dict of successors or a list of edges; "
                          "got None.")  # fmt: skip
    if isinstance(active, (str, bytes)) or not isinstance(active, Iterable):
        raise ConfigError(
            f"active must be an iterable of nodes (a set, a list), got {type(active).__name__}; "
            "pass set() for no active node."
        )
    try:
        nodes, succ = _adjacency(graph)
    except TypeError as error:  # an unhashable node
        raise ConfigError(f"graph nodes must be hashable ({error}).") from None
    index = {node: i for i, node in enumerate(nodes)}
    in_h = [False] * len(nodes)
    unknown = []
    for node in active:
        try:
            i = index.get(node)
        except TypeError:
            raise ConfigError(f"active nodes must be hashable; got {node!r}.") from None
        if i is None:
            unknown.append(node)
        else:
            in_h[i] = True
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5])
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise ConfigError(
            f"active nodes must belong to the graph; not in it: {shown}{more}. "
            "Give isolated nodes as keys with no successors in a dict of successors."
        )

    order = _topological_order(nodes, succ)
    num_edges = sum(len(s) for s in succ)
    if exact is None:
        exact = num_edges <= EXACT_EDGE_LIMIT
    maximal = paths == "maximal"
    if exact:
        value = _count_exact(order, succ, in_h, maximal)
        return EmergenceValue(log10=_log10_int(value), exact=value)
    return EmergenceValue(log10=_count_log(order, succ, in_h, maximal) / math.log(10))


def _adjacency(graph: Any) -> tuple[list[Hashable], list[list[int]]]:
    """Nodes in first-seen order and deduplicated successor index lists."""
    if isinstance(graph, (str, bytes)):
        raise ConfigError("graph must be a DiGraph, a dict of successors or a list of edges.")
    pairs: Iterable[Any]
    nodes: dict[Hashable, int] = {}
    if callable(getattr(graph, "is_directed", None)) and hasattr(graph, "nodes"):
        if not graph.is_directed() or not hasattr(graph, "succ"):
            raise ConfigError("graph must be directed; got an undirected graph.")
        if hasattr(graph, "is_multigraph") and graph.is_multigraph():
            raise ConfigError(
                "graph must be a simple DiGraph; E(G, H) is defined on a graph, not a multigraph. "
                "Convert it with networkx.DiGraph(graph)."
            )
        for node in graph.nodes:
            nodes.setdefault(node, len(nodes))
        pairs = ((u, v) for u, nbrs in graph.succ.items() for v in nbrs)
    elif isinstance(graph, Mapping):
        for node in graph:
            nodes.setdefault(node, len(nodes))
        pairs = ((u, v) for u, nbrs in graph.items() for v in _iter_successors(u, nbrs))
    else:
        try:
            pairs = iter(graph)
        except TypeError:
            raise ConfigError(
                f"graph must be a DiGraph, a dict of successors or a list of edges; "
                f"got {type(graph).__name__}."
            ) from None

    succ_sets: list[dict[int, None]] = [{} for _ in nodes]
    for pair in pairs:
        try:
            u, v = pair
        except (TypeError, ValueError):
            raise ConfigError(f"an edge must be a pair (u, v); got {pair!r}.") from None
        for node in (u, v):
            if node not in nodes:
                nodes[node] = len(nodes)
                succ_sets.append({})
        succ_sets[nodes[u]][nodes[v]] = None  # a dict keeps first-seen order, unlike a set
    return list(nodes), [list(s) for s in succ_sets]


def _iter_successors(node: Hashable, successors: Any) -> Iterable[Hashable]:
    if isinstance(successors, (str, bytes)) or not isinstance(successors, Iterable):
        raise ConfigError(
            f"the successors of {node!r} must be an iterable of nodes; got {successors!r}."
        )
    return successors


def _topological_order(nodes: list[Hashable], succ: list[list[int]]) -> list[int]:
    """Kahn's algorithm; on a cycle, raise naming one cycle."""
    indegree = [0] * len(nodes)
    for targets in succ:
        for v in targets:
            indegree[v] += 1
    ready = [i for i, d in enumerate(indegree) if d == 0]
    order: list[int] = []
    while ready:
        u = ready.pop()
        order.append(u)
        for v in succ[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    if len(order) == len(nodes):
        return order
    cycle = _find_cycle(succ, [d > 0 for d in indegree])
    named = " -> ".join(repr(nodes[i]) for i in [*cycle, cycle[0]])
    raise GraphCycleError(f"the graph has a directed cycle: {named}; E(G, H) needs a DAG.")


def _find_cycle(succ: list[list[int]], remaining: list[bool]) -> list[int]:
    # Every node Kahn could not remove has a remaining predecessor, so walking predecessors
    # inside the remainder must revisit a node; the revisited stretch is a cycle.
    pred: dict[int, int] = {}
    for u, targets in enumerate(succ):
        if remaining[u]:
            for v in targets:
                if remaining[v]:
                    pred.setdefault(v, u)
    start = next(i for i, r in enumerate(remaining) if r)
    seen: dict[int, int] = {}
    walk: list[int] = []
    node = start
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = pred[node]
    backwards = walk[seen[node] :]
    return backwards[::-1]


def _count_exact(order: list[int], succ: list[list[int]], in_h: list[bool], maximal: bool) -> int:
    p = [0] * len(in_h)
    for s in reversed(order):
        if not in_h[s]:
            continue
        total = 0
        has_active_successor = False
        for t in succ[s]:
            if in_h[t]:
                total += p[t]
                has_active_successor = True
        if maximal:
            p[s] = total if has_active_successor else 1  # a sink of G[H] ends one maximal path
        else:
            p[s] = total + 1  # + the one-node path (s)
    value = 0
    for x, targets in enumerate(succ):
        if not in_h[x]:
            for s in targets:
                if in_h[s]:
                    value += p[s]
    return value


def _count_log(order: list[int], succ: list[list[int]], in_h: list[bool], maximal: bool) -> float:
    """Natural log of E, each P_H(s) kept as a log so no count ever overflows."""
    log_p = [-math.inf] * len(in_h)
    for s in reversed(order):
        if not in_h[s]:
            continue
        terms = [log_p[t] for t in succ[s] if in_h[t]]
        if not terms:
            log_p[s] = 0.0  # the one-node path, maximal or not
            continue
        if not maximal:
            terms.append(0.0)
        log_p[s] = _logsumexp(terms)
    terms = [log_p[s] for x, targets in enumerate(succ) if not in_h[x] for s in targets if in_h[s]]
    return _logsumexp(terms) if terms else -math.inf


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def _log10_int(value: int) -> float:
    # math.log10 takes Python integers of any size without converting to float first.
    return math.log10(value) if value > 0 else -math.inf


__all__ = ["EXACT_EDGE_LIMIT", "EmergenceValue", "PathMode", "graph_emergence"]
