"""Reading a network's neuron-graph structure with ``torch.fx`` (SPEC 2.2).

``torch.fx`` sees what module hooks cannot: functional ``F.relu``, ``torch.flatten`` and the ``+``
of a residual block. The traced graph is reduced to a list of :class:`Step` s, one per operation
whose value carries path counts (it depends on the input), each tagged with how it routes paths:

* ``weight``: Linear / Conv1d-3d, whose outputs are neurons;
* ``identity``: normalization, dropout, identity, a constant scale or shift — paths pass unchanged;
* ``nonlin``: an elementwise nonlinearity, also identity routing but where activity is read;
* ``add``: a sum of several count-carrying operands (residual addition) — counts add;
* ``pool`` / ``adaptive`` / ``reduce``: every input position of a window routes to the output;
* ``reshape`` / ``cat``: positions move, counts move with them;
* ``terminal``: softmax-like ops that mix features, allowed only after the last weight layers.

Anything else on the count path is unsupported and reported, never guessed.
"""

from __future__ import annotations

import builtins
import math
import operator
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import UnsupportedModuleError

WEIGHT_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
IDENTITY_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
)
NONLIN_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
)  # fmt: skip
MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADAPTIVE_MODULES = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
TERMINAL_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)

# Modules fx must not trace into: a user subclass of nn.Linear is still a Linear here.
LEAF_MODULES = (
    WEIGHT_MODULES + IDENTITY_MODULES + NONLIN_MODULES + MAX_POOL_MODULES + AVG_POOL_MODULES
    + ADAPTIVE_MODULES + RESHAPE_MODULES + TERMINAL_MODULES
)  # fmt: skip

NONLIN_FUNCTIONS: set[Any] = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.elu,
    F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.sigmoid, torch.sigmoid, F.tanh, torch.tanh,
    F.softplus, F.softsign, F.hardtanh, F.hardtanh_, F.hardswish, F.hardsigmoid, F.logsigmoid,
    F.prelu, F.rrelu, F.threshold, F.tanhshrink, F.softshrink, F.hardshrink, torch.clamp,
    torch.clip, torch.clamp_min,
}  # fmt: skip
NONLIN_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_",
    "clamp_min", "clamp_min_",
}  # fmt: skip
IDENTITY_FUNCTIONS: set[Any] = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
IDENTITY_METHODS = {"contiguous", "clone", "float", "double", "half", "bfloat16", "to"}
ADD_FUNCTIONS: set[Any] = {operator.add, operator.sub, operator.iadd, operator.isub, torch.add,
                           torch.sub, torch.subtract}  # fmt: skip
ADD_METHODS = {"add", "add_", "sub", "sub_"}
SCALE_FUNCTIONS: set[Any] = {operator.mul, operator.truediv, operator.imul, operator.itruediv,
                             operator.neg, torch.mul, torch.div, torch.neg}  # fmt: skip
SCALE_METHODS = {"mul", "mul_", "div", "div_", "neg", "neg_"}
MAX_POOL_FUNCTIONS: dict[Any, int] = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}
AVG_POOL_FUNCTIONS: dict[Any, int] = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
ADAPTIVE_FUNCTIONS: set[Any] = {
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}  # fmt: skip
RESHAPE_FUNCTIONS: set[Any] = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
REDUCE_FUNCTIONS: set[Any] = {torch.mean, torch.sum}
REDUCE_METHODS = {"mean", "sum"}
CAT_FUNCTIONS: set[Any] = {torch.cat, torch.concat, torch.concatenate}
TERMINAL_FUNCTIONS: set[Any] = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
TERMINAL_METHODS = {"softmax", "log_softmax"}
META_METHODS = {"size", "dim", "numel", "ndimension", "nelement"}
META_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda"}

# Positional parameter names of the functional pools (their signatures are not introspectable).
_MAX_POOL_PARAMS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                    "return_indices")  # fmt: skip
_AVG_POOL_PARAMS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                    "divisor_override")  # fmt: skip
_REDUCE_PARAMS = ("input", "dim", "keepdim")
_CAT_PARAMS = ("tensors", "dim")


