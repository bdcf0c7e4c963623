r"""The emergence of a neural network on real activations (SPEC 2.2).

Nodes are neurons: the input features and the outputs of every Linear / Conv layer (per channel
and position, or per channel with ``granularity="channel"``). A layer's neuron is active when the
first nonlinearity after it exceeds ``tau``; inputs and the last layer's outputs are active.

Both forms come out of one forward propagation of path counts, layer by layer, batched over
samples (see :mod:`emergeinit.measure.counting`); the structure is read with ``torch.fx``
(:mod:`emergeinit.measure.structure`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from ..errors import ConfigError
from ..schedule import check_choice
from .counting import Counter
from .structure import read_structure

Form = Literal["cross", "li"]
Activity = Literal["per_sample", "mean"]
Granularity = Literal["neuron", "channel"]

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class EmergenceResult:
    """The emergence of a network on a batch (SPEC 2.2).

    Attributes:
        log10_e: ``log10 E`` per sample, a float64 CPU tensor of shape ``(batch,)``
            (``-inf`` where ``E = 0``; every entry equal with ``activity="mean"``).
        log10_e_mean: mean of ``log10_e`` over the batch.
        log10_e_std: population standard deviation of ``log10_e`` (0 for one sample or equal
            values; nan when some samples have ``E = 0`` and others not).
        log10_relative: relative emergence, ``log10_e_mean - log10(num_parameters)``.
        num_parameters: all parameters of the model, biases and normalization included.
        active_fraction: per node layer (inputs first, then weight layers in forward order),
            the fraction of its nodes that are active, averaged over the batch.
        node_counts: per node layer, its number of nodes (per sample).
        form, activity, granularity, tau: the options used.
    """

    log10_e: torch.Tensor
    log10_e_mean: float
    log10_e_std: float
    log10_relative: float
    num_parameters: int
    active_fraction: dict[str, float]
    node_counts: dict[str, int]
    form: str
    activity: str
    granularity: str
    tau: float
    traced_with: str = field(default="fx", repr=False)

    @property
    def batch_size(self) -> int:
        return int(self.log10_e.numel())

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists, floats, ints, strings), e.g. for JSON."""
        return {
            "log10_e": [float(v) for v in self.log10_e.tolist()],
            "log10_e_mean": self.log10_e_mean,
            "log10_e_std": self.log10_e_std,
            "log10_relative": self.log10_relative,
            "num_parameters": self.num_parameters,
            "active_fraction": dict(self.active_fraction),
            "node_counts": dict(self.node_counts),
            "form": self.form,
            "activity": self.activity,
            "granularity": self.granularity,
            "tau": self.tau,
        }

    def __str__(self) -> str:
        head = (
            f"Emergence (form={self.form}, activity={self.activity}, "
            f"granularity={self.granularity}, tau={self.tau:g}) on {self.batch_size} samples\n"
            f"  log10 E        = {self.log10_e_mean:.4f} ± {self.log10_e_std:.4f}\n"
            f"  log10 E/params = {self.log10_relative:.4f} ({self.num_parameters:,} parameters)\n"
        )
        width = max(len(n) for n in self.node_counts)
        rows = [f"  {'layer':<{width}}  {'nodes':>9}  active"]
        rows += [
            f"  {name:<{width}}  {count:>9,}  {self.active_fraction[name]:.3f}"
            for name, count in self.node_counts.items()
        ]
        return head + "\n".join(rows)


