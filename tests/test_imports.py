"""The package's import graph, read from the source with ``ast``: no cycle anywhere (imports
inside functions included), the core never imports the harness, the harness's layers import
one way and no private name across modules, and no generic layer compares a task's name."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "emergeinit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` inside ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` of every import in the file, at any
    depth (module level, functions, methods, ``TYPE_CHECKING`` blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                found.append((source, alias.name, node.lineno))
    return found


def _edges() -> dict[str, set[str]]:
    """Module -> the package modules it imports. ``from pkg import sub`` where ``sub`` is a
    module is an edge to ``pkg.sub``; the implicit import of a module's parent packages is not
    an edge (it would make every package a cycle with its own modules)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for source, name, _ in _imports(module, path):
            if name is not None and f"{source}.{name}" in MODULES:
                graph[module].add(f"{source}.{name}")
            elif source in MODULES:
                graph[module].add(source)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = _edges()
    # study.py imports the run template only inside a function (the plug-in probe).
    assert "emergeinit.bench.runner" in graph["emergeinit.bench.study"]
    assert "emergeinit.bench.tasks" in graph["emergeinit.bench.config"]


def test_no_import_cycle_anywhere() -> None:
    cycle = _cycle(_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_harness_imports_no_private_name_across_modules() -> None:
    offences = [
        f"{module}:{line} imports {source}.{name}"
        for module, path in MODULES.items()
        if module.startswith(("emergeinit.bench", "emergeinit.cli"))
        for source, name, line in _imports(module, path)
        if source.startswith("emergeinit") and name is not None and name.startswith("_")
        and not name.startswith("__")
    ]  # fmt: skip
    assert not offences, offences


def test_the_core_never_imports_the_harness() -> None:
    core = [m for m in MODULES if not m.startswith("emergeinit.bench") and m != "emergeinit.cli"]
    graph = _edges()
    offences = [(m, t) for m in core for t in graph[m] if t.startswith("emergeinit.bench")]
    assert not offences, offences


BENCH = "emergeinit.bench"
LEAVES = (
    "runtime", "labels", "markdown", "plugins", "stats", "loop", "schema", "figures", "files",
    "checkpoint",
)  # fmt: skip


def test_the_leaves_import_nothing_above_them() -> None:
    graph = _edges()
    allowed = {f"{BENCH}.{x}" for x in LEAVES}
    for leaf in LEAVES:
        above = {t for t in graph[f"{BENCH}.{leaf}"] if t.startswith(BENCH)} - allowed
        assert not above, (leaf, above)


def test_report_calls_plots_and_plots_never_the_report() -> None:
    graph = _edges()
    assert f"{BENCH}.plots" in graph[f"{BENCH}.report"]
    assert f"{BENCH}.report" not in graph[f"{BENCH}.plots"]


def test_tasks_never_import_the_generic_layers_that_ask_them() -> None:
    graph = _edges()
    generic = {f"{BENCH}.{m}" for m in ("config", "study", "runner", "report", "plots", "api")}
    for module, targets in graph.items():
        if module.startswith(f"{BENCH}.tasks"):
            assert not targets & generic, (module, targets & generic)


def test_no_generic_layer_compares_a_task_name() -> None:
    """Only a task's own package (and the registry) may name a task in a comparison."""
    names = {"classification", "translation"}
    offences = []
    for module, path in MODULES.items():
        if module.startswith(("emergeinit.bench.tasks.classification",
                              "emergeinit.bench.tasks.translation")):  # fmt: skip
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                constants = {
                    o.value for o in operands
                    if isinstance(o, ast.Constant) and isinstance(o.value, str)
                }  # fmt: skip
                if constants & names:
                    offences.append(f"{module}:{node.lineno}")
    assert not offences, offences
