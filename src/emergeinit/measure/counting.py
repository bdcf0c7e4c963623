r"""Propagation of path counts through a captured network, batched over samples.

See docs/measure.md, "The two forms" and "The neuron graph".

With ``a(u)`` the activity of neuron ``u`` and ``F(v)`` the count reaching neuron ``v`` along the
network's edges (route multiplicities included), one forward sweep gives both forms:

* ``cross``: ``q(u) = F(u) + [u inactive]`` counts the paths from an inactive neuron to ``u``;
* ``li``: ``q(u) = [u inactive] + [u active] F(u)``: ``F(v)`` of an active ``v`` counts the paths
  ``x -> s -> ... -> v`` with ``x`` inactive and ``s .. v`` active;

and in both ``E = sum over active v of F(v)``. A layer's ``F`` is the sum of ``q`` over its
receptive field; routing ops (pooling, additions, reshapes) act on ``q`` like on activations, with
window sums in place of maxima or means.

Why it is cheap. A convolution's all-ones kernel only sees each group's channel sum, and every
routing op is channel-wise linear, so a value's counts are only ever needed summed over the
channel groups of the layers that consume it. Each value therefore carries its counts summed over
``K`` contiguous channel groups (its *demand*: ``K = groups`` of the consuming convolution, 1 for
a Linear after flatten, the least common multiple when several consumers differ, all channels
when an op needs them). A layer's output in that form needs only, per group, how many of its
neurons are active: one integer reduction of the activity mask, no per-channel float tensor.

Counts are float64, rescaled after every layer by their per-sample maximum with the scale kept as
a log, so depth and width never overflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModuleError
from .ops import CONV_TRANSPOSE_MODULES, LINEAR_MODULES
from .structure import Probe, Step, Structure

_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_FULL = 0  # demand: every channel separately


@dataclass
class Counts:
    """Path counts ``t * exp(s)`` (``s`` per sample) of one value of the network.

    Neuron granularity: ``t`` is the value's shape with dimension 1 summed into ``t.shape[1]``
    contiguous groups. Channel granularity: ``t`` is ``(nb, C)``; ``flat`` marks a value
    flattened from ``(B, C, positions...)``, ``axis`` where the channels are (1, or the last
    dimension after a permute to channels-last).
    """

    t: torch.Tensor
    s: torch.Tensor
    flat: bool = False
    axis: int = 1


@dataclass(frozen=True)
class Layer:
    """The connectivity of a weight layer: dense, or a (transposed) convolution's kernel."""

    op: str  # "linear", "conv" or "conv_transpose"
    groups: int = 1
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()