@dataclass
class Step:
    """One count-carrying operation of the network, in forward order."""

    index: int
    node: str  # the fx node name
    kind: str
    sources: list[int]  # steps whose counts flow in, in operand order
    name: str  # for messages and per-layer reports
    module: nn.Module | None = None
    params: dict[str, Any] = field(default_factory=dict)
    users: list[int] = field(default_factory=list)
    feeds_weight: bool = False  # some weight layer lies downstream


@dataclass
class Structure:
    """The count-carrying steps of a traced model and where each layer's activity is read."""

    graph_module: fx.GraphModule
    steps: list[Step]
    layers: list[int]  # weight steps
    inputs: list[int]  # input steps, in placeholder order
    last: set[int]  # weight steps that feed no other weight layer: all outputs active
    read: dict[int, int]  # weight step -> step whose value decides its activity
    traced_with: str  # "fx" or "sequential"
    _probes: dict[tuple[Any, ...], fx.GraphModule] = field(default_factory=dict)

    def probe_module(self, tau: float, per_sample: bool, channel: bool) -> fx.GraphModule:
        """A copy of the traced forward that returns (step shapes, activity masks of the layers).

        Masks are computed right after their read point, so later in-place ops cannot alter
        them and no full activation is kept alive.
        """
        key = (tau, per_sample, channel)
        cached = self._probes.get(key)
        if cached is not None:
            return cached
        old = self.graph_module.graph
        graph = fx.Graph()
        values: dict[fx.Node, fx.Node] = {}
        graph.graph_copy(old, values)
        by_name = {node.name: values[node] for node in old.nodes if node in values}
        first_body = next((n for n in graph.nodes if n.op != "placeholder"), None)
        shape_nodes: dict[int, fx.Node] = {}
        for step in self.steps:
            node = by_name[step.node]
            if node.op == "placeholder":
                ctx = graph.inserting_before(first_body)
            else:
                ctx = graph.inserting_after(node)
            with ctx:
                shape_nodes[step.index] = graph.call_function(_shape_of, (node,))
        mask_nodes = []
        for layer in self.layers:
            if layer in self.last:
                continue
            reader = self.read[layer]
            args = (by_name[self.steps[reader].node], shape_nodes[layer], tau, per_sample, channel)
            with graph.inserting_after(shape_nodes[reader]):
                mask_nodes.append(graph.call_function(_activity_mask, args))
        graph.output((tuple(shape_nodes[s.index] for s in self.steps), tuple(mask_nodes)))
        probe = fx.GraphModule(self.graph_module, graph)
        if len(self._probes) >= _MAX_PROBES:  # e.g. a sweep over tau: keep memory bounded
            self._probes.pop(next(iter(self._probes)))
        self._probes[key] = probe
        return probe


def _shape_of(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _activity_mask(
    value: Any, shape: tuple[int, ...] | None, tau: float, per_sample: bool, channel: bool
) -> torch.Tensor | None:
    """``value > tau`` laid out like the layer's output (per channel: its spatial mean)."""
    if (
        not isinstance(value, torch.Tensor)
        or shape is None
        or value.numel() != math.prod(shape)
        or not value.is_floating_point()
    ):
        return None  # the caller names the layer and raises
    v = value.detach().reshape(shape)
    if v.dtype in (torch.float16, torch.bfloat16):
        v = v.float()  # a half-precision mean over a large batch loses the threshold
    if channel and v.dim() > 2:
        v = v.mean(dim=tuple(range(2, v.dim())))
    if not per_sample:
        v = v.mean(dim=0, keepdim=True)
    return v > tau


_MAX_PROBES = 8


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, LEAF_MODULES) or super().is_leaf_module(m, module_qualified_name)


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], Structure]] = (
    weakref.WeakKeyDictionary()
)


