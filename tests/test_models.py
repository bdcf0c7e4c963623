"""The built-in model specs and their grammar."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emergeinit.errors import ConfigError
from emergeinit.models import build_model, example_input, load_model, parse_model_spec


@pytest.mark.parametrize(
    ("spec", "linears", "convs", "norms"),
    [
        ("mlp:784-512x6-10", 7, 0, 0),
        ("mlp-bn:20-8-16x2-3", 4, 0, 3),
        ("mlp:20-8-3,bias=false", 2, 0, 0),
        ("cnn:1x28x28-8-8-M-16-M-10", 1, 3, 0),
        ("cnn-bn:3x16x16-8x2-M-4", 1, 2, 2),
        ("resnet:1x12x12-4x2-8x1-5", 1, 1 + 4 + 2 + 1, 0),
        ("resnet-bn:3x12x12-4x1-8x1-5", 1, 1 + 2 + 2 + 1, 1 + 2 + 2 + 1),
    ],
)
def test_builders(spec: str, linears: int, convs: int, norms: int) -> None:
    model = build_model(spec)
    modules = list(model.modules())
    assert sum(isinstance(m, nn.Linear) for m in modules) == linears
    assert sum(isinstance(m, nn.Conv2d) for m in modules) == convs
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules) == norms
    out = model(example_input(spec, 3))
    assert out.shape == (3, int(spec.split(",")[0].rsplit("-", 1)[1]))


def test_mlp_without_bias() -> None:
    model = build_model("mlp:5-4-2,bias=false")
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Linear))


def test_mlp_takes_images() -> None:
    model = build_model("mlp:784-16-10")
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_transformer_spec() -> None:
    model, example = load_model("transformer:tiny,vocab=50,tie=true")
    src, tgt = example
    assert model(src, tgt).shape == (*tgt.shape, 50)


def test_parse() -> None:
    parsed = parse_model_spec("cnn-bn:1x8x8-4-M-2,bias=false")
    assert parsed.kind == "cnn-bn" and parsed.batch_norm
    assert parsed.arch == ("1x8x8", "4", "M", "2")
    assert parsed.options == {"bias": "false"}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("mlp", "looks like"),
        ("vgg:1x2", "unknown model kind"),
        ("mlp:10-x-2", "positive integer"),
        ("mlp:10", "too short"),
        ("mlp:10-0-2", "positive integer"),
        ("mlp:10-5-2,width=3", "unknown option"),
        ("mlp:10-5-2,bias", "key=value"),
        ("mlp:10-5-2,bias=maybe", "true or false"),
        ("cnn:28x28-4-2", "CxHxW"),
        ("cnn:1x4x4-4-M-M-M-2", "too many max pools"),
        ("resnet:1x8x8-4-2", "WIDTHxBLOCKS"),
        ("transformer:huge", "size must be one of"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(spec)


def test_factory_specs() -> None:
    model, example = load_model("torch.nn:Identity")
    assert isinstance(model, nn.Identity) and example is None
    with pytest.raises(ConfigError, match="cannot import"):
        load_model("no_such_module_xyz:factory")
    with pytest.raises(ConfigError, match="neither"):
        load_model("nonsense")
