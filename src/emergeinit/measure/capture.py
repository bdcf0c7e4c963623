"""Capturing a model's forward as a graph: ``torch.fx`` first, ``torch.export`` where fx fails.

``torch.fx`` traces symbolically: fast (milliseconds), independent of the input shapes, and it
keeps known modules whole; it fails on Python control flow that depends on shapes or values
(``if x.shape[1] != 3``, ``int(x.shape[-1])``), which is common in library models.
``torch.export`` (non-strict) runs the forward on fake tensors, so shape- and config-dependent
control flow simply runs; it costs about a second, specialises on the input shapes, and yields
ATen operators. Both graphs are read by the same rules (:mod:`emergeinit.measure.ops`).

The captured graph is cached per model and input signature, and recaptured when a module, a
parameter, a buffer or a mode changes (see :func:`capture`).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from ..errors import ConfigError, MetaTensorError, TracingError, UnsupportedModuleError
from .ops import LEAF_MODULES

Capture = Literal["auto", "fx", "export"]


@dataclass(frozen=True)
class ModelInputs:
    """A call of the model: positional and keyword arguments, and their tensor leaves."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def leaves(self) -> list[Any]:
        return pytree.tree_leaves((self.args, self.kwargs))

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [leaf for leaf in self.leaves if isinstance(leaf, torch.Tensor)]

    @property
    def batch(self) -> int:
        return int(self.tensors[0].shape[0])

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    @property
    def positional_tensors(self) -> bool:
        """Only positional tensors: what a symbolic fx trace can take."""
        return not self.kwargs and all(isinstance(a, torch.Tensor) for a in self.args)

    def signature(self) -> tuple[Any, ...]:
        """What torch.export specialises on: the structure, shapes, dtypes and constants."""
        leaves, spec = pytree.tree_flatten((self.args, self.kwargs))
        described = tuple(
            (tuple(v.shape), v.dtype, v.device) if isinstance(v, torch.Tensor) else repr(v)
            for v in leaves
        )
        return str(spec), described

    def as_inputs(self) -> Any:
        """Back to what :func:`model_inputs` took: a tensor, a tuple or a dict."""
        if self.kwargs:
            return dict(self.kwargs)
        return self.args[0] if len(self.args) == 1 else tuple(self.args)

    def call(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    def map_tensors(self, fn: Any) -> ModelInputs:
        args, kwargs = pytree.tree_map_only(torch.Tensor, fn, (self.args, self.kwargs))
        return ModelInputs(tuple(args), dict(kwargs))


def model_inputs(inputs: object) -> ModelInputs:
    """Normalise a tensor, a tuple/list of positional inputs or a dict of keyword inputs."""
    if isinstance(inputs, torch.Tensor):
        call = ModelInputs((inputs,), {})
    elif isinstance(inputs, (tuple, list)) and inputs:
        call = ModelInputs(tuple(inputs), {})
    elif isinstance(inputs, Mapping) and inputs:
        if not all(isinstance(k, str) for k in inputs):
            raise ConfigError("the keys of keyword inputs must be parameter names (strings).")
        call = ModelInputs((), dict(inputs))
    else:
        raise ConfigError(
            "inputs must be a tensor, a non-empty tuple/list of positional inputs or a non-empty "
            f"dict of keyword inputs (as example_input of emergence_init_); got "
            f"{type(inputs).__name__}."
        )
    tensors = call.tensors
    if not tensors:
        raise ConfigError("inputs hold no tensor; pass the batch to measure on.")
    for tensor in tensors:
        if tensor.dim() < 1 or tensor.shape[0] < 1:
            raise ConfigError(
                "every input tensor must have a first dimension that indexes samples (>= 1); "
                f"got shape {tuple(tensor.shape)}."
            )
        if tensor.shape[0] != tensors[0].shape[0]:
            raise ConfigError(
                "all input tensors must have the same batch size (first dimension); got "
                f"{sorted({int(t.shape[0]) for t in tensors})}."
            )
        if tensor.is_meta:
            raise MetaTensorError(
                "an input is on the meta device: it holds no values to measure on; pass real "
                "tensors."
            )
    if isinstance(inputs, (tuple, list)) and not call.positional_tensors:
        bad = next(a for a in inputs if not isinstance(a, torch.Tensor))
        raise ConfigError(
            f"positional inputs must be tensors; got {type(bad).__name__}. Pass other arguments "
            "as keyword inputs (a dict)."
        )
    return call


@dataclass
class Captured:
    """A captured forward: a GraphModule whose placeholders take ``flat(inputs)`` in order."""

    graph_module: fx.GraphModule
    traced_with: str  # "fx", "export" or "sequential"

    def flat(self, inputs: ModelInputs) -> list[Any]:
        if self.traced_with == "export":
            return inputs.leaves
        return list(inputs.args)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, LEAF_MODULES) or super().is_leaf_module(m, module_qualified_name)


