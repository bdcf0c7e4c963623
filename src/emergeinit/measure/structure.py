"""A network's neuron-graph structure, read from a captured graph (docs/measure.md).

The captured graph (:mod:`emergeinit.measure.capture`) is reduced to a list of :class:`Step` s,
one per operation whose value carries path counts (it depends on the input), each tagged with
how it routes paths (the kinds of :mod:`emergeinit.measure.ops`). Anything on the count path
that no rule covers is reported, never guessed: the error lists every offending op and why.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from ..errors import ConfigError, UnsupportedModuleError
from . import kernels
from .capture import (
    Capture,
    Captured,
    ModelInputs,
    check_forward,
    model_cache,
    module_path,
    remember,
    trace_export,
    trace_fx,
    trace_sequential,
)
from .ops import (
    FUNCTIONS,
    GETATTR,
    LINEAR_MODULES,
    MAX_POOL_MODULES,
    META_ATTRIBUTES,
    METHODS,
    REASONS,
    Rule,
    aten_rule,
    classify_module,
    is_aten,
)

# Upsampling modes whose connectivity is the support of separable 1-d interpolation weights.
UPSAMPLE_MODES = {"nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area"}
_PASSING = ("identity", "add", "reshape", "permute")  # the activity walk goes through these


@dataclass
class Step:
    """One count-carrying operation of the network, in forward order."""

    index: int
    node: str  # the fx node name
    kind: str
    sources: list[int]  # steps whose counts flow in, in operand order
    name: str  # for messages and per-layer reports
    module: nn.Module | None = None
    params: dict[str, Any] = field(default_factory=dict)  # non-count arguments of the op
    dynamic: tuple[str, ...] = ()  # params computed in forward(): their values come from the probe
    call: Callable[..., Any] | None = None  # the op itself, replayed on a probe (upsampling)
    reason: str = ""  # why an unsupported step is unsupported
    holds_weights: bool = False  # an unsupported op given a parameter: maybe a hidden layer
    users: list[int] = field(default_factory=list)
    feeds_weight: bool = False  # some weight layer lies downstream


@dataclass(frozen=True)
class Read:
    """Where a layer's activity is read: a step, and the permutes to undo on its value."""

    step: int
    undo: tuple[tuple[Any, ...], ...] = ()


@dataclass
class Probe:
    """What one run of the probe module returns."""

    shapes: list[tuple[int, ...] | None]
    masks: list[torch.Tensor | None]  # per non-last layer
    counts: list[dict[int, torch.Tensor]]  # per non-last layer: its mask's block counts, by size
    row_sums: list[torch.Tensor | None]  # per read and last layer: sums (or flags) per sample
    dynamic: dict[int, dict[str, Any]]
    weight_shapes: dict[int, tuple[int, ...]]


