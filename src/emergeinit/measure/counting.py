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
when an op needs them). A Linear on channels-last values sums each row of features, so its input
carries row sums (``_ROWS``), followed back through permutes to the channel sums of the
convolution before them (ConvNeXt). A layer's output in that form needs only, per group, how many
of its neurons are active: one reduction of the activity mask, no per-channel float tensor.

Where every channel is needed (a depthwise convolution), the counts of a dense layer's output are
kept *split* (form ``cross``): ``q_c(u) = U(u) + start * [u_c inactive]``, the same count ``U``
for every channel of a position plus an integer mask. Identities, spatial padding, permutes and
residual additions keep the split (an addition keeps the masks of both operands as separate
terms; padding stays pending, an offset of the windows); a convolution then sums ``U`` over its
windows once per position and each mask over its windows, channels last, in uint8 where every
sum stays below 256, else in float32. Those are exact: the masks hold 0 / 1, their window sums
and the products with counts of active neurons are integers below 256 (uint8) or 2**24 (float32),
summed per sample in int32 / int64 or float64; and the float64 parts only ever add positive
numbers.

Counts are float64 with a per-sample scale kept as a log; after a layer whose counts pass 2**100
they are divided by (an upper bound of) their per-sample maximum, so depth and width never
overflow.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModuleError
from .ops import CONV_TRANSPOSE_MODULES, LINEAR_MODULES
from .structure import Probe, Step, Structure

_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_FULL = 0  # demand: every channel separately
_ROWS = -1  # demand: the sum over the last dimension (a Linear on channels-last values)
_MAX_TERMS = 8  # split counts with more masks than this are made dense
_EXACT = 2**24  # float32 holds every integer below this exactly
_RESCALE = 2.0**100  # counts are divided by their peak once it passes this (float64: 2**1023)


class Term(NamedTuple):
    """``c * mask`` (``c`` per sample) of split counts; ``pad``: zero padding (``F.pad`` order,
    never negative) still to apply to the mask, left for a convolution to fold in; ``total``:
    where known, the mask summed over the channels (the value's channel axis, kept as size 1;
    int32), padded alike."""

    c: torch.Tensor
    mask: torch.Tensor
    pad: tuple[int, ...] = ()
    total: torch.Tensor | None = None

    def padded(self) -> torch.Tensor:
        return _pad_mask(self.mask, self.pad) if any(self.pad) else self.mask

    def permuted(self, perm: list[int]) -> Term:
        """The term of the permuted value (its total moves along: size 1 where the channels
        went)."""
        total = self.padded_total()
        moved = None if total is None else total.permute(perm)
        return Term(self.c, self.padded().permute(perm), total=moved)

    def padded_total(self) -> torch.Tensor | None:
        if self.total is None or not any(self.pad):
            return self.total
        return _pad_mask(self.total, self.pad)

    def then_pad(self, pad: list[int]) -> Term:
        if min(pad, default=0) < 0:  # a crop: apply what is pending first
            total = self.padded_total()
            cropped = None if total is None else _pad_mask(total, pad)
            return Term(self.c, _pad_mask(self.padded(), pad), total=cropped)
        merged = [*self.pad, *[0] * (len(pad) - len(self.pad))]
        for i, amount in enumerate(pad):
            merged[i] += amount
        return self._replace(pad=tuple(merged))


