"""emergence_init_ (docs/method.md): equivalence to the base init, identity, invariances."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import ShortcutFirst, relu_mlp
from torch import nn

from emergeinit import emergence_init_, exponents
from emergeinit.models import build_model, example_input

BASES = ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal"]


def _plain_loop(model: nn.Module, base: str, generator: torch.Generator) -> None:
    """What a user would write with torch.nn.init directly."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if base == "kaiming_normal":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
            elif base == "kaiming_uniform":
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu", generator=generator)
            elif base == "xavier_normal":
                nn.init.xavier_normal_(module.weight, generator=generator)
            elif base == "xavier_uniform":
                nn.init.xavier_uniform_(module.weight, generator=generator)
            else:
                nn.init.orthogonal_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    "spec", ["mlp-bn:12-16x3-4", "cnn:2x8x8-4-M-6-3", "resnet:2x8x8-4x1-6x1-3"]
)
def test_alpha_one_is_the_plain_torch_loop_bit_for_bit(base: str, spec: str) -> None:
    torch.manual_seed(0)
    model = build_model(spec)
    reference = copy.deepcopy(model)
    _plain_loop(reference, base, torch.Generator().manual_seed(7))
    report = emergence_init_(
        model,
        1.0,
        base=base,  # type: ignore[arg-type]
        example_input=example_input(spec, 4),
        generator=torch.Generator().manual_seed(7),
    )
    assert all(u.scale == 1.0 for u in report.units)
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(got, want), name


def test_global_rng_path_matches_and_tracing_consumes_no_randomness() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))
    reference = copy.deepcopy(model)
    x = torch.randn(4, 6)
    torch.manual_seed(3)
    emergence_init_(model, 1.0, example_input=x)
    after_ours = torch.rand(3)
    torch.manual_seed(3)
    for module in reference.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    assert torch.equal(torch.rand(3), after_ours)
    for got, want in zip(model.parameters(), reference.parameters()):
        assert torch.equal(got, want)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("alpha", [0.5, 1.7, 3.0])
def test_scaled_equals_base_times_alpha_pow_e(base: str, alpha: float) -> None:
    torch.manual_seed(1)
    model = ShortcutFirst()
    x = torch.randn(2, 2, 5, 5)
    base_model = copy.deepcopy(model)
    emergence_init_(
        base_model,
        1.0,
        base=base,
        example_input=x,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(5),
    )
    report = emergence_init_(
        model,
        alpha,
        base=base,
        example_input=x,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(5),
    )
    assert [u.name for u in report.units] == ["conv1", "conv2", "shortcut", "head"]
    assert [u.exponent for u in report.units] == exponents(4)
    scaled = dict(model.named_parameters())
    reference = dict(base_model.named_parameters())
    for unit in report.units:
        assert unit.scale == pytest.approx(alpha**unit.exponent, rel=1e-15)
        weight = f"{unit.name}.weight"
        torch.testing.assert_close(
            scaled[weight], reference[weight] * unit.scale, rtol=2e-6, atol=0
        )
        assert unit.std_after == pytest.approx(
            reference[weight].double().std().item() * unit.scale, rel=1e-5
        )
    torch.testing.assert_close(scaled["bn.weight"], reference["bn.weight"], rtol=0, atol=0)


def test_keep_scales_current_weights_in_place() -> None:
    torch.manual_seed(0)
    model = relu_mlp([5, 6, 6, 6, 3], bias=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = emergence_init_(model, 2.0, base="keep", zero_bias=False)
    assert [u.exponent for u in report.units] == [-2, -1, 1, 2]
    for unit in report.units:
        torch.testing.assert_close(
            model.state_dict()[f"{unit.name}.weight"], before[f"{unit.name}.weight"] * unit.scale
        )
        assert torch.equal(model.state_dict()[f"{unit.name}.bias"], before[f"{unit.name}.bias"])
        assert unit.std_before == pytest.approx(before[f"{unit.name}.weight"].double().std().item())


def test_function_preserved_for_bias_free_relu_mlp() -> None:
    torch.manual_seed(0)
    model = relu_mlp([10, 32, 32, 32, 32, 32, 4], dtype=torch.float64)
    x = torch.randn(16, 10, dtype=torch.float64)
    emergence_init_(model, 1.0, generator=torch.Generator().manual_seed(2))
    reference = model(x)
    report = emergence_init_(model, 2.5, generator=torch.Generator().manual_seed(2))
    assert sum(u.exponent for u in report.units) == 0
    torch.testing.assert_close(model(x), reference, rtol=1e-12, atol=1e-12)


def _bn_mlp() -> nn.Module:
    model = build_model("mlp-bn:10-32x4-5").double()
    # BatchNorm's eps makes the invariance approximate (x / sqrt(var + eps), off by ~eps/var);
    # with a negligible eps (0 is refused in training mode) it is exact to float rounding.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eps = 1e-200
    return model


def test_function_preserved_for_bn_network_without_head() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 10, dtype=torch.float64)
    model = _bn_mlp()
    emergence_init_(model, 1.0, generator=torch.Generator().manual_seed(2))
    reference = model(x)  # training mode: batch statistics, as training sees them
    report = emergence_init_(model, 1.5, head=False, generator=torch.Generator().manual_seed(2))
    assert report.units[-1].scheduled is False and report.units[-1].scale == 1.0
    torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=0)


