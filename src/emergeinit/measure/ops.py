"""How each module, torch function, Tensor method and ATen operator routes path counts.

A graph read with ``torch.fx`` holds modules (kept whole when they are known, see
:data:`LEAF_MODULES`), torch functions and Tensor methods; a graph read with ``torch.export``
holds ATen operators. Both are mapped onto the same few *kinds* (see docs/measure.md, "Structure
and support"):

* ``weight``: Linear, convolution, transposed convolution: their outputs are neurons;
* ``identity``: normalization, dropout, copies, a scale by a constant: paths pass unchanged;
* ``nonlin``: an elementwise nonlinearity: identity routing, and where activity is read;
* ``add``: a sum of count-carrying operands (residual additions);
* ``pool`` / ``adaptive`` / ``reduce`` / ``upsample``: positions of a window route to an output;
* ``reshape`` / ``permute`` / ``cat`` / ``pad``: positions move, counts move with them;
* ``terminal``: softmax-like ops that mix features, allowed only after the last weight layers;
* ``product``: a matrix product; of two input-dependent values it is attention or gating;
* ``meta``: shape queries, never count-carrying.

Anything not listed is ``unsupported``, with the reason kept for the message.
"""

from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Rule:
    """The routing of one callable: its kind, positional parameter names, fixed parameters."""

    kind: str
    names: tuple[str, ...] = ("input",)
    fixed: dict[str, Any] = field(default_factory=dict)
    tuple_output: bool = False  # an ATen op returning (value, statistics...): item 0 carries


# --- modules (torch.fx keeps these whole) ----------------------------------------------------

LINEAR_MODULES: tuple[type[nn.Module], ...] = (nn.Linear,)
CONV_MODULES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
WEIGHT_MODULES = LINEAR_MODULES + CONV_MODULES + CONV_TRANSPOSE_MODULES
IDENTITY_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
)
NONLIN_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
)  # fmt: skip
MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADAPTIVE_MODULES = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
UPSAMPLE_MODULES = (nn.Upsample,)  # UpsamplingNearest2d / UpsamplingBilinear2d subclass it
PAD_MODULES = (nn.modules.padding._ConstantPadNd,)  # ZeroPad*d and ConstantPad*d
TERMINAL_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)
# Known modules the measure refuses, kept whole so the message names them and says why.
REFUSED_MODULES: dict[type[nn.Module], str] = {
    nn.MultiheadAttention: "attention",
    nn.Transformer: "attention",
    nn.TransformerEncoder: "attention",
    nn.TransformerDecoder: "attention",
    nn.TransformerEncoderLayer: "attention",
    nn.TransformerDecoderLayer: "attention",
    nn.Embedding: "embedding",
    nn.EmbeddingBag: "embedding",
    nn.modules.rnn.RNNBase: "recurrent",
    nn.modules.rnn.RNNCellBase: "recurrent",
}

# Modules fx must not trace into: a user subclass of nn.Linear is still a Linear here.
LEAF_MODULES = (
    WEIGHT_MODULES + IDENTITY_MODULES + NONLIN_MODULES + MAX_POOL_MODULES + AVG_POOL_MODULES
    + ADAPTIVE_MODULES + RESHAPE_MODULES + UPSAMPLE_MODULES + PAD_MODULES + TERMINAL_MODULES
    + tuple(REFUSED_MODULES)
)  # fmt: skip

REASONS = {
    "attention": (
        "attention multiplies two values computed from the input (softmax(QK^T) and V), so its "
        "mixing weights are activations, not fixed connections; the neuron graph is undefined "
        "there (docs/measure.md, 'Attention')"
    ),
    "product": (
        "a product of two values computed from the input (attention or gating) has no neuron "
        "graph (docs/measure.md, 'Attention')"
    ),
    "embedding": (
        "an embedding looks up rows by index; the looked-up features are not connected to the "
        "input features by edges (docs/measure.md, 'Unsupported')"
    ),
    "recurrent": (
        "a recurrent layer's unrolled graph depends on the sequence length and its internal "
        "gates multiply neuron values (docs/measure.md, 'Unsupported')"
    ),
}


