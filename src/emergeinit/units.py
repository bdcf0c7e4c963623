"""Depth units: which modules the rule scales, and in what order (docs/method.md, "Units").

A unit is one weight layer (Linear, Conv, ConvTranspose, Bilinear, MultiheadAttention, a
recurrent cell, or one layer and direction of a recurrent module) or, with ``units="blocks"``,
one transformer or residual block whose every weight gets the same scale. Order is the forward
call order, or with ``order="graph"`` the longest dataflow path from the input, read from one
example forward pass; without an example input it is the registration order, and the result
says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import nn

from .errors import ConfigError, NoUnitsError
from .schedule import check_choice
from .tracing import call_model, trace_depths, trace_first_calls

UnitsMode = Literal["auto", "layers", "blocks"]
DepthOrder = Literal["call", "graph"]
# How the order of a unit list was found: traced call order, registration order (no example
# input), the order of explicit groups, or the dataflow graph's depths.
Order = Literal["traced", "registration", "given", "graph"]

RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.RNNCellBase)
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
    *RECURRENT_TYPES,
)
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
BLOCK_TYPES: tuple[type[nn.Module], ...] = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
BLOCK_SUFFIXES = ("Block", "Layer")
# Residual blocks are recognised by class name (lower-cased suffix): torchvision and timm
# BasicBlock / Bottleneck / InvertedResidual, Hugging Face ResNetBasicLayer /
# ResNetBottleNeckLayer / MobileNetV2InvertedResidual, and common ResBlock / ResidualBlock.
RESIDUAL_BLOCK_SUFFIXES = (
    "basicblock",
    "bottleneck",
    "bottleneckblock",
    "basiclayer",
    "bottlenecklayer",
    "invertedresidual",
    "resblock",
    "residualblock",
)

UnitKind = Literal["layer", "block", "group"]

# weight_ih_l0, weight_hh_l2_reverse, weight_hr_l1 (LSTM projections): layer and direction.
_RECURRENT_WEIGHT = re.compile(r"weight_(?:ih|hh|hr)_(l(\d+)(?:_reverse)?)")


class _Candidate(NamedTuple):
    """A unit before its weights are collected; its first member anchors its place in order.

    ``part`` names one layer and direction of a recurrent module (``"l0"``, ``"l0_reverse"``):
    such a unit takes only that part's weights.
    """

    name: str
    module_type: str
    kind: UnitKind
    members: list[tuple[str, nn.Module]]
    part: str | None = None

    @property
    def anchor(self) -> int:
        return id(self.members[0][1])

    @property
    def level(self) -> int:
        """Levels below the anchor's: layer ``k`` of a stacked recurrent module is ``k``."""
        return int(self.part[1:].split("_")[0]) if self.part else 0


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
    """One depth unit: a layer, a block or an explicit group, with the weights it scales.

    ``depth`` is its level: ``1, 2, ...`` in call, registration or given order (one unit per
    level); with ``order="graph"`` the number of units on the longest dataflow path from the
    input to it, shared by units at equal depth.
    """

    name: str
    module_type: str
    kind: UnitKind
    modules: tuple[str, ...]
    weights: tuple[UnitWeight, ...]
    called: bool = True
    depth: int = 0

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
        """Whether the order came from an example forward pass (call or graph order)."""
        return self.order in ("traced", "graph")

    @property
    def depths(self) -> list[int]:
        return [u.depth for u in self]


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
    """The weight tensors (dim >= 2) of a layer, in registration order.

    For attention: its input and output projections; for a recurrent module or cell: every
    ``weight_ih`` / ``weight_hh`` (and LSTM ``weight_hr``) matrix.
    """
    dot = f"{prefix}." if prefix else ""
    if isinstance(module, nn.MultiheadAttention):
        names = (
            ["in_proj_weight"]
            if module.in_proj_weight is not None
            else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
        )
        found = [UnitWeight(dot + n, getattr(module, n)) for n in names]
        return [*found, UnitWeight(dot + "out_proj.weight", module.out_proj.weight)]
    if isinstance(module, RECURRENT_TYPES):
        return [
            UnitWeight(dot + name, param)
            for name, param in module.named_parameters(recurse=False)
            if name.startswith("weight") and param.dim() >= 2
        ]
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
        return [UnitWeight(dot + "weight", weight, transposed=_is_hf_conv1d(module))]
    return []


def recurrent_parts(module: nn.RNNBase) -> list[str]:
    """The layers and directions of a recurrent module: ``l0, l0_reverse, l1, ...``."""
    directions = ("", "_reverse") if module.bidirectional else ("",)
    return [f"l{layer}{d}" for layer in range(module.num_layers) for d in directions]


