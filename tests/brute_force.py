"""Independent references for the emergence measure.

A network is described by a small spec (a list of op tuples). ``SpecNet`` turns it into a torch
model (functional ops where fx must see them); ``explicit_graph`` builds the neuron graph of the
same spec *by explicit loops* over output positions, kernel offsets and pooling windows, each
tensor element holding the multiset of neurons routed into it. Path counts are then exact Python
integers over that explicit adjacency, by a DP or, for tiny graphs, by enumerating every path.
Nothing here calls the library under test.

Spec ops (``nd`` spatial dims follow from the input shape):
    ("linear", out)                         nn.Linear on (batch, features)
    ("conv", out, k, stride, pad, dil, g)   nn.ConvNd, zero padding
    ("bn",) ("dropout",) ("identity",)      routing identities
    ("act", name)                           relu | frelu (F.relu) | tanh | gelu | leaky | sigmoid
                                            | silu | mrelu (Tensor.relu)
    ("maxpool", k, s, p, d, ceil)           nn.MaxPoolNd (F.max_pool* when functional=True)
    ("avgpool", k, s, p, ceil)
    ("adaptive", out) / ("adaptive_max", out)
    ("flatten",)                            torch.flatten(x, 1)
    ("view",)                               x.view(x.size(0), -1)
    ("gap",)                                x.mean(spatial dims)
    ("merge_rows",)                         x.flatten(1, -2): (batch, ..., C) -> (batch, P, C)
    ("mean", dim)                           x.mean(dim) over one dimension (not the batch's)
    ("block", out, stride)                  ResNet basic block: conv3x3(stride)-bn-relu-conv3x3-bn
                                            + shortcut (identity, or conv1x1(stride)-bn) then relu
    ("convT", out, k, stride, pad, opad, dil, g)  nn.ConvTransposeNd (F.conv_transpose* functional)
    ("upsample", mode, scale, align_corners)  nn.Upsample (F.interpolate when functional=True)
    ("pad", pads)                           F.pad with zeros (nn.ZeroPadNd module form), pads as
                                            F.pad takes them: (left, right) from the last dim
    ("save",)                               push the current value (it is used twice: a fork)
    ("cat_saved",) / ("add_saved",)         torch.cat([x, saved], 1) / x + saved (pops it)
    ("permute", dims)                       x.permute(dims), dims including the batch dim 0
    ("ln",)                                 nn.LayerNorm over the last dim
    ("ln_channels",)                        LayerNorm over channels of (B, C, ...) (a LayerNorm
                                            subclass that permutes inside, as ConvNeXt's)
    ("scale",)                              gamma * x with a parameter gamma first (layer scale)

"linear" acts on the last dimension: on (batch, features) it is a dense layer, on channels-last
(batch, ..., C) one dense layer per position. Activations: see ``ACTIVATIONS``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Spec = list[tuple[Any, ...]]
WEIGHT_OPS = ("linear", "conv", "convT")
ROUTE_SKIP = ("bn", "dropout", "identity", "ln", "ln_channels", "scale", "add_saved")
RESHAPES = ("flatten", "view", "merge_rows")
ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
    "leaky": lambda: nn.LeakyReLU(0.1), "silu": nn.SiLU, "hardswish": nn.Hardswish,
    "relu6": nn.ReLU6, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The torch side


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, nd: int) -> None:
        super().__init__()
        conv = (nn.Conv1d, nn.Conv2d)[nd - 1]
        norm = (nn.BatchNorm1d, nn.BatchNorm2d)[nd - 1]
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.down: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(conv(cin, cout, 1, stride, bias=False), norm(cout))

    def run(self, x: torch.Tensor, record: list[torch.Tensor] | None) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if record is not None:
            record.append(out)  # conv1's activity
        out = self.bn2(self.conv2(out))
        shortcut = x if self.down is None else self.down(x)
        out = F.relu(out + shortcut)
        if record is not None:
            record.append(out)  # conv2's activity
            if self.down is not None:
                record.append(out)  # the shortcut conv's: the same nonlinearity
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, None)


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, ...), by permuting them last (as in ConvNeXt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = [0, *range(2, x.dim()), 1]
        back = [0, x.dim() - 1, *range(1, x.dim() - 1)]
        return super().forward(x.permute(order)).permute(back)


class LayerScale(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x  # the parameter first: paths come through the second operand


class SpecNet(nn.Module):
    """A torch model of a spec; ``replay`` also returns each weight layer's activity value."""

    def __init__(self, spec: Spec, in_shape: Sequence[int], functional: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.functional = functional
        self.nd = len(in_shape) - 1
        mods: list[nn.Module] = []
        shape = list(in_shape)
        saved: list[list[int]] = []
        for op in spec:
            mods.append(self._module(op, shape))
            if op[0] == "save":
                saved.append(shape)
            elif op[0] == "cat_saved":
                other = saved.pop()
                shape = [shape[0] + other[0], *shape[1:]]
            elif op[0] == "add_saved":
                saved.pop()
            shape = list(self._shape_after(op, shape))
        self.mods = nn.ModuleList(mods)
        self.out_shape = tuple(shape)

    def _module(self, op: tuple[Any, ...], shape: list[int]) -> nn.Module:
        kind = op[0]
        nd = len(shape) - 1
        if kind == "linear":
            return nn.Linear(shape[-1], op[1])
        if kind == "conv":
            _, out, k, s, p, d, g = op
            return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1](shape[0], out, k, s, p, d, g)
        if kind == "convT":
            _, out, k, s, p, op_, d, g = op
            cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[nd - 1]
            return cls(shape[0], out, k, s, p, op_, g, True, d)
        if kind == "upsample":
            _, mode, scale, align = op
            return nn.Upsample(scale_factor=scale, mode=mode, align_corners=align)
        if kind == "pad":
            return (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d)[nd - 1](tuple(op[1]))
        if kind == "ln":
            return nn.LayerNorm(shape[-1])
        if kind == "ln_channels":
            return ChannelsFirstLayerNorm(shape[0])
        if kind == "scale":
            return LayerScale(shape[-1])
        if kind == "bn":
            return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[max(nd, 1) - 1](shape[0])
        if kind == "dropout":
            return nn.Dropout(0.3)
        if kind == "act":
            factory = ACTIVATIONS.get(op[1])
            return factory() if factory is not None else nn.Identity()
        if kind == "maxpool":
            _, k, s, p, d, ceil = op
            return (nn.MaxPool1d, nn.MaxPool2d)[nd - 1](k, s, p, d, ceil_mode=ceil)
        if kind == "avgpool":
            _, k, s, p, ceil = op
            return (nn.AvgPool1d, nn.AvgPool2d)[nd - 1](k, s, p, ceil_mode=ceil)
        if kind == "adaptive":
            return (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)[nd - 1](op[1])
        if kind == "adaptive_max":
            return (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)[nd - 1](op[1])
        if kind == "block":
            return Block(shape[0], op[1], op[2], nd)
        return nn.Identity()

    @staticmethod
    def _shape_after(op: tuple[Any, ...], shape: list[int]) -> tuple[int, ...]:
        kind = op[0]
        if kind == "linear":
            return (*shape[:-1], op[1])
        if kind == "conv":
            _, out, k, s, p, d, _g = op
            return (out, *[conv_size(n, k, s, p, d) for n in shape[1:]])
        if kind == "convT":
            _, out, k, s, p, op_, d, _g = op
            return (out, *[(n - 1) * s - 2 * p + d * (k - 1) + op_ + 1 for n in shape[1:]])
        if kind == "upsample":
            return (shape[0], *[math.floor(n * op[2]) for n in shape[1:]])
        if kind == "pad":
            pads = list(op[1])
            sizes = list(shape[1:])
            for axis in range(len(pads) // 2):
                sizes[-1 - axis] += pads[2 * axis] + pads[2 * axis + 1]
            return (shape[0], *sizes)
        if kind == "permute":
            return tuple(shape[d - 1] for d in op[1][1:])
        if kind == "maxpool":
            _, k, s, p, d, ceil = op
            return (shape[0], *[pool_size(n, k, s, p, d, ceil) for n in shape[1:]])
        if kind == "avgpool":
            _, k, s, p, ceil = op
            return (shape[0], *[pool_size(n, k, s, p, 1, ceil) for n in shape[1:]])
        if kind in ("adaptive", "adaptive_max"):
            return (shape[0], *[op[1]] * (len(shape) - 1))
        if kind in ("flatten", "view"):
            return (math.prod(shape),)
        if kind == "merge_rows":
            return (math.prod(shape[:-1]), shape[-1])
        if kind == "mean":
            return tuple(n for axis, n in enumerate(shape) if axis != op[1] - 1)
        if kind == "gap":
            return (shape[0],)
        if kind == "block":
            return (op[1], *[conv_size(n, 3, op[2], 1, 1) for n in shape[1:]])
        return tuple(shape)

    def _run(self, x: torch.Tensor, record: list[Any] | None) -> torch.Tensor:
        saved: list[torch.Tensor] = []
        for op, mod in zip(self.spec, self.mods):
            kind = op[0]
            if kind == "save":
                saved.append(x)
            elif kind == "cat_saved":
                x = torch.cat([x, saved.pop()], dim=1)
            elif kind == "add_saved":
                x = x + saved.pop()
            elif kind == "permute":
                x = x.permute(*op[1])
            elif kind == "convT" and self.functional:
                assert isinstance(mod, nn.modules.conv._ConvTransposeNd)
                fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.nd - 1]
                _, _out, _k, s, p, op_, d, g = op
                x = fn(x, mod.weight, mod.bias, s, p, op_, g, d)
            elif kind == "upsample" and self.functional:
                _, mode, scale, align = op
                x = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align)
            elif kind == "pad" and self.functional:
                x = F.pad(x, list(op[1]))
            elif kind == "act":
                name = op[1]
                if name == "frelu":
                    x = F.relu(x)
                elif name == "mrelu":
                    x = x.relu()
                else:
                    x = mod(x)
            elif kind == "maxpool" and self.functional:
                _, k, s, p, d, ceil = op
                pool = (F.max_pool1d, F.max_pool2d)[self.nd - 1]
                x = pool(x, k, s, p, d, ceil_mode=ceil)
            elif kind == "avgpool" and self.functional:
                _, k, s, p, ceil = op
                pool = (F.avg_pool1d, F.avg_pool2d)[self.nd - 1]
                x = pool(x, k, s, p, ceil_mode=ceil)
            elif kind == "flatten":
                x = torch.flatten(x, 1)
            elif kind == "merge_rows":
                x = x.flatten(1, -2)
            elif kind == "mean":
                x = x.mean(dim=op[1])
            elif kind == "view":
                x = x.view(x.size(0), -1)
            elif kind == "gap":
                x = x.mean(dim=tuple(range(2, 2 + self.nd)))
            elif kind == "block":
                assert isinstance(mod, Block)
                reads: list[torch.Tensor] = []
                x = mod.run(x, reads)
                if record is not None:
                    record.append(reads)
                continue
            else:
                x = mod(x)
            if record is not None:
                record.append(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    def replay(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activity value of every weight layer, by the rule of docs/measure.md
        ("Activity") applied to the spec.

        A weight layer is read at the first nonlinearity after it, past normalization, dropout,
        identities, residual additions, flattening and permutes (undone when reading; a permute
        and a flatten on one walk stop it); when anything else comes first, or the value is
        used twice (``save``), at the last value before it.
        """
        outputs: list[Any] = []
        with torch.no_grad():
            self._run(x, outputs)
        reads: list[torch.Tensor] = []
        for pos, op in enumerate(self.spec):
            if op[0] == "block":
                reads.extend(outputs[pos])
                continue
            if op[0] not in WEIGHT_OPS:
                continue
            read = outputs[pos]
            permutes: list[tuple[int, ...]] = []
            reshaped = False
            for later, value in zip(self.spec[pos + 1 :], outputs[pos + 1 :]):
                if later[0] in RESHAPES:
                    if permutes:
                        break
                    reshaped = True
                elif later[0] == "permute":
                    if reshaped:
                        break
                    permutes.append(tuple(later[1]))
                elif later[0] not in ROUTE_SKIP and later[0] != "act":
                    break
                read = value
                if later[0] == "act":
                    break
            for dims in reversed(permutes):
                read = read.permute([list(dims).index(d) for d in range(len(dims))])
            reads.append(read.reshape(outputs[pos].shape))
        return reads


def conv_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_size(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    # PyTorch's rule: ceil mode may add a last window, but it must start inside input + left pad.
    num = n + 2 * p - d * (k - 1) - 1
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


# ---------------------------------------------------------------------------------------------
# The explicit neuron graph


class Graph:
    """Neurons numbered in creation (topological) order; ``preds[v]`` = {u: edge multiplicity}."""

    def __init__(self) -> None:
        self.preds: list[dict[int, int]] = []
        self.layer: list[int] = []  # -1: input, else the weight layer's index
        self.linear: set[int] = set()  # layers that are Linear: their channels are the last dim

    def add(self, preds: dict[int, int], layer: int) -> int:
        self.preds.append(preds)
        self.layer.append(layer)
        return len(self.preds) - 1

    @property
    def size(self) -> int:
        return len(self.preds)

    def successors(self) -> list[dict[int, int]]:
        succ: list[dict[int, int]] = [{} for _ in self.preds]
        for v, preds in enumerate(self.preds):
            for u, m in preds.items():
                succ[u][v] = m
        return succ


def _merge(items: list[Counter[int]]) -> Counter[int]:
    total: Counter[int] = Counter()
    for item in items:
        total.update(item)
    return total


def _new_array(shape: Sequence[int]) -> np.ndarray:
    return np.empty(tuple(shape), dtype=object)


def explicit_graph(net: SpecNet, in_shape: Sequence[int], channel: bool = False) -> Graph:
    """The neuron graph of ``net``; ``channel=True``: nodes are channels (docs/measure.md,
    "The neuron graph")."""
    graph = Graph()
    state = _new_array([in_shape[0]] if channel else in_shape)
    for idx in np.ndindex(state.shape):
        state[idx] = Counter({graph.add({}, -1): 1})
    layer = [0]
    saved: list[np.ndarray] = []
    for op, mod in zip(net.spec, net.mods):
        if op[0] == "save":
            saved.append(state)
        elif op[0] == "cat_saved":
            state = np.concatenate([state, saved.pop()], axis=0)  # channels: axis 0 here
        elif op[0] == "add_saved":
            other = saved.pop()
            out = _new_array(state.shape)
            for idx in np.ndindex(state.shape):
                out[idx] = state[idx] + other[idx]  # the routes of both operands
            state = out
        else:
            state = _apply(graph, op, mod, state, layer, channel)
    return graph


def _emit(graph: Graph, preds: Counter[int], layer: list[int]) -> Counter[int]:
    return Counter({graph.add(dict(preds), layer[0]): 1})


def _apply(
    graph: Graph, op: tuple[Any, ...], mod: nn.Module, state: np.ndarray, layer: list[int],
    channel: bool,
) -> np.ndarray:  # fmt: skip
    kind = op[0]
    if kind == "linear":
        # dense over the last dim, once per leading position (channels-last tensors)
        lead = state.shape[:-1] if state.ndim > 1 else ()
        out = _new_array([*lead, op[1]])
        for pos in np.ndindex(*lead):
            merged = _merge(list(state[pos].flat))
            for j in range(op[1]):
                out[(*pos, j)] = _emit(graph, merged, layer)
        graph.linear.add(layer[0])
        layer[0] += 1
        return out
    if kind == "convT":
        _, cout, k, s, p, op_, d, g = op
        out = _conv_transpose(graph, state, cout, k, s, p, op_, d, g, layer, channel)
        layer[0] += 1
        return out
    if kind == "permute":  # channel nodes keep their identity wherever the channels move
        return state if channel else state.transpose([d - 1 for d in op[1][1:]])
    if kind in ("ln", "ln_channels", "scale"):
        return state
    if kind == "pad":
        return state if channel else _pad(state, list(op[1]))
    if kind == "upsample":
        return state if channel else _upsample(state, mod)
    if kind == "conv":
        _, cout, k, s, p, d, g = op
        out = _conv(graph, state, cout, k, s, p, d, g, layer, channel)
        layer[0] += 1
        return out
    if kind in ("bn", "dropout", "identity", "act"):
        return state
    if kind in ("flatten", "view"):
        return state if channel else state.reshape(-1)
    if kind == "merge_rows":  # channels-last rows: channel nodes stay where they are
        return state if channel else state.reshape(-1, state.shape[-1])
    if kind == "mean":  # every position along the axis routes into the mean, once
        if channel:
            return state
        moved = np.moveaxis(state, op[1] - 1, 0)
        out = _new_array(moved.shape[1:])
        for idx in np.ndindex(*moved.shape[1:]):
            out[idx] = _merge([moved[(k, *idx)] for k in range(moved.shape[0])])
        return out
    if kind == "maxpool" or kind == "avgpool":
        if channel:
            return state
        if kind == "maxpool":
            _, k, s, p, d, ceil = op
        else:
            _, k, s, p, ceil = op
            d = 1
        return _windows(state, [_pool_windows(n, k, s, p, d, ceil) for n in state.shape[1:]])
    if kind in ("adaptive", "adaptive_max"):
        if channel:
            return state
        return _windows(state, [_adaptive_windows(n, op[1]) for n in state.shape[1:]])
    if kind == "gap":
        if channel:
            return state
        out = _new_array([state.shape[0]])
        for c in range(state.shape[0]):
            out[c] = _merge(list(state[c].flat))
        return out
    if kind == "block":
        assert isinstance(mod, Block)
        cout, stride = op[1], op[2]
        main = _conv(graph, state, cout, 3, stride, 1, 1, 1, layer, channel)
        layer[0] += 1
        main = _conv(graph, main, cout, 3, 1, 1, 1, 1, layer, channel)
        layer[0] += 1
        if mod.down is not None:
            short = _conv(graph, state, cout, 1, stride, 0, 1, 1, layer, channel)
            layer[0] += 1
        else:
            short = state
        out = _new_array(main.shape)
        for idx in np.ndindex(main.shape):
            out[idx] = main[idx] + short[idx]
        return out
    raise AssertionError(kind)


def _grouped_channels(
    graph: Graph, state: np.ndarray, cout: int, g: int, layer: list[int]
) -> np.ndarray:
    """Channel granularity of a (transposed) convolution with ``g`` groups: each output
    channel reads every input channel of its group."""
    in_group, out_group = state.shape[0] // g, cout // g
    out = _new_array([cout])
    for o in range(cout):
        group = o // out_group
        members = [state[c] for c in range(group * in_group, (group + 1) * in_group)]
        out[o] = _emit(graph, _merge(members), layer)
    return out


def _conv(
    graph: Graph, state: np.ndarray, cout: int, k: int, s: int, p: int, d: int, g: int,
    layer: list[int], channel: bool,
) -> np.ndarray:  # fmt: skip
    if channel:
        return _grouped_channels(graph, state, cout, g, layer)
    in_group, out_group = state.shape[0] // g, cout // g
    spatial = state.shape[1:]
    out_spatial = [conv_size(n, k, s, p, d) for n in spatial]
    out = _new_array([cout, *out_spatial])
    for o in range(cout):
        group = o // out_group
        channels = range(group * in_group, (group + 1) * in_group)
        for pos in np.ndindex(*out_spatial):
            items = []
            for offs in np.ndindex(*([k] * len(spatial))):
                src = [pos[a] * s - p + offs[a] * d for a in range(len(spatial))]
                if all(0 <= src[a] < spatial[a] for a in range(len(spatial))):
                    items.extend(state[(c, *src)] for c in channels)
            out[(o, *pos)] = _emit(graph, _merge(items), layer)
    return out


def _conv_transpose(
    graph: Graph, state: np.ndarray, cout: int, k: int, s: int, p: int, op: int, d: int, g: int,
    layer: list[int], channel: bool,
) -> np.ndarray:  # fmt: skip
    """Each input position i feeds output i * s - p + j * d through kernel tap j (in range)."""
    if channel:
        return _grouped_channels(graph, state, cout, g, layer)
    in_group, out_group = state.shape[0] // g, cout // g
    spatial = state.shape[1:]
    out_spatial = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n in spatial]
    gathered: dict[tuple[int, ...], list[Counter[int]]] = {
        pos: [] for pos in np.ndindex(*out_spatial)
    }
    for pos in np.ndindex(*spatial):
        for taps in np.ndindex(*([k] * len(spatial))):
            target = tuple(pos[a] * s - p + taps[a] * d for a in range(len(spatial)))
            if all(0 <= target[a] < out_spatial[a] for a in range(len(spatial))):
                gathered[target].append(pos)  # type: ignore[arg-type]
    out = _new_array([cout, *out_spatial])
    for o in range(cout):
        group = o // out_group
        channels = range(group * in_group, (group + 1) * in_group)
        for target, sources in gathered.items():
            items = [state[(c, *src)] for src in sources for c in channels]
            out[(o, *target)] = _emit(graph, _merge(items), layer)
    return out


def _pad(state: np.ndarray, pads: list[int]) -> np.ndarray:
    """Zero padding (or cropping, if negative) of the last dims: new positions route nothing."""
    shape = list(state.shape)
    offsets = [0] * len(shape)
    for axis in range(len(pads) // 2):
        dim = len(shape) - 1 - axis
        shape[dim] += pads[2 * axis] + pads[2 * axis + 1]
        offsets[dim] = pads[2 * axis]
    out = _new_array(shape)
    for idx in np.ndindex(*shape):
        src = tuple(i - o for i, o in zip(idx, offsets))
        inside = all(0 <= v < n for v, n in zip(src, state.shape))
        out[idx] = state[src] if inside else Counter()
    return out


def _upsample(state: np.ndarray, module: nn.Module) -> np.ndarray:
    """Each output routes from every input position with a non-zero interpolation weight.

    The weights are found by perturbation: the module itself on a one-hot input per position.
    """
    spatial = state.shape[1:]
    sources: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    out_spatial: tuple[int, ...] = ()
    for pos in np.ndindex(*spatial):
        onehot = torch.zeros(1, 1, *spatial, dtype=torch.float64)
        onehot[(0, 0, *pos)] = 1.0
        with torch.no_grad():
            response = module(onehot)[0, 0]
        out_spatial = tuple(response.shape)
        for target in (response != 0).nonzero().tolist():
            sources.setdefault(tuple(target), []).append(pos)
    out = _new_array([state.shape[0], *out_spatial])
    for c in range(state.shape[0]):
        for target in np.ndindex(*out_spatial):
            out[(c, *target)] = _merge([state[(c, *src)] for src in sources.get(target, [])])
    return out


def _pool_windows(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> list[list[int]]:
    windows = []
    for j in range(pool_size(n, k, s, p, d, ceil)):
        windows.append([j * s - p + i * d for i in range(k) if 0 <= j * s - p + i * d < n])
    return windows


def _adaptive_windows(n: int, out: int) -> list[list[int]]:
    return [list(range((j * n) // out, -(-((j + 1) * n) // out))) for j in range(out)]


def _windows(state: np.ndarray, windows: list[list[list[int]]]) -> np.ndarray:
    out = _new_array([state.shape[0], *[len(w) for w in windows]])
    for c in range(state.shape[0]):
        for pos in np.ndindex(*out.shape[1:]):
            members = [windows[a][pos[a]] for a in range(len(pos))]
            items = [state[(c, *src)] for src in np.ndindex(*[len(m) for m in members])
                     for src in [tuple(members[a][src[a]] for a in range(len(pos)))]]  # fmt: skip
            out[(c, *pos)] = _merge(items)
    return out


# ---------------------------------------------------------------------------------------------
# Activity and counting


def activity_sets(
    graph: Graph, values: list[torch.Tensor], tau: float, *, channel: bool = False,
    mean: bool = False,
) -> list[list[bool]]:  # fmt: skip
    """Per sample, each node's activity: inputs and the last layer active, others by ``values``."""
    num_layers = max(graph.layer) + 1
    assert len(values) == num_layers, (len(values), num_layers)
    batch = values[0].shape[0]
    flags: list[list[bool]] = []
    per_layer = []
    for index, v in enumerate(values[:-1]):
        v = v.double()
        if channel and v.dim() > 2:  # a channel's value: the mean over its positions
            axis = v.dim() - 1 if index in graph.linear else 1
            v = v.mean(dim=tuple(d for d in range(1, v.dim()) if d != axis))
        if mean:
            v = v.mean(dim=0, keepdim=True).expand_as(v)
        per_layer.append((v > tau).reshape(batch, -1).tolist())
    for b in range(batch):
        seen = [0] * num_layers
        sample = []
        for layer in graph.layer:
            if layer == -1 or layer == num_layers - 1:
                sample.append(True)
            else:
                sample.append(per_layer[layer][b][seen[layer]])
                seen[layer] += 1
        flags.append(sample)
    return flags


def near_threshold(
    values: list[torch.Tensor], tau: float, *, channel: bool = False, mean: bool = False
) -> bool:
    """Whether an averaged activity value lies within float32 rounding of ``tau``.

    ``activity_sets`` averages (over positions with ``channel``, over the batch with ``mean``)
    in float64; a library averaging the float32 values in float32 gets a mean that differs by
    rounding, at most about ``n * eps * mean(|v|)`` for ``n`` averaged values. A mean closer
    than that to ``tau`` may land on either side of it, so such inputs can test nothing about
    the graph: callers skip them. Values that are not averaged are compared as they are, on
    both sides, and never count as near.
    """
    eps = torch.finfo(torch.float32).eps
    for v in values[:-1]:
        v = v.double()
        count = 1
        if channel and v.dim() > 2:
            count *= math.prod(v.shape[2:])
            v = v.flatten(2)
        else:
            v = v.reshape(*v.shape, 1)
        if mean:
            count *= v.shape[0]
        if count == 1:
            continue
        dims = (0, -1) if mean else (-1,)
        centre = v.mean(dim=dims)
        bound = 4 * count * eps * v.abs().mean(dim=dims)
        if bool(((centre - tau).abs() < bound).any()):
            return True
    return False


def cross_dp(graph: Graph, active: list[bool]) -> int:
    """Paths from an inactive node to an active node: forward DP in exact integers."""
    reach = [0] * graph.size  # paths that start at an inactive node and end here (length >= 1)
    total = 0
    for v, preds in enumerate(graph.preds):
        reach[v] = sum(m * (reach[u] + (0 if active[u] else 1)) for u, m in preds.items())
        if active[v]:
            total += reach[v]
    return total


def li_dp(graph: Graph, active: list[bool]) -> int:
    """Li's E(G, H) (docs/measure.md, "On a graph") with H = active nodes: a backward DP for
    P_H, then the sum over inactive x."""
    succ = graph.successors()
    p = [0] * graph.size
    for s in reversed(range(graph.size)):
        if active[s]:
            p[s] = 1 + sum(m * p[t] for t, m in succ[s].items() if active[t])
    return sum(
        m * p[s]
        for x in range(graph.size)
        if not active[x]
        for s, m in succ[x].items()
        if active[s]
    )


def cross_enumerate(graph: Graph, active: list[bool]) -> int:
    """Walk every path from every inactive node (no memo); count those ending at active ones."""
    succ = graph.successors()

    def walk(u: int) -> int:
        count = 0
        for v, m in succ[u].items():
            count += m * ((1 if active[v] else 0) + walk(v))
        return count

    return sum(walk(x) for x in range(graph.size) if not active[x])


def li_enumerate(graph: Graph, active: list[bool]) -> int:
    succ = graph.successors()

    def walk(s: int) -> int:  # paths inside H starting at s, s included
        return 1 + sum(m * walk(t) for t, m in succ[s].items() if active[t])

    return sum(
        m * walk(s)
        for x in range(graph.size)
        if not active[x]
        for s, m in succ[x].items()
        if active[s]
    )


def log10(value: int) -> float:
    return math.log10(value) if value > 0 else -math.inf


def dense_closed_form(widths: list[int], actives: list[int]) -> int:
    """``sum_{i<j} (n_i - a_i) a_j prod_{k=i+1}^{j-1} n_k`` in exact integers (O(L))."""
    total = 0
    reach = 0  # sum_{i<j} (n_i - a_i) prod_{k=i+1}^{j-1} n_k, for the current j
    for j in range(len(widths)):
        if j > 0:
            reach = reach * widths[j - 1] + (widths[j - 1] - actives[j - 1])
        total += actives[j] * reach
    return total
