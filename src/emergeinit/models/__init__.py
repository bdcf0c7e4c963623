"""Built-in model specs: one string names a model, for ``emergeinit plan`` and the benchmarks.

Grammar (``KIND:ARCH[,key=value...]``):

* ``mlp:IN-H1-H2x3-OUT`` -- Flatten, Linear+ReLU per hidden width (``WxK`` = K layers of
  width W), Linear head. ``mlp-bn`` adds BatchNorm1d after each hidden Linear.
  Option ``bias=false`` drops every bias. Example: ``mlp:784-512x6-10``.
* ``cnn:CxHxW-W1-W2-M-...-CLASSES`` -- VGG-style: 3x3 convs (padding 1) + ReLU, ``M`` = 2x2 max
  pool, ``WxK`` = K convs of width W, then Flatten and a Linear head. ``cnn-bn`` adds
  BatchNorm2d after each conv. Option ``bias=false``. Example: ``cnn:1x28x28-32-32-M-64-64-M-10``.
* ``resnet:CxHxW-W1xB1-W2xB2-...-CLASSES`` -- stem conv, stages of B basic blocks of width W
  (stride 2 between stages), global average pool, Linear. ``resnet-bn`` adds BatchNorm.
  Example: ``resnet-bn:3x32x32-16x2-32x2-64x2-10``.
* ``transformer:SIZE`` -- encoder-decoder translation transformer (``tiny``, ``small``,
  ``iwslt``); options ``vocab=N`` (both sides), ``src_vocab``, ``tgt_vocab``,
  ``norm_first=true`` (pre-LN), ``tie=true`` (output projection tied to the target embedding),
  ``dropout=P``. Example: ``transformer:tiny,vocab=1000``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .vision import ResNet, mlp, vgg_cnn

KINDS = ("mlp", "mlp-bn", "cnn", "cnn-bn", "resnet", "resnet-bn", "transformer")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: the kind, its architecture tokens and options."""

    kind: str
    arch: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)

    @property
    def batch_norm(self) -> bool:
        return self.kind.endswith("-bn")


def is_builtin_spec(text: str) -> bool:
    """Whether ``text`` names a built-in kind (as opposed to a ``package.module:function``)."""
    return text.split(":", 1)[0].strip() in KINDS


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``KIND:ARCH[,key=value...]``; raise :class:`ConfigError` saying what is wrong."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"a model spec looks like 'mlp:784-512x6-10', got {text!r}")
    kind, rest = (part.strip() for part in text.split(":", 1))
    if kind not in KINDS:
        raise ConfigError(
            f"unknown model kind {kind!r} in {text!r}; known kinds: {', '.join(KINDS)}"
        )
    arch_text, *option_texts = rest.split(",")
    options: dict[str, str] = {}
    for item in option_texts:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"model option {item!r} in {text!r} must look like key=value")
        options[key.strip()] = value.strip()
    arch = tuple(token.strip() for token in arch_text.split("-") if token.strip())
    if not arch:
        raise ConfigError(f"model spec {text!r} has no architecture after {kind!r}:")
    return ModelSpec(kind, arch, options)


def _int(token: str, spec: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]*", token):
        raise ConfigError(f"expected a positive integer, got {token!r} in model spec {spec!r}")
    return int(token)


def _widths(token: str, spec: str) -> list[int]:
    """``512`` -> [512]; ``512x6`` -> six times 512."""
    width, _, count = token.partition("x")
    return [_int(width, spec)] * (_int(count, spec) if count else 1)


def _shape(token: str, spec: str) -> tuple[int, int, int]:
    parts = token.split("x")
    if len(parts) != 3:
        raise ConfigError(f"input shape must be CxHxW (e.g. 1x28x28), got {token!r} in {spec!r}")
    c, h, w = (_int(p, spec) for p in parts)
    return c, h, w


def _bool(value: str, key: str, spec: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"option {key}={value!r} in {spec!r} must be true or false")


