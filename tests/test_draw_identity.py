"""The draws stay the ones the studies were run with, bit for bit, for every base and alpha.

The reference below is an independent transcription of the draw arithmetic the library has
always used (docs/method.md, "Base inits and the folded scale"): for each weight layer in
registration order, one ``torch.nn.init`` call on the whole weight with the scale folded into
the std, bound or gain as a Python float, ``alpha ** e`` computed in float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import ShortcutFirst
from torch import nn

from emergeinit import emergence_init_, exponents
from emergeinit.models import build_model, example_input

BASES = ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal"]


def _reference_draws(
    model: nn.Module,
    scale_of: dict[str, float],
    base: str,
    generator: torch.Generator | None,
) -> None:
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            weight, scale = module.weight, scale_of[name]
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
            if base.startswith("kaiming"):
                std = nn.init.calculate_gain("relu") / math.sqrt(fan_in)
            elif base.startswith("xavier"):
                std = 1.0 * math.sqrt(2.0 / float(fan_in + fan_out))
            else:
                std = 1.0
            if base.endswith("normal"):
                weight.normal_(0.0, std * scale, generator=generator)
            elif base.endswith("uniform"):
                bound = math.sqrt(3.0) * std
                weight.uniform_(-bound * scale, bound * scale, generator=generator)
            else:
                nn.init.orthogonal_(weight, gain=std * scale, generator=generator)
            if module.bias is not None:
                module.bias.zero_()


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("alpha", [0.6, 1.3, 2.0, 3.7])
@pytest.mark.parametrize("use_generator", [True, False])
def test_scaled_draws_are_the_reference_arithmetic_bit_for_bit(
    base: str, alpha: float, use_generator: bool
) -> None:
    torch.manual_seed(0)
    model = ShortcutFirst()
    x = torch.randn(2, 2, 5, 5)
    reference = copy.deepcopy(model)
    order = ["conv1", "conv2", "shortcut", "head"]  # call order
    scale_of = {name: alpha**e for name, e in zip(order, exponents(4))}

    torch.manual_seed(11)
    _reference_draws(
        reference, scale_of, base, torch.Generator().manual_seed(4) if use_generator else None
    )
    after_reference = torch.rand(3)
    torch.manual_seed(11)
    emergence_init_(
        model,
        alpha,
        base=base,  # type: ignore[arg-type]
        example_input=x,
        generator=torch.Generator().manual_seed(4) if use_generator else None,
    )
    assert torch.equal(torch.rand(3), after_reference)  # the same random numbers consumed
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(got, want), name


@pytest.mark.parametrize("base", BASES)
def test_resnet_spec_draws_bit_for_bit_in_call_and_graph_order(base: str) -> None:
    spec = "resnet:2x8x8-4x1-6x1-3"
    torch.manual_seed(0)
    model = build_model(spec)
    x = example_input(spec, 4)
    alpha = 1.4
    for order in ("call", "graph"):
        candidate, reference = copy.deepcopy(model), copy.deepcopy(model)
        report = emergence_init_(
            candidate,
            alpha,
            base=base,  # type: ignore[arg-type]
            example_input=x,
            order=order,  # type: ignore[arg-type]
            generator=torch.Generator().manual_seed(8),
        )
        scale_of = {u.name: alpha**u.exponent for u in report.units}
        _reference_draws(reference, scale_of, base, torch.Generator().manual_seed(8))
        for (name, got), want in zip(
            candidate.state_dict().items(), reference.state_dict().values()
        ):
            assert torch.equal(got, want), (order, name)
