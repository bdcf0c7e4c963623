"""The compiled mask-and-finiteness kernel (``fast`` extra): PyTorch's results, exactly."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from collections.abc import Iterator

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
    mask, finite = got
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


@pytest.fixture
def fresh_switch() -> Iterator[None]:
    kernels._kernel.cache_clear()
    yield
    kernels._kernel.cache_clear()


@pytest.mark.usefixtures("fresh_switch")
def test_the_environment_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMERGEINIT_NUMBA", "0")
    assert not kernels.available()
    assert kernels.mask_and_finite(torch.randn(8, 4096), 0.05) is None
    monkeypatch.setenv("EMERGEINIT_NUMBA", "1")
    kernels._kernel.cache_clear()
    assert kernels.available()


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

    def counted(value: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        result = fused(value, tau)
        used.append(result is not None)
        return result

    monkeypatch.setattr(kernels, "mask_and_finite", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with_kernel = measure_emergence(net, x)
        assert sum(used) >= 2  # both convolutions' masks (16 * 32 * 32 values per sample)
        monkeypatch.setattr(kernels, "mask_and_finite", lambda value, tau: None)
        without = measure_emergence(net, x)
    assert torch.isnan(with_kernel.log10_e).tolist() == [False, False, False, True, True, False]
    torch.testing.assert_close(with_kernel.log10_e, without.log10_e, rtol=0, atol=0,
                               equal_nan=True)  # fmt: skip


def test_importing_the_package_does_not_import_numba() -> None:
    # numba costs about 0.2 s to import: only a measure that can use the kernel pays for it
    code = "import sys, emergeinit, emergeinit.measure; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