def read_structure(model: nn.Module) -> Structure:
    """Trace ``model`` (cached while its modules, their types and modes stay the same)."""
    modules = model.named_modules(remove_duplicate=False)
    fingerprint = tuple((name, id(m), type(m), m.training) for name, m in modules)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    structure = _analyse(*_trace(model))
    _CACHE[model] = (fingerprint, structure)
    return structure


def _trace(model: nn.Module) -> tuple[fx.GraphModule, str]:
    if not isinstance(model, nn.Module):
        raise UnsupportedModuleError(
            f"model must be a torch.nn.Module, got {type(model).__name__}."
        )
    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph), "fx"
    except Exception as error:  # fx raises many types; any failure means "not traceable"
        if type(model) is nn.Sequential:
            return _sequential_graph(model), "sequential"
        raise UnsupportedModuleError(
            f"torch.fx could not trace {type(model).__name__} ({type(error).__name__}: {error}). "
            "The emergence measure reads the network's structure with torch.fx; data-dependent "
            "control flow in forward() is not supported."
        ) from error


def _sequential_graph(model: nn.Sequential) -> fx.GraphModule:
    # A plain Sequential applies its children in order; the chain is its whole structure, so it
    # needs no tracing (the children themselves run as opaque calls, like hooked modules).
    graph = fx.Graph()
    value = graph.placeholder("input")
    for name, _child in _sequential_children(model, ""):
        value = graph.call_module(name, (value,))
    graph.output(value)
    return fx.GraphModule(model, graph)


def _sequential_children(model: nn.Sequential, prefix: str) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        qualified = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out.extend(_sequential_children(child, qualified + "."))
        else:
            out.append((qualified, child))
    return out


def _analyse(gm: fx.GraphModule, traced_with: str) -> Structure:
    steps: list[Step] = []
    step_of: dict[fx.Node, int] = {}
    unsupported: list[str] = []
    inputs: list[int] = []
    calls: dict[str, int] = {}

    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        if node.op == "placeholder":
            step = Step(len(steps), node.name, "input", [], _input_name(gm, node))
            inputs.append(step.index)
            steps.append(step)
            step_of[node] = step.index
            continue
        carrying = [a for a in _node_args(node) if a in step_of]
        if node.op == "get_attr":
            continue
        if not carrying:
            if node.op == "call_module" and isinstance(
                gm.get_submodule(str(node.target)), WEIGHT_MODULES
            ):
                # Its neurons would have successors but no place in the graph: refuse.
                unsupported.append(_describe(gm, node) + " (its input does not depend on the "
                                   "model input)")  # fmt: skip
            continue  # a constant: no neuron reaches it
        kind, primary, module, params = _classify(gm, node, step_of)
        if kind == "meta":
            continue
        why = ""
        if kind not in ("add", "cat", "unsupported") and any(a is not primary for a in carrying):
            kind, why = "unsupported", " (more than one input carries paths)"
        if kind in ("add", "cat"):
            sources = [step_of[a] for a in primary]
        elif kind == "unsupported":
            # Kept as a step so that whatever it feeds is still analysed and reported too.
            unsupported.append(_describe(gm, node) + why)
            sources = list(dict.fromkeys(step_of[a] for a in carrying))
        else:
            sources = [step_of[primary]]
        name = _step_name(node, calls)
        step = Step(len(steps), node.name, kind, sources, name, module, params)
        steps.append(step)
        step_of[node] = step.index

    for step in steps:
        for source in step.sources:
            if step.index not in steps[source].users:
                steps[source].users.append(step.index)
    for step in reversed(steps):
        step.feeds_weight = any(
            steps[u].kind == "weight" or steps[u].feeds_weight for u in step.users
        )
    unsupported += [
        f"{s.name} (mixes features before a weight layer)"
        for s in steps
        if s.kind == "terminal" and s.feeds_weight
    ]
    if unsupported:
        raise _unsupported(unsupported)

    layers = [s.index for s in steps if s.kind == "weight"]
    if not layers:
        raise UnsupportedModuleError(
            "the model has no Linear or Conv layer on the path from its input; there are no "
            "neurons to measure."
        )
    last = {i for i in layers if not steps[i].feeds_weight}
    read = {i: _read_point(steps, i) for i in layers if i not in last}
    return Structure(gm, steps, layers, inputs, last, read, traced_with)


