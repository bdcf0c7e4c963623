"""``emergence_init_``: base init with the emergence scales folded in (docs/method.md).

validate -> find the depth units -> exponents and scales -> range and write checks -> draw ->
report. Everything that can fail happens before the first weight is written, so a failed call
leaves the model exactly as it was.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from .errors import (
    ConfigError,
    MetaTensorError,
    NonFiniteWeightWarning,
    NotWritableError,
    NoUnitsError,
    ScaleRangeError,
)
from .report import InitReport, MeasuredStd, SkippedRecord, UnitRecord, weights_std
from .schedule import EvenMode, check_alpha, check_choice, exponents
from .units import (
    EMBEDDING_TYPES,
    DepthOrder,
    DepthUnitList,
    UnitsMode,
    UnitWeight,
    depth_units,
    find_layers,
    layer_biases,
    layer_weights,
    unwrap_model,
)

Base = Literal[
    "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal", "keep"
]
Nonlinearity = Literal[
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]
OptimizerKind = Literal["sgd", "adam", "adamw"]


@dataclass(frozen=True)
class _Plan:
    """The validated schedule: the units, each unit's exponent (None = head left out), scales."""

    model: nn.Module
    units: DepthUnitList
    exponents: tuple[float | None, ...]
    scales: tuple[float, ...]


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def _check_parameters_materialised(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        if isinstance(param, nn.parameter.UninitializedParameter):
            raise MetaTensorError(
                f"parameter {name!r} is uninitialised (a lazy module): run one forward pass to "
                "materialise it, then call emergeinit again."
            )
        if param.is_meta:
            raise MetaTensorError(
                f"parameter {name!r} is on the meta device: there is nothing to scale yet. "
                "Materialise the model first (model.to_empty(device=...) and a base init), "
                "then call emergeinit."
            )


def _plan(
    model: nn.Module,
    alpha: float,
    *,
    units: UnitsMode,
    order: DepthOrder,
    example_input: Any,
    pivot: float,
    even: EvenMode,
    head: bool,
    groups: Sequence[Sequence[str]] | None,
) -> _Plan:
    alpha = check_alpha(alpha)
    check_choice("units", units, get_args(UnitsMode))
    check_choice("order", order, get_args(DepthOrder))
    check_choice("even", even, get_args(EvenMode))
    _check_bool("head", head)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap_model(model)
    _check_parameters_materialised(model)
    found = depth_units(model, example_input, units=units, order=order, groups=groups)
    # The schedule runs over depth levels: one unit per level in call order, units of equal
    # depth sharing a level (and so an exponent) in graph order.
    levels = sorted(set(found.depths))
    scheduled = levels if head else levels[:-1]
    if not scheduled:
        raise NoUnitsError(
            "head=False leaves no unit to schedule: the model has a single depth level. "
            "Use head=True, or a model with more than one unit."
        )
    exponent_of = dict(zip(scheduled, exponents(len(scheduled), pivot=pivot, even=even)))
    unit_exponents = [exponent_of.get(depth) for depth in found.depths]
    unit_scales = []
    for unit, exponent in zip(found, unit_exponents):
        try:
            scale = 1.0 if exponent is None else alpha**exponent
        except OverflowError:
            scale = math.inf
        unit_scales.append(scale)
        _check_scale_range(unit.name, unit.weights, scale, alpha, exponent)
    return _Plan(model, found, tuple(unit_exponents), tuple(unit_scales))


def _check_scale_range(
    unit: str, weights: Sequence[UnitWeight], scale: float, alpha: float, exponent: float | None
) -> None:
    for weight in weights:
        if not weight.param.is_floating_point():
            raise ConfigError(f"weight {weight.name!r} of unit {unit!r} is not floating point")
        info = torch.finfo(weight.param.dtype)
        if not (0.0 < scale <= info.max):
            raise ScaleRangeError(
                f"unit {unit!r}: scale alpha**e = {alpha:g}**{exponent:g} = {scale:.3g} "
                f"{'overflows' if scale > 1 else 'underflows'} {weight.param.dtype} "
                f"(weight {weight.name!r}); use a smaller alpha or fewer units "
                "(e.g. units='blocks')."
            )


def _fans(weight: UnitWeight) -> tuple[int, int]:
    # Same arithmetic as torch.nn.init so alpha=1 reproduces it bit for bit.
    tensor = weight.param.t() if weight.transposed else weight.param
    receptive = math.prod(tensor.shape[2:]) if tensor.dim() > 2 else 1
    return tensor.size(1) * receptive, tensor.size(0) * receptive


def _base_std(weight: UnitWeight, base: Base, nonlinearity: Nonlinearity | None) -> float:
    """The std of the base distribution (for orthogonal: the gain)."""
    if base.startswith("kaiming"):
        gain = nn.init.calculate_gain(nonlinearity or "relu")
        return gain / math.sqrt(_fans(weight)[0])
    gain = nn.init.calculate_gain(nonlinearity or "linear")
    if base.startswith("xavier"):
        fan_in, fan_out = _fans(weight)
        return gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return gain


def _kept_magnitude(unit: str, weight: UnitWeight) -> float:
    """The largest finite magnitude of a kept weight; warns when the weight is not finite."""
    if weight.param.numel() == 0:
        return 0.0
    tensor = weight.param.detach()
    # vector_norm(inf) reads the weight once without a temporary; inf or nan says non-finite.
    magnitude = float(torch.linalg.vector_norm(tensor, ord=math.inf))
    if math.isfinite(magnitude):
        return magnitude
    bad = int((~torch.isfinite(tensor)).sum())
    warnings.warn(
        f"base='keep' keeps weight {weight.name!r} of unit {unit!r}, which has {bad} non-finite "
        f"value(s) (nan or inf) of {tensor.numel()}; they stay non-finite after scaling. "
        "Re-initialise it with a drawn base (e.g. base='kaiming_normal') instead.",
        NonFiniteWeightWarning,
        stacklevel=4,
    )
    finite = tensor[torch.isfinite(tensor)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _check_draw_range(
    unit: str, weight: UnitWeight, base: Base, nonlinearity: Nonlinearity | None, scale: float
) -> None:
    """A drawn (or kept) weight must not overflow or vanish in its dtype: checked before writing."""
    info = torch.finfo(weight.param.dtype)
    if base == "keep":
        magnitude = _kept_magnitude(unit, weight)
        spread = 1.0
    else:
        magnitude = _base_std(weight, base, nonlinearity)
        spread = 8.0  # 8 standard deviations: a normal draw essentially never exceeds it
    if magnitude == 0.0:
        return
    if magnitude * scale * spread > info.max or magnitude * scale < info.tiny:
        way = "overflows" if scale > 1 else "underflows"
        raise ScaleRangeError(
            f"unit {unit!r}: weight {weight.name!r} (magnitude {magnitude:.3g}) times scale "
            f"{scale:.3g} {way} {weight.param.dtype}; use a smaller alpha, fewer units or a "
            "wider dtype."
        )


def _check_writable(name: str, tensor: torch.Tensor) -> None:
    """Raise :class:`NotWritableError` unless ``tensor`` can be written in place."""
    if tensor.is_inference() and not torch.is_inference_mode_enabled():
        raise NotWritableError(
            f"{name!r} is an inference tensor (made under torch.inference_mode()), which cannot "
            "be written in place outside inference mode. Build the model outside "
            "torch.inference_mode(), or replace the parameter by a normal copy "
            "(module.weight = nn.Parameter(module.weight.clone())). Nothing was changed."
        )
    if any(stride == 0 and size > 1 for stride, size in zip(tensor.stride(), tensor.shape)):
        raise NotWritableError(
            f"{name!r} has elements that share memory (an expanded view, stride 0), so it cannot "
            "be written element by element; make it a real tensor first "
            "(nn.Parameter(t.contiguous().clone())). Nothing was changed."
        )


def _check_not_empty(unit: str, weight: UnitWeight) -> None:
    if weight.param.numel() == 0:
        raise ConfigError(
            f"weight {weight.name!r} of unit {unit!r} is empty (shape "
            f"{tuple(weight.param.shape)}): a layer with no inputs or no outputs has no fan to "
            "scale. Remove the layer or give it a non-zero size. Nothing was changed."
        )


def _base_variance(weight: UnitWeight, base: Base, nonlinearity: Nonlinearity | None) -> float:
    """The variance of the base distribution of one weight element (orthogonal: mean square)."""
    std = _base_std(weight, base, nonlinearity)
    if base == "orthogonal":
        # A semi-orthogonal (rows x cols) matrix with gain g has squared norm g^2 min(rows, cols).
        rows = weight.param.size(1) if weight.transposed else weight.param.size(0)
        cols = weight.param.numel() // rows
        return std * std * min(rows, cols) / (rows * cols)
    return std * std


def _std_before(
    weights: Sequence[UnitWeight], base: Base, nonlinearity: Nonlinearity | None
) -> float:
    """The unit's std before the emergence scale: the base distribution's, or measured (keep)."""
    if base == "keep":
        return weights_std([w.param for w in weights])
    count = sum(w.param.numel() for w in weights)
    if count < 2:
        return 0.0
    pooled = sum(w.param.numel() * _base_variance(w, base, nonlinearity) for w in weights)
    return math.sqrt(pooled / count)


def _draw_(
    weight: UnitWeight,
    base: Base,
    nonlinearity: Nonlinearity | None,
    scale: float,
    generator: torch.Generator | None,
) -> None:
    tensor = weight.param
    if base == "keep":
        if scale != 1.0:
            tensor.mul_(scale)
        return
    std = _base_std(weight, base, nonlinearity)
    if base in ("kaiming_normal", "xavier_normal"):
        tensor.normal_(0.0, std * scale, generator=generator)
    elif base in ("kaiming_uniform", "xavier_uniform"):
        bound = math.sqrt(3.0) * std
        tensor.uniform_(-bound * scale, bound * scale, generator=generator)
    else:
        target = tensor.t() if weight.transposed else tensor
        nn.init.orthogonal_(target, gain=std * scale, generator=generator)


def emergence_init_(
    model: nn.Module,
    alpha: float,
    *,
    base: Base = "kaiming_normal",
    units: UnitsMode = "auto",
    order: DepthOrder = "call",
    example_input: Any = None,
    pivot: float = 0.5,
    even: EvenMode = "integer",
    head: bool = True,
    groups: Sequence[Sequence[str]] | None = None,
    nonlinearity: Nonlinearity | None = None,
    zero_bias: bool = True,
    generator: torch.Generator | None = None,
) -> InitReport:
    r"""Initialise ``model`` in place with the emergence-promoting rule (Li, George & Silva 2024).

    Every weight layer gets the base init; the weights of depth unit ``i`` (in depth order)
    are then multiplied by ``alpha ** e_i``, with ``e = -N..N`` for ``L = 2N+1`` depth levels and
    ``-N..-1, 1..N`` for ``L = 2N`` (:func:`emergeinit.exponents`): the first half is divided
    by ``alpha^n``, the second half multiplied by ``alpha^n``, ``n`` = distance from the middle.
    In call order every unit is its own level; in graph order units at equal depth share one.
    The scale is folded into the base distribution (``std * alpha**e``), so weights are written
    once; ``alpha=1`` reproduces the base init bit for bit for the same random state.

    Args:
        model: any ``nn.Module`` (``DistributedDataParallel`` and ``torch.compile`` wrappers are
            unwrapped).
        alpha: finite real > 0; 1 = the base init, > 1 promotes emergence.
        base: ``kaiming_normal`` / ``kaiming_uniform`` (fan_in), ``xavier_normal`` /
            ``xavier_uniform``, ``orthogonal``, or ``keep`` (scale the model's current weights).
        units: ``"layers"``, ``"blocks"`` (one unit per transformer or residual block) or
            ``"auto"`` (transformer blocks when recognised, layers otherwise).
        order: ``"call"`` (forward call order; registration order without ``example_input``)
            or ``"graph"`` (depth = units on the longest dataflow path from the input; needs
            ``example_input``).
        example_input: a batch (tensor, tuple of positional inputs, or dict of keyword inputs)
            used to trace the forward order; ``None`` = registration order.
        pivot: turning point as a fraction of the depth (0.5 = the middle).
        even: with an even number of levels, ``"integer"`` exponents skip 0, ``"half"`` uses
            half-integers.
        head: include the last level (the classifier) in the schedule.
        groups: explicit units, as lists of module names, in depth order.
        nonlinearity: the gain's nonlinearity (``torch.nn.init.calculate_gain``); ``None`` means
            each base init's own default: ``"relu"`` for Kaiming, gain 1 for Xavier/orthogonal.
        zero_bias: zero every bias of the weight layers (never scaled).
        generator: the random generator for the draws (default: the global one).

    Returns:
        An :class:`~emergeinit.report.InitReport`; ``print(report)`` shows the unit table.

    Raises:
        ConfigError: a bad option, an empty weight, ``order="graph"`` without an example input.
        NotWritableError: a weight or bias that cannot be written in place (an inference tensor).
        ScaleRangeError: a scale or drawn weight outside its dtype's range.
        TracingError: the example forward pass failed.
        Every error is raised before anything is written: the model is left as it was.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
        ...                       nn.Linear(16, 2))
        >>> report = emergence_init_(model, alpha=2.0, example_input=torch.randn(4, 8))
        >>> [u.exponent for u in report.units], [u.scale for u in report.units]
        ([-1.0, 0.0, 1.0], [0.5, 1.0, 2.0])
    """
    check_choice("base", base, get_args(Base))
    if nonlinearity is not None:
        check_choice("nonlinearity", nonlinearity, get_args(Nonlinearity))
    _check_bool("zero_bias", zero_bias)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator or None, got {generator!r}")
    plan = _plan(
        model,
        alpha,
        units=units,
        order=order,
        example_input=example_input,
        pivot=pivot,
        even=even,
        head=head,
        groups=groups,
    )
    model = plan.model
    scale_of = {
        id(w.param): scale for unit, scale in zip(plan.units, plan.scales) for w in unit.weights
    }
    unit_of = {id(w.param): unit.name for unit in plan.units for w in unit.weights}
    # Weights tied to an embedding belong to the embedding, which is never re-initialised.
    embedding_weights = {
        id(p) for m in model.modules() if isinstance(m, EMBEDDING_TYPES) for p in m.parameters()
    }

    drawn: list[tuple[UnitWeight, float]] = []
    seen: set[int] = set()
    biases: list[tuple[str, nn.Parameter]] = []
    for layer_name, layer in find_layers(model):
        for weight in layer_weights(layer, layer_name):
            if id(weight.param) in seen or id(weight.param) in embedding_weights:
                continue
            seen.add(id(weight.param))
            drawn.append((weight, scale_of.get(id(weight.param), 1.0)))
        biases.extend((f"{layer_name} bias", b) for b in layer_biases(layer))
    for weight, scale in drawn:
        unit = unit_of.get(id(weight.param), weight.name)
        _check_not_empty(unit, weight)
        _check_writable(weight.name, weight.param)
        _check_draw_range(unit, weight, base, nonlinearity, scale)
        if generator is not None and weight.param.device != generator.device:
            raise ConfigError(
                f"generator is on {generator.device} but weight {weight.name!r} is on "
                f"{weight.param.device}; pass a generator on the model's device."
            )
    if zero_bias:
        for name, bias in biases:
            _check_writable(name, bias)

    std_before = [_std_before(unit.weights, base, nonlinearity) for unit in plan.units]
    with torch.no_grad():
        for weight, scale in drawn:
            _draw_(weight, base, nonlinearity, scale, generator)
        if zero_bias:
            for _, bias in biases:
                bias.zero_()
    records = tuple(
        UnitRecord(
            index=index,
            name=unit.name,
            module_type=unit.module_type,
            kind=unit.kind,
            shapes=unit.shapes,
            exponent=0.0 if exponent is None else exponent,
            scale=scale,
            std_before=before,
            std_after_source=MeasuredStd([w.param for w in unit.weights]),
            scheduled=exponent is not None,
            called=unit.called,
            depth=unit.depth,
        )
        for index, (unit, exponent, scale, before) in enumerate(
            zip(plan.units, plan.exponents, plan.scales, std_before)
        )
    )
    return InitReport(
        alpha=float(alpha),
        base=base,
        mode=plan.units.mode,
        order=plan.units.order,
        pivot=float(pivot),
        even=even,
        head=head,
        units=records,
        skipped=tuple(SkippedRecord(s.name, s.reason) for s in plan.units.skipped),
        notes=plan.units.notes,
    )


def emergence_param_groups(
    model: nn.Module,
    alpha: float,
    *,
    optimizer: OptimizerKind = "sgd",
    lr: float | None = None,
    weight_decay: float | None = None,
    units: UnitsMode = "auto",
    order: DepthOrder = "call",
    example_input: Any = None,
    pivot: float = 0.5,
    even: EvenMode = "integer",
    head: bool = True,
    groups: Sequence[Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    r"""The learning-rate form of the rule: optimizer parameter groups, weights untouched.

    Scaling unit ``i``'s weights by ``c_i = alpha**e_i`` scales its gradient by ``1/c_i``; for
    SGD its relative update by ``1/c_i^2``, for Adam and AdamW (scale-invariant steps) by
    ``1/c_i``. So the unit's group gets ``lr_multiplier = alpha**(-2 e_i)`` (``"sgd"``) or
    ``alpha**(-e_i)`` (``"adam"``, ``"adamw"``). Every other trainable parameter (biases, norms,
    embeddings, a head left out with ``head=False``) is in a last group with multiplier 1.

    The equivalence with :func:`emergence_init_` is exact only where the network function is
    invariant to the scales: bias-free homogeneous (ReLU) networks whose exponents sum to zero,
    and units each followed by BatchNorm (Adam's ``eps`` aside).

    Weight decay acts on the weights the optimizer holds: on the unscaled weights here, on the
    scaled ones in the weight form, so an optimizer-wide ``weight_decay`` breaks the
    equivalence (under AdamW a unit's relative decay per step becomes ``lr * m * wd`` instead of
    ``lr * wd``). Pass ``weight_decay`` here to give each unit's group the decay that keeps it
    exact: ``wd * c_i**2`` for ``"sgd"`` and ``"adam"`` (L2 decay added to the gradient),
    ``wd * c_i`` for ``"adamw"`` (decoupled decay); the last group gets ``wd``. Derivation in
    docs/method.md ("The learning-rate form").

    Each group holds ``params``, ``lr_multiplier``, ``name``, ``exponent`` and, when given,
    ``lr = lr * lr_multiplier`` and ``weight_decay``; PyTorch optimizers keep the extra keys.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> groups = emergence_param_groups(model, 2.0, lr=0.1)
        >>> [(g["name"], g["lr"]) for g in groups]
        [('0', 0.4), ('2', 0.025), ('rest', 0.1)]
        >>> groups = emergence_param_groups(model, 2.0, optimizer="adamw", weight_decay=0.01)
        >>> [(g["name"], g["lr_multiplier"], g["weight_decay"]) for g in groups]
        [('0', 2.0, 0.005), ('2', 0.5, 0.02), ('rest', 1.0, 0.01)]
    """
    check_choice("optimizer", optimizer, get_args(OptimizerKind))
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a finite number or None, got {value!r}")
        low_ok = value >= 0 if name == "weight_decay" else value > 0
        if not low_ok or not math.isfinite(value):
            bound = ">= 0" if name == "weight_decay" else "> 0"
            raise ConfigError(f"{name} must be a finite number {bound} or None, got {value!r}")
    plan = _plan(
        model,
        alpha,
        units=units,
        order=order,
        example_input=example_input,
        pivot=pivot,
        even=even,
        head=head,
        groups=groups,
    )
    power = 2.0 if optimizer == "sgd" else 1.0
    # Decay that keeps the learning-rate form exact: L2 decay enters the gradient (scaled by
    # c^2 relative to it), decoupled decay multiplies the weights (scaled by c through the lr).
    decay_power = 1.0 if optimizer == "adamw" else 2.0
    placed: set[int] = set()
    result: list[dict[str, Any]] = []
    for unit, exponent, scale in zip(plan.units, plan.exponents, plan.scales):
        if exponent is None:
            continue
        params = [w.param for w in unit.weights if w.param.requires_grad]
        if not params:
            continue
        placed.update(id(p) for p in params)
        group = {
            "params": params,
            "lr_multiplier": scale ** (-power),
            "name": unit.name,
            "exponent": exponent,
        }
        if weight_decay is not None:
            group["weight_decay"] = weight_decay * scale**decay_power
        result.append(group)
    rest = [p for p in plan.model.parameters() if p.requires_grad and id(p) not in placed]
    if rest:
        group = {"params": rest, "lr_multiplier": 1.0, "name": "rest", "exponent": 0.0}
        if weight_decay is not None:
            group["weight_decay"] = float(weight_decay)
        result.append(group)
    if lr is not None:
        for group in result:
            group["lr"] = lr * group["lr_multiplier"]
    return result


__all__ = ["Base", "Nonlinearity", "OptimizerKind", "emergence_init_", "emergence_param_groups"]
