"""Depth units: which modules the rule scales, and in what order (SPEC 1.2).

A unit is one weight layer (Linear, Conv, ConvTranspose, Bilinear, MultiheadAttention) or, with
``units="blocks"``, one transformer block whose every weight gets the same scale. Order is the
forward execution order, read from one example forward pass; without an example input it is the
registration order, and the result says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import nn

from .errors import ConfigError, NoUnitsError, TracingError
from .schedule import check_choice

UnitsMode = Literal["auto", "layers", "blocks"]
Order = Literal["traced", "registration", "given"]

LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Bilinear,
    nn.MultiheadAttention,
)
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.RNNCellBase)
BLOCK_TYPES: tuple[type[nn.Module], ...] = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
BLOCK_SUFFIXES = ("Block", "Layer")

UnitKind = Literal["layer", "block", "group"]


class _Candidate(NamedTuple):
    """A unit before its weights are collected; its first member anchors its place in order."""

    name: str
    module_type: str
    kind: UnitKind
    members: list[tuple[str, nn.Module]]

    @property
    def anchor(self) -> int:
        return id(self.members[0][1])


@dataclass(frozen=True, eq=False)
class UnitWeight:
    """A unit's weight; ``transposed`` marks Hugging Face ``Conv1D`` (in, out) weights."""

    name: str
    param: torch.Tensor
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.param.shape)


@dataclass(frozen=True, eq=False)
class DepthUnit:
    """One depth unit: a layer, a block or an explicit group, with the weights it scales."""

    name: str
    module_type: str
    kind: UnitKind
    modules: tuple[str, ...]
    weights: tuple[UnitWeight, ...]
    called: bool = True

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(w.shape for w in self.weights)


@dataclass(frozen=True)
class SkippedParameter:
    """A parameter the rule leaves unscaled, and why."""

    name: str
    reason: str