def classify_module(module: nn.Module) -> tuple[str, str]:
    """(kind, reason for a refusal) of a module fx kept whole."""
    for classes, kind in _MODULE_KINDS:
        if isinstance(module, classes):
            return kind, ""
    for cls, reason in REFUSED_MODULES.items():
        if isinstance(module, cls):
            return "unsupported", REASONS[reason]
    return "unsupported", ""


_MODULE_KINDS: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    (WEIGHT_MODULES, "weight"),
    (NONLIN_MODULES, "nonlin"),
    (IDENTITY_MODULES, "identity"),
    (MAX_POOL_MODULES + AVG_POOL_MODULES, "pool"),
    (ADAPTIVE_MODULES, "adaptive"),
    (RESHAPE_MODULES, "reshape"),
    (UPSAMPLE_MODULES, "upsample"),
    (PAD_MODULES, "pad"),
    (TERMINAL_MODULES, "terminal"),
)


# --- torch functions and Tensor methods (torch.fx) -------------------------------------------

_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_MAX_POOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
             "return_indices")  # fmt: skip
_AVG_POOL = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")  # fmt: skip
_REDUCE = ("input", "dim", "keepdim")
_INTERPOLATE = ("input", "size", "scale_factor", "mode", "align_corners",
                "recompute_scale_factor", "antialias")  # fmt: skip
_BINARY = ("input", "other")

FUNCTIONS: dict[Any, Rule] = {}


def _functions(rule: Rule, *targets: Any) -> None:
    for target in targets:
        FUNCTIONS[target] = rule


_functions(Rule("weight", ("input", "weight", "bias"), {"op": "linear"}), F.linear)
for _nd, (_conv, _conv_t) in enumerate(
    [(F.conv1d, F.conv_transpose1d), (F.conv2d, F.conv_transpose2d),
     (F.conv3d, F.conv_transpose3d)], start=1,
):  # fmt: skip
    _functions(Rule("weight", _CONV, {"op": "conv", "nd": _nd}), _conv)
    _functions(Rule("weight", _CONV_T, {"op": "conv_transpose", "nd": _nd}), _conv_t)
_functions(
    Rule("nonlin"),
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.elu,
    F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.sigmoid, torch.sigmoid, F.tanh, torch.tanh,
    F.softplus, F.softsign, F.hardtanh, F.hardtanh_, F.hardswish, F.hardsigmoid, F.logsigmoid,
    F.prelu, F.rrelu, F.threshold, F.tanhshrink, F.softshrink, F.hardshrink, torch.clamp,
    torch.clip, torch.clamp_min,
)  # fmt: skip
_functions(
    Rule("identity"), F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.feature_alpha_dropout,
)  # fmt: skip
_functions(Rule("identity", ("input", "running_mean", "running_var", "weight", "bias")),
           F.batch_norm)  # fmt: skip
_functions(Rule("identity", ("input", "normalized_shape", "weight", "bias")), F.layer_norm)
_functions(Rule("identity", ("input", "normalized_shape", "weight")), F.rms_norm)
_functions(Rule("identity", ("input", "num_groups", "weight", "bias")), F.group_norm)
_functions(Rule("identity", ("input", "running_mean", "running_var", "weight", "bias")),
           F.instance_norm)  # fmt: skip
_functions(Rule("add", _BINARY), operator.add, operator.sub, operator.iadd, operator.isub,
           torch.add, torch.sub, torch.subtract)  # fmt: skip
_functions(Rule("scale", _BINARY), operator.mul, operator.truediv, operator.imul,
           operator.itruediv, torch.mul, torch.div)  # fmt: skip
_functions(Rule("scale"), operator.neg, torch.neg)
_MAX_POOLS: tuple[Any, ...] = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
_AVG_POOLS: tuple[Any, ...] = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
for _nd, _pool in enumerate(_MAX_POOLS, start=1):
    _functions(Rule("pool", _MAX_POOL, {"nd": _nd, "max": True}), _pool)
