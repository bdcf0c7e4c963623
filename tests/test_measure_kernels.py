"""The compiled mask-and-finiteness kernel (``fast`` extra): PyTorch's results, exactly."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from emergeinit.measure import kernels, measure_emergence

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

pytest.importorskip("numba")


def reference(value: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    return value > tau, torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)


def tricky(shape: tuple[int, ...], dtype: torch.dtype, tau: float) -> torch.Tensor:
    """Random values, a block at and next to the threshold, and non-finite or huge values in
    some samples (sample 0: NaN, 1: inf, 2: -inf, 3: two values whose sum overflows)."""
    g = torch.Generator().manual_seed(0)
    value = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    flat = value.view(-1)
    at = torch.tensor(tau, dtype=dtype)
    flat[100:103] = torch.stack([at, torch.nextafter(at, at + 1), torch.nextafter(at, at - 1)])
    per = value[0].numel()
    huge = torch.finfo(dtype).max
    flat[per // 2] = math.nan
    flat[per + 7] = math.inf
    flat[2 * per + per - 1] = -math.inf
    flat[3 * per : 3 * per + 2] = huge
    return value


LAYOUTS = {
    "rows": lambda v: v,
    "contiguous": lambda v: v,
    "channels_last": lambda v: v.contiguous(memory_format=torch.channels_last),
    "channels_last_3d": lambda v: v.contiguous(memory_format=torch.channels_last_3d),
}
SHAPES = {
    "rows": (6, 4096),
    "contiguous": (5, 8, 32, 16),
    "channels_last": (5, 8, 32, 16),
    "channels_last_3d": (4, 6, 8, 8, 16),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("tau", [0.05, 0.0, -0.3, 0.1])
def test_mask_and_flags_equal_pytorch(dtype: torch.dtype, layout: str, tau: float) -> None:
    value = LAYOUTS[layout](tricky(SHAPES[layout], dtype, tau))
    got = kernels.mask_and_finite(value, tau)
    assert got is not None
    mask, finite, counts = got
    assert counts == {}  # none asked for
    want_mask, want_finite = reference(value, tau)
    assert mask.dtype == torch.bool and mask.shape == value.shape
    assert mask.stride() == want_mask.stride()  # laid out as PyTorch lays out value > tau
    assert torch.equal(mask, want_mask)
    assert finite.tolist() == want_finite.tolist()
    assert finite[:4].tolist() == [False, False, False, True]  # an overflowing sum is finite


def test_a_view_that_starts_inside_its_storage() -> None:
    base = tricky((7, 4096), torch.float32, 0.05)
    value = base[2:]  # storage offset 2 * 4096
    got = kernels.mask_and_finite(value, 0.05)
    assert got is not None
    want = reference(value, 0.05)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize(
    "value",
    [
        torch.randn(8, 4096, dtype=torch.float16),  # half precision: PyTorch's path
        torch.randn(4096, 8).t(),  # samples not in contiguous blocks
        torch.randn(4, 8, 8),  # too small to gain
        torch.randn(8, 4096, requires_grad=True),
        torch.randn(0, 4096),
        torch.randn(8, 4096)._neg_view(),
        nn.Parameter(torch.randn(8, 4096), requires_grad=False),
    ],
    ids=["half", "transposed", "small", "requires_grad", "empty", "lazy negation", "subclass"],
)
def test_where_it_does_not_apply_it_returns_none(value: torch.Tensor) -> None:
    assert kernels.mask_and_finite(value, 0.05) is None


def test_more_torch_threads_than_the_limit_use_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    value = torch.randn(8, 4096)
    assert kernels.mask_and_finite(value, 0.05) is not None
    monkeypatch.setattr(torch, "get_num_threads", lambda: kernels.MAX_TORCH_THREADS + 1)
    assert kernels.mask_and_finite(value, 0.05) is None


def test_a_kernel_that_fails_warns_once_and_hands_over_to_pytorch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def broken(*args: object) -> None:
        calls.append(args)
        raise RuntimeError("cannot compile here")

    monkeypatch.setattr(kernels, "_failed", False)
    monkeypatch.setattr(kernels, "_kernel", lambda: broken)
    value = torch.randn(8, 4096)
    with pytest.warns(RuntimeWarning, match="cannot compile here"):
        assert kernels.mask_and_finite(value, 0.05) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.mask_and_finite(value, 0.05) is None
    assert len(calls) == 1


def clear_caches() -> None:
    for cached in (kernels._numba, kernels._kernel, kernels._transpose_kernel):
        cached.cache_clear()


@pytest.fixture
def fresh_switch() -> Iterator[None]:
    clear_caches()
    yield
    clear_caches()


@pytest.mark.usefixtures("fresh_switch")
def test_the_environment_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMERGEINIT_NUMBA", "0")
    assert not kernels.available()
    assert kernels.mask_and_finite(torch.randn(8, 4096), 0.05) is None
    assert kernels.channels_last(torch.randn(8, 3, 32, 32)) is None
    monkeypatch.setenv("EMERGEINIT_NUMBA", "1")
    clear_caches()
    assert kernels.available()
    assert kernels.channels_last(torch.randn(8, 3, 32, 32)) is not None


def test_the_measure_is_the_same_with_and_without_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.GELU(),
        nn.Flatten(), nn.Linear(16 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 10),
    ).eval()  # fmt: skip
    x = torch.randn(6, 3, 32, 32)
    x[2] *= 1e34  # finite activations whose sums overflow: a value either way
    x[3] = 3e38  # finite input, activations that overflow to inf: nan either way
    x[4, 0, 0, 0] = math.inf  # a non-finite input: nan either way
    used = []
    fused = kernels.mask_and_finite

    def counted(value: torch.Tensor, tau: float, *args: Any) -> kernels.Fused | None:
        result = fused(value, tau, *args)
        used.append(result is not None)
        return result

    monkeypatch.setattr(kernels, "mask_and_finite", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with_kernel = measure_emergence(net, x)
        assert sum(used) >= 2  # both convolutions' masks (16 * 32 * 32 values per sample)
        monkeypatch.setattr(kernels, "mask_and_finite", lambda *args: None)
        without = measure_emergence(net, x)
    assert torch.isnan(with_kernel.log10_e).tolist() == [False, False, False, True, True, False]
    torch.testing.assert_close(with_kernel.log10_e, without.log10_e, rtol=0, atol=0,
                               equal_nan=True)  # fmt: skip


def block_reference(mask: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    moved = mask.movedim(axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // size, size)
    return groups.sum(dim=-1, dtype=torch.int32).movedim(-1, axis)


# (shape, layout, channel axis, block sizes): words of 8 one per block (8), two (16), four
# (32), more (40: five), words of 4 (4, 12: three, 20: five), and a block of all channels
BLOCK_CASES = [
    ((5, 40, 16, 8), "channels_last", 1, [4, 8, 20, 40]),
    ((4, 96, 8, 8), "channels_last", 1, [4, 12, 16, 32, 96]),
    ((6, 8, 8, 64), "rows", -1, [4, 8, 16, 32, 64]),
    ((3, 4, 6, 6, 48), "rows", -1, [12, 24, 48]),
    ((4, 24, 4, 8, 8), "channels_last_3d", 1, [4, 8, 12, 24]),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "layout", "axis", "sizes"), BLOCK_CASES)
def test_block_counts_equal_pytorch(
    dtype: torch.dtype, shape: tuple[int, ...], layout: str, axis: int, sizes: list[int]
) -> None:
    value = LAYOUTS[layout](tricky(shape, dtype, 0.05))
    got = kernels.mask_and_finite(value, 0.05, axis, sizes)
    assert got is not None
    assert torch.equal(got.mask, value > 0.05)
    assert sorted(got.counts) == sorted(sizes)
    for size, counts in got.counts.items():
        want = block_reference(got.mask, axis, size)
        assert counts.dtype == torch.int32 and counts.shape == want.shape
        assert torch.equal(counts, want), size


@pytest.mark.parametrize("size", [kernels.MAX_BLOCK, kernels.MAX_BLOCK // 2, 8 * 5, 4 * 5])
def test_full_blocks_do_not_carry_between_byte_lanes(size: int) -> None:
    # every value active: each byte lane of a block's summed words holds its maximum
    value = torch.ones(3, 4, kernels.MAX_BLOCK * 2)
    got = kernels.mask_and_finite(value, 0.05, -1, [size])
    assert got is not None
    assert got.counts[size].unique().tolist() == [size]
    value[1, 2, 5] = 0.0
    got = kernels.mask_and_finite(value, 0.05, -1, [size])
    assert got is not None
    assert torch.equal(got.counts[size], block_reference(got.mask, -1, size))


def test_blocks_it_cannot_count_are_left_out() -> None:
    value = torch.randn(4, 64, 16, 16).contiguous(memory_format=torch.channels_last)
    # 6: not whole words; 3: not a divisor; 128: more than the channels; 0: no block
    assert kernels.countable_blocks(value, 1, [6, 3, 128, 0, 16]) == [16]
    got = kernels.mask_and_finite(value, 0.05, 1, [6, 3, 128, 0, 16])
    assert got is not None and sorted(got.counts) == [16]
    # channels first: the channels are not innermost in memory
    first = value.contiguous()
    assert kernels.countable_blocks(first, 1, [16]) == []
    got = kernels.mask_and_finite(first, 0.05, 1, [16])
    assert got is not None and got.counts == {}
    # more than MAX_BLOCK values per block: lanes of summed words could pass 255
    wide = torch.randn(2, 4, 2 * kernels.MAX_BLOCK + 16)
    assert kernels.countable_blocks(wide, -1, [wide.shape[-1]]) == []


class Grouped(nn.Module):
    """Grouped convolutions (block counts per group and per position, channels last), a
    Linear on channels-last rows (counts per row) and one on flattened features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.group = nn.Conv2d(32, 64, 3, padding=1, groups=8)
        self.mix = nn.Conv2d(64, 64, 1, groups=4)
        self.rows = nn.Linear(64, 48)
        self.head = nn.Linear(48 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.nn.functional.gelu(self.group(h))
        h = torch.relu(self.mix(h))
        h = torch.relu(self.rows(h.permute(0, 2, 3, 1)))
        return self.head(h.flatten(1))


def test_the_measure_is_the_same_with_the_kernels_block_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    net = Grouped().eval()
    x = torch.randn(8, 3, 16, 16)
    asked: list[tuple[int, ...]] = []
    fused = kernels.mask_and_finite

    def spy(value: torch.Tensor, tau: float, axis: int = -1, blocks: Any = ()) -> Any:
        asked.append(tuple(blocks))
        return fused(value, tau, axis, blocks)

    monkeypatch.setattr(kernels, "mask_and_finite", spy)
    first = measure_emergence(net, x)
    assert not any(asked)  # nothing known yet: the counter counts and remembers the sizes
    asked.clear()
    second = measure_emergence(net, x)
    assert sum(1 for sizes in asked if sizes) >= 3  # now the kernel counts them
    monkeypatch.setattr(kernels, "mask_and_finite", lambda *args: None)
    without = measure_emergence(net, x)
    for result in (first, second):
        assert torch.equal(result.log10_e, without.log10_e)
        assert result.active_fraction == without.active_fraction
    # other input shapes: their own sizes (the counts would not fit)
    y = torch.randn(4, 3, 16, 16)
    monkeypatch.setattr(kernels, "mask_and_finite", spy)
    asked.clear()
    other = measure_emergence(net, y)
    assert not any(asked)
    monkeypatch.setattr(kernels, "mask_and_finite", lambda *args: None)
    assert torch.equal(other.log10_e, measure_emergence(net, y).log10_e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(8, 3, 32, 32), (4, 16, 16, 24), (4, 5, 6, 16, 24)])