@dataclass
class Structure:
    """The count-carrying steps of a captured model and where each layer's activity is read."""

    captured: Captured
    steps: list[Step]
    layers: list[int]  # weight steps
    inputs: list[int]  # input steps, in placeholder order
    last: set[int]  # weight steps that feed no other weight layer: all outputs active
    read: dict[int, Read]  # weight step -> where its activity is read
    weight_args: dict[int, str]  # functional weight step -> the node of its weight tensor
    _probes: dict[tuple[Any, ...], tuple[fx.GraphModule, list[Any]]] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)  # per-shape constants of the counter

    def memorize(self, key: tuple[Any, ...], value: Any, keep: int = 4) -> None:
        """``memo[key] = value``, keeping at most ``keep`` entries of the key's kind (its first
        item: "counter", "blocks"), the newest (a sweep over input shapes: memory bounded)."""
        same = [k for k in self.memo if isinstance(k, tuple) and k[0] == key[0] and k != key]
        for old in same[: max(0, len(same) - keep + 1)]:
            del self.memo[old]
        self.memo[key] = value

    @property
    def traced_with(self) -> str:
        return self.captured.traced_with

    @property
    def graph_module(self) -> fx.GraphModule:
        return self.captured.graph_module

    def _is_linear(self, layer: int) -> bool:
        step = self.steps[layer]
        if step.module is not None:
            return isinstance(step.module, LINEAR_MODULES)
        return step.params.get("op") == "linear"

    @property
    def has_convolutions(self) -> bool:
        return not all(self._is_linear(layer) for layer in self.layers)

    def run_probe(
        self, inputs: ModelInputs, tau: float, per_sample: bool, channel: bool,
        exact: bool = False, channels_last: bool = False,
        blocks: Mapping[int, Sequence[int]] | None = None,
    ) -> Probe:  # fmt: skip
        """Run the probe; ``exact``: per-sample finiteness flags instead of row sums;
        ``channels_last``: image (and volume) inputs laid out channels last, which the
        convolutions keep (their values equal up to rounding), and so do the masks;
        ``blocks``: per non-last layer, block sizes along its channels whose counts of active
        neurons the compiled kernel may take along (:func:`.kernels.mask_and_finite`)."""
        probe, attributes = self.probe_module(tau, per_sample, channel, exact)
        flat = self.captured.flat(inputs)
        if channels_last:
            flat = [_to_channels_last(value) for value in flat]
        shapes, masks, counts, sums, dynamic, weights = probe(*flat, *attributes, blocks or {})
        dynamic_steps = [s for s in self.steps if s.dynamic]
        return Probe(
            list(shapes),
            list(masks),
            list(counts),
            list(sums),
            {s.index: dict(zip(s.dynamic, values)) for s, values in zip(dynamic_steps, dynamic)},
            dict(zip(self.weight_args, weights)),
        )

    def probe_module(
        self, tau: float, per_sample: bool, channel: bool, exact: bool = False
    ) -> tuple[fx.GraphModule, list[Any]]:
        """A copy of the captured forward returning what :class:`Probe` holds, and the
        values it takes after the inputs (the attributes the forward reads: parameters and
        buffers, the same objects as the model's).

        Masks are computed right after their read point, so later in-place ops cannot alter
        them and no full activation is kept alive.
        """
        key = (tau, per_sample, channel, exact)
        cached = self._probes.get(key)
        if cached is not None:
            return cached
        old = self.graph_module.graph
        graph = fx.Graph()
        values: dict[fx.Node, fx.Node] = {}
        graph.graph_copy(old, values)
        by_name = {node.name: values[node] for node in old.nodes if node in values}
        _skip_zero_padding(graph, by_name, self.steps)
        attributes = _attributes_as_inputs(graph, self.graph_module, by_name)
        last_input = [n for n in graph.nodes if n.op == "placeholder"][-1]
        with graph.inserting_after(last_input):
            # a default: the inputs before it may have defaults (Python's rule)
            blocks = last_input = graph.placeholder("_emergeinit_blocks", default_value=None)
        shape_nodes: dict[int, fx.Node] = {}
        for step in self.steps:
            node = by_name[step.node]
            with graph.inserting_after(last_input if node.op == "placeholder" else node):
                shape_nodes[step.index] = graph.call_function(_shape_of, (node,))
        masks, counts, sums = [], [], []
        for layer in self.layers:
            if layer in self.last:
                with graph.inserting_after(shape_nodes[layer]):
                    value = by_name[self.steps[layer].node]
                    sums.append(graph.call_function(_row_sums, (value, exact)))
                continue
            read = self.read[layer]
            value = by_name[self.steps[read.step].node]
            # A Linear's channels are its last dimension (channels-last values), a convolution's
            # the first after the batch.
            axis = -1 if self._is_linear(layer) else 1
            args = (value, shape_nodes[layer], read.undo, tau, per_sample, channel, exact, axis,
                    blocks, layer)  # fmt: skip
            with graph.inserting_after(shape_nodes[read.step]):
                activity = graph.call_function(_activity, args)
            with graph.inserting_after(activity):
                masks.append(graph.call_function(operator.getitem, (activity, 0)))
            with graph.inserting_after(masks[-1]):
                sums.append(graph.call_function(operator.getitem, (activity, 1)))
            with graph.inserting_after(sums[-1]):
                counts.append(graph.call_function(operator.getitem, (activity, 2)))
        dynamic = []
        for step in self.steps:
            if step.dynamic:
                arguments = tuple(step.params[name] for name in step.dynamic)
                mapped = fx.node.map_arg(arguments, lambda n: by_name[n.name])
                with graph.inserting_before(by_name[step.node]):
                    dynamic.append(graph.call_function(_values, (mapped,)))
        weights = []
        for index, name in self.weight_args.items():
            with graph.inserting_after(shape_nodes[index]):
                weights.append(graph.call_function(_shape_of, (by_name[name],)))
        graph.output(
            (
                tuple(shape_nodes[s.index] for s in self.steps),
                tuple(masks),
                tuple(counts),
                tuple(sums),
                tuple(dynamic),
                tuple(weights),
            )
        )
        probe = fx.GraphModule(self.graph_module, graph)
        if len(self._probes) >= _MAX_PROBES:  # e.g. a sweep over tau: keep memory bounded
            self._probes.pop(next(iter(self._probes)))
        self._probes[key] = (probe, attributes)
        return probe, attributes