def _read_point(steps: list[Step], layer: int) -> int:
    """The step whose value decides the activity of ``layer``'s neurons (SPEC 2.2).

    Walk forward while the value is used once and only normalization, dropout, identity,
    residual additions and reshapes intervene; the first nonlinearity met is read. Anything else
    (pooling, another layer, a fork, the output) stops the walk: the last value before it is read.
    """
    current = layer
    while len(steps[current].users) == 1:
        user = steps[steps[current].users[0]]
        if user.kind == "nonlin":
            return user.index
        if user.kind not in ("identity", "add", "reshape"):
            break
        current = user.index
    return current


def _node_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _bind(node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    if "self" in bound:
        bound["input"] = bound.pop("self")
    return bound


def _classify(
    gm: fx.GraphModule, node: fx.Node, step_of: dict[fx.Node, int]
) -> tuple[str, Any, nn.Module | None, dict[str, Any]]:
    """(kind, primary input node or operand list, module, parameters)."""
    first = node.args[0] if node.args else node.kwargs.get("input")
    if node.op == "call_module":
        module = gm.get_submodule(node.target)  # type: ignore[arg-type]
        kind = _classify_module(module)
        params = _module_params(module)
        if kind == "pool" and not params["ok"]:
            kind = "unsupported"
        if kind == "weight" and getattr(module, "padding_mode", "zeros") != "zeros":
            kind = "unsupported"  # reflect/replicate/circular padding wires extra edges
        return kind, first, module, params
    target = node.target
    if node.op == "call_method":
        name = str(target)
        if name in META_METHODS:
            return "meta", first, None, {}
        if name in NONLIN_METHODS:
            return "nonlin", first, None, {}
        if name in IDENTITY_METHODS:
            return "identity", first, None, {}
        if name in ADD_METHODS:
            return _classify_add(node, step_of)
        if name in SCALE_METHODS:
            return "identity", first, None, {}
        if name in RESHAPE_METHODS:
            return "reshape", first, None, {}
        if name in REDUCE_METHODS:
            return "reduce", first, None, _bind(node, _REDUCE_PARAMS)
        if name in TERMINAL_METHODS:
            return "terminal", first, None, {}
        return "unsupported", first, None, {}
    if target is builtins.getattr:
        return ("meta" if node.args[1] in META_ATTRIBUTES else "unsupported"), first, None, {}
    if target in NONLIN_FUNCTIONS:
        return "nonlin", first, None, {}
    if target in IDENTITY_FUNCTIONS:
        return "identity", first, None, {}
    if target in ADD_FUNCTIONS:
        return _classify_add(node, step_of)
    if target in SCALE_FUNCTIONS:
        return "identity", first, None, {}
    if target in MAX_POOL_FUNCTIONS or target in AVG_POOL_FUNCTIONS:
        is_max = target in MAX_POOL_FUNCTIONS
        nd = MAX_POOL_FUNCTIONS[target] if is_max else AVG_POOL_FUNCTIONS[target]
        raw = _bind(node, _MAX_POOL_PARAMS if is_max else _AVG_POOL_PARAMS)
        params = _pool_params(nd, raw, is_max)
        return ("pool" if params["ok"] else "unsupported"), first, None, params
    if target in ADAPTIVE_FUNCTIONS:
        return "adaptive", first, None, {}
    if target in RESHAPE_FUNCTIONS:
        return "reshape", first, None, {}
    if target in REDUCE_FUNCTIONS:
        return "reduce", first, None, _bind(node, _REDUCE_PARAMS)
    if target in CAT_FUNCTIONS:
        params = _bind(node, _CAT_PARAMS)
        tensors = params.get("tensors")
        if not isinstance(tensors, (list, tuple)) or not all(t in step_of for t in tensors):
            return "unsupported", first, None, {}
        return "cat", list(tensors), None, {"dim": params.get("dim", 0)}
    if target in TERMINAL_FUNCTIONS:
        return "terminal", first, None, {}
    return "unsupported", first, None, {}


def _classify_add(
    node: fx.Node, step_of: dict[fx.Node, int]
) -> tuple[str, Any, nn.Module | None, dict[str, Any]]:
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node) and a in step_of]
    other = node.kwargs.get("other")
    if isinstance(other, fx.Node) and other in step_of:
        operands.append(other)
    if len(operands) >= 2:
        return "add", operands, None, {}
    # x + constant: the constant is no neuron, paths pass unchanged.
    return "identity", operands[0] if operands else node.args[0], None, {}


