"""How the preflight's memory estimate compares with what a training run really takes.

For each model, in a fresh process per repeat: the process's peak resident memory is reset
after the imports and the data (Linux: ``/proc/self/clear_refs``), then the model is built and
trained for a few steps as the harness trains it (its optimizer, a batch of ``batch_size``,
forward, backward, step); the peak over those steps minus the memory before them is what the
run took. Next to it: :func:`emergeinit.bench.feasibility.estimate_memory`, which the
preflight compares with the available memory. Medians of the repeats.

    python benchmarks/preflight_memory.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = [  # (spec, optimizer, batch size): the default preset's model, then larger ones
    ("mlp:784-256x6-10", "sgd", 128),
    ("mlp:784-2048x6-10", "sgd", 512),
    ("cnn:3x32x32-64-M-128-M-10", "adam", 256),
    ("resnet-bn:3x32x32-32x2-64x2-10", "sgd", 128),
]

CHILD = r"""
import json, sys, torch
from emergeinit.bench.feasibility import estimate_memory
from emergeinit.bench.optim import build_optimizer
from emergeinit.models import build_model, example_input

spec, optimizer, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
train = {"optimizer": optimizer, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
         "batch_size": batch}
x = example_input(spec, batch)
y = torch.randint(10, (batch,))

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # resets VmHWM, the peak resident set, to the current one
model = build_model(spec)
opt = build_optimizer(model.parameters(), train, 0.01)
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
peak = status("VmHWM:") - before
estimate = estimate_memory(spec, train)
print(json.dumps({"peak": peak, "estimate": estimate.total, "weights": estimate.weights,
                  "activations": estimate.activations}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| model | optimizer | batch | weights | estimate | measured peak | peak / estimate |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for spec, optimizer, batch in CASES:
        found = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, spec, optimizer, str(batch)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            found.append(json.loads(out.stdout))
        peak = statistics.median(f["peak"] for f in found)
        first = found[0]
        print(f"| `{spec}` | {optimizer} | {batch} | {first['weights'] / 1e6:.1f} MB "
              f"| {first['estimate'] / 1e6:.1f} MB | {peak / 1e6:.1f} MB "
              f"| {peak / first['estimate']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