def _skip_zero_padding(graph: fx.Graph, by_name: dict[str, fx.Node], steps: list[Step]) -> None:
    """Drop from the probe's ``graph`` the padding steps that pad by nothing (a copy of their
    input, e.g. Hugging Face's TF-style padding before every 1x1 convolution); their readers
    read the input instead, and ``by_name`` follows. The values are the same; only a copy is
    saved. Only where no node from the input to the last reader of the copy may write in place
    (an ATen operator whose schema writes, or any module or Python function), so nothing can
    tell the input from its copy."""
    nodes = list(graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    for step in steps:
        amounts = step.params.get("pad")  # a list of ints, unless computed in forward()
        by_nothing = isinstance(amounts, (list, tuple)) and not any(amounts)
        if step.kind != "pad" or step.dynamic or not by_nothing:
            continue
        node = by_name[step.node]
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source not in order or not node.users:
            continue
        end = max(order[user] for user in node.users)
        window = nodes[order[source] : end + 1]
        if all(n is node or _writes_nothing(n) for n in window):
            node.replace_all_uses_with(source)
            graph.erase_node(node)
            by_name[step.node] = source


def _attributes_as_inputs(
    graph: fx.Graph, root: nn.Module, by_name: dict[str, fx.Node]
) -> list[Any]:
    """Turn the attribute reads of ``graph`` into inputs after the others and return their
    values, read once from ``root``: the same objects, but a dotted attribute costs a Python
    lookup per module level on every call (a Hugging Face model's forward reads hundreds)."""
    reads = [node for node in graph.nodes if node.op == "get_attr"]
    anchor = [node for node in graph.nodes if node.op == "placeholder"][-1]
    values = []
    inputs: dict[fx.Node, fx.Node] = {}
    for i, node in enumerate(reads):
        values.append(operator.attrgetter(str(node.target))(root))
        with graph.inserting_after(anchor):
            # always passed; a default as the inputs before it may have one (Python's rule)
            anchor = inputs[node] = graph.placeholder(f"_emergeinit_attribute_{i}",
                                                      default_value=None)
        node.replace_all_uses_with(anchor)
        graph.erase_node(node)
    for name, node in by_name.items():
        by_name[name] = inputs.get(node, node)
    return values


def _writes_nothing(node: fx.Node) -> bool:
    if node.op in ("placeholder", "get_attr", "output"):
        return True
    if node.op != "call_function":
        return False
    target = node.target
    if target is operator.getitem:
        return True
    return isinstance(target, torch._ops.OpOverload) and not target._schema.is_mutable


def _to_channels_last(value: Any) -> Any:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return value
    moved = kernels.channels_last(value)
    if moved is not None:
        return moved
    if value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    if value.dim() == 5:
        return value.contiguous(memory_format=torch.channels_last_3d)
    return value


def _values(arguments: tuple[Any, ...]) -> tuple[Any, ...]:
    """Concrete values of arguments computed in forward() (torch.Size becomes a tuple)."""
    return tuple(tuple(v) if isinstance(v, torch.Size) else v for v in arguments)


def _shape_of(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _row_sums(value: Any, exact: bool) -> torch.Tensor | None:
    """Per-sample sums: finite when every value of the sample is (a sum of huge finite values
    may overflow too; the caller then asks again with ``exact``: per-sample isfinite flags)."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() < 1:
        return None
    value = value.detach()
    if exact:
        return torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
    dtype = torch.float32 if value.element_size() < 4 else None
    if value.dim() == 1:
        return value.to(dtype) if dtype is not None else value
    # Over the dimensions as they lie: flattening a permuted value first would copy it.
    return value.sum(dim=tuple(range(1, value.dim())), dtype=dtype)


def _activity(
    value: Any,
    shape: tuple[int, ...] | None,
    undo: tuple[tuple[Any, ...], ...],
    tau: float,
    per_sample: bool,
    channel: bool,
    exact: bool,
    axis: int,
    blocks: Mapping[int, Sequence[int]] | None,
    layer: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[int, torch.Tensor]]:
    """``value > tau`` laid out like the layer's output (per channel: its spatial mean), the
    per-sample sums of the finiteness check, or exact per-sample flags where the compiled
    kernel does both in one pass (:mod:`.kernels`), and the counts of active neurons per block
    of channels that the kernel took along (``blocks[layer]``: sizes along ``axis``, the
    channel axis of the layer's output; ``channel``: channel granularity).
    """
    if (
        not isinstance(value, torch.Tensor)
        or shape is None
        or value.numel() != math.prod(shape)
        or not value.is_floating_point()
    ):
        return None, None, {}  # the caller names the layer and raises
    v = value.detach()
    for item in reversed(undo):
        if item[0] == "transpose":
            v = v.transpose(item[1], item[2])
        else:
            dims = [d % v.dim() for d in item[1]]
            v = v.permute([dims.index(d) for d in range(v.dim())])
    v = v.reshape(shape)
    if per_sample and not channel:
        fused = kernels.mask_and_finite(v, tau, axis, blocks.get(layer, ()) if blocks else ())
        if fused is not None:  # exact flags: ``exact`` is met either way
            return fused
    sums = _row_sums(v, exact)
    if v.dtype in (torch.float16, torch.bfloat16):
        v = v.float()  # a half-precision mean over a large batch loses the threshold
    if channel and v.dim() > 2:
        axis %= v.dim()
        v = v.mean(dim=tuple(d for d in range(1, v.dim()) if d != axis))
    if not per_sample:
        v = v.mean(dim=0, keepdim=True)
    return v > tau, sums, {}


_MAX_PROBES = 8


# --- capture and cache -----------------------------------------------------------------------


def read_structure(
    model: nn.Module, inputs: ModelInputs, capture: Capture = "auto",
    stamp: tuple[Any, ...] | None = None,
) -> Structure:  # fmt: skip
    """The structure of ``model`` called on ``inputs`` (cached; see :mod:`.capture`;
    ``stamp``: the model's fingerprint, where already at hand).

    ``capture="auto"`` tries torch.fx, then torch.export, then (for a plain ``nn.Sequential``)
    the chain of its children. A capture that fails, or holds ops without a routing rule, is
    remembered; when no capture can be measured, the first refusal (or every failure) is raised.
    """
    if capture == "fx" and not inputs.positional_tensors:
        raise ConfigError(
            "capture='fx' takes positional tensor inputs only; use capture='export' or 'auto' "
            "for keyword inputs."
        )
    cache = model_cache(model, stamp)
    failures: list[str] = []
    attempts: list[tuple[Any, str, Callable[[], Captured]]] = []
    if capture in ("auto", "fx") and inputs.positional_tensors:
        attempts.append((("fx", len(inputs.args)), "torch.fx", lambda: trace_fx(model)))
    if capture in ("auto", "export"):
        attempts.append(
            (("export", inputs.signature()), "torch.export", lambda: trace_export(model, inputs))
        )
    if capture != "export" and type(model) is nn.Sequential and inputs.positional_tensors:
        attempts.append((("sequential",), "children", lambda: trace_sequential(model)))
    tensor_leaves = [isinstance(leaf, torch.Tensor) for leaf in inputs.leaves]
    refused: UnsupportedModuleError | None = None
    for key, label, action in attempts:
        found = cache.get(key)
        if found is None:
            try:
                captured = action()
            except Exception as error:  # the tracers raise many types: "not captured"
                text = f"{type(error).__name__}: {error}".strip().splitlines()
                found = f"{label} failed ({text[0][:300] if text else type(error).__name__})"
            else:
                takes = sum(1 for n in captured.graph_module.graph.nodes if n.op == "placeholder")
                if takes != len(tensor_leaves):  # fx: forward() has more (optional) parameters
                    found = f"{label}: forward() takes {takes} inputs, got {len(tensor_leaves)}"
                else:
                    try:
                        found = analyse(captured, tensor_leaves)
                    except UnsupportedModuleError as error:
                        found = error
            remember(cache, key, found)
        if isinstance(found, Structure):
            return found
        if isinstance(found, UnsupportedModuleError):
            # Read, but with ops the measure cannot route; another tracer may see them
            # decomposed (or an in-place alias resolved), else this first refusal is raised.
            refused = refused or found
            continue
        failures.append(found)
    if refused is not None:
        raise refused
    check_forward(model, inputs)
    raise UnsupportedModuleError(
        f"could not read the structure of {type(model).__name__}:\n  " + "\n  ".join(failures)
        + "\nThe emergence measure reads the network's structure with torch.fx, or torch.export "
        "where fx fails; data-dependent control flow in forward() is not supported "
        "(docs/measure.md, 'Structure and support')."
    )


# --- analysis --------------------------------------------------------------------------------


@dataclass
class _Op:
    kind: str
    operands: list[fx.Node]  # the count-carrying operands, in order
    module: nn.Module | None = None
    params: dict[str, Any] = field(default_factory=dict)
    call: Callable[..., Any] | None = None
    reason: str = ""
    weight: fx.Node | None = None
    tuple_output: bool = False


def analyse(captured: Captured, tensor_leaves: list[bool]) -> Structure:
    """The steps of a captured graph; ``tensor_leaves`` marks which placeholders take tensors."""
    gm = captured.graph_module
    steps: list[Step] = []
    step_of: dict[fx.Node, int] = {}
    tuple_ops: dict[fx.Node, _Op] = {}
    constants: set[fx.Node] = set()  # parameters and values computed only from them
    inputs: list[int] = []
    weight_args: dict[int, str] = {}
    calls: dict[str, int] = {}
    all_placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    placeholders = [n for n, t in zip(all_placeholders, tensor_leaves) if t]

    def add(node: fx.Node, op: _Op, sources: list[int]) -> Step:
        name = _step_name(node, op.kind, calls)
        dynamic = tuple(k for k, v in op.params.items() if _has_node(v))
        step = Step(len(steps), node.name, op.kind, sources, name, op.module, op.params, dynamic,
                    op.call, op.reason)  # fmt: skip
        step.holds_weights = _holds_weights(node, op, constants)
        steps.append(step)
        step_of[node] = step.index
        return step

    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        if node.op == "placeholder":
            if node in placeholders:
                name = "input" if len(placeholders) == 1 else f"input:{node.target}"
                step = Step(len(steps), node.name, "input", [], name)
                inputs.append(step.index)
                steps.append(step)
                step_of[node] = step.index
            continue
        if node.op == "get_attr":
            constants.add(node)
            continue
        args = _node_args(node)
        carrying = [a for a in args if a in step_of or a in tuple_ops]
        if not carrying:
            if any(a in constants for a in args):
                constants.add(node)
            if _is_weight_call(gm, node):
                # Its neurons would have successors but no place in the graph: refuse.
                module = _module(gm, node) if node.op == "call_module" else None
                add(node, _Op("unsupported", [], module,
                              reason="its input does not depend on the model input"), [])
                steps[-1].feeds_weight = True  # always reported
            continue
        if node.op == "call_function" and node.target is operator.getitem:
            source = node.args[0]
            if source in tuple_ops:
                pending = tuple_ops[source]
                if node.args[1] == 0:
                    add(node, pending, [step_of[a] for a in pending.operands])
                else:
                    add(node, _Op("unsupported", [], reason="a secondary output (statistics "
                                  "or indices) used as a value"), [step_of[source]])  # fmt: skip
                continue
        op = _classify(gm, node, step_of, tuple_ops)
        if op.kind == "meta":
            continue
        if op.kind != "unsupported":
            extra = [a for a in carrying if a not in op.operands]
            if extra or not op.operands:
                op = _Op("unsupported", [], op.module, reason="more than one input carries paths")
        aliased = op.kind == "add" and _in_place(node) and _used_later(op.operands[0], node,
                                                                        order)  # fmt: skip
        if aliased:
            # x.add_(y) changes x itself: a later use of x would need y's paths too.
            op = _Op("unsupported", [], reason="an in-place addition to a value used again "
                     "afterwards; write x = x + y")  # fmt: skip
        if op.tuple_output:
            # The op returns (value, statistics...): its getitem 0 becomes the step.
            add(node, _Op("tuple", [], reason="a tuple of outputs used as a value"),
                list(dict.fromkeys(step_of[a] for a in carrying if a in step_of)))
            tuple_ops[node] = op
            continue
        if op.kind == "unsupported":
            sources = list(dict.fromkeys(step_of[a] for a in carrying if a in step_of))
        else:
            sources = [step_of[a] for a in op.operands]
        step = add(node, op, sources)
        step.feeds_weight = aliased  # reported even if its own result is unused
        if op.kind == "weight" and op.weight is not None:
            weight_args[step.index] = op.weight.name

    for step in steps:
        for source in step.sources:
            if step.index not in steps[source].users:
                steps[source].users.append(step.index)
    for step in reversed(steps):
        step.feeds_weight = step.feeds_weight or any(
            steps[u].kind == "weight" or steps[u].feeds_weight for u in step.users
        )
    problems = [
        _describe(gm, s) for s in steps
        if (s.kind == "unsupported" and (s.feeds_weight or s.holds_weights))
        or (s.kind == "tuple" and s.feeds_weight)
    ]  # fmt: skip
    problems += [
        f"{s.name} (mixes features before a weight layer)"
        for s in steps
        if s.kind == "terminal" and s.feeds_weight
    ]
    if problems:
        raise _unsupported(problems, [s.reason for s in steps if s.kind == "unsupported"])

    layers = [s.index for s in steps if s.kind == "weight"]
    if not layers:
        raise UnsupportedModuleError(
            "the model has no Linear or Conv layer (plain or transposed) on the path from its "
            "input; there are "
            "no neurons to measure."
        )
    last = {i for i in layers if not steps[i].feeds_weight}
    read = {i: _read_point(steps, i) for i in layers if i not in last}
    return Structure(captured, steps, layers, inputs, last, read, weight_args)


def _is_weight_call(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A Linear / convolution call, as a module, a function or an ATen operator."""
    if node.op == "call_module":
        return classify_module(_module(gm, node))[0] == "weight"
    if node.op != "call_function":
        return False
    rule = aten_rule(node.target)[0] if is_aten(node.target) else FUNCTIONS.get(node.target)
    return rule is not None and rule.kind == "weight"


def _in_place(node: fx.Node) -> bool:
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.target in (operator.iadd, operator.isub):
        return True
    name = getattr(getattr(node.target, "overloadpacket", None), "__name__", "")
    return name.endswith("_")


def _used_later(value: fx.Node, node: fx.Node, order: dict[fx.Node, int]) -> bool:
    return any(order[user] > order[node] for user in value.users if user is not node)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module:
    return gm.get_submodule(str(node.target))


def _holds_weights(node: fx.Node, op: _Op, constants: set[fx.Node]) -> bool:
    if op.kind != "unsupported":
        return False
    if op.module is not None:
        return any(True for _ in op.module.parameters())
    return any(a in constants for a in _node_args(node))


def _read_point(steps: list[Step], layer: int) -> Read:
    """Where the activity of ``layer``'s neurons is read (docs/measure.md, "Activity").

    Walk forward while the value is used once and only normalization, dropout, identity,
    residual additions, reshapes or permutes intervene; the first nonlinearity met is read.
    Anything else (pooling, another layer, a fork, the output) stops the walk: the last value
    before it is read. Permutes are undone when reading; a reshape and a permute on one walk
    stop it, since the layout could no longer be undone from the shapes alone.
    """
    current = layer
    undo: list[tuple[Any, ...]] = []
    reshaped = False
    while len(steps[current].users) == 1:
        user = steps[steps[current].users[0]]
        if user.kind == "nonlin":
            return Read(user.index, tuple(undo))
        if user.kind not in _PASSING:
            break
        if user.kind == "reshape":
            if undo:
                break
            reshaped = True
        if user.kind == "permute":
            item = _permutation(user)
            if reshaped or item is None:
                break
            undo.append(item)
        current = user.index
    return Read(current, tuple(undo))


def _permutation(step: Step) -> tuple[Any, ...] | None:
    """("permute", dims) or ("transpose", d0, d1) of a permute step with constant arguments."""
    if step.dynamic:
        return None
    params = step.params
    if "dims" in params:
        dims = params["dims"]
        return ("permute", tuple(dims)) if all(isinstance(d, int) for d in dims) else None
    if "dim0" in params:
        return ("transpose", int(params["dim0"]), int(params["dim1"]))
    return ("transpose", 0, 1)  # Tensor.t


def _node_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _has_node(value: Any) -> bool:
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return bool(found)


def _bind(node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    if "self" in bound:
        bound["input"] = bound.pop("self")
    return bound


def _bind_method(node: fx.Node, rule: Rule) -> dict[str, Any]:
    if rule.kind == "permute" and "dims" in rule.names and (
        len(node.args) > 2 or (len(node.args) == 2 and isinstance(node.args[1], int))
    ):
        return {"input": node.args[0], "dims": tuple(node.args[1:])}  # x.permute(0, 2, 3, 1)
    return _bind(node, rule.names)


def _classify(
    gm: fx.GraphModule,
    node: fx.Node,
    step_of: dict[fx.Node, int],
    tuple_ops: dict[fx.Node, _Op],
) -> _Op:
    """The routing kind of a node, its count-carrying operands and its parameters."""

    def carrying(value: Any) -> bool:
        return isinstance(value, fx.Node) and (value in step_of or value in tuple_ops)

    if node.op == "call_module":
        return _classify_module(gm, node)
    if node.op == "call_method":
        name = str(node.target)
        rule = METHODS.get(name)
        if rule is None:
            return _Op("unsupported", [], reason=f"Tensor.{name} has no routing rule")
        bound = _bind_method(node, rule)
    elif node.target is GETATTR:
        if node.args[1] in META_ATTRIBUTES:
            return _Op("meta", [])
        return _Op("unsupported", [], reason=f"attribute {node.args[1]!r}")
    elif node.target is operator.getitem:
        return _Op("unsupported", [], reason="indexing or slicing has no routing rule")
    elif is_aten(node.target):
        rule, names = aten_rule(node.target)
        if rule is None:
            return _Op("unsupported", [], reason="no routing rule for this operator")
        bound = _bind(node, names)
    else:
        rule = FUNCTIONS.get(node.target)
        if rule is None:
            return _Op("unsupported", [], reason="no routing rule for this function")
        bound = _bind(node, rule.names)

    kind = rule.kind
    wanted = _PARAMS.get(kind, ())
    params = {
        k: v for k, v in bound.items()
        if not carrying(v) and (k in wanted or (kind == "upsample" and k != "input"))
    }  # fmt: skip
    params.update(rule.fixed)
    primary = bound.get("input")
    if kind == "product":
        # every operand counts (mm's mat2, addmm's mat1 and mat2, einsum's list), not only
        # input and other: which ones carry counts decides the reason
        matrices = pytree.tree_leaves(list(bound.values()))
        if sum(1 for value in matrices if carrying(value)) >= 2:
            return _Op("unsupported", [], reason=REASONS["product"])
        return _Op("unsupported", [], reason="a matrix product with a constant (matmul, mm, "
                   "addmm: Hugging Face's Conv1D) is not a layer the measure knows; write it as "
                   "nn.Linear")  # fmt: skip
    if kind in REASONS:
        return _Op("unsupported", [], reason=REASONS[kind])
    if kind in ("add", "scale"):
        operands = [v for k, v in bound.items() if k in ("input", "other") and carrying(v)]
        if len(operands) >= 2:
            if kind == "add":
                return _Op("add", operands)
            return _Op("unsupported", [], reason=REASONS["product"])
        return _Op("identity", operands, params=params, tuple_output=rule.tuple_output)
    if kind == "cat":
        tensors = bound.get("tensors")
        if not isinstance(tensors, (list, tuple)) or not all(carrying(t) for t in tensors):
            return _Op("unsupported", [], reason="concatenation with a constant")
        return _Op("cat", list(tensors), params={"dim": bound.get("dim", 0)})
    if not isinstance(primary, fx.Node) or not carrying(primary):
        return _Op("unsupported", [], reason="the input reaches it through a parameter argument")
    op = _Op(kind, [primary], params=params, tuple_output=rule.tuple_output)
    if kind == "weight":
        weight = bound.get("weight")
        if not isinstance(weight, fx.Node):
            return _Op("unsupported", [], reason="a layer without a weight tensor")
        op.weight = weight
    elif kind == "pool" and params.get("return_indices"):
        return _Op("unsupported", [], reason="pooling that returns indices")
    elif kind == "pad":
        mode = params.get("mode", "constant")
        if mode != "constant":
            return _Op("unsupported", [], reason=f"{mode!r} padding copies positions; only "
                       "constant padding has a routing rule")  # fmt: skip
    elif kind == "upsample":
        mode = _upsample_mode(node.target, params)
        if mode not in UPSAMPLE_MODES or params.get("antialias"):
            return _Op("unsupported", [], reason=f"upsampling mode {mode!r} (supported: "
                       f"{', '.join(sorted(UPSAMPLE_MODES))}, without antialias)")  # fmt: skip
        op.call = node.target  # type: ignore[assignment]  # a function or an ATen operator
    return op


def _classify_module(gm: fx.GraphModule, node: fx.Node) -> _Op:
    module = _module(gm, node)
    kind, reason = classify_module(module)
    primary = node.args[0] if node.args else node.kwargs.get("input")
    if kind == "unsupported":
        return _Op("unsupported", [], module, reason=reason or "no routing rule for this module")
    if not isinstance(primary, fx.Node):
        return _Op("unsupported", [], module, reason="called without a tensor input")
    op = _Op(kind, [primary], module)
    if kind == "weight" and getattr(module, "padding_mode", "zeros") != "zeros":
        op = _Op("unsupported", [], module, reason=f"padding_mode={module.padding_mode!r} "
                 "copies positions; only zero padding has a routing rule")  # fmt: skip
    elif kind == "pool" and getattr(module, "return_indices", False):
        op = _Op("unsupported", [], module, reason="pooling that returns indices")
    elif kind == "pool":
        op.params = {
            "nd": 1 + [*MAX_POOL_MODULES, *_AVG_POOL_MODULES].index(_pool_base(module)) % 3,
            "max": isinstance(module, MAX_POOL_MODULES),
            **{k: v for k, v in vars(module).items() if not k.startswith("_")},
        }
    elif kind == "upsample":
        mode = str(getattr(module, "mode", "nearest"))
        if mode not in UPSAMPLE_MODES:
            op = _Op("unsupported", [], module, reason=f"upsampling mode {mode!r}")
        else:
            op.call = module
    elif kind == "pad":
        op.params = {"pad": tuple(module.padding), "value": module.value}  # type: ignore[arg-type]
    return op


_AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
# The arguments each kind's counting needs (upsampling keeps all, to replay the op).
_PARAMS = {
    "weight": ("stride", "padding", "dilation", "groups", "output_padding", "transposed"),
    "pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "reduce": ("dim", "keepdim"),
    "permute": ("dims", "dim0", "dim1"),
    "pad": ("pad", "mode", "value"),
    "cat": ("dim",),
}


def _pool_base(module: nn.Module) -> type[nn.Module]:
    return next(c for c in (*MAX_POOL_MODULES, *_AVG_POOL_MODULES) if isinstance(module, c))


def _upsample_mode(target: Any, params: dict[str, Any]) -> str:
    name = getattr(getattr(target, "overloadpacket", None), "__name__", "")
    if name:
        for prefix, mode in (("_upsample_nearest_exact", "nearest-exact"),
                             ("upsample_nearest", "nearest"), ("upsample_linear", "linear"),
                             ("upsample_bilinear", "bilinear"),
                             ("upsample_trilinear", "trilinear")):  # fmt: skip
            if name.startswith(prefix):
                return mode
        return name
    if getattr(target, "__name__", "") == "upsample_bilinear":
        return "bilinear"
    if getattr(target, "__name__", "") == "upsample_nearest":
        return "nearest"
    mode = params.get("mode", "nearest")
    return mode if isinstance(mode, str) else "a computed mode"


def _step_name(node: fx.Node, kind: str, calls: dict[str, int]) -> str:
    if node.op == "call_module":
        base = str(node.target)
    elif kind == "weight":
        base = _owner(node) or node.name
    else:
        base = node.name
    calls[base] = calls.get(base, 0) + 1
    return base if calls[base] == 1 else f"{base}#{calls[base]}"


def _owner(node: fx.Node) -> str:
    """The qualified name of the innermost module whose forward made this call."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    return module_path(list(stack.values())[-1][0])


def _describe(gm: fx.GraphModule, step: Step) -> str:
    node = next(n for n in gm.graph.nodes if n.name == step.node)
    if node.op == "call_module":
        label = f"{node.target} ({type(_module(gm, node)).__name__})"
    elif node.op == "call_method":
        label = f"{node.name} (Tensor.{node.target})"
    else:
        target = getattr(node.target, "__name__", str(node.target))
        owner = _owner(node)
        label = f"{node.name} ({target}{' in ' + owner if owner else ''})"
    return f"{label}: {step.reason}" if step.reason else label


def _unsupported(items: list[str], reasons: list[str]) -> UnsupportedModuleError:
    shown = items[:12]
    more = f"\n  ... and {len(items) - 12} more" if len(items) > 12 else ""
    head = "the emergence measure cannot route paths through these modules/ops"
    if any(r in (REASONS["attention"], REASONS["product"]) for r in reasons):
        head = (
            "the emergence measure does not support attention or gating, where a value computed "
            "from the input multiplies another (see docs/measure.md, 'Attention'); it cannot "
            "route paths through these modules/ops"
        )
    listed = "\n  ".join(shown)
    return UnsupportedModuleError(
        f"{head}:\n  {listed}{more}\nSupported: Linear, Conv1d-3d and ConvTranspose1d-3d (zero "
        "padding), normalization, dropout, identity, elementwise activations, max/avg/adaptive "
        "pooling, upsampling (nearest, linear), constant padding, flatten/view/reshape/permute, "
        "mean/sum over non-batch dims, residual additions, concatenation, scaling by constants "
        "(docs/measure.md, 'Structure and support')."
    )


__all__ = ["Probe", "Read", "Step", "Structure", "analyse", "read_structure"]