def _classify_module(module: nn.Module) -> str:
    if isinstance(module, WEIGHT_MODULES):
        return "weight"
    if isinstance(module, NONLIN_MODULES):
        return "nonlin"
    if isinstance(module, IDENTITY_MODULES):
        return "identity"
    if isinstance(module, MAX_POOL_MODULES + AVG_POOL_MODULES):
        return "pool"
    if isinstance(module, ADAPTIVE_MODULES):
        return "adaptive"
    if isinstance(module, RESHAPE_MODULES):
        return "reshape"
    if isinstance(module, TERMINAL_MODULES):
        return "terminal"
    return "unsupported"


def _module_params(module: nn.Module) -> dict[str, Any]:
    for nd in (1, 2, 3):
        if isinstance(module, MAX_POOL_MODULES[nd - 1]):
            return _pool_params(nd, vars(module), True)
        if isinstance(module, AVG_POOL_MODULES[nd - 1]):
            return _pool_params(nd, vars(module), False)
    return {}


def _pool_params(nd: int, raw: dict[str, Any], is_max: bool) -> dict[str, Any]:
    def tup(value: Any, default: Any) -> tuple[int, ...] | None:
        value = default if value is None else value
        if isinstance(value, fx.Node):
            return None
        if isinstance(value, int):
            return (value,) * nd
        value = tuple(value)
        return value if len(value) == nd and all(isinstance(v, int) for v in value) else None

    kernel = tup(raw.get("kernel_size"), None)
    params = {
        "nd": nd,
        "kernel": kernel,
        "stride": tup(raw.get("stride"), kernel),
        "padding": tup(raw.get("padding"), 0),
        "dilation": tup(raw.get("dilation"), 1) if is_max else (1,) * nd,
        "ceil_mode": raw.get("ceil_mode", False),
        "ok": not raw.get("return_indices", False),
    }
    params["ok"] = params["ok"] and all(
        params[k] is not None for k in ("kernel", "stride", "padding", "dilation")
    ) and isinstance(params["ceil_mode"], bool)
    return params


def _input_name(gm: fx.GraphModule, node: fx.Node) -> str:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return "input" if len(placeholders) == 1 else f"input:{node.target}"


def _step_name(node: fx.Node, calls: dict[str, int]) -> str:
    base = str(node.target) if node.op == "call_module" else node.name
    calls[base] = calls.get(base, 0) + 1
    return base if calls[base] == 1 else f"{base}#{calls[base]}"


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)  # type: ignore[arg-type]
        return f"{node.target} ({type(module).__name__})"
    if node.op == "call_method":
        return f"{node.name} (Tensor.{node.target})"
    label = getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({label})"


def _unsupported(items: list[str]) -> UnsupportedModuleError:
    listed = "\n  ".join(items)
    return UnsupportedModuleError(
        "the emergence measure cannot route paths through these modules/ops:\n  "
        f"{listed}\nSupported: Linear, Conv1d-3d (zero padding), normalization, dropout, "
        "identity, elementwise activations, max/avg/adaptive pooling, flatten/view/reshape, "
        "mean/sum over non-batch dims, residual additions, concatenation, scaling by constants."
    )


__all__ = ["Step", "Structure", "read_structure"]
