"""The probe's mask-and-finiteness step: the compiled kernel against PyTorch, in the same run.

For activations of the sizes the measure's benchmark models produce, times (medians) the
kernel of ``emergeinit.measure.kernels`` (one thread) and what the probe does without it,
``value > tau`` and a per-sample sum checked for finiteness, on 1 to ``--threads`` PyTorch
threads, and prints the ratios; first, what the first call in the process cost. Then the
active-neuron counts per block of channels: the kernel's mask with the counts against its mask
alone followed by the counting's own PyTorch path (one thread); and the channels-last copy of
an image batch against PyTorch's. Needs numba (the ``fast`` extra).

    python benchmarks/mask_kernel.py [--repeats 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from emergeinit.measure import kernels
from emergeinit.measure.counting import _coarsen

SHAPES = {
    "MLP hidden layer, batch 256": (256, 1024),
    "CNN 32 channels at 32x32, batch 64": (64, 32, 32, 32),
    "MobileNetV2 expansion 192 channels at 32x32, batch 32": (32, 192, 32, 32),
}
# (activations laid out as the probe lays them, the blocks of channels counted)
BLOCKS = {
    "grouped CNN 32 channels at 32x32, 8 groups and all, batch 64": ((64, 32, 32, 32), (4, 32)),
    "grouped CNN 64 channels at 16x16, 8 groups and all, batch 64": ((64, 64, 16, 16), (8, 64)),
    "ConvNeXt depthwise input 32 channels at 16x16, batch 32": ((32, 32, 16, 16), (32,)),
    "MobileNetV2 expansion 192 channels at 32x32, batch 32": ((32, 192, 32, 32), (192,)),
}
IMAGES = {"32 RGB images of 64x64": (32, 3, 64, 64), "8 RGB images of 224x224": (8, 3, 224, 224)}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    if not kernels.available():
        raise SystemExit("the kernel is off: install numba (pip install 'emergeinit[fast]')")
    kernels.mask_and_finite(torch.randn(8, kernels.MIN_VALUES), 0.05)
    print(f"first call in this process (numba's import, then the kernel loaded from numba's disk "
          f"cache, or compiled the first time on a machine): {time.perf_counter() - start:.2f} s")
    print(f"torch {torch.__version__}; the kernel runs on one thread (used by the measure with at "
          f"most {kernels.MAX_TORCH_THREADS} PyTorch threads)")
    for name, shape in SHAPES.items():
        value = torch.randn(shape)
        if value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)  # as the probe lays it
        dims = tuple(range(1, value.dim()))

        def plain(value: torch.Tensor = value, dims: tuple[int, ...] = dims) -> object:
            return value > 0.05, torch.isfinite(value.sum(dim=dims))

        torch.set_num_threads(1)
        fused = median_ms(lambda value=value: kernels.mask_and_finite(value, 0.05), args.repeats)
        line = f"{name:<55} {value.numel():>9,} values  kernel {fused:6.3f} ms"
        for threads in range(1, args.threads + 1):
            torch.set_num_threads(threads)
            ms = median_ms(plain, args.repeats)
            line += f"  PyTorch on {threads}: {ms:6.3f} ms ({ms / fused:4.1f}x)"
        print(line)
    torch.set_num_threads(1)
    print("active neurons per block of channels (one thread):")
    for name, (shape, sizes) in BLOCKS.items():
        value = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        channels = shape[1]

        def counted(value: torch.Tensor = value, sizes: tuple[int, ...] = sizes) -> object:
            return kernels.mask_and_finite(value, 0.05, 1, sizes)

        def separate(
            value: torch.Tensor = value, sizes: tuple[int, ...] = sizes, channels: int = channels
        ) -> object:
            fused = kernels.mask_and_finite(value, 0.05, 1)
            assert fused is not None
            return [_coarsen(fused.mask, channels // size) for size in sizes]

        with_counts = median_ms(counted, args.repeats)
        then_torch = median_ms(separate, args.repeats)
        print(f"{name:<62} blocks {sizes}: kernel {with_counts:6.3f} ms, its mask then PyTorch "
              f"{then_torch:6.3f} ms ({then_torch / with_counts:4.1f}x)")
    print("channels-last copy of the probe's input (one thread):")
    for name, shape in IMAGES.items():
        value = torch.randn(shape)
        copy = median_ms(lambda value=value: kernels.channels_last(value), args.repeats)
        ms = median_ms(
            lambda value=value: value.contiguous(memory_format=torch.channels_last), args.repeats
        )
        print(f"{name:<62} kernel {copy:6.3f} ms, PyTorch {ms:6.3f} ms ({ms / copy:4.1f}x)")


if __name__ == "__main__":
    main()