def trace_fx(model: nn.Module) -> Captured:
    tracer = _Tracer()
    with untouched(model, ModelInputs((), {})):  # tracing runs forward() on real buffers
        graph = tracer.trace(model)
    return Captured(fx.GraphModule(tracer.root, graph), "fx")


class _TensorOutputs(nn.Module):
    """``model`` with its output cut down to the tensors in it.

    torch.export refuses outputs it cannot flatten, such as the key-value caches that Hugging
    Face decoders return (``DynamicCache``); the measure reads the graph, not the output, so
    those objects are dropped (a tensor inside one is not an output the measure needs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.wrapped = model

    def forward(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        output = self.wrapped(*args, **kwargs)
        return [leaf for leaf in pytree.tree_leaves(output) if isinstance(leaf, torch.Tensor)]


def _export(model: nn.Module, inputs: ModelInputs) -> torch.export.ExportedProgram:
    with untouched(model, inputs), warnings.catch_warnings():
        # export's advice is for its own users (register buffers, dynamic shapes): not ours
        warnings.simplefilter("ignore")
        return torch.export.export(model, inputs.args, inputs.kwargs, strict=False)


def trace_export(model: nn.Module, inputs: ModelInputs) -> Captured:
    """torch.export (non-strict) as a plain GraphModule taking the flat input leaves.

    Where export fails, it is tried once more on the model with its output cut down to tensors
    (:class:`_TensorOutputs`); if that fails too, the first error is raised."""
    try:
        program = _export(model, inputs)
        prefix = ""
    except Exception as error:
        try:
            program = _export(_TensorOutputs(model), inputs)
        except Exception:
            raise error from None
        prefix = "wrapped"
    unlifted = program.module()
    if prefix:
        _drop_module_prefix(unlifted.graph, prefix)
    # A fresh graph drops the pytree calling convention and the input guards: inputs are
    # matched to this capture by their signature (see capture()), placeholders take leaves.
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    guards = [n for n in unlifted.graph.nodes if n.op == "call_module" and n.target == "_guards_fn"]
    for node in unlifted.graph.nodes:
        if node in guards or node.op == "output":
            continue
        values[node] = graph.node_copy(node, lambda n: values[n])
    output = next(n for n in unlifted.graph.nodes if n.op == "output")
    graph.output(fx.node.map_arg(output.args[0], lambda n: values[n]))
    if len([n for n in graph.nodes if n.op == "placeholder"]) != len(inputs.leaves):
        raise UnsupportedModuleError("torch.export changed the number of inputs.")
    return Captured(fx.GraphModule(unlifted, graph), "export")


def module_path(path: object) -> str:
    """A module's qualified name as recorded in ``nn_module_stack`` (tracers may prefix it with
    the root: ``L['self'].`` or ``L__self__.``), without that prefix."""
    return str(path).removeprefix("L['self'].").removeprefix("L__self__.")


def _drop_module_prefix(graph: fx.Graph, prefix: str) -> None:
    """Name modules as in the model itself, not as in a wrapper that holds it as ``prefix``:
    the measure names weight layers by the module paths in ``nn_module_stack``."""
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            node.meta["nn_module_stack"] = {
                key: (module_path(path).removeprefix(prefix + "."), kind)
                for key, (path, kind) in stack.items()
                if module_path(path) != prefix  # the wrapped model: the root, not a module
            }


def trace_sequential(model: nn.Sequential) -> Captured:
    # A plain Sequential applies its children in order; the chain is its whole structure, so it
    # needs no tracing (the children themselves run as opaque calls, like hooked modules).
    graph = fx.Graph()
    value = graph.placeholder("input")
    for name, _child in _sequential_children(model, ""):
        value = graph.call_module(name, (value,))
    graph.output(value)
    return Captured(fx.GraphModule(model, graph), "sequential")


def _sequential_children(model: nn.Sequential, prefix: str) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        qualified = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out.extend(_sequential_children(child, qualified + "."))
        else:
            out.append((qualified, child))
    return out


# --- the cache -------------------------------------------------------------------------------

_MAX_ENTRIES = 4  # captures kept per model (input signatures for export, the fx trace)

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], dict[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class ModelScan:
    """What a measure reads from a model's modules, taken in one walk over them (every measure
    takes it anew: the model may have changed since the last).

    Attributes:
        stamp: what a captured graph depends on: modules, their types and modes, the identity
            of their parameters and buffers (:func:`fingerprint`).
        tensors: every parameter and buffer, a tensor shared by several modules once per module.
        num_parameters: parameter values, a shared parameter once (as ``model.parameters()``).
        buffers: ``(module, name, buffer)`` of the buffers a forward pass may write
            (:func:`untouched`).
    """

    stamp: tuple[Any, ...]
    tensors: list[torch.Tensor]
    num_parameters: int
    buffers: list[tuple[nn.Module, str, torch.Tensor]]


def scan_model(model: nn.Module) -> ModelScan:
    """The :class:`ModelScan` of ``model``: one walk over its modules, each one's own
    parameters and buffers read directly (``named_parameters()`` would walk them again)."""
    modules = []
    stamped = []
    tensors = []
    sizes: dict[int, int] = {}
    buffers = []
    seen: set[int] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        modules.append((name, id(module), type(module), module.training))
        stamped += [(name, key, id(t)) for key, t in module._parameters.items()]
        stamped += [(name, key, id(t)) for key, t in module._buffers.items()]
        if id(module) in seen:  # a module reached twice: its tensors are listed once
            continue
        seen.add(id(module))
        for t in module._parameters.values():
            if t is not None:
                tensors.append(t)
                sizes[id(t)] = t.numel()
        writes = module.training or type(module).forward not in _READS_IN_EVAL
        for key, t in module._buffers.items():
            if t is not None:
                tensors.append(t)
                if writes:
                    buffers.append((module, key, t))
    return ModelScan((tuple(modules), tuple(stamped)), tensors, sum(sizes.values()), buffers)


def fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """What a captured graph depends on: modules, their types and modes, parameter identity."""
    return scan_model(model).stamp


def model_cache(model: nn.Module, stamp: tuple[Any, ...] | None = None) -> dict[Any, Any]:
    """The cache of ``model``'s captures and derived structures (emptied when it changes);
    ``stamp``: its :func:`fingerprint`, where already at hand."""
    stamp = fingerprint(model) if stamp is None else stamp
    cached = _CACHE.get(model)
    if cached is None or cached[0] != stamp:
        cached = (stamp, {})
        _CACHE[model] = cached
    return cached[1]


def remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if key not in cache and len(cache) >= _MAX_ENTRIES:
        cache.pop(next(iter(cache)))  # e.g. a sweep over batch sizes: keep memory bounded
    cache[key] = value


def check_model(model: object) -> tuple[nn.Module, ModelScan]:
    """``model`` and its :func:`scan_model`, if it is a module with values."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    scan = scan_model(model)
    if not any(t.is_meta for t in scan.tensors):
        return model, scan
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_meta:
            raise MetaTensorError(
                f"{name!r} is on the meta device: the model has no values to measure yet. "
                "Materialise it first, e.g. model.to_empty(device='cpu') and an initialization."
            )
    return model, scan