def test_bn_network_with_head_scales_logits_by_alpha_pow_n() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 10, dtype=torch.float64)
    model = _bn_mlp()
    emergence_init_(model, 1.0, generator=torch.Generator().manual_seed(2))
    reference = model(x)
    report = emergence_init_(model, 1.5, generator=torch.Generator().manual_seed(2))
    n = report.units[-1].exponent
    assert n == 2  # 4 hidden layers + head = 5 units: exponents -2..2
    torch.testing.assert_close(model(x), reference * 1.5**n, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_parameters(dtype: torch.dtype) -> None:
    model = relu_mlp([8, 16, 16, 4]).to(dtype)
    reference = copy.deepcopy(model)
    emergence_init_(reference, 1.0, generator=torch.Generator().manual_seed(0))
    report = emergence_init_(model, 2.0, generator=torch.Generator().manual_seed(0))
    for unit in report.units:
        got = dict(model.named_parameters())[f"{unit.name}.weight"]
        want = dict(reference.named_parameters())[f"{unit.name}.weight"]
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want.float() * unit.scale, rtol=1e-2, atol=0)


def test_report_table_and_dict() -> None:
    model = build_model("mlp:6-8x2-3")
    report = emergence_init_(model, 2.0, example_input=torch.randn(2, 6))
    text = str(report)
    assert "alpha=2" in text and "order: traced" in text
    assert "std before" in text and "bias (zeroed" in text
    data = report.to_dict()
    assert data["traced"] is True
    assert [u["exponent"] for u in data["units"]] == [-1.0, 0.0, 1.0]
    assert data["units"][0]["shapes"] == [[8, 6]]
    assert report.records()[0]["shapes"] == "8x6"
    import json

    json.dumps(data)
    with pytest.raises(AttributeError):
        report.alpha = 3.0  # type: ignore[misc]


def test_transformer_blocks_on_xavier() -> None:
    torch.manual_seed(0)
    model = nn.Transformer(
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=32,
        batch_first=True,
    )
    reference = copy.deepcopy(model)
    x = (torch.randn(2, 5, 16), torch.randn(2, 4, 16))
    emergence_init_(
        reference,
        1.0,
        base="xavier_uniform",
        example_input=x,
        generator=torch.Generator().manual_seed(0),
    )
    report = emergence_init_(
        model,
        2.0,
        base="xavier_uniform",
        example_input=x,
        generator=torch.Generator().manual_seed(0),
    )
    assert report.mode == "blocks"
    assert [u.exponent for u in report.units] == [-2, -1, 1, 2]
    params = dict(model.named_parameters())
    base = dict(reference.named_parameters())
    for unit, prefix in zip(
        report.units,
        ["encoder.layers.0", "encoder.layers.1", "decoder.layers.0", "decoder.layers.1"],
    ):
        for name in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight"):
            key = f"{prefix}.{name}"
            torch.testing.assert_close(params[key], base[key] * unit.scale, rtol=2e-6, atol=0)
        assert torch.equal(params[f"{prefix}.norm1.weight"], base[f"{prefix}.norm1.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model() -> None:
    model = relu_mlp([8, 16, 16, 4]).cuda()
    x = torch.randn(4, 8, device="cuda")
    report = emergence_init_(
        model, 2.0, example_input=x, generator=torch.Generator(device="cuda").manual_seed(0)
    )
    assert [u.exponent for u in report.units] == [-1, 0, 1]
    assert all(p.is_cuda for p in model.parameters())