def test_channels_last_copies_equal_pytorch(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    value = tricky(shape, dtype, 0.05)
    got = kernels.channels_last(value)
    assert got is not None
    layout = torch.channels_last if value.dim() == 4 else torch.channels_last_3d
    want = value.contiguous(memory_format=layout)
    assert got.stride() == want.stride() and got.dtype == dtype
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    assert torch.isnan(got).equal(torch.isnan(want))


@pytest.mark.parametrize(
    "value",
    [
        torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last),  # not contiguous
        torch.randn(8, 3, 32, 32, dtype=torch.float16),
        torch.randn(2, 3, 8, 8),  # too small to gain
        torch.randn(8, 3 * 32 * 32),  # not an image
        torch.randn(8, 3, 32, 32, requires_grad=True),
        torch.randn(8, 3, 32, 32)._neg_view(),
        torch.randn(8, 1, 64, 64),  # one channel: channels last already
    ],
    ids=["channels last", "half", "small", "rows", "requires_grad", "lazy negation", "one channel"],
)
def test_channels_last_leaves_other_tensors_to_pytorch(value: torch.Tensor) -> None:
    assert kernels.channels_last(value) is None


def test_a_failing_transpose_warns_once_and_hands_over_to_pytorch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("cannot compile here")

    monkeypatch.setattr(kernels, "_failed", False)
    monkeypatch.setattr(kernels, "_transpose_kernel", lambda: broken)
    with pytest.warns(RuntimeWarning, match="cannot compile here"):
        assert kernels.channels_last(torch.randn(8, 3, 32, 32)) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second warning
        assert kernels.channels_last(torch.randn(8, 3, 32, 32)) is None
        assert kernels.mask_and_finite(torch.randn(8, 4096), 0.05) is None  # both: PyTorch's


def test_importing_the_package_does_not_import_numba() -> None:
    # numba costs about 0.2 s to import: only a measure that can use the kernel pays for it
    code = "import sys, emergeinit, emergeinit.measure; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