# forward() of modules that write no buffer in eval mode (running statistics are only read).
_READS_IN_EVAL = {nn.BatchNorm1d.forward, nn.SyncBatchNorm.forward, nn.InstanceNorm1d.forward}


def check_forward(model: nn.Module, inputs: ModelInputs) -> None:
    """Raise a TracingError when the model's own forward fails on ``inputs``."""
    try:
        with untouched(model, inputs), torch.no_grad():
            inputs.call(model)
    except Exception as exc:
        shapes = [tuple(t.shape) for t in inputs.tensors]
        raise TracingError(
            f"the model's forward pass failed on the inputs (tensor shapes {shapes}): "
            f"{type(exc).__name__}: {exc}. Pass a batch the model accepts (a tensor, a tuple "
            "of positional inputs or a dict of keyword inputs, on the model's device). The "
            "model is unchanged."
        ) from exc


@contextlib.contextmanager
def untouched(
    model: nn.Module, inputs: ModelInputs, scan: ModelScan | None = None
) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics) and the RNG state (dropout);
    ``scan``: the model's :func:`scan_model`, where already at hand.

    PyTorch's own batch and instance normalization only write their buffers in training mode:
    in eval mode theirs are left as they are (not copied); every other module's are kept."""
    buffers = (scan_model(model) if scan is None else scan).buffers
    saved = [(module, name, buffer, buffer.detach().clone()) for module, name, buffer in buffers]
    devices = sorted({t.device.index or 0 for t in inputs.tensors if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for module, name, buffer, copy in saved:
                module._buffers[name] = buffer  # a module may have rebound the name
                buffer.copy_(copy)


__all__ = [
    "Capture",
    "Captured",
    "ModelInputs",
    "ModelScan",
    "check_forward",
    "check_model",
    "model_cache",
    "model_inputs",
    "module_path",
    "remember",
    "scan_model",
    "trace_export",
    "trace_fx",
    "trace_sequential",
    "untouched",
]