def measure_emergence(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    tau: float = 0.05,
    form: Form = "cross",
    activity: Activity = "per_sample",
    granularity: Granularity = "neuron",
) -> EmergenceResult:
    r"""The emergence ``E`` of ``model`` on the batch ``inputs`` (SPEC 2.2).

    ``form="cross"`` (default) counts the directed paths of the neuron graph that start at an
    inactive neuron and end at an active neuron; for a dense layered network with ``n_l``
    neurons and ``a_l`` active in layer ``l``

    .. math::

        E = \sum_{i<j} (n_i - a_i)\, a_j \prod_{k=i+1}^{j-1} n_k .

    ``form="li"`` is Li's ``E(G, H)`` (:func:`graph_emergence`) with ``H`` the active neurons.

    A weight layer's neuron is active when the output of the first nonlinearity after it (past
    any normalization, dropout, reshape or residual addition) exceeds ``tau``; when pooling, a
    fork, another layer or the output comes first, the last value before it is read. Inputs and
    the outputs of the last layers (those feeding no other weight layer) are active. Pooling,
    flatten, dropout, normalization and additions route paths; overlapping pooling windows give
    several routes, each a distinct path.

    The model runs once, in the caller's mode (training mode uses batch statistics), under
    ``torch.no_grad()``; its buffers (BatchNorm running statistics) and the global RNG state are
    restored afterwards. The structure is read with ``torch.fx`` (a plain ``nn.Sequential`` that
    fx cannot trace is read as the chain of its children) and cached per model.

    Args:
        model: the network; Linear, Conv1d-3d (zero padding, any stride, dilation, groups),
            normalization, dropout, elementwise activations, max / avg / adaptive pooling,
            flatten / view, mean over positions, residual additions and concatenation.
        inputs: a batch (first dimension = samples), or a sequence of batches for a model with
            several inputs.
        tau: activity threshold (default 0.05).
        form: ``"cross"`` (default) or ``"li"``.
        activity: ``"per_sample"`` (default; one ``E`` per sample) or ``"mean"`` (a neuron is
            active when its batch mean exceeds ``tau``; all samples share one ``E``).
        granularity: ``"neuron"`` (default; every channel at every position is a node) or
            ``"channel"`` (a node per channel, active when its spatial mean exceeds ``tau``;
            channel edges follow the groups, multiplicity one).

    Returns:
        An :class:`EmergenceResult`.

    Raises:
        UnsupportedModuleError: the model holds modules or ops the measure cannot route; all are
            listed.
        ConfigError: a bad option or input.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> result = measure_emergence(net, torch.randn(16, 4))
        >>> result.log10_e.shape
        torch.Size([16])
        >>> result.node_counts
        {'input': 4, '0': 8, '2': 3}
    """
    check_choice("form", form, get_args(Form))
    check_choice("activity", activity, get_args(Activity))
    check_choice("granularity", granularity, get_args(Granularity))
    tau = _check_tau(tau)
    args = _check_inputs(inputs)
    structure = read_structure(model)
    if len(args) != len(structure.inputs):
        raise ConfigError(
            f"the model takes {len(structure.inputs)} input(s); got {len(args)} tensor(s)."
        )
    per_sample = activity == "per_sample"
    channel = granularity == "channel"
    probe = structure.probe_module(tau, per_sample, channel)
    with _untouched(model, args), torch.no_grad():
        shapes, masks = probe(*args)

    batch = args[0].shape[0]
    counter = Counter(
        structure,
        list(shapes),
        list(masks),
        batch=batch,
        count_batch=batch if per_sample else 1,
        cross=form == "cross",
        channel=channel,
        device=args[0].device,
    )
    log_e = counter.run() / _LN10
    log10_e = log_e.to("cpu").expand(batch).clone()
    mean, std = _mean_std(log10_e)
    num_parameters = sum(p.numel() for p in model.parameters())
    relative = mean - math.log10(num_parameters) if num_parameters else math.nan
    return EmergenceResult(
        log10_e=log10_e,
        log10_e_mean=mean,
        log10_e_std=std,
        log10_relative=relative,
        num_parameters=num_parameters,
        active_fraction=counter.active_fraction,
        node_counts=counter.node_counts,
        form=form,
        activity=activity,
        granularity=granularity,
        tau=tau,
        traced_with=structure.traced_with,
    )


def _check_tau(tau: object) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
        raise ConfigError(f"tau must be a finite real number, got {tau!r}.")
    return float(tau)


def _check_inputs(inputs: object) -> tuple[torch.Tensor, ...]:
    args = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    if not isinstance(args, (tuple, list)) or not args:
        raise ConfigError("inputs must be a tensor or a non-empty sequence of tensors.")
    for arg in args:
        if not isinstance(arg, torch.Tensor) or arg.dim() < 1 or arg.shape[0] < 1:
            raise ConfigError(
                "every input must be a tensor whose first dimension indexes samples (>= 1)."
            )
        if arg.shape[0] != args[0].shape[0]:
            raise ConfigError("all inputs must have the same batch size.")
    return tuple(args)


def _mean_std(values: torch.Tensor) -> tuple[float, float]:
    mean = float(values.mean())
    if bool((values == values[0]).all()):
        return mean, 0.0  # also covers all -inf, whose std would be nan
    return mean, float(values.std(correction=0))


@contextlib.contextmanager
def _untouched(model: nn.Module, args: tuple[torch.Tensor, ...]) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics) and the RNG state (dropout)."""
    saved = [
        (module, name, buffer, buffer.detach().clone())
        for module in model.modules()
        for name, buffer in module._buffers.items()
        if buffer is not None
    ]
    devices = sorted({a.device.index or 0 for a in args if a.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for module, name, buffer, copy in saved:
                module._buffers[name] = buffer  # a module may have rebound the name
                buffer.copy_(copy)


__all__ = ["Activity", "EmergenceResult", "Form", "Granularity", "measure_emergence"]