for _nd, _pool in enumerate(_AVG_POOLS, start=1):
    _functions(Rule("pool", _AVG_POOL, {"nd": _nd, "max": False}), _pool)
_functions(
    Rule("adaptive"), F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
)  # fmt: skip
_functions(Rule("reshape"), torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze)
_functions(Rule("permute", ("input", "dims")), torch.permute)
_functions(Rule("permute", ("input", "dim0", "dim1")), torch.transpose, torch.swapaxes,
           torch.swapdims)  # fmt: skip
_functions(Rule("reduce", _REDUCE), torch.mean, torch.sum)
_functions(Rule("cat", ("tensors", "dim")), torch.cat, torch.concat, torch.concatenate)
_functions(Rule("pad", ("input", "pad", "mode", "value")), F.pad)
_functions(Rule("upsample", _INTERPOLATE), F.interpolate, F.upsample)
_functions(Rule("upsample", ("input", "size", "scale_factor")), F.upsample_nearest,
           F.upsample_bilinear)  # fmt: skip
_functions(Rule("terminal"), F.softmax, F.log_softmax, torch.softmax, torch.log_softmax)
_functions(Rule("product", _BINARY), torch.matmul, torch.bmm, torch.mm, operator.matmul,
           torch.einsum)  # fmt: skip
_functions(Rule("attention", ("query", "key", "value")), F.scaled_dot_product_attention,
           F.multi_head_attention_forward)  # fmt: skip
_functions(Rule("embedding", ("input", "weight")), F.embedding, F.embedding_bag)

METHODS: dict[str, Rule] = {}


def _methods(rule: Rule, *names: str) -> None:
    for name in names:
        METHODS[name] = rule


_methods(Rule("meta"), "size", "dim", "numel", "ndimension", "nelement")
_methods(Rule("nonlin"), "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp",
         "clamp_", "clip", "clip_", "clamp_min", "clamp_min_")  # fmt: skip
_methods(Rule("identity"), "contiguous", "clone", "float", "double", "half", "bfloat16", "to",
         "detach")  # fmt: skip
_methods(Rule("add", _BINARY), "add", "add_", "sub", "sub_")
_methods(Rule("scale", _BINARY), "mul", "mul_", "div", "div_")
_methods(Rule("scale"), "neg", "neg_")
_methods(Rule("reshape"), "view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as",
         "reshape_as")  # fmt: skip
_methods(Rule("permute", ("input", "dims")), "permute")
_methods(Rule("permute", ("input", "dim0", "dim1")), "transpose", "swapaxes", "swapdims")
_methods(Rule("reduce", _REDUCE), "mean", "sum")
_methods(Rule("terminal"), "softmax", "log_softmax")
_methods(Rule("product", _BINARY), "matmul", "bmm", "mm", "__matmul__")

META_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda"}
GETATTR = builtins.getattr


# --- ATen operators (torch.export) -----------------------------------------------------------

ATEN: dict[Any, Rule] = {}  # keyed by OpOverloadPacket; parameter names come from the schema


def _aten(rule: Rule, *names: str) -> None:
    for name in names:
        packet = getattr(torch.ops.aten, name, None) if hasattr(torch.ops.aten, name) else None
        if packet is not None:
            ATEN[packet] = rule


_aten(Rule("weight", fixed={"op": "linear"}), "linear")
for _nd in (1, 2, 3):
    _aten(Rule("weight", fixed={"op": "conv", "nd": _nd}), f"conv{_nd}d")
    _aten(Rule("weight", fixed={"op": "conv_transpose", "nd": _nd}), f"conv_transpose{_nd}d")
_aten(Rule("weight", fixed={"op": "convolution"}), "convolution", "_convolution")
_aten(Rule("identity"), "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
      "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout",
      "alpha_dropout_", "feature_alpha_dropout", "feature_alpha_dropout_", "clone", "contiguous",
      "_to_copy", "to", "detach", "alias", "lift_fresh_copy")  # fmt: skip
