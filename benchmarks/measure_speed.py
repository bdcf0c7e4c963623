"""Cost of measure_emergence against the model's own forward and against a networkx DP.

Two baselines, each measured in the same run, repeats interleaved, medians reported:

1. ``forward``: the model's forward pass on the same batch under ``torch.no_grad()`` (target:
   measuring costs at most 1.5x the forward; neuron granularity, default options). The measure
   probes convolutional networks channels last on CPU (docs/measure.md, "Layout"), so for image
   inputs the forward on the same batch laid out channels last is timed too (``fwd CL``), and
   the measure's ratio to the faster of the two forwards is printed as well. With
   ``--baseline REF`` the measure of another git revision of emergeinit (extracted with
   ``git archive`` into a temporary directory and imported under another name) is timed in the
   same loop, so "before" and "after" share the machine's load; models it cannot measure show
   a dash. Hugging Face models (if transformers is installed) take keyword ``pixel_values``.
   Besides the ratio of the medians, the median of the repeats' own ratios (``paired``: each
   repeat's forward and measure run back to back) and the ratio of the fastest runs (``min``),
   and the minor page faults per call of each. ``--steady-allocator`` reruns the script with
   glibc told to keep freed memory (``GLIBC_TUNABLES``): with the defaults, how many large
   blocks come back as fresh (faulting) memory varies from process to process and call to
   call, and the forward's own time with it (up to 2x on this benchmark's models).
2. ``networkx DP``: a straightforward per-node dynamic program over an explicit
   ``networkx.DiGraph`` of the same network's neurons (route multiplicities as edge weights), one
   sample at a time (target: measuring is at least 100x faster per sample). Building the graph is
   not timed; the DP is timed on a few samples and compared per sample. Its result is checked
   against measure_emergence (max |difference of log10 E| is printed).

    python benchmarks/measure_speed.py [--repeats 7] [--threads 1] [--dp-samples 2]
                                       [--baseline REF] [--only SUBSTRING]
                                       [--steady-allocator]
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emergeinit.measure import kernels, measure_emergence

try:
    import resource
except ImportError:  # Windows has no getrusage
    resource = None  # type: ignore[assignment]

Measure = Callable[[nn.Module, Any], Any]


def mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths[:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


def cnn(in_shape: tuple[int, int, int], plan: list[int | str], classes: int) -> nn.Sequential:
    """VGG-style: 3x3 convs (padding 1) + BatchNorm + ReLU, "M" = 2x2 max pool, Flatten, Linear."""
    channels, size = in_shape[0], in_shape[1]
    layers: list[nn.Module] = []
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            size //= 2
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
            channels = item
    layers += [nn.Flatten(), nn.Linear(channels * size * size, classes)]
    return nn.Sequential(*layers)


class Block(nn.Module):
    """ResNet basic block; the shortcut is a strided 1x1 conv + BN when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


