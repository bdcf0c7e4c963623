"""emergence_init_ at scale: wall time and peak memory against a plain kaiming_normal_ loop.

Models (one in memory at a time):

* ``gpt2``: GPT-2 small built from ``transformers.GPT2Config()`` (124M parameters; never
  ``from_pretrained``);
* ``1b``: a Llama-style decoder of 1.1B parameters (TinyLlama's shape: 22 layers, width 2048,
  MLP 5632, vocabulary 32000) built on the meta device and materialised with ``to_empty``.
  Needs about 4.5 GB.

Three calls are timed, in interleaved repeats (medians; ratios are medians of per-repeat
ratios): ``loop``, ``torch.nn.init.kaiming_normal_`` over the weights ``emergence_init_`` draws
(fan_in, ReLU gain; Hugging Face ``Conv1D`` weights with ``mode="fan_out"``, their fan_in) with
the layer biases zeroed, as ``emergence_init_`` does; ``init``, ``emergence_init_(model, 1.1)``
(units, schedule, checks, draws, report object); ``init+print``, the same plus ``str(report)``,
which measures every unit's std after. Peak memory is the resident set's high-water mark
during a call (reset before it through ``/proc/self/clear_refs``) minus the resident set before
it, against the largest single weight.

    python benchmarks/init_scale.py [--models gpt2 1b] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from emergeinit import depth_units, emergence_init_
from emergeinit.units import find_layers, layer_biases

MB = 2**20


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _release_free_memory() -> None:
    """Hand memory the allocator keeps after frees back to the system (glibc), so that the
    resident set before a call holds only live data and the call's own peak is visible."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the peak may then read low
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_above(call: Callable[[], object]) -> tuple[float, int]:
    """(seconds, peak resident bytes above the resident set before the call)."""
    _release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    return seconds, (_status_kb("VmHWM") - before) * 1024


def build(name: str) -> nn.Module:
    import transformers

    if name == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config())
    if name == "1b":
        config = transformers.LlamaConfig(
            vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
            num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False,
        )  # fmt: skip
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(config)
        return model.to_empty(device="cpu")
    raise SystemExit(f"unknown model {name!r}")


def plain_loop(model: nn.Module) -> Callable[[], None]:
    units = depth_units(model)
    weights = [(w.param, "fan_out" if w.transposed else "fan_in") for u in units for w in u.weights]
    biases = [b for _, layer in find_layers(model) for b in layer_biases(layer)]

    def run() -> None:
        with torch.no_grad():
            for weight, mode in weights:
                nn.init.kaiming_normal_(weight, mode=mode, nonlinearity="relu")
            for bias in biases:
                bias.zero_()

    return run


def bench(name: str, repeats: int) -> None:
    torch.manual_seed(0)
    model = build(name)
    params = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    loop = plain_loop(model)
    drawn = sum(w.param.numel() for u in depth_units(model) for w in u.weights)
    calls: dict[str, Callable[[], object]] = {
        "loop": loop,
        "init": lambda: emergence_init_(model, 1.1),
        "init+print": lambda: str(emergence_init_(model, 1.1)),
    }
    for call in calls.values():  # warm-up: first touches, allocator, imports
        call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    peaks: dict[str, list[int]] = {k: [] for k in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            seconds, peak = peak_above(call)
            times[key].append(seconds)
            peaks[key].append(peak)
    print(
        f"\n{name}: {params / 1e6:.1f}M parameters, {drawn / 1e6:.1f}M drawn by the init; "
        f"largest weight {largest / MB:.1f} MiB; {repeats} interleaved repeats"
    )
    print("| call | median time | ratio to loop (median, min-max) | peak above model |")
    print("|---|---:|---:|---:|")
    for key in calls:
        ratios = [t / b for t, b in zip(times[key], times["loop"])]
        print(
            f"| {key} | {statistics.median(times[key]):.3f} s | "
            f"{statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) | "
            f"{max(peaks[key]) / MB:.1f} MiB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["gpt2", "1b"], choices=["gpt2", "1b"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name in args.models:
        bench(name, args.repeats)


if __name__ == "__main__":
    main()
