"""The exact-arithmetic shortcuts of the path counting (docs/measure.md, "The two forms").

Split counts (a dense layer's count once per position plus integer masks, convolved in float32)
and row sums (a Linear after a Linear on channels-last values) are checked against exact path
counts on small graphs in ``tests/test_measure_routing.py``. Here: the integer helpers at sizes
the small graphs do not reach, a reshape that adds a position dimension, and the same model
measured with and without the split counts at the size of ``benchmarks/measure_speed.py``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

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


class ConvNextBlock(nn.Module):
    """A depthwise 7x7 convolution, then Linear layers on channels-last values, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.up, self.down = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + self.down(nn.functional.gelu(self.up(y))).permute(0, 3, 1, 2)


def deep_models() -> list[tuple[str, nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    separable: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    for _ in range(12):  # inverted residual blocks without the residual: counts pass 2**100
        separable += [nn.Conv2d(16, 48, 1), nn.ReLU6(),
                      nn.Conv2d(48, 48, 3, padding=1, groups=48), nn.ReLU6(), nn.Conv2d(48, 16, 1)]
    separable += [nn.Flatten(), nn.Linear(16 * 6 * 6, 3)]
    convnext = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), *[ConvNextBlock(8) for _ in range(4)],
                             nn.Flatten(), nn.Linear(8 * 3 * 3, 3))  # fmt: skip
    return [
        ("separable", nn.Sequential(*separable).eval(), torch.randn(4, 3, 6, 6)),
        ("convnext", convnext.eval(), torch.randn(4, 3, 6, 6)),
    ]


@pytest.mark.parametrize("threshold", [0.0, 2.0**20])
def test_counts_kept_at_their_scale_equal_counts_rescaled_more_often(
    monkeypatch: pytest.MonkeyPatch, threshold: float
) -> None:
    # Counts are divided by their peak only once it passes 2**100 (the separable net's do,
    # mid-network); rescaled after every layer (0) or whenever they pass 2**20, the same
    # values up to float64 rounding, at both granularities.
    for name, model, x in deep_models():
        for form, granularity in itertools.product(("cross", "li"), ("neuron", "channel")):
            options: dict[str, Any] = {"form": form, "granularity": granularity}
            kept = measure_emergence(model, x, **options)
            with monkeypatch.context() as patch:
                patch.setattr(counting, "_RESCALE", threshold)
                rescaled = measure_emergence(model, x, **options)
            assert torch.isfinite(kept.log10_e).all(), (name, options)
            if name == "separable" and form == "cross" and granularity == "neuron":
                assert (kept.log10_e > 100 * math.log10(2)).all()
            torch.testing.assert_close(kept.log10_e, rescaled.log10_e, rtol=0, atol=1e-11)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_channels_last_uint8_window_sums_equal_float64_window_sums(nd: int) -> None:
    # Depthwise windows of masks are summed channels last in uint8 where every sum stays below
    # 256: integer additions without overflow, so equal to the float64 sums, exactly.
    generator = torch.Generator().manual_seed(2)
    for _ in range(12):
        draw = lambda low, high: [  # noqa: E731
            int(v) for v in torch.randint(low, high, (nd,), generator=generator)
        ]
        size, kernel, stride = draw(1, 7), draw(1, 5), draw(1, 4)
        dilation, left = draw(1, 3), draw(0, 4)
        out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
               for n, p, d, k, s in zip(size, left, dilation, kernel, stride)]  # fmt: skip
        if min(out) < 1:
            continue
        # Counts up to 255 // taps per position: the largest window sum stays below 256.
        top = 255 // math.prod(kernel)
        values = torch.randint(0, top + 1, (3, 5, *size), generator=generator)
        fast = counting._window_sum(counting._channels_last(values, torch.uint8), kernel, stride,
                                    left, dilation, out, first=1)  # fmt: skip
        want = counting._window_sum(values.to(torch.float64), kernel, stride, left, dilation, out)
        assert fast.dtype == torch.uint8
        assert torch.equal(fast.movedim(-1, 1).to(torch.float64), want)