@dataclass
class Counts:
    """Path counts ``t * exp(s)`` (``s`` per sample) of one value of the network.

    Neuron granularity: ``t`` is the value's shape with dimension 1 summed into ``t.shape[1]``
    contiguous groups (or, for ``_ROWS``, the last dimension summed). Split (``uniform``): the
    counts are ``t + sum of c * n over terms``, with ``t`` of size 1 along the channel ``axis``
    (the same for every channel) and each ``n`` a boolean mask of the value's shape, ``c`` per
    sample. Channel granularity: ``t`` is ``(nb, C)``; ``flat`` marks a value flattened from
    ``(B, C, positions...)``, ``axis`` where the channels are (1, or the last dimension after a
    permute to channels-last).
    """

    t: torch.Tensor
    s: torch.Tensor
    flat: bool = False
    axis: int = 1
    uniform: bool = False
    terms: tuple[Term, ...] = ()


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
        self.kernel_counts = dict(zip(readers, probe.counts))
        # per layer, block sizes counted here that the probe's kernel could count next time
        self.uncounted: dict[int, set[int]] = {}
        self.active_fraction: dict[str, float] = {}
        self.node_counts: dict[str, int] = {}
        self.needed = [s for s in structure.steps if s.kind == "weight" or s.feeds_weight]
        self.layer_of = {i: self._layer(structure.steps[i]) for i in structure.layers}
        # The demands depend only on the shapes, the layers and the arguments seen by the
        # probe: kept with the structure (a training loop measures the same shapes again).
        key = ("counter", tuple(self.shapes), channel, repr(probe.dynamic),
               tuple(self.layer_of.items()))  # fmt: skip
        cached = structure.memo.get(key)
        if cached is None:
            demand = {} if channel else self._demands()
            moved = {step.index for step in self.needed if self._moves_batch(step)}
            cached = (demand, moved)
            structure.memorize(key, cached)
        self.demand: dict[int, int] = cached[0]
        self.moves_batch: set[int] = cached[1]
        self._start: tuple[torch.Tensor | None, torch.Tensor] = (None, torch.ones(()))

    def run(self) -> torch.Tensor:
        uses = {s.index: 0 for s in self.needed}
        for step in self.needed:
            for src in step.sources:
                uses[src] += 1
        values: dict[int, Counts] = {}
        log_e = torch.full((self.nb,), -math.inf, dtype=torch.float64, device=self.device)
        for step in self.needed:
            if step.index in self.moves_batch:
                raise self._error(step, "it changes the batch dimension")
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
        """Per value, how many contiguous channel groups its consumers need (``_FULL``: all,
        ``_ROWS``: sums over the last dimension)."""
        demand: dict[int, int] = {}
        for step in reversed(self.needed):
            own = demand.get(step.index)
            for src in step.sources:
                need = self._requirement(step, own, src)
                if need == _ROWS and len(self.shapes[src]) == 2:
                    need = 1  # the sum of a row of (batch, features) is one group
                if src in demand and need != demand[src]:
                    other = demand[src]
                    exotic = {_FULL, _ROWS} & {need, other}
                    need = _FULL if exotic else math.lcm(need, other)
                demand[src] = need
        return demand

    def _requirement(self, step: Step, own: int | None, source: int) -> int:
        in_shape = self.shapes[source]
        out_shape = self.shapes[step.index]
        if len(in_shape) < 2 or len(out_shape) < 2:
            return _FULL
        if step.kind == "cat" and own not in (None, _FULL, _ROWS):
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
                return 1 if len(in_shape) == 2 else _ROWS  # every feature of a row, summed
            return layer.groups
        if own is None or own == _FULL:
            return _FULL
        last = len(in_shape) - 1
        if step.kind in ("identity", "nonlin", "add"):
            return own
        if own == _ROWS:
            if step.kind == "permute":
                # The output's last dimension is the input's perm[-1]: its channels (one group)
                # or its own last dimension.
                moved = self._perm(step, len(in_shape))[-1]
                return 1 if moved == 1 else _ROWS if moved == last else _FULL
            if step.kind == "reshape" and len(out_shape) > 2 and out_shape[-1] == in_shape[-1]:
                return _ROWS  # rows are kept whole (row-major)
            if step.kind == "reduce" and last not in self._reduce_dims(step, len(in_shape)):
                return _ROWS
            return _FULL
        if step.kind in ("pool", "adaptive", "upsample"):
            return own
        if step.kind == "permute":
            perm = self._perm(step, len(in_shape))
            if own == 1 and perm[1] == last:
                return _ROWS  # the channels summed are the input's last dimension
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

    def _need(self, index: int) -> int:
        """The form the value of step ``index`` is carried in: a number of groups of dimension
        1, ``_FULL`` or ``_ROWS`` (the same as one group for a value of two dimensions)."""
        shape = self.shapes[index]
        need = self.demand.get(index, _FULL)
        if len(shape) < 2 or need == shape[1]:
            return _FULL  # as many groups as channels: every channel
        return 1 if need == _ROWS and len(shape) == 2 else need

    def _split(self, index: int) -> bool:
        """Whether a dense layer's output at ``index`` is kept split (see the module doc)."""
        return self.cross and not self.channel and self._need(index) == _FULL

    def _dense(self, src: Counts, index: int, need: int) -> torch.Tensor:
        """The counts of the value of step ``index`` as one float64 tensor in form ``need``
        (which the value's own form can give: the same, or ``_FULL``)."""
        if not src.uniform:
            return _carry(src.t, need)
        shape = self.shapes[index]
        nd = len(shape)
        per = shape[src.axis]
        if need not in (_FULL, _ROWS) and src.axis == 1:
            t = src.t * (per // need)  # each group holds per // need channels of the same count
            for term in src.terms:
                t = t + _per_sample(term.c, nd) * _term_total(term, need)
            return t.expand(self.nb, need, *shape[2:]) if t.shape[1] != need else t
        if need == _ROWS and src.axis == nd - 1:
            t = src.t * per
            for term in src.terms:
                n = term.padded().sum(dim=-1, keepdim=True)
                t = t + _per_sample(term.c, nd) * _as(n, torch.float64)
            return t
        full = src.t.expand(self.nb, *shape[1:])
        for term in src.terms:
            full = full + _per_sample(term.c, nd) * _as(term.padded(), torch.float64)
        return _carry(full.contiguous(), need)

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
            need = self._need(step.index)
            if len(shape) < 2:
                t = self._zeros(self.nb)
            elif need == _ROWS:
                t = self._zeros(self.nb, *shape[1:-1], 1)
            elif self._split(step.index):
                t = self._zeros(self.nb, 1, *shape[2:])  # every channel the same (zero)
                self.node_counts[step.name] = nodes
                self.active_fraction[step.name] = 1.0
                return Counts(t, self._zeros(self.nb), uniform=True)
            else:
                t = self._zeros(self.nb, shape[1] if need == _FULL else need, *shape[2:])
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
        if src.uniform and layer.op == "conv" and layer.groups > 1:
            done = self._conv_split(step, layer, src)
            if done is not None:
                return done
        if layer.op == "linear":
            raw = self._dense(src, step.sources[0], 1)  # every input feeds every output once
            groups = 1
        else:
            summed = self._dense(src, step.sources[0], layer.groups)  # only group sums matter
            raw = self._kernel_sum(step, layer, summed, in_shape, out_shape)
            groups = layer.groups
        # ``raw`` holds F per group and position at scale exp(src.s); below, a new scale (where
        # the counts grew past _RESCALE) is applied where the output is formed (no extra pass).
        channels = out_shape[1]
        dims = tuple(range(1, raw.dim()))
        if step.index in self.structure.last:
            self.active_fraction[step.name] = 1.0
            return None, src.s + (raw.sum(dim=dims) * (channels // groups)).log()
        s, inv, start = self._scale(raw.amax(dim=dims), src.s, raw.dim())
        mask = self._mask(step)
        nb, spatial = mask.shape[0], mask.shape[2:]

        if groups == 1 and self._split(step.index):
            # Every channel of a position has the same F: keep it once, with the mask of the
            # inactive neurons as the only per-channel part (module doc, "split").
            active = self._active(step, mask, 1)
            self.active_fraction[step.name] = float(active.sum()) / mask.numel()
            inactive = torch.rsub(active, channels)  # the mask's total, for a depthwise layer
            active = active.to(torch.float64)
            contribution = src.s + (raw * active).sum(dim=dims).log()
            terms = (Term(start.reshape(-1), torch.logical_not(mask), total=inactive),)
            return Counts(_times(raw, inv), s, uniform=True, terms=terms), contribution

        # Per group of the finest partition both the layer (groups) and its consumers (demand)
        # need: each part's count of active neurons is all the activity mask is needed for.
        need = self._need(step.index)
        demand = channels if need in (_FULL, _ROWS) else need
        parts = math.lcm(groups, demand)
        size = channels // parts
        counts = self._active(step, mask, parts)  # active neurons per part (integers)
        by_group = raw.unsqueeze(2)  # (nb, groups, 1, ...): each group's F, for its parts
        # F of a group reaches each of its active neurons: only the count per group matters
        # (an exact integer sum), not a product per part.
        # (From the mask again rather than from ``counts``: PyTorch sums a few adjacent int32
        # values in a scalar loop, slower than another pass over the mask's bytes.)
        per_group = counts if parts == groups else self._active(step, mask, groups)
        self.active_fraction[step.name] = float(per_group.sum()) / mask.numel()
        contribution = src.s + (raw * _as(per_group, torch.float64)).sum(dim=dims).log()

        # The counts leave summed over the consumers' groups (demand), at the new scale.
        if demand == parts:
            # q = exp(-s) per inactive neuron, plus F (cross) or plus F per active one (li),
            # each part's inactive neurons counted as size - active: one pass over the parts.
            # In float64 first: a multiply-add over mixed dtypes is a scalar loop.
            active = _as(counts, torch.float64).reshape(nb, groups, parts // groups, *spatial)
            start = start.unsqueeze(2)
            by_group = _times(by_group, None if inv is None else inv.unsqueeze(2))
            # A product and an addition, each with one broadcast operand: PyTorch vectorizes
            # those, not a multiply-add that broadcasts two operands.
            if self.cross:
                q = torch.mul(active, -start).add_((by_group + start) * size)
            else:
                q = torch.mul(active, by_group - start).add_(start * size)
            return Counts(_carry(q.reshape(nb, parts, *spatial), need), s), contribution
        active_d = _as(self._active(step, mask, demand), torch.float64)  # (the kernel's, if any)
        base = torch.addcmul(start * (channels // demand), active_d, start, value=-1)
        if self.cross:
            summed = _coarse_groups(raw, groups, parts, demand) * size
        else:
            active = _as(counts, torch.float64).reshape(nb, groups, parts // groups, *spatial)
            summed = _coarsen((by_group * active).reshape(nb, parts, *spatial), demand)
        if inv is None:
            return Counts(base.add_(summed), s), contribution
        return Counts(torch.addcmul(base, summed, inv), s), contribution

    def _conv_split(
        self, step: Step, layer: Layer, src: Counts
    ) -> tuple[Counts | None, torch.Tensor] | None:
        """A grouped convolution on split counts (form cross), when its consumers need whole
        groups: ``F_g = P * W(U) + sum over terms of c * W(n_g)`` with ``W`` the window sum,
        ``P`` input channels per group and ``n_g`` a mask summed over group ``g``.

        The float64 part is one channel; each mask is window-summed once, channels last, in
        uint8 or float32 (integers, exact), for the paths that end at this layer's active
        outputs. What leaves is summed over the consumers' groups, and a window sum is linear:
        the sum of the groups' window sums is the window sum of the mask summed over those
        channels, a tensor of one channel per consumer group. None where this does not apply
        (the caller makes the counts dense)."""
        out_shape = self.shapes[step.index]
        in_shape = self.shapes[step.sources[0]]
        nd = len(layer.kernel)
        last = step.index in self.structure.last
        need = 1 if last else self._need(step.index)
        groups = layer.groups
        per_in, per_out = in_shape[1] // groups, out_shape[1] // groups
        taps = math.prod(layer.kernel)
        if (
            src.axis != 1
            or need in (_FULL, _ROWS)
            or groups % need
            or len(in_shape) != nd + 2
            or len(out_shape) != nd + 2
            or per_in * per_out * taps >= _EXACT
        ):
            return None
        # One float64 window sum: the uniform part and, for each term, its mask summed over the
        # channels of each consumer group (when the consumers need fewer groups than the layer).
        totals = [] if last or need == groups else [_term_total(t, need) for t in src.terms]
        windows = self._kernel_sum(step, layer, torch.cat([src.t * per_in, *totals], dim=1),
                                   in_shape, out_shape)  # fmt: skip
        window = windows[:, :1]
        by_need = list(windows[:, 1:].split(need, dim=1)) if totals else []
        bound = per_in * taps  # the largest value a window sum of a mask can take
        # Window sums of masks in uint8 where they and their products with the counts of active
        # outputs stay below 256 (integers: exact), else in float32 (below 2**24: exact).
        small = bound * per_out < 256
        # Padding commutes with summing channels: the mask's pending padding joins the layer's.
        # Each window sum is laid out channels last.
        sums = [(term.c, self._mask_window(step, layer, _coarsen(term.mask, groups), term.pad,
                                           small)) for term in src.terms]  # fmt: skip
        dims = tuple(range(1, nd + 2))
        if last:
            self.active_fraction[step.name] = 1.0
            total = window.sum(dim=dims) * groups
            for c, w in sums:
                total = total + c * _exact_total(w, bound)
            return None, src.s + (total * per_out).log()
        # An upper bound of the largest F (exact maximum not needed: any positive scale is).
        peak = window.amax(dim=dims)
        for c, _ in sums:
            peak = peak + c * bound
        s, inv, start = self._scale(peak, src.s, nd + 2)
        mask = self._mask(step)
        active_g = self._active(step, mask, groups)  # active outputs per group (<= per_out)
        active = self._active(step, mask, 1) if per_out == 1 else \
            active_g.sum(dim=1, keepdim=True)  # fmt: skip
        self.active_fraction[step.name] = float(active.sum()) / mask.numel()
        active = active.to(torch.float64)
        # Leaving: per consumer group d, Q * (sum of F_g over the groups in d) * exp(-s) plus
        # exp(-s) per inactive output.
        summed = window * (groups // need)
        for i, (c, w) in enumerate(sums):
            window_d = by_need[i] if by_need else w.movedim(-1, 1).to(torch.float64)
            summed = summed + _per_sample(c, nd + 2) * window_d
        reached = (window * active).sum(dim=dims)
        if sums:
            # Channels last like the window sums: the products are runs of whole positions.
            weight = _channels_last(active_g, torch.uint8 if small else torch.float32)
        for c, w in sums:  # integer products and sums: exact
            reached = reached + c * _exact_total(torch.mul(w, weight), bound * per_out)
        contribution = src.s + reached.log()
        active_d = active if need == 1 else self._active(step, mask, need)
        inactive = torch.rsub(_as(active_d, torch.float64), out_shape[1] // need)
        summed = summed * (per_out if inv is None else inv * per_out)
        return Counts(torch.addcmul(summed, inactive, start), s), contribution

    def _mask_window(
        self, step: Step, layer: Layer, n: torch.Tensor, pending: tuple[int, ...], small: bool
    ) -> torch.Tensor:
        """Per channel of ``n`` (a mask, or small integer counts) zero-padded by ``pending``
        (``F.pad`` order), the sum over the layer's window, channels last: additions of
        integers in uint8 (``small``: every sum below 256) or float32 (below 2**24), exact
        either way. Padding is only an offset here (positions outside add nothing).

        Channels last, each tap adds runs of whole positions (all their channels); with the
        channels first, a small image's rows are short runs, each a separate inner loop. A
        float32 convolution would round nothing either, but oneDNN's depthwise kernel copies its
        input into a blocked layout first, several times slower than these additions on CPU."""
        last = _channels_last(n, torch.uint8 if small else torch.float32)
        return _window_sum(last, layer.kernel, layer.stride, _left(layer, pending),
                           layer.dilation, self.shapes[step.index][2:], first=1)  # fmt: skip

    def _kernel_sum(
        self, step: Step, layer: Layer, summed: torch.Tensor, in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
    ) -> torch.Tensor:  # fmt: skip
        """Per group (of ``summed``, already summed over groups) and output position, the sum
        of counts over the kernel's support."""
        nd = len(layer.kernel)
        if len(in_shape) != nd + 2 or len(out_shape) != nd + 2:
            raise self._error(step, "an unbatched convolution input")
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
        raw = self._dense(src, step.sources[0], _ROWS)  # per row, the count reaching each output
        dims = tuple(range(1, raw.dim()))
        width = out_shape[-1]
        if step.index in self.structure.last:
            self.active_fraction[step.name] = 1.0
            return None, src.s + (raw.sum(dim=dims) * width).log()
        s, inv, start = self._scale(raw.amax(dim=dims), src.s, raw.dim())
        mask = self._mask(step).reshape(-1, *out_shape[1:])
        per_row = self._active(step, mask, 1, dim=-1)
        self.active_fraction[step.name] = float(per_row.sum()) / mask.numel()
        per_row = per_row.to(torch.float64)
        contribution = src.s + (raw * per_row).sum(dim=dims).log()
        scaled = _times(raw, inv)
        need = self._need(step.index)
        if need == _ROWS:  # summed over the row again (another Linear): no per-feature tensor
            inactive = torch.rsub(per_row, width)
            if self.cross:
                return Counts(torch.addcmul(scaled * width, inactive, start), s), contribution
            return Counts(torch.addcmul(inactive * start, scaled, per_row), s), contribution
        if self._split(step.index):
            split = Counts(scaled, s, axis=len(out_shape) - 1, uniform=True,
                           terms=(Term(start.reshape(-1), torch.logical_not(mask)),))  # fmt: skip
            return split, contribution
        active = _as(mask, torch.float64)
        base = torch.addcmul(start, active, start, value=-1)  # the inactive outputs' own path
        q = base.add_(scaled) if self.cross else base.addcmul_(active, scaled)
        return Counts(_carry(q, need), s), contribution

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
        fg = _coarsen(src.t, groups)
        if step.index in self.structure.last:
            self.active_fraction[step.name] = 1.0
            return None, src.s + (fg.sum(dim=1) * (channels // groups)).log()
        s, inv, start = self._scale(fg.amax(dim=1), src.s, 3)
        mask = self._mask(step).reshape(-1, groups, channels // groups)
        self.active_fraction[step.name] = float(mask.float().mean())
        fg = _times(fg.unsqueeze(2), inv)
        contribution = s + (fg * mask.sum(dim=2, keepdim=True)).sum(dim=(1, 2)).log()
        q = torch.where(mask, fg, fg + start) if self.cross else torch.where(mask, fg, start)
        return Counts(q.reshape(self.nb, channels), s, axis=axis), contribution

    def _scale(
        self, peak: torch.Tensor, s: torch.Tensor, ndim: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The scale of a layer's counts, which are at scale ``exp(s)`` and at most ``peak``
        per sample: ``(s', factor, exp(-s'))``, the factor (None: 1) and ``exp(-s')`` shaped
        for ``ndim`` dimensions. Counts are rescaled, by their peak, only once some sample's
        passes ``_RESCALE``: a float64 count has room for the growth of many layers above it,
        and a kept scale saves a dozen small operations per layer (and a pass over the counts).
        """
        if float(peak.max()) > _RESCALE:
            peak = torch.where(peak > 0, peak, 1.0)
            s = s + peak.log()
            factor: torch.Tensor | None = _per_sample(1.0 / peak, ndim)
        else:
            factor = None
        if self._start[0] is not s:
            self._start = (s, torch.exp(-s))  # the length-0 path from an inactive neuron
        return s, factor, _per_sample(self._start[1], ndim)

    def _active(self, step: Step, mask: torch.Tensor, parts: int, dim: int = 1) -> torch.Tensor:
        """The active neurons of the layer's ``mask`` per ``parts`` contiguous groups along
        ``dim`` (kept), int32: as the probe's kernel counted them where it did, else counted
        here (and asked of the kernel next time)."""
        dim %= mask.dim()
        size = mask.shape[dim]
        if parts == size:  # each neuron alone: the mask itself (one channel: a count)
            return mask if size > 1 else _count(mask, dim)
        block = size // parts
        counted = self.kernel_counts[step.index].get(block)
        if counted is not None and counted.shape == (*mask.shape[:dim], parts,
                                                     *mask.shape[dim + 1 :]):  # fmt: skip
            return counted
        self.uncounted.setdefault(step.index, set()).add(block)
        return _coarsen(mask.movedim(dim, 1), parts).movedim(1, dim)

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
        own = self._need(step.index)
        if any(src.uniform for src in sources):
            kept = self._route_split(step, sources, own)
            if kept is not None:
                return kept
            # Any other op sees dense counts: in the step's own form where the op keeps the
            # channels where they are (it would only sum them), else every channel.
            form = own if kind in ("identity", "nonlin", "add") else _FULL
            sources = [
                Counts(self._dense(src, i, form), src.s) if src.uniform else src
                for src, i in zip(sources, step.sources)
            ]
        src = sources[0]
        if kind in ("identity", "nonlin"):
            if out_shape != in_shape:
                raise self._error(step, f"it broadcasts {in_shape} to {out_shape}")
            return Counts(_carry(src.t, own), src.s)
        if kind == "add":
            if any(self.shapes[i] != out_shape for i in step.sources):
                raise self._error(step, "its operands have different shapes (broadcasting)")
            s, ts = _align(sources)
            total = _carry(ts[0], own)
            for t in ts[1:]:
                total = total + _carry(t, own)
            return Counts(total, s)
        if kind == "cat":
            dim = _normal_dim(self.params(step).get("dim", 0), len(out_shape))
            if dim <= 0:
                raise self._error(step, f"concatenation along dimension {dim}")
            s, ts = _align(sources)
            channels = [self.shapes[i][1] for i in step.sources]
            if dim == 1 and own == 1:  # one consumer group: the operands' totals add
                return Counts(sum((_coarsen(t, 1) for t in ts[1:]), _coarsen(ts[0], 1)), s)
            if dim == 1 and own > 0 and all(c % (out_shape[1] // own) == 0 for c in channels):
                width = out_shape[1] // own
                parts = [_coarsen(t, c // width) for t, c in zip(ts, channels)]
                return Counts(torch.cat(parts, dim=1), s)
            return Counts(_carry(torch.cat(ts, dim=dim), own), s)
        # Below, ops that move positions: they see the groups the step carries, or every
        # channel when it carries row sums (then the last dimension is one they move).
        if kind == "pool":
            pool = self._pool(step)
            if len(in_shape) != pool["nd"] + 2:
                raise self._error(step, "unbatched pooling input")
            t = _window_sum(src.t, pool["kernel"], pool["stride"], pool["padding"],
                            pool["dilation"], out_shape[2:])  # fmt: skip
            return Counts(_carry(t, own), src.s)
        if kind == "adaptive":
            nd = len(out_shape) - 2
            if len(in_shape) != nd + 2 or nd not in _ADAPTIVE_AVG:
                raise self._error(step, "unbatched adaptive pooling input")
            return Counts(_carry(_adaptive_sum(src.t, tuple(out_shape[2:])), own), src.s)
        if kind == "reduce":
            dims = self._reduce_dims(step, len(in_shape))
            if 0 in dims:
                raise self._error(step, "a reduction over the batch dimension")
            keep = bool(self.params(step).get("keepdim", False))
            return Counts(_carry(src.t.sum(dim=dims, keepdim=keep), own), src.s)
        if kind == "reshape":
            if out_shape[0] != in_shape[0] or math.prod(out_shape) != math.prod(in_shape):
                raise self._error(step, "it changes the batch or the number of elements")
            t = src.t
            rows = own == _ROWS and len(out_shape) > 2 and out_shape[-1] == in_shape[-1]
            if rows and self._need(step.sources[0]) != _FULL:
                return Counts(t.reshape(self.nb, *out_shape[1:-1], 1), src.s)  # rows move whole
            if own != _ROWS and len(out_shape) >= 2 and len(in_shape) >= 2 \
                    and out_shape[1] == in_shape[1]:  # fmt: skip
                groups = out_shape[1] if own == _FULL else own
                return Counts(_carry(t, own).reshape(self.nb, groups, *out_shape[2:]), src.s)
            if t.shape[1:2] == (1,) and own == 1 and len(out_shape) == 2:
                return Counts(t.reshape(self.nb, -1).sum(dim=1, keepdim=True), src.s)
            return Counts(_carry(t.reshape(self.nb, *out_shape[1:]), own), src.s)
        if kind == "permute":
            perm = self._perm(step, len(in_shape))
            if perm[0] != 0:
                raise self._error(step, "it moves the batch dimension")
            return Counts(_carry(src.t.permute(perm), own), src.s)
        if kind == "pad":
            pad = self._pad(step)
            if len(pad) > 2 * (len(in_shape) - 1):
                raise self._error(step, "it pads the batch dimension")
            if not any(pad):
                return Counts(_carry(src.t, own), src.s)
            t = F.pad(src.t, pad, value=0.0)  # padded positions are constants: no paths
            if tuple(t.shape[2:]) != tuple(out_shape[2:]):
                raise self._error(step, "its output size could not be reproduced")
            return Counts(_carry(t, own), src.s)
        if kind == "upsample":
            t = src.t
            for axis, index in enumerate(self._upsample_support(step, in_shape, out_shape)):
                dim = 2 + axis
                zero = torch.zeros_like(t.narrow(dim, 0, 1))
                padded = torch.cat([t, zero], dim=dim)  # index n: no source (zero counts)
                t = padded.index_select(dim, index[0])
                for row in index[1:]:
                    t = t + padded.index_select(dim, row)
            return Counts(_carry(t, own), src.s)
        raise self._error(step, f"cannot route paths through a {kind} step")

    def _route_split(self, step: Step, sources: list[Counts], own: int) -> Counts | None:
        """Split counts through identities, spatial padding, permutes and additions (each a
        linear map applied to the uniform part and to every mask); None: make them dense."""
        if own != _FULL:
            return None
        kind = step.kind
        out_shape = self.shapes[step.index]
        in_shape = self.shapes[step.sources[0]]
        src = sources[0]
        if kind in ("identity", "nonlin") and out_shape == in_shape:
            return src
        if kind == "pad" and src.axis == 1 and len(self._pad(step)) <= 2 * (len(in_shape) - 2):
            pad = self._pad(step)
            if not any(pad):
                return src
            t = F.pad(src.t, pad, value=0.0)
            if tuple(t.shape[2:]) != tuple(out_shape[2:]):
                raise self._error(step, "its output size could not be reproduced")
            terms = tuple(term.then_pad(pad) for term in src.terms)
            return Counts(t, src.s, uniform=True, terms=terms)
        if kind == "permute":
            perm = self._perm(step, len(in_shape))
            if perm[0] != 0:
                return None
            terms = tuple(term.permuted(perm) for term in src.terms)
            return Counts(src.t.permute(perm), src.s, axis=perm.index(src.axis), uniform=True,
                          terms=terms)  # fmt: skip
        if (
            kind == "add"
            and all(x.uniform and x.axis == src.axis for x in sources)
            and all(self.shapes[i] == out_shape for i in step.sources)
            and sum(len(x.terms) for x in sources) <= _MAX_TERMS
        ):
            s = sources[0].s
            for x in sources[1:]:
                s = torch.maximum(s, x.s)
            total: torch.Tensor | None = None
            merged: list[Term] = []
            for x in sources:
                scale = torch.exp(x.s - s)  # onto the largest scale
                part = x.t * _per_sample(scale, x.t.dim())
                total = part if total is None else total + part
                merged += [term._replace(c=term.c * scale) for term in x.terms]
            assert total is not None
            return Counts(total, s, axis=src.axis, uniform=True, terms=tuple(merged))
        return None

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

    def _moves_batch(self, step: Step) -> bool:
        shapes = [self.shapes[step.index]] + [self.shapes[i] for i in step.sources]
        return any(not shape or shape[0] != self.batch for shape in shapes)

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def _error(self, step: Step, why: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(f"the emergence measure cannot handle {step.name}: {why}.")


def _term_total(term: Term, groups: int) -> torch.Tensor:
    """A term's mask summed over ``groups`` contiguous groups of channels, with its pending
    padding applied, float64 (small integers, exact)."""
    known = term.padded_total() if groups == 1 else None
    if known is not None:
        return known.to(torch.float64)
    total = _coarsen(term.mask, groups).to(torch.float64)
    return F.pad(total, list(term.pad)) if any(term.pad) else total


def _left(layer: Layer, pending: Sequence[int]) -> list[int]:
    """The zero padding before each spatial dim: the layer's, plus ``pending`` (``F.pad``
    order, the last dimension first) not yet applied to the value."""
    nd = len(layer.kernel)
    left = [pair[0] for pair in _pad_pairs(layer)]
    for i in range(len(pending) // 2):
        left[nd - 1 - i] += pending[2 * i]
    return left


def _pad_pairs(layer: Layer) -> list[tuple[int, int]]:
    """(left, right) zero padding per spatial dim; "same" puts the odd one on the right."""
    if isinstance(layer.padding, str):  # "same" ("valid" became zeros)
        total = [d * (k - 1) for k, d in zip(layer.kernel, layer.dilation)]
        return [(t // 2, t - t // 2) for t in total]
    return [(p, p) for p in layer.padding]


def _window_sum(
    t: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], left: Sequence[int],
    dilation: Sequence[int], out_size: Sequence[int], first: int = 2,
) -> torch.Tensor:  # fmt: skip
    """Per channel, ``out[i] = sum over taps j of t[i * stride - left + j * dilation]``, with
    the spatial dims from ``first`` on (1: channels last).

    The sum over every window of an all-ones kernel, a pooling window or a convolution's
    receptive field, with positions outside the input (padding, or past it in ceil mode)
    contributing nothing. Separable: per dim, one output tensor and one in-place add per tap
    (float64 convolutions and pooling are slow on CPU, and no padded copy is made); the output
    starts as a copy of a tap that every output reads (the centre, usually), else as zeros.
    Where the operations' own cost outweighs their work (few values, or wide windows over
    values channels last, whose taps are runs of whole positions), per dim one reduction over a
    zero-padded unfolded view instead (a different order of the same additions: floats may
    differ in the last bit).
    """
    for axis, (k, s, p, d, o) in enumerate(zip(kernel, stride, left, dilation, out_size)):
        dim = first + axis
        size = t.shape[dim]
        if k == 1 and s == 1 and p == 0 and o == size:
            continue  # a 1x1 window: every position routes to itself
        if t.numel() * k <= _UNFOLD_WORK or (first == 1 and k >= 5):
            t = _unfold_sum(t, dim, k, s, p, d, o)
            continue
        taps = []  # (first output, number of outputs, the input slice they read)
        for j in range(k):
            offset = j * d - p  # output i reads input i * s + offset
            lo = max(0, (s - 1 - offset) // s)  # the first i with i * s + offset >= 0
            hi = min(o - 1, (size - 1 - offset) // s)  # the last with i * s + offset < size
            if hi >= lo:
                taps.append((lo, hi - lo + 1, slice(lo * s + offset, hi * s + offset + 1, s)))
        whole = next((tap for tap in taps if tap[1] == o), None)
        index: list[Any] = [slice(None)] * t.dim()
        if whole is None:
            shape = list(t.shape)
            shape[dim] = o
            out = t.new_zeros(shape)
        else:
            index[dim] = whole[2]
            out = t[tuple(index)].clone()
        for tap in taps:
            if tap is not whole:
                index[dim] = tap[2]
                out.narrow(dim, tap[0], tap[1]).add_(t[tuple(index)])
        t = out
    return t


# values x taps up to which a window sum by unfold costs less (fewer operations); with 5 taps
# or more over channels-last values it does at any size (measured on CPU: uint8, float32 and
# float64 values, 3 and 7 taps, 4x4 to 112x112 positions; docs/performance.md)
_UNFOLD_WORK = 2**17


def _unfold_sum(t: torch.Tensor, dim: int, k: int, s: int, p: int, d: int, o: int) -> torch.Tensor:
    """Along ``dim``: ``out[i] = sum over j < k of t[i * s - p + j * d]`` (zeros outside)."""
    span = (k - 1) * d + 1
    right = max(0, (o - 1) * s + span - p - t.shape[dim])
    if p or right:
        t = F.pad(t, [0, 0] * (t.dim() - 1 - dim) + [p, right])
    windows = t.unfold(dim, span, s)
    if d > 1:
        windows = windows[..., ::d]
    out = windows.sum(dim=-1, dtype=t.dtype)
    return out if out.shape[dim] == o else out.narrow(dim, 0, o).contiguous()


def _channels_last(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` with dimension 1 moved last, contiguous, in ``dtype`` (booleans as 0 / 1): a view
    where ``t`` lies channels last already (the probe's layout for convolutions), else one copy
    that transposes and converts."""
    moved = (t.view(torch.uint8) if t.dtype == torch.bool else t).movedim(1, -1)
    if moved.dtype == dtype and moved.is_contiguous():
        return moved
    return torch.empty(moved.shape, dtype=dtype, device=t.device).copy_(moved)


def _exact_total(t: torch.Tensor, bound: int) -> torch.Tensor:
    """Per sample, the exact float64 sum of a tensor of integers in ``[0, bound]``: uint8 or
    float32 (:func:`_exact_sum`).

    A contiguous uint8 sample is first folded: ``k`` slices of it added as int64 words of 8
    values, where ``k * bound < 128`` so that no byte carries into the next (nor any word turns
    negative); the int32 sum then reads ``k`` times fewer values (a uint8 reduction to int32
    converts every value, the slow part on CPU)."""
    if t.is_floating_point():
        return _exact_sum(t, bound)
    batch = t.shape[0]
    if t.numel() < 2**16:  # too small for folding to pay for its extra operations
        return _integer_sum(t, bound)
    words = t.numel() // batch // 8
    fold = next((k for k in range(min(127 // bound, words), 1, -1) if words % k == 0), 1)
    if fold > 1 and t.is_contiguous() and t.numel() == batch * words * 8:
        folded = t.reshape(batch, -1).view(torch.int64).reshape(batch, fold, words // fold)
        t = folded.sum(dim=1, dtype=torch.int64).view(torch.uint8)
        bound *= fold
    return _integer_sum(t, bound)


def _integer_sum(t: torch.Tensor, bound: int) -> torch.Tensor:
    """Per sample, the exact sum (float64) of an integer tensor with values in ``[0, bound]``:
    in int32 where the total stays below 2**31, else in int64."""
    dims = tuple(range(1, t.dim()))
    wide = bound * math.prod(t.shape[1:]) >= 2**31
    return t.sum(dim=dims, dtype=torch.int64 if wide else torch.int32).to(torch.float64)


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


def _times(t: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    return t if factor is None else t * factor


def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


def _carry(t: torch.Tensor, need: int) -> torch.Tensor:
    """Counts with every channel (or already in form ``need``) brought into form ``need``."""
    if need == _FULL or t.dim() < 2:
        return t
    if need == _ROWS:
        return t if t.shape[-1] == 1 else t.sum(dim=-1, keepdim=True)
    return _coarsen(t, need)


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``; booleans through uint8 (several times faster on CPU)."""
    return (t.view(torch.uint8) if t.dtype == torch.bool else t).to(dtype)


def _pad_mask(mask: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """``F.pad`` with zeros (negative: crop); booleans through uint8 (faster copies)."""
    if mask.dtype == torch.bool:
        return F.pad(mask.view(torch.uint8), list(pad)).view(torch.bool)
    return F.pad(mask, list(pad))


def _exact_sum(t: torch.Tensor, bound: int) -> torch.Tensor:
    """Per sample, the exact float64 sum of a float32 tensor of integers in ``[0, bound]``:
    in float32 over positions where every partial sum stays below 2**24, else in float64."""
    if t.dim() > 2 and bound * math.prod(t.shape[2:]) < _EXACT:
        return t.sum(dim=tuple(range(2, t.dim()))).to(torch.float64).sum(dim=1)
    return t.sum(dim=tuple(range(1, t.dim())), dtype=torch.float64)


def _coarsen(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum dimension 1 into ``groups`` contiguous groups (``_FULL`` or equal: unchanged); a
    mask becomes counts (int32)."""
    if t.dim() < 2 or groups == _FULL or t.shape[1] == groups:
        return t
    if t.dtype == torch.bool and t.stride(1) == 1:  # channels last: runs of bytes per position
        rows = t.view(torch.uint8).movedim(1, -1)
        return _block_counts(rows, t.shape[1] // groups).movedim(-1, 1)
    split = t.reshape(t.shape[0], groups, t.shape[1] // groups, *t.shape[2:])
    return _count(split, 2).squeeze(2) if t.dtype == torch.bool else split.sum(dim=2)


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """The number of true values of a mask along ``dim`` (kept, of size 1), as int32, exact.

    A sum that casts the booleans first costs a full-size copy, an order of magnitude more on
    CPU, so the bytes are added as they are: in uint8 over slices of at most 255 values along
    ``dim``; where the values after ``dim`` are contiguous and a multiple of 8, as int64 words of
    8 booleans over slices of at most 127 (8 byte sums in one addition: no byte reaches 128, so
    none carries into the next and no word turns negative; PyTorch's uint8 sums are slow when
    few values lie after ``dim``); along a dim of stride 1 (channels last), by
    :func:`_block_counts`."""
    dim %= mask.dim()
    values = mask.view(torch.uint8)
    size = mask.shape[dim]
    if mask.stride(dim) == 1 and size > 1:
        return _block_counts(values.movedim(dim, -1), size).movedim(-1, dim)
    inner = math.prod(mask.shape[dim + 1 :])
    if inner % 8 == 0 and mask.is_contiguous():
        words = values.reshape(*mask.shape[: dim + 1], inner).view(torch.int64)
        total: torch.Tensor | None = None
        for part in words.split(127, dim):
            lanes = part.sum(dim=dim, keepdim=True, dtype=torch.int64).view(torch.uint8)
            total = lanes.to(torch.int32) if total is None else total.add_(lanes)
        assert total is not None
        return total.reshape(*mask.shape[:dim], 1, *mask.shape[dim + 1 :])
    parts = values.split(255, dim)
    result = parts[0].sum(dim=dim, keepdim=True, dtype=torch.uint8).to(torch.int32)
    for part in parts[1:]:
        result += part.sum(dim=dim, keepdim=True, dtype=torch.uint8)
    return result


def _block_counts(rows: torch.Tensor, size: int) -> torch.Tensor:
    """Sums of the last dimension's blocks of ``size`` 0 / 1 uint8 values, int32.

    PyTorch's CPU sums over a few adjacent bytes are scalar loops, so where the rows lie
    contiguous (and the machine is little-endian) the bytes are added as words. In a large mask:
    the int32 words of a block summed (no byte lane passes 255, so nothing carries into the next
    lane), then each word's 4 lanes pairwise, masked (blocks of 2: each word plus itself shifted
    by a byte, masked to 2-byte lanes). In a small one (fewer operations): blocks of 8k by the
    int64 words of a block summed (no lane reaches 128, so none carries and no word turns
    negative), then the 8 lanes of each sum. Otherwise a plain sum."""
    width = rows.shape[-1]
    shape = rows.shape[:-1]
    wide = torch.int32 if size > 255 else torch.uint8
    as_words = (
        rows.is_contiguous()
        and rows.numel() > 0
        and sys.byteorder == "little"
        and rows.storage_offset() % 8 == 0
    )
    if as_words:
        flat = rows.reshape(-1, width)  # a view; size-1 dimensions get standard strides
        lanes_fit = size == 2 or (size % 4 == 0 and size <= 4 * 255)
        if width % 4 == 0 and lanes_fit and flat.numel() >= _LANE_MIN:
            words = flat.view(torch.int32)
            if size == 2:
                lanes = torch.bitwise_right_shift(words, 8).add_(words).bitwise_and_(0x00FF00FF)
                return lanes.view(torch.int16).to(torch.int32).reshape(*shape, -1)
            words = words.reshape(-1, width // size, size // 4)
            summed = words.sum(dim=-1, dtype=torch.int32) if size > 4 else words.squeeze(-1)
            lanes = torch.bitwise_right_shift(summed, 8).bitwise_and_(0x00FF00FF)
            lanes.add_(summed.bitwise_and(0x00FF00FF))
            lanes.add_(torch.bitwise_right_shift(lanes, 16)).bitwise_and_(0xFFFF)
            return lanes.reshape(*shape, -1)
        if width % 8 == 0 and size % 8 == 0 and size <= 8 * 127:
            words = flat.view(torch.int64).reshape(-1, width // size, size // 8)
            summed = words.sum(dim=-1, dtype=torch.int64) if size > 8 else words.squeeze(-1)
            lanes = summed.view(torch.uint8).reshape(*shape, width // size, 8)
            return lanes.sum(dim=-1, dtype=wide).to(torch.int32)
    return rows.reshape(*shape, width // size, size).sum(dim=-1, dtype=wide).to(torch.int32)


_LANE_MIN = 2**18  # below this many values, fewer operations (int64 words) cost less


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
