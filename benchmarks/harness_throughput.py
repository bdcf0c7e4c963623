"""Training-step throughput of the harness loop vs a bare PyTorch loop (target: >= 0.95x).

Both loops train the same model (same seed, same init) on the same in-memory data in the same
order; evaluation and metric tracking are excluded (the harness still accumulates and reads
its running loss every ``log_every`` steps and calls its log hook, as in a study). The two are
timed as interleaved repeats (bare, harness, harness, bare, ...) so drift on a shared machine
hits both, and the median of the per-repeat ratios is reported.

    python benchmarks/harness_throughput.py [--spec mlp:784-256x6-10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from emergeinit.bench.tasks.classification.train import run_steps
from emergeinit.models import build_model


def make(spec: str, lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(spec)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def bare(spec: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int) -> float:
    model, opt = make(spec, 0.01)
    g = torch.Generator().manual_seed(0)
    per_epoch = len(y) // batch
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for b in range(per_epoch):
            idx = order[b * batch : (b + 1) * batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def harness(spec: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int) -> float:
    model, opt = make(spec, 0.01)
    log: list[tuple[int, int, float]] = []
    start = time.perf_counter()
    run_steps(
        model, opt, x, y, epochs=epochs, batch_size=batch,
        generator=torch.Generator().manual_seed(0), log_every=10,
        on_log=lambda s, e, v: log.append((s, e, v)),
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="mlp:784-256x6-10")
    parser.add_argument("--examples", type=int, default=10240)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (
        (1, 28, 28)
        if not args.spec.startswith("mlp")
        else (int(args.spec.split(":")[1].split("-")[0]),)
    )
    x = torch.randn(args.examples, *shape, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (args.examples,), generator=torch.Generator().manual_seed(2))
    steps = args.epochs * (args.examples // args.batch_size)
    bare(args.spec, x, y, args.batch_size, 1)  # warm-up: allocator, kernels
    ratios, t_bare, t_harness = [], [], []
    for r in range(args.repeats):
        order = (bare, harness) if r % 2 == 0 else (harness, bare)
        times = {f.__name__: f(args.spec, x, y, args.batch_size, args.epochs) for f in order}
        t_bare.append(times["bare"])
        t_harness.append(times["harness"])
        ratios.append(times["bare"] / times["harness"])  # harness throughput / bare throughput
    print(
        f"model {args.spec}, {steps} steps of batch {args.batch_size}, "
        f"{args.threads} thread(s), {args.repeats} interleaved repeats"
    )
    print(f"bare    median {statistics.median(t_bare) / steps * 1e3:.3f} ms/step")
    print(f"harness median {statistics.median(t_harness) / steps * 1e3:.3f} ms/step")
    print(
        f"throughput ratio harness/bare: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target >= 0.95"
    )


if __name__ == "__main__":
    main()
