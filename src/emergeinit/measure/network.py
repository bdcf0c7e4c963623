r"""The emergence of a neural network on real activations (docs/measure.md).

Nodes are neurons: the input features and the outputs of every Linear / Conv layer (per channel
and position, or per channel with ``granularity="channel"``). A layer's neuron is active when the
first nonlinearity after it exceeds ``tau``; inputs and the last layer's outputs are active.

Both forms come out of one forward propagation of path counts, layer by layer, batched over
samples (see :mod:`emergeinit.measure.counting`); the structure is read with ``torch.fx`` or
``torch.export`` (:mod:`emergeinit.measure.capture`, :mod:`emergeinit.measure.structure`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from ..errors import ConfigError, TracingError
from ..schedule import check_choice
from .capture import (
    Capture,
    ModelInputs,
    ModelScan,
    check_forward,
    check_model,
    model_inputs,
    untouched,
)
from .counting import Counter
from .structure import Probe, Structure, read_structure

Form = Literal["cross", "li"]
Activity = Literal["per_sample", "mean"]
Granularity = Literal["neuron", "channel"]

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class EmergenceResult:
    """The emergence of a network on a batch (docs/measure.md, "The result").

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
    inputs: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, Any],
    *,
    tau: float = 0.05,
    form: Form = "cross",
    activity: Activity = "per_sample",
    granularity: Granularity = "neuron",
    capture: Capture = "auto",
) -> EmergenceResult:
    r"""The emergence ``E`` of ``model`` on the batch ``inputs`` (docs/measure.md).

    ``form="cross"`` (default) counts the directed paths of the neuron graph that start at an
    inactive neuron and end at an active neuron; for a dense layered network with ``n_l``
    neurons and ``a_l`` active in layer ``l``

    .. math::

        E = \sum_{i<j} (n_i - a_i)\, a_j \prod_{k=i+1}^{j-1} n_k .

    ``form="li"`` is Li's ``E(G, H)`` (:func:`graph_emergence`) with ``H`` the active neurons.

    A weight layer's neuron is active when the output of the first nonlinearity after it (past
    any normalization, dropout, reshape, permute or residual addition) exceeds ``tau``; when
    pooling, a fork, another layer or the output comes first, the last value before it is read.
    Inputs and the outputs of the last layers (those feeding no other weight layer) are active.
    Pooling, upsampling, padding, flatten, dropout, normalization, concatenation and additions
    route paths; overlapping pooling windows give several routes, each a distinct path.

    The model runs once, in the caller's mode (training mode uses batch statistics), under
    ``torch.no_grad()``; its buffers (BatchNorm running statistics) and the global RNG state are
    restored afterwards. On CPU a network with convolutions runs on inputs laid out channels
    last (faster; the same values up to rounding), unless it fails so (docs/measure.md,
    "Layout"). The structure is read with ``torch.fx``, or ``torch.export`` where fx
    fails or the inputs are keywords, and cached per model.

    A sample whose inputs, or whose activations at a read point or a last layer, are not finite,
    gets ``log10 E = nan`` (every sample does when a parameter or buffer is not finite, or with
    ``activity="mean"`` when any sample is); a ``RuntimeWarning`` says how many.

    Args:
        model: the network; Linear, Conv1d-3d and ConvTranspose1d-3d (zero padding, any
            stride, dilation, groups), normalization, dropout, elementwise activations, max /
            avg / adaptive pooling, upsampling, constant padding, flatten / view / permute,
            mean over positions, residual additions and concatenation.
        inputs: a batch (first dimension = samples): a tensor, a tuple / list of positional
            tensors, or a dict of keyword arguments (e.g. ``{"pixel_values": x}``), as
            ``example_input`` of :func:`~emergeinit.emergence_init_`.
        tau: activity threshold (default 0.05).
        form: ``"cross"`` (default) or ``"li"``.
        activity: ``"per_sample"`` (default; one ``E`` per sample) or ``"mean"`` (a neuron is
            active when its batch mean exceeds ``tau``; all samples share one ``E``).
        granularity: ``"neuron"`` (default; every channel at every position is a node) or
            ``"channel"`` (a node per channel, active when its spatial mean exceeds ``tau``;
            channel edges follow the groups, multiplicity one).
        capture: how the structure is read: ``"auto"`` (default: torch.fx, else torch.export),
            ``"fx"`` or ``"export"``. Every capture gives the same result.

    Returns:
        An :class:`EmergenceResult`.

    Raises:
        UnsupportedModuleError: the model holds modules or ops the measure cannot route (all
            are listed, with why), e.g. attention; or its structure could not be read.
        TracingError: the model's forward pass fails on ``inputs``.
        MetaTensorError: the model or an input is on the meta device.
        ConfigError: a bad option, a model that is not an ``nn.Module``, or bad inputs.

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
    check_choice("capture", capture, get_args(Capture))
    tau = _check_tau(tau)
    model, scan = check_model(model)
    call = model_inputs(inputs)
    per_sample = activity == "per_sample"
    channel = granularity == "channel"
    structure, probe = _probe(model, call, capture, tau, per_sample, channel, scan)

    batch = call.batch
    counter = Counter(
        structure,
        probe,
        batch=batch,
        count_batch=batch if per_sample else 1,
        cross=form == "cross",
        channel=channel,
        device=call.device,
    )
    log_e = counter.run() / _LN10
    _remember_blocks(structure, call, counter.uncounted)
    log10_e = log_e.to("cpu").expand(batch).clone()
    finite = _finite_inputs(call) & _finite_rows(probe, batch)
    if not bool(finite.all()) and bool(_finite_inputs(call).all()):
        # A non-finite sum of a sample's activations may be an overflow of finite values (or
        # follow from non-finite weights): ask again, exactly.
        exact = _run_probe(model, structure, call, tau, per_sample, channel, scan, exact=True)
        finite = _finite_rows(exact, batch)
    if not _all_finite(scan.tensors):
        finite = torch.zeros_like(finite)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        log10_e[~finite if per_sample else slice(None)] = math.nan
        warnings.warn(
            f"measure_emergence: {bad} of {batch} samples have non-finite inputs, parameters or "
            "activations; their log10 E is nan" + ("" if per_sample else " (activity='mean': "
            "all samples are)"), RuntimeWarning, stacklevel=2,
        )  # fmt: skip
    mean, std = _mean_std(log10_e)
    num_parameters = scan.num_parameters
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


def _probe(
    model: nn.Module, call: ModelInputs, capture: Capture, tau: float, per_sample: bool,
    channel: bool, scan: ModelScan,
) -> tuple[Structure, Probe]:  # fmt: skip
    """Read the structure and run the probe forward, with typed errors when either fails."""
    structure = read_structure(model, call, capture, scan.stamp)
    try:
        return structure, _run_probe(model, structure, call, tau, per_sample, channel, scan)
    except Exception as error:
        check_forward(model, call)  # a TracingError when the model itself fails on the inputs
        if structure.traced_with != "fx" or capture != "auto":
            raise TracingError(
                f"the {structure.traced_with} graph of {type(model).__name__} failed on these "
                f"inputs though the model's own forward runs ({type(error).__name__}: {error})."
            ) from error
    # The fx graph does not hold for these inputs (it was traced for others): export them.
    structure = read_structure(model, call, "export", scan.stamp)
    return structure, _run_probe(model, structure, call, tau, per_sample, channel, scan)


def _run_probe(
    model: nn.Module, structure: Structure, call: ModelInputs, tau: float, per_sample: bool,
    channel: bool, scan: ModelScan, exact: bool = False,
) -> Probe:  # fmt: skip
    """The probe, channels last on CPU where the network has convolutions (docs/measure.md,
    "Layout"): PyTorch's CPU convolutions run faster so, and the counting reads masks laid out
    channels last without transposing them. A model that fails in that layout (a ``view`` that
    needs the default strides) runs as its inputs lie, from then on."""
    blocks = structure.memo.get(_blocks_key(call))
    if _probe_channels_last(structure, call):
        try:
            with untouched(model, call, scan), torch.no_grad():
                return structure.run_probe(call, tau, per_sample, channel, exact,
                                           channels_last=True, blocks=blocks)  # fmt: skip
        except Exception:
            structure.memo["channels_last"] = False
    with untouched(model, call, scan), torch.no_grad():
        return structure.run_probe(call, tau, per_sample, channel, exact, blocks=blocks)


def _blocks_key(call: ModelInputs) -> tuple[Any, ...]:
    return ("blocks", call.signature())


def _remember_blocks(
    structure: Structure, call: ModelInputs, uncounted: dict[int, set[int]]
) -> None:
    """Keep, per input signature, the block sizes of active-neuron counts the counter needed
    and the probe did not bring: the next probe on such inputs asks its kernel for them (a
    count per block of channels costs little more than the mask it is taken from)."""
    if not uncounted:
        return
    key = _blocks_key(call)
    known: dict[int, tuple[int, ...]] = structure.memo.get(key, {})
    if all(set(sizes) <= set(known.get(layer, ())) for layer, sizes in uncounted.items()):
        return  # asked for before: the kernel does not count these (layout, size)
    merged = dict(known)
    for layer, sizes in uncounted.items():
        merged[layer] = tuple(sorted({*known.get(layer, ()), *sizes}))
    structure.memorize(key, merged)


def _probe_channels_last(structure: Structure, call: ModelInputs) -> bool:
    """Whether to try the channels-last probe: CPU image or volume inputs into a network with
    convolutions that has not failed in that layout before."""
    return (
        structure.memo.get("channels_last", True)
        and call.device.type == "cpu"
        and structure.has_convolutions
        and any(t.dim() in (4, 5) and t.is_floating_point() for t in call.tensors)
    )


def _finite_inputs(call: ModelInputs) -> torch.Tensor:
    """Per sample, whether every float input value is finite (CPU bool tensor)."""
    finite = torch.ones(call.batch, dtype=torch.bool)
    for t in call.tensors:
        if t.is_floating_point():
            rows = t.detach().reshape(t.shape[0], -1)
            ok = torch.isfinite(_sum(rows, dim=1))  # overflow of huge values: checked below
            if not bool(ok.all()):
                ok = torch.isfinite(rows).all(dim=1)
            finite &= ok.cpu()
    return finite


def _finite_rows(probe: Probe, batch: int) -> torch.Tensor:
    """Per sample, whether the activations the probe summed (or flagged) were finite."""
    rows = [s if s.dtype == torch.bool else torch.isfinite(s) for s in probe.row_sums
            if s is not None]  # fmt: skip
    if not rows:
        return torch.ones(batch, dtype=torch.bool)
    return torch.stack(rows).all(dim=0).cpu()


def _sum(t: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """A sum in the tensor's dtype, or float32 for half precision (which overflows at 65504)."""
    dtype = torch.float32 if t.element_size() < 4 else None
    return t.sum(dtype=dtype) if dim is None else t.sum(dim=dim, dtype=dtype)


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every float tensor is finite.

    Per dtype and device, one stacked set of sums: each large tensor summed where it lies (a
    copy would cost more than the sum), the small ones concatenated in batches; a sum is finite
    when every value is. Where one is not (it may also overflow), a sum per tensor, and the
    elementwise test (slow on CPU) only for a tensor whose sum is not finite. (Few Python steps
    per tensor: a Hugging Face model has hundreds of small ones.)"""
    by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    with torch.no_grad():  # views of parameters without autograd's bookkeeping
        for t in tensors:
            if t.is_floating_point():
                key = (t.dtype, t.device)
                kind = by_kind.get(key)
                if kind is None:
                    kind = by_kind[key] = []
                kind.append(t)
        for kind in by_kind.values():
            sums = []
            batch: list[torch.Tensor] = []
            size = 0
            for t in kind:
                n = t.numel()
                if n >= _ALONE:
                    sums.append(_sum(t))
                    continue
                if batch and size + n > _BATCH:
                    sums.append(_sum(torch.cat(batch)))
                    batch, size = [], 0
                batch.append(t.reshape(-1))
                size += n
            if batch:
                sums.append(_sum(torch.cat(batch)))
            if bool(torch.isfinite(torch.stack(sums)).all()):
                continue
            per_tensor = torch.stack([_sum(t).double() for t in kind])
            suspects = (~torch.isfinite(per_tensor)).nonzero().flatten().tolist()
            if not all(bool(torch.isfinite(kind[i]).all()) for i in suspects):
                return False
    return True


_ALONE = 2**14  # values: a tensor at least this large is summed alone, not copied
_BATCH = 2**22  # values: the largest copy the parameter check makes (16 MiB of float32)


def _mean_std(values: torch.Tensor) -> tuple[float, float]:
    mean = float(values.mean())
    if bool((values == values[0]).all()):
        return mean, 0.0  # also covers all -inf, whose std would be nan
    return mean, float(values.std(correction=0))


__all__ = ["Activity", "Capture", "EmergenceResult", "Form", "Granularity", "measure_emergence"]