def naive_window_sum(
    t: torch.Tensor, kernel: list[int], stride: list[int], left: list[int],
    dilation: list[int], out: list[int],
) -> torch.Tensor:  # fmt: skip
    """Every output position's window, tap by tap (positions outside the input add nothing)."""
    result = torch.zeros(*t.shape[:2], *out, dtype=torch.float64)
    for position in itertools.product(*(range(o) for o in out)):
        for taps in itertools.product(*(range(k) for k in kernel)):
            source = [i * s - p + j * d
                      for i, s, p, j, d in zip(position, stride, left, taps, dilation)]  # fmt: skip
            if all(0 <= x < n for x, n in zip(source, t.shape[2:])):
                result[(slice(None), slice(None), *position)] += t[(slice(None), slice(None),
                                                                     *source)].double()  # fmt: skip
    return result


@pytest.mark.parametrize("way", ["per tap", "unfold"])
@pytest.mark.parametrize("layout", ["channels first", "channels last"])
def test_window_sums_equal_a_tap_by_tap_sum(
    way: str, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both ways of summing windows (an addition per tap, or a reduction over an unfolded view,
    # chosen by size and layout) against the definition, on ceil-mode-like output sizes too
    monkeypatch.setattr(counting, "_UNFOLD_WORK", 0 if way == "per tap" else 2**40)
    generator = torch.Generator().manual_seed(5)
    checked = 0
    for _ in range(40):
        nd = int(torch.randint(1, 4, (), generator=generator))

        def draw(low: int, high: int, nd: int = nd) -> list[int]:
            return [int(v) for v in torch.randint(low, high, (nd,), generator=generator)]

        size, kernel, stride, dilation = draw(1, 7), draw(1, 4), draw(1, 3), draw(1, 3)
        if way == "per tap" and layout == "channels last":
            kernel = [min(k, 4) for k in kernel]  # 5 taps or more channels last: unfold
        left = [int(torch.randint(0, d * (k - 1) + 1, (), generator=generator))
                for k, d in zip(kernel, dilation)]  # fmt: skip
        extra = draw(0, 2)
        shapes = zip(size, left, dilation, kernel, stride, extra)
        out = [(n + 2 * p - d * (k - 1) - 1) // s + 1 + e for n, p, d, k, s, e in shapes]
        if min(out) < 1:
            continue
        values = torch.randint(0, 9, (2, 3, *size), generator=generator).to(torch.float64)
        want = naive_window_sum(values, kernel, stride, left, dilation, out)
        if layout == "channels first":
            got = counting._window_sum(values, kernel, stride, left, dilation, out)
        else:
            got = counting._window_sum(values.movedim(1, -1).contiguous(), kernel, stride, left,
                                       dilation, out, first=1).movedim(-1, 1)  # fmt: skip
        assert torch.equal(got, want), (size, kernel, stride, left, dilation, out)
        checked += 1
    assert checked >= 20


def test_integer_sums_switch_to_int64_beyond_int32() -> None:
    # 9e6 values of 255 per sample: 2.3e9, past int32 (2**31 - 1 = 2.1e9).
    values = torch.full((1, 9_000_000), 255, dtype=torch.uint8)
    assert counting._integer_sum(values, 255).tolist() == [255 * 9_000_000]
    # Folded as int64 words first (two slices of values up to 63): still past int32.
    values = torch.full((1, 40_000_000), 63, dtype=torch.uint8)
    assert counting._exact_total(values, 63).tolist() == [63 * 40_000_000]


@pytest.mark.parametrize("bound", [1, 9, 63, 127, 255])
def test_folded_uint8_totals_are_exact(bound: int) -> None:
    # Folding adds k slices as int64 words, k * bound < 128: no byte carries into the next.
    generator = torch.Generator().manual_seed(4)
    for shape in [(3, 100, 16, 24), (2, 7, 95, 53), (4, 96, 16, 16)]:  # 2**16 and more
        values = torch.randint(0, bound + 1, shape, generator=generator).to(torch.uint8)
        want = values.to(torch.int64).sum(dim=tuple(range(1, len(shape)))).tolist()
        assert counting._exact_total(values, bound).tolist() == want
        top = torch.full(shape, bound, dtype=torch.uint8)  # every lane at its largest
        assert counting._exact_total(top, bound).tolist() == [bound * top[0].numel()] * shape[0]


def test_mask_counts_in_every_layout() -> None:
    # Channels first with 8k values after the channels (int64 words), channels last (stride 1:
    # each position's bytes as words) and anything else (uint8 slices), each past 127 channels.
    generator = torch.Generator().manual_seed(5)
    for shape in [(3, 300, 4, 4), (3, 300, 3, 3), (2, 130, 1, 8)]:
        mask = torch.rand(shape, generator=generator) > 0.4
        want = mask.to(torch.int64).sum(dim=1, keepdim=True)
        for layout in (mask, mask.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(counting._count(layout, 1).to(torch.int64), want)
    full = torch.ones(2, 1000, 2, 4, dtype=torch.bool)  # words: every lane at 127, then more
    assert counting._count(full, 1).flatten().tolist() == [1000] * 16


@pytest.mark.parametrize("lane_min", [0, 2**40])  # int32 lanes; int64 words or plain sums
def test_block_counts_of_channels_last_masks(
    lane_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Per position, the active neurons of each block of channels, for every block size of 8,
    # 24, 1020 and 1024 channels (words of 1, 2, 4 and 8 bytes, blocks past 255, at and past the
    # 255 * 4 limit of int32 lanes, sizes that fit neither), random and all-true (lanes full).
    monkeypatch.setattr(counting, "_LANE_MIN", lane_min)
    generator = torch.Generator().manual_seed(6)
    for channels in (8, 24, 1020, 1024):
        random = torch.rand(3, channels, 2, 3, generator=generator) > 0.5
        full = torch.ones(2, channels, 1, 2, dtype=torch.bool)
        for mask in (random, full):
            last = mask.contiguous(memory_format=torch.channels_last)
            for groups in (g for g in range(1, channels + 1) if channels % g == 0):
                want = mask.reshape(mask.shape[0], groups, -1, *mask.shape[2:]).sum(dim=2)
                got = counting._coarsen(last, groups)
                assert got.dtype == (torch.bool if groups == channels else torch.int32)
                assert torch.equal(got.to(torch.int64), want), (channels, groups)
    # Views that start mid-word (contiguous, and not), and rows of whole masks.
    rows = torch.rand(5, 41, generator=generator) > 0.5
    shifted = (torch.rand(201, generator=generator) > 0.5)[1:].view(5, 40)
    for view in (shifted, rows[:, 1:], rows[1:, :40], rows[:, :40]):
        want = view.to(torch.int64).sum(dim=-1, keepdim=True)
        assert torch.equal(counting._count(view, -1).to(torch.int64), want)


@pytest.mark.parametrize("multiplier", [2, 6])  # 7x7 windows: uint8 (98), float32 (294)
def test_depthwise_with_channel_multiplier_equals_dense_counts(
    multiplier: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A depthwise convolution with several outputs per channel: window sums times counts of
    # active outputs up to 49 * multiplier, in uint8 below 256, else float32.
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4 * multiplier, 7, padding=3, groups=4), nn.ReLU(),
        nn.Conv2d(4 * multiplier, 5, 1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 9 * 9, 3),
    )  # fmt: skip
    x = torch.randn(4, 3, 9, 9)
    fast = measure_emergence(net, x)
    with monkeypatch.context() as patch:
        patch.setattr(counting.Counter, "_split", lambda self, index: False)
        dense = measure_emergence(net, x)
    assert torch.isfinite(fast.log10_e).all()
    torch.testing.assert_close(fast.log10_e, dense.log10_e, rtol=0, atol=1e-11)