def _check_options(parsed: ModelSpec, allowed: tuple[str, ...], spec: str) -> None:
    unknown = sorted(set(parsed.options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {parsed.kind!r} in {spec!r}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )


def _need(parsed: ModelSpec, count: int, spec: str) -> None:
    if len(parsed.arch) < count:
        raise ConfigError(f"model spec {spec!r} is too short; see `emergeinit plan --help`")


def _build_mlp(parsed: ModelSpec, spec: str) -> nn.Module:
    _check_options(parsed, ("bias",), spec)
    _need(parsed, 2, spec)
    hidden = [w for token in parsed.arch[1:-1] for w in _widths(token, spec)]
    bias = _bool(parsed.options.get("bias", "true"), "bias", spec)
    return mlp(
        _int(parsed.arch[0], spec),
        hidden,
        _int(parsed.arch[-1], spec),
        batch_norm=parsed.batch_norm,
        bias=bias,
    )


def _build_cnn(parsed: ModelSpec, spec: str) -> nn.Module:
    _check_options(parsed, ("bias",), spec)
    _need(parsed, 2, spec)
    plan: list[int | str] = []
    for token in parsed.arch[1:-1]:
        plan.extend(["M"] if token.upper() == "M" else _widths(token, spec))
    bias = _bool(parsed.options.get("bias", "true"), "bias", spec)
    try:
        return vgg_cnn(
            _shape(parsed.arch[0], spec),
            plan,
            _int(parsed.arch[-1], spec),
            batch_norm=parsed.batch_norm,
            bias=bias,
        )
    except ValueError as exc:
        raise ConfigError(f"model spec {spec!r}: {exc}") from None


def _build_resnet(parsed: ModelSpec, spec: str) -> nn.Module:
    _check_options(parsed, (), spec)
    _need(parsed, 3, spec)
    stages = []
    for token in parsed.arch[1:-1]:
        width, sep, count = token.partition("x")
        if not sep:
            raise ConfigError(f"ResNet stages look like WIDTHxBLOCKS, got {token!r} in {spec!r}")
        stages.append((_int(width, spec), _int(count, spec)))
    shape = _shape(parsed.arch[0], spec)
    return ResNet(shape[0], stages, _int(parsed.arch[-1], spec), batch_norm=parsed.batch_norm)


def _vocabs(parsed: ModelSpec, spec: str) -> tuple[int, int]:
    """The source and target vocabulary sizes (``vocab=N`` sets both; default 1000)."""
    vocab = _int(parsed.options.get("vocab", "1000"), spec)
    return (
        _int(parsed.options.get("src_vocab", str(vocab)), spec),
        _int(parsed.options.get("tgt_vocab", str(vocab)), spec),
    )


def _build_transformer(parsed: ModelSpec, spec: str) -> nn.Module:
    from .transformer import TRANSFORMER_SIZES, Seq2SeqTransformer

    allowed = ("vocab", "src_vocab", "tgt_vocab", "norm_first", "tie", "dropout")
    _check_options(parsed, allowed, spec)
    size = parsed.arch[0]
    if len(parsed.arch) != 1 or size not in TRANSFORMER_SIZES:
        raise ConfigError(
            f"transformer size must be one of {', '.join(TRANSFORMER_SIZES)}, got {spec!r}"
        )
    options = parsed.options
    src_vocab, tgt_vocab = _vocabs(parsed, spec)
    try:
        dropout = float(options.get("dropout", "0.1"))
    except ValueError:
        raise ConfigError(f"dropout must be a number in [0, 1) in {spec!r}") from None
    return Seq2SeqTransformer(
        src_vocab,
        tgt_vocab,
        **TRANSFORMER_SIZES[size],
        dropout=dropout,
        norm_first=_bool(options.get("norm_first", "false"), "norm_first", spec),
        tie_embeddings=_bool(options.get("tie", "false"), "tie", spec),
    )


_BUILDERS: dict[str, Callable[[ModelSpec, str], nn.Module]] = {
    "mlp": _build_mlp,
    "mlp-bn": _build_mlp,
    "cnn": _build_cnn,
    "cnn-bn": _build_cnn,
    "resnet": _build_resnet,
    "resnet-bn": _build_resnet,
    "transformer": _build_transformer,
}


def build_model(spec: str) -> nn.Module:
    """Build the model a spec names, with PyTorch's default init (seed torch first).

    Example:
        >>> model = build_model("mlp:784-256x2-10")
        >>> [m.out_features for m in model if isinstance(m, nn.Linear)]
        [256, 256, 10]
    """
    parsed = parse_model_spec(spec)
    return _BUILDERS[parsed.kind](parsed, spec)


def example_input(
    spec: str, batch_size: int = 2, *, generator: torch.Generator | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A random batch the spec's model accepts: features, images, or (source, target) tokens."""
    parsed = parse_model_spec(spec)
    if parsed.kind.startswith("mlp"):
        features = _int(parsed.arch[0], spec)
        return torch.randn(batch_size, features, generator=generator)
    if parsed.kind == "transformer":
        src_vocab, tgt_vocab = _vocabs(parsed, spec)
        # Token 0 is padding; draw real tokens only.
        src = torch.randint(1, src_vocab, (batch_size, 8), generator=generator)
        tgt = torch.randint(1, tgt_vocab, (batch_size, 7), generator=generator)
        return src, tgt
    return torch.randn(batch_size, *_shape(parsed.arch[0], spec), generator=generator)


def load_model(
    spec: str, batch_size: int = 2, *, generator: torch.Generator | None = None
) -> tuple[nn.Module, Any]:
    """A model and an example batch from a built-in spec or a ``package.module:function`` factory.

    A factory is called without arguments and returns a model, or a ``(model, example_input)``
    pair; with a bare model there is no example input (``None``) and order is registration order.
    """
    if is_builtin_spec(spec):
        return build_model(spec), example_input(spec, batch_size, generator=generator)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"{spec!r} is neither a built-in model spec ({', '.join(KINDS)}) nor an importable "
            "factory 'package.module:function'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import factory {spec!r}: {exc}") from None
    try:
        made = factory()
    except Exception as exc:
        raise ConfigError(
            f"factory {spec!r} failed when called without arguments ({type(exc).__name__}: "
            f"{exc}); it must take no arguments and return a model or (model, example_input)"
        ) from exc
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module):
        return made[0], made[1]
    if not isinstance(made, nn.Module):
        raise ConfigError(f"factory {spec!r} returned {type(made).__name__}, not an nn.Module")
    return made, None


__all__ = [
    "KINDS",
    "ModelSpec",
    "build_model",
    "example_input",
    "is_builtin_spec",
    "load_model",
    "parse_model_spec",
]
