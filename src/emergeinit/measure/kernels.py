"""A compiled kernel for the probe's hottest step, used when numba is installed (``fast`` extra).

For every hidden layer the probe turns the layer's activations into a mask, ``value > tau``, and
checks that each sample's values are finite. In PyTorch (CPU) a comparison whose output is
boolean runs as a scalar loop, and the finiteness check is a second pass over the values: about
1 ms for 2 million float32 values on one thread. :func:`mask_and_finite` does both in one
vectorized pass compiled by numba (0.2 ms), with the same results: the comparison is the
same IEEE comparison (NaN is never above the threshold), and a value is non-finite when all its
exponent bits are set, so the per-sample flags are exact, not inferred from a sum.

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
from typing import Any

import numpy as np
import torch

# A call costs about 11 us whatever the size (NumPy views, numba's dispatch); PyTorch took as
# long at about 4,096 values (benchmarks/mask_kernel.py's machine), so a margin above that.
MIN_VALUES = 1 << 14
MAX_TORCH_THREADS = 2  # beyond, PyTorch's threads catch up with the kernel's one (above)
# per float dtype: its exponent bits as an integer of its width (all set: inf or NaN), NumPy's
_EXPONENT: dict[torch.dtype, tuple[Any, Any]] = {
    torch.float32: (np.int32(0x7F800000), np.float32),
    torch.float64: (np.int64(0x7FF << 52), np.float64),
}


def available() -> bool:
    """Whether the kernel can run: numba imports and ``EMERGEINIT_NUMBA`` is not ``0``."""
    return _kernel() is not None


@functools.cache
def _kernel() -> Any:
    if os.environ.get("EMERGEINIT_NUMBA", "1").strip() == "0":
        return None
    try:
        import numba
    except Exception:  # not installed, or broken (a NumPy it does not support): PyTorch's path
        return None

    # cache=True: compiled once per machine (in __pycache__ or numba's user cache), not per run
    @numba.njit(boundscheck=False, nogil=True, cache=True)
    def mask_and_finite_rows(values, bits, exponent, tau, mask, finite):
        per_row = values.size // finite.size
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

    return mask_and_finite_rows


_failed = False  # the kernel failed once in this process: PyTorch's path from then on


def _samples_in_blocks(value: torch.Tensor) -> bool:
    """Whether the memory holds the samples one after another, each dense (any order inside)."""
    if value.is_contiguous():
        return True
    if value.dim() == 4:
        return value.is_contiguous(memory_format=torch.channels_last)
    if value.dim() == 5:
        return value.is_contiguous(memory_format=torch.channels_last_3d)
    return False


def mask_and_finite(value: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(value > tau, per-sample all-finite flags)``, or ``None`` where the kernel does not
    apply (see the module's docstring). The mask has ``value``'s shape and memory layout (as
    ``value > tau`` would); the flags are a bool tensor of one value per sample (dim 0).
    """
    global _failed
    kernel = _kernel()
    if (
        kernel is None
        or _failed
        or type(value) is not torch.Tensor  # a subclass may not be viewable by NumPy
        or value.is_neg()  # a lazy negation: NumPy would read the values unnegated
        or value.device.type != "cpu"
        or value.dtype not in _EXPONENT
        or value.numel() < MIN_VALUES  # also: no scalar, no empty batch
        or value.requires_grad
        or torch.get_num_threads() > MAX_TORCH_THREADS
        or not _samples_in_blocks(value)
    ):
        return None
    exponent, np_float = _EXPONENT[value.dtype]
    mask = torch.empty_like(value, dtype=torch.bool)  # same strides: the same memory order
    finite = torch.empty(value.shape[0], dtype=torch.bool)
    count = value.numel()
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
        )
    except Exception as error:  # a numba that cannot compile it here (its version, platform)
        _failed = True
        warnings.warn(
            f"emergeinit: the measure's compiled kernel failed ({type(error).__name__}: "
            f"{str(error)[:200]}); the measure uses PyTorch from now on, with the same results. "
            "EMERGEINIT_NUMBA=0 silences this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return mask, finite


__all__ = ["MAX_TORCH_THREADS", "MIN_VALUES", "available", "mask_and_finite"]