class Counter:
    """One sweep over the steps of a structure; ``run()`` returns natural-log E per sample."""

    def __init__(
        self,
        structure: Structure,
        probe: Probe,
        *,
        batch: int,
        count_batch: int,
        cross: bool,
        channel: bool,
        device: torch.device,
    ) -> None:
        self.structure = structure
        self.probe = probe
        # A step whose value is not a tensor has no shape: () fails every shape check.
        self.shapes: list[tuple[int, ...]] = [s if s is not None else () for s in probe.shapes]
        self.batch = batch
        self.nb = count_batch
        self.cross = cross
        self.channel = channel
        self.device = device
        readers = [i for i in structure.layers if i not in structure.last]
        self.masks = dict(zip(readers, probe.masks))
        self.active_fraction: dict[str, float] = {}
        self.node_counts: dict[str, int] = {}
        self.needed = [s for s in structure.steps if s.kind == "weight" or s.feeds_weight]
        self.layer_of = {i: self._layer(structure.steps[i]) for i in structure.layers}
        self.demand = {} if channel else self._demands()

    def run(self) -> torch.Tensor:
        uses = {s.index: 0 for s in self.needed}
        for step in self.needed:
            for src in step.sources:
                uses[src] += 1
        values: dict[int, Counts] = {}
        log_e = torch.full((self.nb,), -math.inf, dtype=torch.float64, device=self.device)
        for step in self.needed:
            self._check_batch(step)
            sources = [values[i] for i in step.sources]
            contribution = None
            if step.kind == "input":
                out: Counts | None = self._input(step)
            elif step.kind == "weight" and self.channel:
                out, contribution = self._layer_channel(step, sources[0])
            elif step.kind == "weight":
                out, contribution = self._layer_neuron(step, sources[0])
            elif self.channel:
                out = self._route_channel(step, sources)
            else:
                out = self._route_neuron(step, sources)
            if contribution is not None:
                log_e = torch.logaddexp(log_e, contribution)
            for src in step.sources:
                uses[src] -= 1
                if uses[src] == 0:
                    del values[src]
            if step.feeds_weight and out is not None:
                values[step.index] = out
        return log_e

    # -- demands (neuron granularity) ----------------------------------------------------------

    def _demands(self) -> dict[int, int]:
        """Per value, how many contiguous channel groups its consumers need (``_FULL``: all)."""
        demand: dict[int, int] = {}
        for step in reversed(self.needed):
            own = demand.get(step.index)
            for src in step.sources:
                need = self._requirement(step, own, src)
                if src in demand and need != demand[src]:
                    need = _FULL if _FULL in (need, demand[src]) else math.lcm(need, demand[src])
                demand[src] = need
        return demand

    def _requirement(self, step: Step, own: int | None, source: int) -> int:
        in_shape = self.shapes[source]
        out_shape = self.shapes[step.index]
        if len(in_shape) < 2 or len(out_shape) < 2:
            return _FULL
        if step.kind == "cat" and own not in (None, _FULL):
            # Along channels, operands whose channels fill whole consumer groups carry just
            # those groups' sums (one consumer group: each operand's total).
            width = out_shape[1] // own
            dim = _normal_dim(self.params(step).get("dim", 0), len(out_shape))
            channels = [self.shapes[i][1] for i in step.sources]
            if dim == 1 and (own == 1 or all(c % width == 0 for c in channels)):
                return 1 if own == 1 else in_shape[1] // width
        if step.kind == "weight":
            layer = self.layer_of[step.index]
            if layer.op == "linear":
                return 1 if len(in_shape) == 2 else _FULL
            return layer.groups
        if own is None or own == _FULL:
            return _FULL
        if step.kind in ("identity", "nonlin", "add", "pool", "adaptive", "upsample"):
            return own
        if step.kind == "permute":
            perm = self._perm(step, len(in_shape))
            return own if perm[:2] == [0, 1] else _FULL
        if step.kind == "pad":
            return own if len(self._pad(step)) <= 2 * (len(in_shape) - 2) else _FULL
        if step.kind == "reduce":
            return _FULL if 1 in self._reduce_dims(step, len(in_shape)) else own
        if step.kind == "reshape":
            if out_shape[1] == in_shape[1]:
                return own  # channels stay on dimension 1; only positions move
            if len(out_shape) == 2 and own == 1:
                return 1  # flattened for a Linear, which sums everything anyway
        return _FULL

    def _size(self, index: int) -> int:
        """The number of groups the value of step ``index`` carries."""
        shape = self.shapes[index]
        if len(shape) < 2:
            return 0
        need = self.demand.get(index, _FULL)
        return shape[1] if need == _FULL else need

    # -- nodes ---------------------------------------------------------------------------------

    def _input(self, step: Step) -> Counts:
        shape = self.shapes[step.index]
        if self.channel:
            if len(shape) < 2:
                raise self._error(step, "channel granularity needs inputs shaped (batch, C, ...)")
            nodes = shape[1]
            t = self._zeros(self.nb, nodes)
        else:
            nodes = math.prod(shape[1:])
            groups = self._size(step.index)
            t = self._zeros(self.nb, *([groups] if groups else []), *shape[2:])
        self.node_counts[step.name] = nodes
        self.active_fraction[step.name] = 1.0
        # Inputs are active and have no predecessors: no counted path ends or starts there.
        return Counts(t, self._zeros(self.nb))

    def _layer_neuron(self, step: Step, src: Counts) -> tuple[Counts | None, torch.Tensor]:
        layer = self.layer_of[step.index]
        out_shape = self.shapes[step.index]
        in_shape = self.shapes[step.sources[0]]
        self.node_counts[step.name] = math.prod(out_shape[1:])
        if layer.op == "linear" and len(in_shape) != 2:
            return self._linear_full(step, src)
        if layer.op == "linear":
            raw = src.t.sum(dim=1, keepdim=True)  # every input feeds every output once
            groups = 1
        else:
            raw = self._kernel_sum(step, layer, src.t, in_shape, out_shape)
            groups = layer.groups
        # ``raw`` holds F per group and position at scale exp(src.s); below, the new scale
        # s = src.s + log(peak) is applied where the output is formed (no extra pass).
        channels = out_shape[1]
        dims = tuple(range(1, raw.dim()))
        if step.index in self.structure.last:
            self.active_fraction[step.name] = 1.0
            return None, src.s + (raw.sum(dim=dims) * (channels // groups)).log()
        peak = raw.amax(dim=dims)
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        s = src.s + peak.log()

        # Per group of the finest partition both the layer (groups) and its consumers (demand)
        # need: each part's count of active neurons is all the activity mask is needed for.
        demand = self._size(step.index)
        parts = math.lcm(groups, demand)
        size = channels // parts
        mask = self._mask(step)
        nb, spatial = mask.shape[0], mask.shape[2:]
        if size == 1:
            active = mask.to(torch.float64)
        else:  # an integer count first: summing booleans into float64 is several times slower
            active = mask.reshape(nb, parts, size, *spatial).sum(dim=2, dtype=torch.int32)
            active = active.to(torch.float64)
        by_group = raw.unsqueeze(2)  # (nb, groups, 1, ...): each group's F, for its parts
        reached = by_group * active.reshape(nb, groups, parts // groups, *spatial)
        contribution = src.s + reached.sum(dim=tuple(range(1, reached.dim()))).log()

        # The counts leave summed over the consumers' groups (demand), at the new scale.
        inv = _per_sample(1.0 / peak, raw.dim() + 1)
        start = _per_sample(torch.exp(-s), raw.dim())  # the length-0 path from inactive u
        if demand == parts:
            self.active_fraction[step.name] = float(active.sum()) / mask.numel()
            base = torch.addcmul(start * size, active, start, value=-1).reshape(reached.shape)
            if self.cross:
                q = torch.addcmul(base, by_group, inv * size)
            else:
                q = torch.addcmul(base, reached, inv)
            return Counts(q.reshape(nb, parts, *spatial), s), contribution
        active_d = _coarsen(active, demand)
        self.active_fraction[step.name] = float(active_d.sum()) / mask.numel()
        base = torch.addcmul(start * (channels // demand), active_d, start, value=-1)
        if self.cross:
            summed = _coarse_groups(raw, groups, parts, demand) * size
        else:
            summed = _coarsen(reached.reshape(nb, parts, *spatial), demand)
        return Counts(torch.addcmul(base, summed, inv.squeeze(2)), s), contribution

    def _kernel_sum(
        self, step: Step, layer: Layer, t: torch.Tensor, in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
    ) -> torch.Tensor:  # fmt: skip
        """Per group and output position, the sum of counts over the kernel's support."""
        nd = len(layer.kernel)
        if len(in_shape) != nd + 2 or len(out_shape) != nd + 2:
            raise self._error(step, "an unbatched convolution input")
        groups = layer.groups
        summed = _coarsen(t, groups)  # all-ones kernel: only group sums matter
        if layer.op == "conv":
            left = [pair[0] for pair in _pad_pairs(layer)]
            fg = _window_sum(summed, layer.kernel, layer.stride, left, layer.dilation,
                             out_shape[2:])  # fmt: skip
        else:
            # The output size fixes output_padding (also when forward() got output_size).
            assert isinstance(layer.padding, tuple)
            extra = [
                o - ((i - 1) * s - 2 * p + d * (k - 1) + 1)
                for i, o, k, s, p, d in zip(in_shape[2:], out_shape[2:], layer.kernel,
                                            layer.stride, layer.padding, layer.dilation)
            ]  # fmt: skip
            if any(e < 0 or e >= max(s, d) for e, s, d in zip(extra, layer.stride,
                                                                layer.dilation)):  # fmt: skip
                raise self._error(step, "its output size could not be reproduced")
            fg = _scatter_window_sum(summed, layer.kernel, layer.stride, layer.padding,
                                     layer.dilation, out_shape[2:])  # fmt: skip
        if tuple(fg.shape[2:]) != tuple(out_shape[2:]):
            raise self._error(step, "its output size could not be reproduced")
        return fg

    def _linear_full(self, step: Step, src: Counts) -> tuple[Counts | None, torch.Tensor]:
        """A Linear on (batch, ..., features): rows of positions, each a dense layer."""
        out_shape = self.shapes[step.index]
        raw = src.t.sum(dim=-1, keepdim=True)  # per row, the count reaching each output
        dims = tuple(range(1, raw.dim()))
        if step.index in self.structure.last:
            self.active_fraction[step.name] = 1.0
            return None, src.s + (raw.sum(dim=dims) * out_shape[-1]).log()
        peak = raw.amax(dim=dims)
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        s = src.s + peak.log()
        mask = self._mask(step).reshape(-1, *out_shape[1:])
        per_row = mask.sum(dim=-1, keepdim=True, dtype=torch.int32)
        self.active_fraction[step.name] = float(per_row.sum()) / mask.numel()
        contribution = src.s + (raw * per_row.to(torch.float64)).sum(dim=dims).log()
        active = mask.to(torch.float64)
        start = _per_sample(torch.exp(-s), raw.dim())
        scaled = raw * _per_sample(1.0 / peak, raw.dim())
        base = torch.addcmul(start, active, start, value=-1)  # the inactive outputs' own path
        q = base.add_(scaled) if self.cross else base.addcmul_(active, scaled)
        return Counts(_coarsen(q, self._size(step.index)), s), contribution

    def _layer_channel(self, step: Step, src: Counts) -> tuple[Counts | None, torch.Tensor]:
        layer = self.layer_of[step.index]
        out_shape = self.shapes[step.index]
        in_shape = self.shapes[step.sources[0]]
        axis = 1
        if layer.op == "linear":
            if len(in_shape) != 2 and src.axis != len(in_shape) - 1:
                raise self._error(step, "channel granularity needs a Linear on (batch, "
                                  "features) or on channels-last values")  # fmt: skip
            groups, axis = 1, len(out_shape) - 1
        else:
            if src.flat or src.axis != 1:
                raise self._error(step, "a convolution after flatten or a permute")
            groups = layer.groups
        channels = out_shape[axis]
        self.node_counts[step.name] = channels
        # A channel feeds every channel of its group once; a flattened channel every output.
        fg, s = _rescale(_coarsen(src.t, groups), src.s)
        if step.index in self.structure.last:
            self.active_fraction[step.name] = 1.0
            return None, s + (fg.sum(dim=1) * (channels // groups)).log()
        mask = self._mask(step).reshape(-1, groups, channels // groups)
        self.active_fraction[step.name] = float(mask.float().mean())
        fg = fg.unsqueeze(2)
        contribution = s + (fg * mask.sum(dim=2, keepdim=True)).sum(dim=(1, 2)).log()
        start = _per_sample(torch.exp(-s), 3)
        q = torch.where(mask, fg, fg + start) if self.cross else torch.where(mask, fg, start)
        return Counts(q.reshape(self.nb, channels), s, axis=axis), contribution

    def _mask(self, step: Step) -> torch.Tensor:
        mask = self.masks[step.index]
        if mask is None:
            raise self._error(step, "its activity could not be read (a broadcast before the "
                                    "nonlinearity or a non-float activation)")  # fmt: skip
        return mask

    # -- routing -------------------------------------------------------------------------------

    def _route_neuron(self, step: Step, sources: list[Counts]) -> Counts:
        kind = step.kind
        out_shape = self.shapes[step.index]
        in_shape = self.shapes[step.sources[0]]
        own = self._size(step.index)
        src = sources[0]
        if kind in ("identity", "nonlin"):
            if out_shape != in_shape:
                raise self._error(step, f"it broadcasts {in_shape} to {out_shape}")
            return Counts(_coarsen(src.t, own), src.s)
        if kind == "add":
            if any(self.shapes[i] != out_shape for i in step.sources):
                raise self._error(step, "its operands have different shapes (broadcasting)")
            s, ts = _align(sources)
            total = _coarsen(ts[0], own)
            for t in ts[1:]:
                total = total + _coarsen(t, own)
            return Counts(total, s)
        if kind == "cat":
            dim = _normal_dim(self.params(step).get("dim", 0), len(out_shape))
            if dim <= 0:
                raise self._error(step, f"concatenation along dimension {dim}")
            s, ts = _align(sources)
            channels = [self.shapes[i][1] for i in step.sources]
            width = out_shape[1] // own
            if dim == 1 and own == 1:  # one consumer group: the operands' totals add
                return Counts(sum((_coarsen(t, 1) for t in ts[1:]), _coarsen(ts[0], 1)), s)
            if dim == 1 and all(c % width == 0 for c in channels):
                parts = [_coarsen(t, c // width) for t, c in zip(ts, channels)]
                return Counts(torch.cat(parts, dim=1), s)
            return Counts(_coarsen(torch.cat(ts, dim=dim), own), s)
        if kind == "pool":
            pool = self._pool(step)
            if len(in_shape) != pool["nd"] + 2:
                raise self._error(step, "unbatched pooling input")
            t = _window_sum(_coarsen(src.t, own), pool["kernel"], pool["stride"], pool["padding"],
                            pool["dilation"], out_shape[2:])  # fmt: skip
            return Counts(t, src.s)
        if kind == "adaptive":
            nd = len(out_shape) - 2
            if len(in_shape) != nd + 2 or nd not in _ADAPTIVE_AVG:
                raise self._error(step, "unbatched adaptive pooling input")
            return Counts(_adaptive_sum(_coarsen(src.t, own), tuple(out_shape[2:])), src.s)
        if kind == "reduce":
            dims = self._reduce_dims(step, len(in_shape))
            if 0 in dims:
                raise self._error(step, "a reduction over the batch dimension")
            keep = bool(self.params(step).get("keepdim", False))
            t = src.t.sum(dim=dims, keepdim=keep)
            return Counts(t if 1 not in dims else _coarsen(t, own), src.s)
        if kind == "reshape":
            if out_shape[0] != in_shape[0] or math.prod(out_shape) != math.prod(in_shape):
                raise self._error(step, "it changes the batch or the number of elements")
            t = src.t
            if len(out_shape) >= 2 and len(in_shape) >= 2 and out_shape[1] == in_shape[1]:
                return Counts(_coarsen(t, own).reshape(self.nb, own, *out_shape[2:]), src.s)
            if t.shape[1:2] == (1,) and own == 1 and len(out_shape) == 2:
                return Counts(t.reshape(self.nb, -1).sum(dim=1, keepdim=True), src.s)
            return Counts(_coarsen(t.reshape(self.nb, *out_shape[1:]), own), src.s)
        if kind == "permute":
            perm = self._perm(step, len(in_shape))
            if perm[0] != 0:
                raise self._error(step, "it moves the batch dimension")
            return Counts(_coarsen(src.t.permute(perm), own), src.s)
        if kind == "pad":
            pad = self._pad(step)
            if len(pad) > 2 * (len(in_shape) - 1):
                raise self._error(step, "it pads the batch dimension")
            t = F.pad(src.t, pad, value=0.0)  # padded positions are constants: no paths
            if tuple(t.shape[2:]) != tuple(out_shape[2:]):
                raise self._error(step, "its output size could not be reproduced")
            return Counts(_coarsen(t, own), src.s)
        if kind == "upsample":
            t = src.t
            for axis, index in enumerate(self._upsample_support(step, in_shape, out_shape)):
                dim = 2 + axis
                zero = torch.zeros_like(t.narrow(dim, 0, 1))
                padded = torch.cat([t, zero], dim=dim)  # index n: no source (zero counts)
                t = padded.index_select(dim, index[0])
                for row in index[1:]:
                    t = t + padded.index_select(dim, row)
            return Counts(_coarsen(t, own), src.s)
        raise self._error(step, f"cannot route paths through a {kind} step")

    def _route_channel(self, step: Step, sources: list[Counts]) -> Counts:
        kind = step.kind
        out_shape = self.shapes[step.index]
        in_shape = self.shapes[step.sources[0]]
        src = sources[0]
        if kind in ("identity", "nonlin"):
            if out_shape != in_shape:
                raise self._error(step, f"it broadcasts {in_shape} to {out_shape}")
            return src
        if kind == "add":
            if any(self.shapes[i] != out_shape for i in step.sources):
                raise self._error(step, "its operands have different shapes (broadcasting)")
            if len({(s.flat, s.axis) for s in sources}) > 1:
                raise self._error(step, "it adds values whose channels lie in different places")
            s, ts = _align(sources)
            total = ts[0]
            for t in ts[1:]:
                total = total + t
            return Counts(total, s, src.flat, src.axis)
        if kind == "cat":
            dim = _normal_dim(self.params(step).get("dim", 0), len(out_shape))
            if any(s.flat or s.axis != dim for s in sources):
                raise self._error(step, f"channel concatenation along dimension {dim}")
            s, ts = _align(sources)
            return Counts(torch.cat(ts, dim=1), s, axis=dim)
        if kind in ("pool", "adaptive", "upsample", "pad"):
            if src.flat or src.axis != 1 or len(in_shape) < 3:
                raise self._error(step, f"a {kind} input whose channels are not on dimension 1")
            if kind == "pad" and len(self._pad(step)) > 2 * (len(in_shape) - 2):
                raise self._error(step, "channel granularity cannot pad channels")
            return src  # a channel routes to itself, multiplicity one
        if kind == "permute":
            perm = self._perm(step, len(in_shape))
            if src.flat or perm[0] != 0:
                raise self._error(step, "a permute of a flattened value or of the batch")
            return Counts(src.t, src.s, axis=perm.index(src.axis))
        if kind == "reduce":
            dims = self._reduce_dims(step, len(in_shape))
            if 0 in dims or src.axis in dims or src.flat:
                raise self._error(step, f"a reduction over dimensions {dims}")
            keep = bool(self.params(step).get("keepdim", False))
            axis = src.axis if keep else src.axis - sum(d < src.axis for d in dims)
            return Counts(src.t, src.s, axis=axis)
        if kind == "reshape":
            if out_shape[0] != in_shape[0] or math.prod(out_shape) != math.prod(in_shape):
                raise self._error(step, "it changes the batch or the number of elements")
            last = len(in_shape) - 1
            if src.flat:
                if len(out_shape) == 2:
                    return src
            elif src.axis == 1 and len(out_shape) >= 2 and out_shape[1] == in_shape[1]:
                return src  # channels stay where they were; only positions move
            elif src.axis == last and len(out_shape) >= 2 and out_shape[-1] == in_shape[-1]:
                return Counts(src.t, src.s, axis=len(out_shape) - 1)  # channels-last kept
            elif src.axis == 1 and len(out_shape) == 2 and len(in_shape) > 2:
                return Counts(src.t, src.s, flat=True)
            raise self._error(
                step, f"channel granularity cannot follow channels through "
                f"{in_shape} -> {out_shape}"
            )  # fmt: skip
        raise self._error(step, f"cannot route paths through a {kind} step")

    # -- parameters ----------------------------------------------------------------------------

    def params(self, step: Step) -> dict[str, Any]:
        """The step's arguments, with those computed in forward() taken from the probe."""
        if not step.dynamic:
            return step.params
        return {**step.params, **self.probe.dynamic[step.index]}

    def _layer(self, step: Step) -> Layer:
        module: Any = step.module
        if module is not None:
            if isinstance(module, LINEAR_MODULES):
                return Layer("linear")
            conv: Any = module
            transposed = isinstance(conv, CONV_TRANSPOSE_MODULES)
            pad = conv.padding
            return Layer(
                "conv_transpose" if transposed else "conv", int(conv.groups),
                tuple(conv.kernel_size), tuple(conv.stride),
                pad if isinstance(pad, str) else tuple(pad), tuple(conv.dilation),
            )  # fmt: skip
        params = self.params(step)
        op = params["op"]
        if op == "linear":
            return Layer("linear")
        weight = self.probe.weight_shapes.get(step.index)
        if weight is None:
            raise self._error(step, "its weight is not a tensor")
        nd = len(weight) - 2
        if op == "convolution":
            op = "conv_transpose" if params.get("transposed") else "conv"
        raw = params.get("padding", 0)
        padding: tuple[int, ...] | str = raw
        if not isinstance(raw, str):
            padding = _tuple(raw, nd)
        elif raw == "valid":
            padding = (0,) * nd
        if op == "conv_transpose" and isinstance(padding, str):
            raise self._error(step, f"padding={padding!r}")
        stride, dilation = params.get("stride", 1), params.get("dilation", 1)
        return Layer(op, int(params.get("groups", 1)), tuple(weight[2:]), _tuple(stride, nd),
                     padding, _tuple(dilation, nd))  # fmt: skip

    def _perm(self, step: Step, ndim: int) -> list[int]:
        params = self.params(step)
        if "dims" in params:
            return [_normal_dim(int(d), ndim) for d in params["dims"]]
        perm = list(range(ndim))
        a, b = (params.get("dim0", 0), params.get("dim1", 1))
        a, b = _normal_dim(int(a), ndim), _normal_dim(int(b), ndim)
        perm[a], perm[b] = perm[b], perm[a]
        return perm

    def _pool(self, step: Step) -> dict[str, Any]:
        """Kernel, stride, padding and dilation as tuples of the pool's dimensionality."""
        raw = self.params(step)
        nd = int(raw["nd"])

        def tup(value: Any, default: Any) -> tuple[int, ...]:
            value = default if value is None else value
            if isinstance(value, int):
                return (value,) * nd
            value = tuple(value)
            if len(value) == 1:
                value = value * nd
            if len(value) != nd or not all(isinstance(v, int) for v in value):
                raise self._error(step, f"pooling parameter {value!r}")
            return value

        kernel = tup(raw.get("kernel_size"), None)
        stride = raw.get("stride")
        return {
            "nd": nd,
            "kernel": kernel,
            "stride": tup(stride if stride not in ((), []) else None, kernel),
            "padding": tup(raw.get("padding"), 0),
            "dilation": tup(raw.get("dilation"), 1) if raw.get("max") else (1,) * nd,
            "ceil_mode": bool(raw.get("ceil_mode", False)),
        }

    def _pad(self, step: Step) -> list[int]:
        return [int(p) for p in self.params(step)["pad"]]

    def _upsample_support(
        self, step: Step, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
    ) -> list[torch.Tensor]:
        """Per spatial dim, ``index[k, o]``: the k-th input position output ``o`` depends on.

        Found by running the op itself on one-hot inputs along each dim, so the connectivity
        is exactly the support of PyTorch's own interpolation weights (every mode supported is
        separable). Missing taps point one past the end, at a zero slice.
        """
        params = self.params(step)
        key = ("upsample", step.index, in_shape[2:], out_shape[2:], repr(params))
        cached = self.structure.memo.get(key)
        if cached is not None:
            return [t.to(self.device) for t in cached]
        spatial = in_shape[2:]
        nd = len(spatial)
        index: list[torch.Tensor] = []
        for axis, size in enumerate(spatial):
            shape = [size, 1] + [1] * nd
            shape[2 + axis] = size
            onehot = torch.eye(size, dtype=torch.float64, device=self.device).reshape(shape)
            probe = onehot.expand(size, 1, *spatial).contiguous()
            call = step.call
            assert call is not None
            out = call(probe) if isinstance(call, nn.Module) else call(probe, **params)
            if tuple(out.shape[2:]) != tuple(out_shape[2:]):
                raise self._error(step, "its output size could not be reproduced")
            pick: list[Any] = [slice(None), 0] + [0] * nd
            pick[2 + axis] = slice(None)
            support = out[tuple(pick)] != 0  # (inputs, outputs)
            taps = int(support.sum(dim=0).max())
            rank = support.cumsum(dim=0) * support  # 1.. for each source of a column
            rows = torch.full((max(taps, 1), support.shape[1]), size, dtype=torch.long,
                              device=self.device)  # fmt: skip
            src, col = support.nonzero(as_tuple=True)
            rows[rank[src, col] - 1, col] = src
            index.append(rows)
        self.structure.memo[key] = index
        return index

    # -- helpers -------------------------------------------------------------------------------

    def _reduce_dims(self, step: Step, ndim: int) -> list[int]:
        raw = self.params(step).get("dim")
        if raw is None:
            raise self._error(step, "a reduction over all dimensions (the batch included)")
        dims = [raw] if isinstance(raw, int) else list(raw)
        if not all(isinstance(d, int) for d in dims):
            raise self._error(step, "a reduction over non-constant dimensions")
        return sorted({_normal_dim(d, ndim) for d in dims})

    def _check_batch(self, step: Step) -> None:
        shapes = [self.shapes[step.index]] + [self.shapes[i] for i in step.sources]
        if any(not shape or shape[0] != self.batch for shape in shapes):
            raise self._error(step, "it changes the batch dimension")

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def _error(self, step: Step, why: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(f"the emergence measure cannot handle {step.name}: {why}.")


def _pad_pairs(layer: Layer) -> list[tuple[int, int]]:
    """(left, right) zero padding per spatial dim; "same" puts the odd one on the right."""
    if isinstance(layer.padding, str):  # "same" ("valid" became zeros)
        total = [d * (k - 1) for k, d in zip(layer.kernel, layer.dilation)]
        return [(t // 2, t - t // 2) for t in total]
    return [(p, p) for p in layer.padding]


def _window_sum(
    t: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], left: Sequence[int],
    dilation: Sequence[int], out_size: Sequence[int],
) -> torch.Tensor:  # fmt: skip
    """Per channel, ``out[i] = sum over taps j of t[i * stride - left + j * dilation]``.

    The sum over every window of an all-ones kernel, a pooling window or a convolution's
    receptive field, with positions outside the input (padding, or past it in ceil mode)
    contributing nothing. Separable: per dim, one output tensor and one in-place add per tap
    (float64 convolutions and pooling are slow on CPU, and no padded copy is made).
    """
    for axis, (k, s, p, d, o) in enumerate(zip(kernel, stride, left, dilation, out_size)):
        dim = 2 + axis
        size = t.shape[dim]
        if k == 1 and s == 1 and p == 0 and o == size:
            continue  # a 1x1 window: every position routes to itself
        shape = list(t.shape)
        shape[dim] = o
        out = t.new_zeros(shape)
        index: list[Any] = [slice(None)] * t.dim()
        for j in range(k):
            offset = j * d - p  # output i reads input i * s + offset
            lo = max(0, (s - 1 - offset) // s)  # the first i with i * s + offset >= 0
            hi = min(o - 1, (size - 1 - offset) // s)  # the last with i * s + offset < size
            if hi < lo:
                continue
            index[dim] = slice(lo * s + offset, hi * s + offset + 1, s)
            out.narrow(dim, lo, hi - lo + 1).add_(t[tuple(index)])
        t = out
    return t


def _scatter_window_sum(
    t: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], out_size: Sequence[int],
) -> torch.Tensor:  # fmt: skip
    """A transposed convolution with an all-ones kernel: input ``i`` adds into every output
    ``i * stride - padding + j * dilation`` (tap ``j``) inside the output. Separable, as
    :func:`_window_sum`, with strided in-place adds."""
    for axis, (k, s, p, d, o) in enumerate(zip(kernel, stride, padding, dilation, out_size)):
        dim = 2 + axis
        size = t.shape[dim]
        shape = list(t.shape)
        shape[dim] = o
        out = t.new_zeros(shape)
        index: list[Any] = [slice(None)] * t.dim()
        for j in range(k):
            offset = j * d - p  # input i adds into output i * s + offset
            lo = max(0, (s - 1 - offset) // s)
            hi = min(size - 1, (o - 1 - offset) // s)
            if hi < lo:
                continue
            index[dim] = slice(lo * s + offset, hi * s + offset + 1, s)
            out[tuple(index)].add_(t.narrow(dim, lo, hi - lo + 1))
        t = out
    return t


def _tuple(value: Any, nd: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * nd
    items = tuple(int(v) for v in value)
    return items * nd if len(items) == 1 else items


def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


def _rescale(fg: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide by the per-sample maximum, adding its log to the scale (nothing can overflow)."""
    peak = fg.amax(dim=tuple(range(1, fg.dim())))
    peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    return fg / _per_sample(peak, fg.dim()), s + peak.log()


def _coarsen(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum dimension 1 into ``groups`` contiguous groups (``_FULL`` or equal: unchanged)."""
    if t.dim() < 2 or groups == _FULL or t.shape[1] == groups:
        return t
    return t.reshape(t.shape[0], groups, t.shape[1] // groups, *t.shape[2:]).sum(dim=2)


def _coarse_groups(raw: torch.Tensor, groups: int, parts: int, demand: int) -> torch.Tensor:
    """Sums over ``demand`` groups of ``raw``'s ``groups`` values, each repeated over its parts."""
    if groups % demand == 0:
        return _coarsen(raw, demand) * (parts // groups)
    if demand % groups == 0:
        return _expand_groups(raw, demand) * (parts // demand)
    return _coarsen(_expand_groups(raw, parts), demand)


def _expand_groups(fg: torch.Tensor, parts: int) -> torch.Tensor:
    """Repeat each of ``fg``'s groups (dimension 1) over the parts it splits into."""
    groups = fg.shape[1]
    if groups == parts:
        return fg
    rest = fg.shape[2:]
    wide = fg.unsqueeze(2).expand(fg.shape[0], groups, parts // groups, *rest)
    return wide.reshape(fg.shape[0], parts, *rest)


def _align(sources: list[Counts]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Bring counts with different per-sample scales onto the largest one."""
    s = sources[0].s
    for src in sources[1:]:
        s = torch.maximum(s, src.s)
    ts = [
        src.t if src.s is s else src.t * _per_sample(torch.exp(src.s - s), src.t.dim())
        for src in sources
    ]
    return s, ts


def _normal_dim(dim: Any, ndim: int) -> int:
    if not isinstance(dim, int):
        return -1
    return dim + ndim if dim < 0 else dim


def _adaptive_sum(t: torch.Tensor, out_size: tuple[int, ...]) -> torch.Tensor:
    """Sum over adaptive windows ``[floor(j L / O), ceil((j + 1) L / O))`` along each dim."""
    nd = len(out_size)
    adaptive: Any = _ADAPTIVE_AVG[nd]  # the 1-d variant is typed for an int size only
    mean = adaptive(t, out_size)
    area = torch.ones((), dtype=t.dtype, device=t.device)
    for axis, (size, o) in enumerate(zip(t.shape[2:], out_size)):
        j = torch.arange(o, device=t.device)
        length = ((j + 1) * size + o - 1) // o - (j * size) // o
        shape = [1] * nd
        shape[axis] = o
        area = area * length.to(t.dtype).reshape(shape)
    return mean * area


__all__ = ["Counter", "Counts"]