class DepthUnitList(list[DepthUnit]):
    """The depth units in order; also says how the order was found and what was left out."""

    def __init__(
        self,
        units: Iterable[DepthUnit],
        *,
        order: Order,
        mode: Literal["layers", "blocks", "groups"],
        skipped: Sequence[SkippedParameter] = (),
        notes: Sequence[str] = (),
    ):
        super().__init__(units)
        self.order = order
        self.mode = mode
        self.skipped = tuple(skipped)
        self.notes = tuple(notes)

    @property
    def traced(self) -> bool:
        return self.order == "traced"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module behind ``DistributedDataParallel``, ``DataParallel``, ``torch.compile``."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _is_hf_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D (GPT-2) stores its weight as (in, out).
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def is_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a weight layer the rule can scale."""
    return isinstance(module, LAYER_TYPES) or _is_hf_conv1d(module)


def layer_weights(module: nn.Module, prefix: str) -> list[UnitWeight]:
    """The weight tensors (dim >= 2) of a layer; for attention, its input and output projections."""
    dot = f"{prefix}." if prefix else ""
    if isinstance(module, nn.MultiheadAttention):
        names = (
            ["in_proj_weight"]
            if module.in_proj_weight is not None
            else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
        )
        found = [UnitWeight(dot + n, getattr(module, n)) for n in names]
        return [*found, UnitWeight(dot + "out_proj.weight", module.out_proj.weight)]
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
        return [UnitWeight(dot + "weight", weight, transposed=_is_hf_conv1d(module))]
    return []


def layer_biases(module: nn.Module) -> list[nn.Parameter]:
    """The bias vectors of a layer (zeroed by ``zero_bias=True``, never scaled)."""
    if isinstance(module, nn.MultiheadAttention):
        candidates: list[Any] = [module.in_proj_bias, module.out_proj.bias]
    else:
        candidates = [getattr(module, "bias", None)]
    return [b for b in candidates if isinstance(b, nn.Parameter)]


def find_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every weight layer in registration order (not looking inside a layer: MHA out_proj)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(_within(name, outer) for outer, _ in found):
            continue
        if is_layer(module):
            found.append((name, module))
    return found


def _contains_attention(module: nn.Module) -> bool:
    return any(
        isinstance(sub, nn.MultiheadAttention) or "Attention" in type(sub).__name__
        for sub in list(module.modules())[1:]
    )


def is_block(module: nn.Module) -> bool:
    """A transformer block: an encoder/decoder layer, or a ``*Block``/``*Layer`` with attention."""
    if isinstance(module, BLOCK_TYPES):
        return True
    return type(module).__name__.endswith(BLOCK_SUFFIXES) and _contains_attention(module)


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost transformer blocks in registration order."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{outer}.") for outer, _ in found):
            continue
        if is_block(module):
            found.append((name, module))
    return found


def _within(name: str, outer: str) -> bool:
    return outer == "" or name == outer or name.startswith(f"{outer}.")


def call_model(model: nn.Module, example_input: Any) -> Any:
    """Call ``model`` on a tensor, a tuple/list of positional inputs or a dict of keyword inputs."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def _model_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def trace_first_calls(
    model: nn.Module, example_input: Any, anchors: Sequence[nn.Module]
) -> dict[int, int]:
    """Run one forward pass and return ``id(module) -> rank of its first call`` for ``anchors``.

    The pass runs in training mode (eval-mode fused paths such as ``TransformerEncoderLayer``'s
    skip submodules) under ``torch.no_grad()``; every module's mode, every buffer (BatchNorm
    running statistics) and the global RNG state are restored afterwards, also on failure.
    """
    first_call: dict[int, int] = {}

    def record(module: nn.Module, _args: Any) -> None:
        first_call.setdefault(id(module), len(first_call))

    modes = [(m, m.training) for m in model.modules()]
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    handles = [m.register_forward_pre_hook(record) for m in {id(a): a for a in anchors}.values()]
    try:
        with torch.random.fork_rng(devices=_model_devices(model)), torch.no_grad():
            model.train()
            call_model(model, example_input)
    except Exception as exc:
        raise TracingError(
            f"the example forward pass failed ({type(exc).__name__}: {exc}). Pass an "
            "example_input the model accepts (a tensor, a tuple of positional inputs or a dict "
            "of keyword inputs, on the model's device; a batch of at least 2 with BatchNorm), "
            "or pass example_input=None to use registration order. The model is unchanged."
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                if buffer.shape == saved.shape:
                    buffer.copy_(saved)
                else:
                    buffer.data = saved
    return first_call


def _skip_reason(model: nn.Module, param_name: str, grouped: bool) -> str:
    owner_name = param_name.rpartition(".")[0]
    owner = model.get_submodule(owner_name) if owner_name else model
    if isinstance(owner, EMBEDDING_TYPES):
        return "embedding (never scaled)"
    if isinstance(owner, NORM_TYPES):
        return "normalization (never scaled)"
    if isinstance(owner, RECURRENT_TYPES):
        return "recurrent layer (not supported; left as is)"
    if is_layer(owner):
        if grouped:
            return "not in any group"
        return "bias (zeroed with zero_bias=True, never scaled)"
    return f"raw parameter of {type(owner).__name__} (not a weight layer)"


def depth_units(
    model: nn.Module,
    example_input: Any = None,
    *,
    units: UnitsMode = "auto",
    groups: Sequence[Sequence[str]] | None = None,
) -> DepthUnitList:
    """The model's depth units in forward order (SPEC 1.2).

    With ``example_input`` the order is traced with forward pre-hooks in one forward pass (training
    mode, ``torch.no_grad()``; modes, buffers and RNG restored); a module called twice counts at
    its first call and units never called go last, with a note. Without it, registration order.
    ``units="auto"`` uses blocks when it recognises transformer blocks, layers otherwise.
    ``groups`` (lists of module names) makes each list one unit, in the order given.

    A parameter shared by several modules is scaled once, by its first unit; a module whose only
    weight is tied elsewhere (or to an embedding) is not a unit.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [u.name for u in depth_units(model, torch.randn(2, 4))]
        ['0', '2']
    """
    check_choice("units", units, get_args(UnitsMode))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap_model(model)
    embedding_weights = {
        id(p): name
        for name, p in model.named_parameters()
        if isinstance(model.get_submodule(name.rpartition(".")[0]), EMBEDDING_TYPES)
    }
    layers = find_layers(model)

    mode: Literal["layers", "blocks", "groups"]
    candidates: list[_Candidate]
    if groups is not None:
        if units != "auto":
            raise ConfigError("pass either units= or groups=, not both")
        mode = "groups"
        candidates = _group_candidates(model, groups)
    else:
        blocks = find_blocks(model) if units != "layers" else []
        if units == "blocks" and not blocks:
            raise ConfigError(
                "units='blocks' but no transformer block was recognised (nn.TransformerEncoderLayer"
                "/DecoderLayer, or a *Block/*Layer class containing attention); pass groups=[[...]]"
                " naming the modules of each block, or units='layers'."
            )
        mode = "blocks" if blocks else "layers"
        candidates = [
            _Candidate(name, type(m).__name__, "block", [(name, m)]) for name, m in blocks
        ]
        candidates += [
            _Candidate(name, type(m).__name__, "layer", [(name, m)])
            for name, m in layers
            if not any(_within(name, block) for block, _ in blocks)
        ]

    order: Order
    notes: list[str] = []
    never_called: set[str] = set()
    if mode == "groups":
        order, ranked = "given", candidates
    elif example_input is not None:
        order = "traced"
        anchors = [m for c in candidates for _, m in c.members]
        first = trace_first_calls(model, example_input, anchors)
        called = sorted((c for c in candidates if c.anchor in first), key=lambda c: first[c.anchor])
        never = _in_registration_order(model, [c for c in candidates if c.anchor not in first])
        ranked = called + never
        never_called = {c.name for c in never}
        if never:
            notes.append(
                "not called by the example forward pass, placed last: "
                + ", ".join(c.name for c in never)
            )
    else:
        order, ranked = "registration", _in_registration_order(model, candidates)
        notes.append("order: registration (pass example_input to trace the forward order)")

    claimed: dict[int, str] = {pid: f"embedding {name}" for pid, name in embedding_weights.items()}
    result: list[DepthUnit] = []
    skipped: list[SkippedParameter] = []
    for name, module_type, kind, members in ranked:
        weights: list[UnitWeight] = []
        for member_name, member in members:
            for layer_name, layer in find_layers(member):
                full = ".".join(part for part in (member_name, layer_name) if part)
                for weight in layer_weights(layer, full):
                    if id(weight.param) in claimed:
                        skipped.append(
                            SkippedParameter(weight.name, f"tied to {claimed[id(weight.param)]}")
                        )
                        continue
                    claimed[id(weight.param)] = f"unit {name}"
                    weights.append(weight)
        if not weights:
            notes.append(f"{name} is not a unit: its only weight is tied to another module")
            continue
        module_names = tuple(n for n, _ in members)
        unit = DepthUnit(
            name, module_type, kind, module_names, tuple(weights), name not in never_called
        )
        result.append(unit)

    if not result:
        raise NoUnitsError(
            f"{type(model).__name__} has no module the rule can scale (Linear, Conv1d-3d, "
            "ConvTranspose, Bilinear, MultiheadAttention or transformer blocks); embeddings, "
            "normalization layers and recurrent layers are never scaled."
        )
    tied_names = {s.name for s in skipped}
    accounted = {id(w.param) for u in result for w in u.weights} | {
        id(p) for n, p in model.named_parameters() if n in tied_names
    }
    for param_name, param in model.named_parameters():
        if id(param) not in accounted:
            reason = _skip_reason(model, param_name, grouped=mode == "groups")
            skipped.append(SkippedParameter(param_name, reason))
    return DepthUnitList(result, order=order, mode=mode, skipped=skipped, notes=notes)


def _in_registration_order(model: nn.Module, candidates: list[_Candidate]) -> list[_Candidate]:
    rank_of = {id(m): i for i, m in enumerate(model.modules())}
    return sorted(candidates, key=lambda c: rank_of[c.anchor])


def _group_candidates(model: nn.Module, groups: Sequence[Sequence[str]]) -> list[_Candidate]:
    if isinstance(groups, (str, bytes)) or not all(
        isinstance(g, Sequence) and not isinstance(g, str) and g for g in groups
    ):
        raise ConfigError("groups must be a list of non-empty lists of module names")
    known = dict(model.named_modules())
    seen: dict[str, int] = {}
    candidates: list[_Candidate] = []
    for index, group in enumerate(groups):
        members = []
        for name in group:
            if name not in known:
                close = [k for k in known if k and (name in k or k in name)][:5]
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(
                    f"groups[{index}] names {name!r}, which is not a module of the model{hint}"
                )
            for other, other_index in seen.items():
                if other_index != index and (_within(name, other) or _within(other, name)):
                    raise ConfigError(
                        f"module {name!r} (groups[{index}]) overlaps "
                        f"{other!r} (groups[{other_index}])"
                    )
            seen[name] = index
            members.append((name, known[name]))
        types = sorted({type(m).__name__ for _, m in members})
        candidates.append(_Candidate("+".join(group), "+".join(types), "group", members))
    return candidates


__all__ = [
    "DepthUnit",
    "DepthUnitList",
    "SkippedParameter",
    "UnitWeight",
    "UnitsMode",
    "call_model",
    "depth_units",
    "find_blocks",
    "find_layers",
    "is_block",
    "is_layer",
    "layer_biases",
    "layer_weights",
    "trace_first_calls",
    "unwrap_model",
]
