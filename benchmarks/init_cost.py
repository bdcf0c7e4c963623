"""Wall time of every init of the harness, as ratios to kaiming, on the same models.

Each init runs on a freshly built model (build time excluded), ``--repeats`` times; the median
is reported. Data-dependent inits (LSUV, GradInit) use their harness defaults: LSUV on one batch
of 256 examples, GradInit for 100 iterations of batch 64 (its stated CPU budget).

    python benchmarks/init_cost.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from emergeinit.bench import config
from emergeinit.bench.inits import INITS, InitContext, apply_init
from emergeinit.models import build_model, example_input

MODELS = [
    "mlp:784-256x6-10",
    "mlp-bn:784-256x6-10",
    "cnn:1x28x28-32-32-M-64-64-M-10",
    "resnet-bn:1x28x28-16x2-32x2-10",
]


def time_init(name: str, spec: str, repeats: int) -> float:
    cfg = config.load("default")
    settings = {
        "name": name, "alpha": 1.3, "pivot": 0.5, "head": True, "base": "kaiming_normal",
        "even": "integer", "lsuv": cfg["init"]["lsuv"], "gradinit": cfg["init"]["gradinit"],
    }  # fmt: skip
    x = torch.randn(2048, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (2048,), generator=torch.Generator().manual_seed(1))
    times = []
    for r in range(repeats):
        torch.manual_seed(r)
        model = build_model(spec)
        data = torch.Generator().manual_seed(r)

        def sample(n: int, data: torch.Generator = data) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randint(len(y), (n,), generator=data)
            return x[idx], y[idx]

        ctx = InitContext(
            spec=spec, example_input=example_input(spec, 8), settings=settings,
            train={"optimizer": "sgd", "lr": 0.05}, generator=torch.Generator().manual_seed(r),
            sample=sample, seed=r,
        )  # fmt: skip
        start = time.perf_counter()
        apply_init(name, model, ctx)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=MODELS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = list(INITS)
    print(f"median of {args.repeats} repeats, {args.threads} thread(s); ratio to kaiming (ms)")
    print("| model | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for spec in args.models:
        times = {n: time_init(n, spec, args.repeats) for n in names}
        base = times["kaiming"]
        cells = [f"{times[n] / base:.2f}x ({times[n] * 1e3:.1f})" for n in names]
        print(f"| {spec} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
