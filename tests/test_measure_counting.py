"""The exact-arithmetic shortcuts of the path counting (docs/measure.md, "The two forms").

Split counts (a dense layer's count once per position plus integer masks, convolved in float32)
and row sums (a Linear after a Linear on channels-last values) are checked against exact path
counts on small graphs in ``tests/test_measure_routing.py``. Here: the integer helpers at sizes
the small graphs do not reach, a reshape that adds a position dimension, and the same model
measured with and without the split counts at the size of ``benchmarks/measure_speed.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emergeinit.measure import counting, measure_emergence

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def test_mask_counts_are_exact_beyond_255_per_slice() -> None:
    # Counted in uint8 slices of at most 255 values: 700 channels need three slices.
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 700, 2, 5, generator=generator) > 0.3
    for dim in (1, -1):
        expected = mask.to(torch.int64).sum(dim=dim, keepdim=True)
        assert torch.equal(counting._count(mask, dim).to(torch.int64), expected)
    full = torch.ones(2, 1000, 3, dtype=torch.bool)
    assert counting._count(full, 1).flatten().tolist() == [1000] * 6


@pytest.mark.parametrize("bound", [1, 2**23])  # float32 partial sums, then the float64 path
def test_exact_sum_of_integer_tensors(bound: int) -> None:
    generator = torch.Generator().manual_seed(1)
    values = torch.randint(0, min(bound, 2**23) + 1, (4, 3, 7, 9), generator=generator)
    got = counting._exact_sum(values.to(torch.float32), bound)
    assert got.dtype == torch.float64
    assert got.tolist() == values.sum(dim=(1, 2, 3)).tolist()


def test_reshape_that_adds_a_position_dimension_before_a_linear() -> None:
    # (batch, features) -> (batch, 1, features): the second Linear's rows are the samples.
    class Unsqueezed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.a(x)).reshape(x.shape[0], 1, 5)
            return self.c(torch.relu(self.b(h)))

    class Plain(Unsqueezed):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(torch.relu(self.b(torch.relu(self.a(x)))))

    torch.manual_seed(0)
    unsqueezed = Unsqueezed()
    plain = Plain()
    plain.load_state_dict(unsqueezed.state_dict())
    x = torch.randn(5, 6)
    for form in ("cross", "li"):
        got = measure_emergence(unsqueezed, x, form=form).log10_e  # type: ignore[arg-type]
        want = measure_emergence(plain, x, form=form).log10_e  # type: ignore[arg-type]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def models() -> list[tuple[str, nn.Module, torch.Tensor]]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    convnext = transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        num_stages=2, hidden_sizes=[16, 32], depths=[3, 2], num_labels=10,
        layer_scale_init_value=0.5))  # fmt: skip
    mobilenet = transformers.MobileNetV2ForImageClassification(transformers.MobileNetV2Config(
        image_size=32, depth_multiplier=0.35, num_labels=10))  # fmt: skip
    return [
        ("convnext", convnext.eval(), torch.randn(4, 3, 32, 32)),
        ("mobilenet", mobilenet.eval(), torch.randn(4, 3, 32, 32) * 3),
    ]


@pytest.mark.slow
def test_split_counts_equal_dense_float64_counts_on_real_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same sweep with every split count made dense from the start (the float64 path the
    # brute-force tests also cover): equal to float64 rounding, well inside 1e-9.
    for name, model, x in models():
        fast = measure_emergence(model, {"pixel_values": x})
        with monkeypatch.context() as patch:
            patch.setattr(counting.Counter, "_split", lambda self, index: False)
            dense = measure_emergence(model, {"pixel_values": x})
        assert torch.isfinite(fast.log10_e).all(), name
        torch.testing.assert_close(fast.log10_e, dense.log10_e, rtol=0, atol=1e-11)
        assert fast.active_fraction == pytest.approx(dense.active_fraction, abs=1e-12)