def _part_of(weight_name: str) -> str | None:
    match = _RECURRENT_WEIGHT.fullmatch(weight_name.rpartition(".")[2])
    return match.group(1) if match else None


def layer_biases(module: nn.Module) -> list[nn.Parameter]:
    """The bias vectors of a layer (zeroed by ``zero_bias=True``, never scaled)."""
    if isinstance(module, nn.MultiheadAttention):
        candidates: list[Any] = [module.in_proj_bias, module.out_proj.bias]
    elif isinstance(module, RECURRENT_TYPES):
        candidates = [p for n, p in module.named_parameters(recurse=False) if n.startswith("bias")]
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


def is_residual_block(module: nn.Module) -> bool:
    """A residual block, recognised by class name: ``BasicBlock``, ``Bottleneck``, ... .

    The lower-cased class name ends in one of :data:`RESIDUAL_BLOCK_SUFFIXES` and the module
    holds at least one weight layer.
    """
    name = type(module).__name__.lower()
    return name.endswith(RESIDUAL_BLOCK_SUFFIXES) and any(is_layer(m) for m in module.modules())


def find_blocks(model: nn.Module, *, residual: bool = False) -> list[tuple[str, nn.Module]]:
    """The outermost transformer blocks (and residual blocks with ``residual=True``)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{outer}.") for outer, _ in found):
            continue
        if is_block(module) or (residual and is_residual_block(module)):
            found.append((name, module))
    return found


def _within(name: str, outer: str) -> bool:
    return outer == "" or name == outer or name.startswith(f"{outer}.")


def _skip_reason(model: nn.Module, param_name: str, grouped: bool) -> str:
    owner_name = param_name.rpartition(".")[0]
    owner = model.get_submodule(owner_name) if owner_name else model
    if isinstance(owner, EMBEDDING_TYPES):
        return "embedding (never scaled)"
    if isinstance(owner, NORM_TYPES):
        return "normalization (never scaled)"
    if is_layer(owner):
        if grouped:
            return "not in any group"
        return "bias (zeroed with zero_bias=True, never scaled)"
    return f"raw parameter of {type(owner).__name__} (not a weight layer)"


def _layer_candidates(name: str, module: nn.Module) -> list[_Candidate]:
    """One unit per layer; a recurrent module gives one per layer and direction."""
    kind = type(module).__name__
    if isinstance(module, nn.RNNBase):
        return [
            _Candidate(f"{name}[{part}]", kind, "layer", [(name, module)], part)
            for part in recurrent_parts(module)
        ]
    return [_Candidate(name, kind, "layer", [(name, module)])]


def depth_units(
    model: nn.Module,
    example_input: Any = None,
    *,
    units: UnitsMode = "auto",
    order: DepthOrder = "call",
    groups: Sequence[Sequence[str]] | None = None,
) -> DepthUnitList:
    """The model's depth units in depth order (docs/method.md, "Units" and "Order").

    ``order="call"`` (the default): with ``example_input`` the order is traced with forward
    pre-hooks in one forward pass (training mode, ``torch.no_grad()``; modes, buffers and RNG
    restored); a module called twice counts at its first call and units never called go last,
    with a note. Without it, registration order. Each unit is its own depth level.

    ``order="graph"`` (needs ``example_input``): a unit's depth is the number of units on the
    longest path from the input to it in the traced dataflow graph (functional ops such as a
    residual ``+`` or ``torch.cat`` included); units at equal depth share a level and are listed
    by depth, then call order. A module called twice takes its deepest call.

    ``units="auto"`` uses blocks when it recognises transformer blocks, layers otherwise;
    ``units="blocks"`` also takes residual blocks (:func:`is_residual_block`). A recurrent module
    (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) gives one unit per layer and direction, named
    ``lstm[l0]``, ``lstm[l0_reverse]``, ...; in graph order layer ``k`` is ``k`` levels below
    the module's first. ``groups`` (lists of module names) makes each list one unit, in the order
    given.

    A parameter shared by several modules is scaled once, by its first unit; a module whose only
    weight is tied elsewhere (or to an embedding) is not a unit.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [u.name for u in depth_units(model, torch.randn(2, 4))]
        ['0', '2']
        >>> lstm = nn.LSTM(4, 8, num_layers=2, bidirectional=True)
        >>> [(u.name, u.depth) for u in depth_units(lstm, torch.randn(3, 2, 4), order="graph")]
        [('[l0]', 1), ('[l0_reverse]', 1), ('[l1]', 2), ('[l1_reverse]', 2)]
    """
    check_choice("units", units, get_args(UnitsMode))
    check_choice("order", order, get_args(DepthOrder))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if order == "graph" and groups is not None:
        raise ConfigError(
            "order='graph' finds the depth of modules; groups= already gives the units in depth "
            "order. Pass one of them."
        )
    if order == "graph" and example_input is None:
        raise ConfigError(
            "order='graph' reads the dataflow graph from one forward pass: pass example_input "
            "(a batch the model accepts), or use order='call'."
        )
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
        blocks = find_blocks(model, residual=units == "blocks") if units != "layers" else []
        if units == "blocks" and not blocks:
            raise ConfigError(
                "units='blocks' but no transformer block (nn.TransformerEncoderLayer/"
                "DecoderLayer, a *Block/*Layer class containing attention) and no residual block "
                "(BasicBlock, Bottleneck, ...; see docs/method.md) was recognised; pass "
                "groups=[[...]] naming the modules of each block, or units='layers'."
            )
        mode = "blocks" if blocks else "layers"
        candidates = [
            _Candidate(name, type(m).__name__, "block", [(name, m)]) for name, m in blocks
        ]
        for name, module in layers:
            if not any(_within(name, block) for block, _ in blocks):
                candidates += _layer_candidates(name, module)

    found_order: Order
    notes: list[str] = []
    never: list[_Candidate] = []
    depth_of: dict[int, int] = {}
    if mode == "groups":
        found_order, ranked = "given", candidates
    elif example_input is not None:
        anchors = [m for c in candidates for _, m in c.members]
        if order == "graph":
            found_order = "graph"
            span = {id(m): m.num_layers for _, m in layers if isinstance(m, nn.RNNBase)}
            first, depth_of = trace_depths(model, example_input, anchors, span)
        else:
            found_order = "traced"
            first = trace_first_calls(model, example_input, anchors)
        called = [c for c in candidates if c.anchor in first]
        if order == "graph":
            called.sort(key=lambda c: (depth_of[c.anchor] + c.level, first[c.anchor]))
        else:
            called.sort(key=lambda c: first[c.anchor])  # stable: recurrent parts stay in order
        never = _in_registration_order(model, [c for c in candidates if c.anchor not in first])
        ranked = called + never
        if never:
            notes.append(
                "not called by the example forward pass, placed last: "
                + ", ".join(c.name for c in never)
            )
    else:
        found_order, ranked = "registration", _in_registration_order(model, candidates)
        notes.append("order: registration (pass example_input to trace the forward order)")

    never_called = {c.name for c in never}
    claimed: dict[int, str] = {pid: f"embedding {name}" for pid, name in embedding_weights.items()}
    result: list[DepthUnit] = []
    skipped: list[SkippedParameter] = []
    for candidate in ranked:
        weights: list[UnitWeight] = []
        for member_name, member in candidate.members:
            for layer_name, layer in find_layers(member):
                full = ".".join(part for part in (member_name, layer_name) if part)
                for weight in layer_weights(layer, full):
                    if candidate.part is not None and _part_of(weight.name) != candidate.part:
                        continue
                    if id(weight.param) in claimed:
                        skipped.append(
                            SkippedParameter(weight.name, f"tied to {claimed[id(weight.param)]}")
                        )
                        continue
                    claimed[id(weight.param)] = f"unit {candidate.name}"
                    weights.append(weight)
        if not weights:
            notes.append(
                f"{candidate.name} is not a unit: its only weight is tied to another module"
            )
            continue
        if found_order == "graph" and candidate.name not in never_called:
            depth = depth_of[candidate.anchor] + candidate.level
        else:  # one level per unit, after every traced level
            depth = max((u.depth for u in result), default=0) + 1
        module_names = tuple(n for n, _ in candidate.members)
        unit = DepthUnit(
            candidate.name,
            candidate.module_type,
            candidate.kind,
            module_names,
            tuple(weights),
            candidate.name not in never_called,
            depth,
        )
        result.append(unit)

    if not result:
        raise NoUnitsError(
            f"{type(model).__name__} has no module the rule can scale (Linear, Conv1d-3d, "
            "ConvTranspose, Bilinear, MultiheadAttention, recurrent layers or blocks); "
            "embeddings and normalization layers are never scaled."
        )
    tied_names = {s.name for s in skipped}
    accounted = {id(w.param) for u in result for w in u.weights} | {
        id(p) for n, p in model.named_parameters() if n in tied_names
    }
    for param_name, param in model.named_parameters():
        if id(param) not in accounted:
            reason = _skip_reason(model, param_name, grouped=mode == "groups")
            skipped.append(SkippedParameter(param_name, reason))
    return DepthUnitList(result, order=found_order, mode=mode, skipped=skipped, notes=notes)


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
    "DepthOrder",
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
    "is_residual_block",
    "layer_biases",
    "layer_weights",
    "recurrent_parts",
    "trace_depths",
    "trace_first_calls",
    "unwrap_model",
]
