"""The report's statistics (docs/method.md, "The report"): exact base std, measured std after."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from helpers import relu_mlp
from torch import nn

from emergeinit import emergence_init_
from emergeinit.report import MeasuredStd, weights_std


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("numel", [1, 2, 255, 256, 257, 100_003])
def test_weights_std_matches_a_float64_std(dtype: torch.dtype, numel: int) -> None:
    generator = torch.Generator().manual_seed(numel)
    tensors = [
        (torch.randn(numel, generator=generator) * 0.3 + 0.2).to(dtype),
        (torch.randn(7, 3, generator=generator) * 2).to(dtype),
    ]
    want = torch.cat([t.double().reshape(-1) for t in tensors]).std().item()
    # float32 partial sums over rows of 256: relative error ~1e-7, far inside 1e-5
    assert weights_std(tensors) == pytest.approx(want, rel=1e-5)


def test_weights_std_edge_cases() -> None:
    assert weights_std([torch.ones(1)]) == 0.0
    assert weights_std([torch.empty(0)]) == 0.0
    assert weights_std([torch.full((300,), 5.0)]) == 0.0
    assert math.isnan(weights_std([torch.tensor([1.0, float("nan"), 2.0])]))
    wide = torch.randn(3, 2000).t()  # not contiguous
    assert weights_std([wide]) == pytest.approx(wide.double().std().item(), rel=1e-6)


BASES = ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal"]


@pytest.mark.parametrize("base", BASES)
def test_std_before_is_the_base_distribution_std(base: str) -> None:
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 400), nn.ReLU(),
                          nn.Linear(400, 10))  # fmt: skip
    report = emergence_init_(model, 1.0, base=base, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    fans = {"0": (300, 200), "2": (200, 400), "4": (400, 10)}
    for unit in report.units:
        fan_in, fan_out = fans[unit.name]
        if base.startswith("kaiming"):
            expected = math.sqrt(2.0 / fan_in)
        elif base.startswith("xavier"):
            expected = math.sqrt(2.0 / (fan_in + fan_out))
        else:  # semi-orthogonal rows x cols: mean square min(rows, cols) / (rows * cols)
            expected = 1 / math.sqrt(max(fan_in, fan_out))
        assert unit.std_before == pytest.approx(expected, rel=1e-12)
        # with alpha = 1 the draws have that std: 2000+ samples, a 10% band is > 4 sigma
        assert unit.std_after == pytest.approx(expected, rel=0.1)


def test_std_before_of_a_block_pools_its_weights() -> None:
    block = nn.TransformerEncoderLayer(8, 2, dim_feedforward=32, batch_first=True)
    model = nn.Sequential(block, nn.Linear(8, 2))
    report = emergence_init_(model, 1.0, base="xavier_normal", units="blocks")
    weights = [block.self_attn.in_proj_weight, block.self_attn.out_proj.weight,
               block.linear1.weight, block.linear2.weight]  # fmt: skip
    variances = [2.0 / (w.shape[0] + w.shape[1]) for w in weights]
    pooled = sum(w.numel() * v for w, v in zip(weights, variances)) / sum(
        w.numel() for w in weights
    )
    assert report.units[0].std_before == pytest.approx(math.sqrt(pooled), rel=1e-12)


def test_keep_measures_std_before() -> None:
    torch.manual_seed(0)
    model = relu_mlp([6, 40, 3])
    before = model[0].weight.detach().double().std().item()
    report = emergence_init_(model, 2.0, base="keep")
    assert report.units[0].std_before == pytest.approx(before, rel=1e-6)
    assert report.units[0].std_after == pytest.approx(before * report.units[0].scale, rel=1e-6)


def test_std_after_is_measured_on_first_read_and_cached() -> None:
    model = relu_mlp([6, 40, 40, 3])
    report = emergence_init_(model, 2.0, generator=torch.Generator().manual_seed(1))
    first = report.units[0]
    want = model[0].weight.detach().double().std().item()
    assert first.std_after == pytest.approx(want, rel=1e-6)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    assert first.std_after == pytest.approx(want, rel=1e-6)  # cached from the first read
    # a unit not yet read when its weights change reports nan, not the changed weights
    with torch.no_grad():
        model[4].weight.add_(1.0)
    assert math.isnan(report.units[2].std_after)
    assert "nan" in str(report)


def test_report_copies_and_pickles_with_its_measurements() -> None:
    model = relu_mlp([6, 20, 3])
    report = emergence_init_(model, 2.0)
    clone = pickle.loads(pickle.dumps(report))
    assert [u.std_after for u in clone.units] == [u.std_after for u in report.units]
    assert copy.deepcopy(report).units[1].std_after == report.units[1].std_after
    assert isinstance(MeasuredStd.known(0.5).value, float)