_aten(Rule("identity", tuple_output=True), "_native_batch_norm_legit_no_training",
      "_native_batch_norm_legit", "_native_batch_norm_legit_functional", "native_batch_norm",
      "native_layer_norm", "native_group_norm", "native_dropout")  # fmt: skip
_aten(Rule("add"), "add", "add_", "sub", "sub_", "rsub")
_aten(Rule("scale"), "mul", "mul_", "div", "div_", "neg", "neg_")
_aten(Rule("nonlin"), "relu", "relu_", "relu6", "gelu", "gelu_", "silu", "silu_", "hardswish",
      "hardswish_", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "tanh", "tanh_", "leaky_relu",
      "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "mish", "mish_", "softplus",
      "hardsigmoid", "hardsigmoid_", "prelu", "_prelu_kernel", "rrelu", "rrelu_",
      "rrelu_with_noise", "threshold", "threshold_", "clamp", "clamp_", "clamp_min",
      "clamp_min_", "clamp_max", "clamp_max_", "clip", "clip_", "log_sigmoid", "softshrink",
      "hardshrink")  # fmt: skip
_aten(Rule("nonlin", tuple_output=True), "log_sigmoid_forward")
for _nd in (1, 2, 3):
    _aten(Rule("pool", fixed={"nd": _nd, "max": True}), f"max_pool{_nd}d")
    _aten(Rule("pool", fixed={"nd": _nd, "max": True}, tuple_output=True),
          f"max_pool{_nd}d_with_indices")  # fmt: skip
    _aten(Rule("pool", fixed={"nd": _nd, "max": False}), f"avg_pool{_nd}d")
    _aten(Rule("adaptive"), f"adaptive_avg_pool{_nd}d", f"_adaptive_avg_pool{_nd}d")
    _aten(Rule("adaptive", tuple_output=True), f"adaptive_max_pool{_nd}d")
_aten(Rule("reshape"), "view", "_unsafe_view", "reshape", "flatten", "unflatten", "squeeze",
      "unsqueeze", "view_as", "reshape_as", "_reshape_alias")  # fmt: skip
_aten(Rule("permute"), "permute", "transpose", "t", "swapaxes", "swapdims")
_aten(Rule("reduce"), "mean", "sum")
_aten(Rule("cat"), "cat", "concat", "concatenate")
_aten(Rule("pad"), "pad", "constant_pad_nd")
_aten(Rule("upsample"), "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
      "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
      "upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d")  # fmt: skip
_aten(Rule("terminal"), "softmax", "_softmax", "log_softmax", "_log_softmax")
_aten(Rule("product"), "matmul", "bmm", "mm", "baddbmm", "addmm", "addbmm", "einsum")
_aten(Rule("attention"), "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
      "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
      "_scaled_dot_product_cudnn_attention", "_native_multi_head_attention",
      "_transformer_encoder_layer_fwd")  # fmt: skip
_aten(Rule("embedding"), "embedding", "embedding_bag", "_embedding_bag")
_aten(Rule("recurrent"), "lstm", "gru", "rnn_tanh", "rnn_relu")

# ATen shape queries (symbolic shapes): never count-carrying.
ATEN_META = {"sym_size", "sym_numel", "sym_stride", "sym_storage_offset"}


def aten_rule(target: Any) -> tuple[Rule | None, tuple[str, ...]]:
    """The rule of an ATen OpOverload and its schema's parameter names (``self`` -> ``input``)."""
    packet = getattr(target, "overloadpacket", None)
    schema = getattr(target, "_schema", None)
    if packet is None or schema is None:
        return None, ()
    names = tuple("input" if a.name == "self" else a.name for a in schema.arguments)
    if packet.__name__ in ATEN_META:
        return Rule("meta"), names
    return ATEN.get(packet), names


def is_aten(target: Any) -> bool:
    return isinstance(target, torch._ops.OpOverload)


__all__ = [
    "FUNCTIONS",
    "LEAF_MODULES",
    "METHODS",
    "REASONS",
    "WEIGHT_MODULES",
    "Rule",
    "aten_rule",
    "classify_module",
    "is_aten",
]