def resnet(widths: list[int], classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU()]  # fmt: skip
    for i, width in enumerate(widths):
        cin = widths[max(i - 1, 0)]
        layers += [Block(cin, width, 1 if i == 0 else 2), Block(width, width, 1)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], classes)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Three levels: conv-BN-ReLU pairs, max pooling, ConvTranspose2d up, skip concatenation."""

    def __init__(self, widths: list[int], classes: int) -> None:
        super().__init__()

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            )  # fmt: skip

        self.down = nn.ModuleList()
        cin = 3
        for width in widths:
            self.down.append(double(cin, width))
            cin = width
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, width, 2, stride=2))
            self.fuse.append(double(2 * width, width))
            cin = width
        self.head = nn.Conv2d(cin, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def grouped(widths: list[int], groups: int, classes: int) -> nn.Sequential:
    """ResNeXt-like stages: grouped 3x3 convs (stride 2), GroupNorm, GELU, 1x1 mixing."""
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1), nn.GELU()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Conv2d(a, b, 3, 2, 1, groups=groups), nn.GroupNorm(groups, b), nn.GELU(),
                   nn.Conv2d(b, b, 1), nn.SiLU()]  # fmt: skip
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], classes)]
    return nn.Sequential(*layers)


def huggingface(name: str) -> nn.Module:
    import transformers as tf

    if name == "mobilenet-224":  # the library's default configurations, at their image size
        return tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config())
    if name == "convnext-224":
        return tf.ConvNextForImageClassification(tf.ConvNextConfig())

    if name == "resnet":
        return tf.ResNetForImageClassification(tf.ResNetConfig(
            embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 1, 1], num_labels=10))
    if name == "convnext":
        return tf.ConvNextForImageClassification(tf.ConvNextConfig(
            num_stages=3, hidden_sizes=[32, 64, 128], depths=[1, 1, 1], num_labels=10))
    return tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config(
        image_size=64, depth_multiplier=0.5, num_labels=10))  # fmt: skip


# Forward-ratio cases: (name, model factory, batch shape, keyword name or None).
FORWARD_CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], str | None]] = [
    ("MLP 784-1024x3-10, batch 256", lambda: mlp([784, 1024, 1024, 1024, 10]), (256, 784), None),
    ("CNN 3x32x32 32-M-64-M-128-M, batch 64",
     lambda: cnn((3, 32, 32), [32, "M", 64, "M", 128, "M"], 10), (64, 3, 32, 32), None),
    ("ResNet 3x32x32 16x2-32x2-64x2, batch 64", lambda: resnet([16, 32, 64], 10),
     (64, 3, 32, 32), None),
    ("U-Net 3x64x64 16-32-64, ConvT + cat, batch 16", lambda: UNet([16, 32, 64], 2),
     (16, 3, 64, 64), None),
    ("grouped CNN 3x32x32 32-64-128 g8, GELU, batch 64", lambda: grouped([32, 64, 128], 8, 10),
     (64, 3, 32, 32), None),
    ("HF ResNet 32-64-128, pixel_values 64x64, batch 32", lambda: huggingface("resnet"),
     (32, 3, 64, 64), "pixel_values"),
    ("HF ConvNeXt 32-64-128, pixel_values 64x64, batch 32", lambda: huggingface("convnext"),
     (32, 3, 64, 64), "pixel_values"),
    ("HF MobileNetV2 x0.5, pixel_values 64x64, batch 32", lambda: huggingface("mobilenet"),
     (32, 3, 64, 64), "pixel_values"),
    ("HF MobileNetV2 (default config), 224x224, batch 8", lambda: huggingface("mobilenet-224"),
     (8, 3, 224, 224), "pixel_values"),
    ("HF ConvNeXt (default config: tiny), 224x224, batch 4",
     lambda: huggingface("convnext-224"), (4, 3, 224, 224), "pixel_values"),
]  # fmt: skip

# DP cases: small enough for an explicit networkx graph (a few 10^5 edges).
DP_CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("MLP 256-256-256-10, batch 64", lambda: mlp([256, 256, 256, 10]), (64, 256)),
    ("CNN 3x16x16 8-M-16-M, batch 64", lambda: cnn((3, 16, 16), [8, "M", 16, "M"], 10),
     (64, 3, 16, 16)),
]  # fmt: skip


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def page_faults() -> int:
    """Minor page faults of this process so far (0 where the OS does not report them)."""
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# glibc's allocator returns freed memory to the OS once enough lies free at the top of its heap,
# and hands out large blocks as fresh mappings: the next pass over them page-faults (thousands
# of faults per forward, up to half its time, varying from process to process). These settings
# keep freed memory for reuse, so that neither the forward nor the measure pays for faults.
STEADY_ALLOCATOR = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"


def forward_ratio(
    name: str, model: nn.Module, x: torch.Tensor, keyword: str | None, repeats: int,
    before: Measure | None,
) -> None:  # fmt: skip
    inputs: Any = {keyword: x} if keyword else x

    def forward(batch: torch.Tensor = x) -> None:
        with torch.no_grad():
            model(**{keyword: batch}) if keyword else model(batch)

    last = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else None
    forward()
    if last is not None:
        forward(last)
    measure_emergence(model, inputs)  # warm: the graph capture is cached, as in a training loop
    if before is not None:
        try:
            before(model, inputs)
        except Exception:  # the earlier version cannot measure this model
            before = None
    fwd: list[float] = []
    fwd_cl: list[float] = []
    meas: list[float] = []
    old: list[float] = []
    faults = {"forward": 0, "measure": 0}
    for repeat in range(repeats):
        first = page_faults()
        start = time.perf_counter()
        forward()
        fwd.append(time.perf_counter() - start)
        faults["forward"] += page_faults() - first
        if last is not None:
            start = time.perf_counter()
            forward(last)
            fwd_cl.append(time.perf_counter() - start)
        # The two measures take turns going first: whichever runs second finds the model's
        # weights (and the allocator) warm, which can favour it by several percent.
        for version in ("after", "before") if repeat % 2 == 0 else ("before", "after"):
            if version == "after":
                first = page_faults()
                start = time.perf_counter()
                measure_emergence(model, inputs)
                meas.append(time.perf_counter() - start)
                faults["measure"] += page_faults() - first
            elif before is not None:
                start = time.perf_counter()
                before(model, inputs)
                old.append(time.perf_counter() - start)
    # Medians, and the ratio of the fastest runs too: on a machine shared with other jobs the
    # minimum is the least disturbed estimate of each cost.
    f, m = median_ms(fwd), median_ms(meas)
    # Paired: the median of each repeat's own ratio (its forward and measure ran back to back),
    # steadier than a ratio of medians when the machine's load drifts during the run.
    paired = statistics.median(a / b for a, b in zip(meas, fwd))
    was = f"{median_ms(old) / f:5.2f}x" if old else "    -"
    was_paired = f"{statistics.median(a / b for a, b in zip(old, fwd)):5.2f}x" if old else "    -"
    best = min(meas) / min(fwd)
    was_best = f"{min(old) / min(fwd):5.2f}x" if old else "    -"
    if fwd_cl:
        fc = median_ms(fwd_cl)
        cl = (f"fwd CL {fc:8.2f} ms  to the faster {m / min(f, fc):5.2f}x "
              f"(min {min(meas) / min(fwd + fwd_cl):5.2f}x)")  # fmt: skip
    else:
        cl = f"{'':15}  to the faster {m / f:5.2f}x (min {best:5.2f}x)"
    print(f"{name:<52} forward {f:8.2f} ms  measure {m:8.2f} ms  ratio {m / f:5.2f}x "
          f"(paired {paired:5.2f}x, min {best:5.2f}x; <= 1.5)  {cl}  "
          f"before {was} (paired {was_paired}, min {was_best})  page faults per call: forward "
          f"{faults['forward'] // repeats}, measure {faults['measure'] // repeats}")  # fmt: skip


def load_baseline(ref: str) -> Measure:
    """measure_emergence of git revision ``ref``, imported as the package ``emergeinit_before``."""
    root = Path(__file__).resolve().parents[1]
    target = Path(tempfile.mkdtemp(prefix="emergeinit-before-"))
    archive = subprocess.run(["git", "-C", str(root), "archive", ref, "src/emergeinit"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    (target / "src" / "emergeinit").rename(target / "emergeinit_before")
    sys.path.insert(0, str(target))
    module = importlib.import_module("emergeinit_before.measure")
    return module.measure_emergence  # type: ignore[no-any-return]


# --- the straightforward baseline ------------------------------------------------------------


def explicit_graph(model: nn.Sequential, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """networkx DiGraph of neurons; edge weight "m" = number of routes; read points per layer."""
    import networkx as nx

    graph = nx.DiGraph()
    next_id = 0

    def new_neuron() -> int:
        nonlocal next_id
        graph.add_node(next_id)
        next_id += 1
        return next_id - 1

    # state[element] = {neuron: routes} for the current tensor, flattened (C, H, W) order
    dims = list(shape)
    state: list[dict[int, int]] = [{new_neuron(): 1} for _ in range(math.prod(dims))]
    layers: list[list[int]] = [[n for s in state for n in s]]
    reads: list[int] = []  # module index whose output decides each hidden layer's activity

    def emit(preds: dict[int, int]) -> dict[int, int]:
        v = new_neuron()
        graph.add_weighted_edges_from(((u, v, m) for u, m in preds.items()), weight="m")
        return {v: 1}

    for index, module in enumerate(model):
        if isinstance(module, nn.Linear):
            merged: dict[int, int] = {}
            for s in state:
                for u, m in s.items():
                    merged[u] = merged.get(u, 0) + m
            state = [emit(merged) for _ in range(module.out_features)]
            dims = [module.out_features]
        elif isinstance(module, nn.Conv2d):
            c, h, w = dims
            out = module.out_channels
            k, p = module.kernel_size[0], module.padding[0]  # type: ignore[index]
            new_state = []
            for _o in range(out):
                for y in range(h):
                    for x in range(w):
                        preds: dict[int, int] = {}
                        for ci in range(c):
                            for dy in range(k):
                                for dx in range(k):
                                    sy, sx = y - p + dy, x - p + dx
                                    if 0 <= sy < h and 0 <= sx < w:
                                        for u, m in state[(ci * h + sy) * w + sx].items():
                                            preds[u] = preds.get(u, 0) + m
                        new_state.append(emit(preds))
            state, dims = new_state, [out, h, w]
        elif isinstance(module, nn.MaxPool2d):
            c, h, w = dims
            pooled = []
            for ci in range(c):
                for y in range(h // 2):
                    for x in range(w // 2):
                        routes: dict[int, int] = {}
                        for dy in (0, 1):
                            for dx in (0, 1):
                                for u, m in state[(ci * h + 2 * y + dy) * w + 2 * x + dx].items():
                                    routes[u] = routes.get(u, 0) + m
                        pooled.append(routes)
            state, dims = pooled, [c, h // 2, w // 2]
        elif isinstance(module, nn.ReLU):
            reads.append(index)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            layers.append([n for s in state for n in s])
    return graph, layers, reads


def dp_cross(graph, order: list[int], inactive: dict[int, int]) -> int:  # type: ignore[no-untyped-def]
    """Paths from an inactive neuron to an active one: F(v) = sum_u m (F(u) + [u inactive])."""
    reach: dict[int, int] = {}
    total = 0
    pred = graph.pred
    for v in order:
        count = 0
        for u, data in pred[v].items():
            count += data["m"] * (reach[u] + inactive[u])
        reach[v] = count
        if not inactive[v]:
            total += count
    return total


def dp_speedup(name: str, model: nn.Sequential, x: torch.Tensor, repeats: int, k: int) -> None:
    graph, layers, reads = explicit_graph(model, tuple(x.shape[1:]))
    order = [n for layer in layers for n in layer]  # layer order is topological
    values: list[torch.Tensor] = []
    hooks = [model[i].register_forward_hook(lambda m, a, out: values.append(out)) for i in reads]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()

    def inactive_of(b: int) -> dict[int, int]:
        flags = dict.fromkeys(order, 0)
        for layer, value in zip(layers[1:-1], values):
            for n, act in zip(layer, (value[b].reshape(-1) > 0.05).tolist()):
                flags[n] = 0 if act else 1
        return flags

    per_sample = [inactive_of(b) for b in range(k)]
    result = measure_emergence(model, x)
    diffs = [
        abs(math.log10(dp_cross(graph, order, per_sample[b])) - result.log10_e[b].item())
        for b in range(k)
    ]
    meas: list[float] = []
    dp: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        measure_emergence(model, x)
        meas.append((time.perf_counter() - start) / x.shape[0])
        start = time.perf_counter()
        for b in range(k):
            dp_cross(graph, order, per_sample[b])
        dp.append((time.perf_counter() - start) / k)
    m, d = median_ms(meas), median_ms(dp)
    print(
        f"{name:<42} {graph.number_of_edges():>8,} edges  networkx DP {d:9.2f} ms/sample  "
        f"measure {m:7.4f} ms/sample  speedup {d / m:8.0f}x (>= 100)  "
        f"max |diff log10 E| {max(diffs):.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dp-samples", type=int, default=2, help="samples the DP is timed on")
    parser.add_argument("--baseline", help="a git revision whose measure is timed alongside")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--steady-allocator", action="store_true",
                        help="rerun under GLIBC_TUNABLES that keep freed memory (no page faults)")
    args = parser.parse_args()
    if args.steady_allocator and os.environ.get("GLIBC_TUNABLES") != STEADY_ALLOCATOR:
        # Read by glibc when the process starts: the script starts again with them set.
        env = {**os.environ, "GLIBC_TUNABLES": STEADY_ALLOCATOR}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    before = load_baseline(args.baseline) if args.baseline else None
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats, medians"
          + (f", before = {args.baseline}" if args.baseline else "")
          + (f", GLIBC_TUNABLES={STEADY_ALLOCATOR}" if args.steady_allocator else ""))  # fmt: skip
    print("the probe's compiled kernels (numba, the 'fast' extra): "
          + ("on" if kernels.available() else "off (numba missing or EMERGEINIT_NUMBA=0)"))
    print("\nmeasure_emergence vs the model's forward (eval mode, neuron granularity):")
    for name, factory, shape, keyword in FORWARD_CASES:
        if args.only not in name:
            continue
        try:
            torch.manual_seed(0)
            model = factory().eval()
        except ImportError:
            print(f"{name:<52} skipped (transformers is not installed)")
            continue
        forward_ratio(name, model, torch.randn(shape), keyword, args.repeats, before)
    print("\nmeasure_emergence vs a per-node DP over an explicit networkx graph (form=cross):")
    for name, factory, shape in DP_CASES:
        if args.only not in name:
            continue
        torch.manual_seed(0)
        model = factory().eval()
        assert isinstance(model, nn.Sequential)
        dp_speedup(name, model, torch.randn(shape), max(3, args.repeats // 2), args.dp_samples)


if __name__ == "__main__":
    main()
