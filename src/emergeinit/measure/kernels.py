"""Compiled kernels for the probe's hottest steps, used when numba is installed (``fast`` extra).

For every hidden layer the probe turns the layer's activations into a mask, ``value > tau``, and
checks that each sample's values are finite. In PyTorch (CPU) a comparison whose output is
boolean runs as a scalar loop, and the finiteness check is a second pass over the values: about
1 ms for 2 million float32 values on one thread. :func:`mask_and_finite` does both in one
vectorized pass compiled by numba (0.2 ms), with the same results: the comparison is the
same IEEE comparison (NaN is never above the threshold), and a value is non-finite when all its
exponent bits are set, so the per-sample flags are exact, not inferred from a sum. In the same
pass it counts the active neurons per block of channels that the counting asks for (exact).
:func:`channels_last` copies the probe's image inputs into the channels-last layout.

It takes CPU float32/float64 tensors whose samples each lie in one contiguous block (contiguous
or channels-last tensors), large enough that the call overhead does not matter, and runs when
PyTorch has at most :data:`MAX_TORCH_THREADS` intra-op threads: the kernel is single-threaded,
and PyTorch's comparison and sum are split over its threads (measured on 2 million to 6 million
values: the kernel took 0.2-1.1 ms, PyTorch 1.0-3.3 ms on one thread and 0.5-1.7 ms on two, so
at three or more it would be about as fast; ``benchmarks/mask_kernel.py``). Anything else
returns ``None`` and the caller uses PyTorch. ``EMERGEINIT_NUMBA=0`` in the environment turns the
kernel off (read at the first measure in a process).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch

# A call costs about 11 us whatever the size (NumPy views, numba's dispatch); PyTorch took as
# long at about 4,096 values (benchmarks/mask_kernel.py's machine), so a margin above that.
MIN_VALUES = 1 << 14
MAX_TORCH_THREADS = 2  # beyond, PyTorch's threads catch up with the kernel's one (above)
# values: the largest block counted, 255 words of 8 (a byte lane of their sum stays below 256)
MAX_BLOCK = 8 * 255
# per float dtype: its exponent bits as an integer of its width (all set: inf or NaN), NumPy's
_EXPONENT: dict[torch.dtype, tuple[Any, Any]] = {
    torch.float32: (np.int32(0x7F800000), np.float32),
    torch.float64: (np.int64(0x7FF << 52), np.float64),
}


def available() -> bool:
    """Whether the kernel can run: numba imports and ``EMERGEINIT_NUMBA`` is not ``0``."""
    return _kernel() is not None


@functools.cache
def _numba() -> Any:
    if os.environ.get("EMERGEINIT_NUMBA", "1").strip() == "0":
        return None
    try:
        import numba
    except Exception:  # not installed, or broken (a NumPy it does not support): PyTorch's path
        return None
    return numba


@functools.cache
def _kernel() -> Any:
    numba = _numba()
    if numba is None:
        return None

    # cache=True: compiled once per machine (in __pycache__ or numba's user cache), not per run
    @numba.njit(boundscheck=False, nogil=True, cache=True)
    def mask_and_finite_rows(values, bits, exponent, tau, mask, finite, blocks, counts):
        per_row = values.size // finite.size
        # The mask as words: it starts its own allocation (aligned), and with a block of 4 (or
        # 8) bytes dividing the channels, every block and sample starts on a word.
        wide = narrow = False
        for k in range(blocks.size):
            wide |= blocks[k] % 8 == 0
            narrow |= blocks[k] % 8 != 0
        words8 = mask.view(np.uint64) if wide else np.empty(0, np.uint64)
        words4 = mask.view(np.uint32) if narrow else np.empty(0, np.uint32)
        scratch = np.empty(per_row // 16 if wide else 0, np.uint64)
        scratch4 = np.empty(per_row // 12 if narrow else 0, np.uint32)
        low8 = np.uint64(0x00FF00FF00FF00FF)
        low16 = np.uint64(0x0000FFFF0000FFFF)
        low32 = np.uint64(0xFFFFFFFF)
        low8_32 = np.uint32(0x00FF00FF)
        low16_32 = np.uint32(0xFFFF)
        for row in range(finite.size):
            # slices per row: a loop over range(lo, hi) of the whole array is not vectorized
            start = row * per_row
            row_values = values[start : start + per_row]
            row_bits = bits[start : start + per_row]
            row_mask = mask[start : start + per_row]
            non_finite = 0
            for i in range(per_row):
                row_mask[i] = row_values[i] > tau
                non_finite += (row_bits[i] & exponent) == exponent
            finite[row] = non_finite == 0
            # The row's mask, still in cache, counted per block: its words summed (each byte
            # lane stays below 256: no carry), then each word's byte lanes added pairwise.
            # A loop body per words-per-block count that occurs: LLVM vectorizes those, not a
            # loop of unknown length inside.
            offset = 0
            for k in range(blocks.size):
                size = blocks[k]
                n = per_row // size
                out = counts[offset + row * n : offset + row * n + n]
                offset += n * finite.size
                if size % 8 == 0:
                    w = words8[start // 8 : (start + per_row) // 8]
                    per = size // 8
                    sums = w  # per == 1: each word is a block
                    if per > 1:
                        sums = scratch[:n]
                    if per == 2:
                        for j in range(n):
                            sums[j] = w[2 * j] + w[2 * j + 1]
                    elif per == 4:
                        for j in range(n):
                            sums[j] = w[4 * j] + w[4 * j + 1] + w[4 * j + 2] + w[4 * j + 3]
                    elif per > 1:  # at most 255 words (MAX_BLOCK): no lane passes 255
                        for j in range(n):
                            x = np.uint64(0)
                            base = j * per
                            for q in range(per):  # (not range(base, base + per): 3x slower)
                                x += w[base + q]
                            sums[j] = x
                    for j in range(n):
                        x = sums[j]
                        x = (x & low8) + ((x >> np.uint64(8)) & low8)
                        x = (x & low16) + ((x >> np.uint64(16)) & low16)
                        out[j] = np.int32((x & low32) + (x >> np.uint64(32)))
                else:
                    w4 = words4[start // 4 : (start + per_row) // 4]
                    per = size // 4  # odd, at most 255
                    sums4 = w4  # per == 1: each word is a block
                    if per > 1:
                        sums4 = scratch4[:n]
                        for j in range(n):
                            t = np.uint32(0)
                            base = j * per
                            for q in range(per):
                                t += w4[base + q]
                            sums4[j] = t
                    for j in range(n):
                        t = sums4[j]
                        t = (t & low8_32) + ((t >> np.uint32(8)) & low8_32)
                        out[j] = np.int32((t & low16_32) + (t >> np.uint32(16)))

    return mask_and_finite_rows


@functools.cache
def _transpose_kernel() -> Any:
    numba = _numba()
    if numba is None:
        return None

    @numba.njit(boundscheck=False, nogil=True, cache=True)
    def channels_to_last(source, target):
        # (samples, channels, positions) -> (samples, positions, channels)
        for n in range(source.shape[0]):
            out = target[n]
            for c in range(source.shape[1]):
                row = source[n, c]
                for p in range(source.shape[2]):
                    out[p, c] = row[p]

    return channels_to_last


_failed = False  # a kernel failed once in this process: PyTorch's path from then on


def _takes(value: torch.Tensor) -> bool:
    """Whether a kernel may read ``value``: a plain CPU float32/float64 tensor, large enough to
    gain, outside autograd, with PyTorch on at most :data:`MAX_TORCH_THREADS` threads, and no
    kernel has failed in this process."""
    return not (
        _failed
        or type(value) is not torch.Tensor  # a subclass may not be viewable by NumPy
        or value.is_neg()  # a lazy negation: NumPy would read the values unnegated
        or value.device.type != "cpu"
        or value.dtype not in _EXPONENT
        or value.numel() < MIN_VALUES  # also: no scalar, no empty batch
        or value.requires_grad
        or torch.get_num_threads() > MAX_TORCH_THREADS
    )


def _samples_in_blocks(value: torch.Tensor) -> bool:
    """Whether the memory holds the samples one after another, each dense (any order inside)."""
    if value.is_contiguous():
        return True
    if value.dim() == 4:
        return value.is_contiguous(memory_format=torch.channels_last)
    if value.dim() == 5:
        return value.is_contiguous(memory_format=torch.channels_last_3d)
    return False


class Fused(NamedTuple):
    """What :func:`mask_and_finite` returns."""

    mask: torch.Tensor  # value > tau, laid out like the value
    finite: torch.Tensor  # per sample (dim 0): whether all its values are finite
    counts: dict[int, torch.Tensor]  # per block size: true values per block (int32)


def countable_blocks(value: torch.Tensor, axis: int, blocks: Iterable[int]) -> list[int]:
    """The block sizes of ``blocks`` that :func:`mask_and_finite` counts along ``axis`` of
    ``value``: where that axis lies innermost in memory (stride 1), blocks that divide it into
    whole 4-byte words of the mask, at most :data:`MAX_BLOCK` values long."""
    if value.dim() == 0 or value.stride(axis) != 1:
        return []
    size = value.shape[axis]
    return sorted({b for b in blocks if 0 < b <= MAX_BLOCK and b % 4 == 0 and size % b == 0
                   and (b % 8 == 0 or b <= MAX_BLOCK // 2)})  # fmt: skip


def mask_and_finite(
    value: torch.Tensor, tau: float, axis: int = -1, blocks: Iterable[int] = ()
) -> Fused | None:
    """``value > tau``, per-sample all-finite flags and, per size in ``blocks``, the number of
    true values in each block of that many consecutive entries along ``axis`` (the channels:
    a group of a convolution's, or a Linear's features); or ``None`` where the kernel does not
    apply (see the module's docstring). The mask has ``value``'s shape and memory layout (as
    ``value > tau`` would); the flags are a bool tensor of one value per sample (dim 0). Block
    counts have ``value``'s shape with ``axis`` of size ``size // block``, as exact int32; only
    the sizes :func:`countable_blocks` admits are counted, the others are left out.
    """
    global _failed
    kernel = _kernel()
    if kernel is None or not _takes(value) or not _samples_in_blocks(value):
        return None
    exponent, np_float = _EXPONENT[value.dtype]
    mask = torch.empty_like(value, dtype=torch.bool)  # same strides: the same memory order
    finite = torch.empty(value.shape[0], dtype=torch.bool)
    count = value.numel()
    sizes = countable_blocks(value, axis, blocks) if blocks else []
    counts = torch.empty(sum(count // b for b in sizes), dtype=torch.int32) if sizes else None
    # a flat view of the memory, offset included (as_strided keeps the storage offset)
    values = value.as_strided((count,), (1,)).numpy()
    try:
        kernel(
            values,
            values.view(exponent.dtype),  # the same memory as integers of the same width
            exponent,
            np_float(tau),  # rounded to the values' dtype, as PyTorch compares with a float
            mask.view(torch.uint8).as_strided((count,), (1,)).numpy(),
            finite.numpy(),
            np.array(sizes, dtype=np.int64) if sizes else _NO_BLOCKS,
            counts.numpy() if counts is not None else _NO_COUNTS,
        )
    except Exception as error:  # a numba that cannot compile it here (its version, platform)
        _failed = True
        _warn(error)
        return None
    if counts is None:
        return Fused(mask, finite, {})
    return Fused(mask, finite, _block_tensors(value, axis, sizes, counts))


_NO_BLOCKS = np.empty(0, dtype=np.int64)
_NO_COUNTS = np.empty(0, dtype=np.int32)


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def channels_last(value: torch.Tensor) -> torch.Tensor | None:
    """A channels-last copy of a contiguous 4-d or 5-d CPU float tensor (the probe's images and
    volumes), or ``None`` where the kernel does not apply. PyTorch's copy into that layout reads
    a few channels at a time (0.23 ms for 32 RGB images of 64x64 on one thread), the kernel
    writes whole positions (0.12 ms); the values are the same."""
    global _failed
    kernel = _transpose_kernel()
    if (
        kernel is None
        or not _takes(value)
        or value.dim() not in _CHANNELS_LAST
        or not value.is_contiguous()
        or value.is_contiguous(memory_format=_CHANNELS_LAST[value.dim()])  # one channel: as is
    ):
        return None
    out = torch.empty_like(value, memory_format=_CHANNELS_LAST[value.dim()])
    samples, channels = value.shape[:2]
    try:
        kernel(
            value.numpy().reshape(samples, channels, -1),
            out.movedim(1, -1).numpy().reshape(samples, -1, channels),  # its memory, in order
        )
    except Exception as error:
        _failed = True
        _warn(error)
        return None
    return out


def _warn(error: Exception) -> None:
    warnings.warn(
        f"emergeinit: the measure's compiled kernel failed ({type(error).__name__}: "
        f"{str(error)[:200]}); the measure uses PyTorch from now on, with the same results. "
        "EMERGEINIT_NUMBA=0 silences this.",
        RuntimeWarning,
        stacklevel=3,
    )


def _block_tensors(
    value: torch.Tensor, axis: int, sizes: list[int], counts: torch.Tensor
) -> dict[int, torch.Tensor]:
    """The kernel's flat counts as tensors of ``value``'s dimensions. In memory they follow the
    value's order, ``axis`` innermost (its stride is 1): every other dimension's stride is a
    multiple of the channels ``C`` (or its size is 1), and ``C / size`` counts replace them."""
    axis %= value.dim()
    channels = value.shape[axis]
    out: dict[int, torch.Tensor] = {}
    offset = 0
    for size in sizes:
        shape = list(value.shape)
        shape[axis] = channels // size
        strides = [stride // size for stride in value.stride()]
        strides[axis] = 1
        out[size] = counts.as_strided(shape, strides, offset)
        offset += value.numel() // size
    return out


__all__ = [
    "MAX_BLOCK",
    "MAX_TORCH_THREADS",
    "MIN_VALUES",
    "Fused",
    "available",
    "channels_last",
    "countable_blocks",
    "mask_and_finite",
]
