"""Small shared helpers for the core tests."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, cloned."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"


def relu_mlp(
    widths: list[int], *, bias: bool = False, dtype: torch.dtype = torch.float32
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b, bias=bias, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ShortcutFirst(nn.Module):
    """A residual CNN whose shortcut is registered first but called after the main path."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.shortcut = nn.Conv2d(2, 8, 1)
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.bn(self.conv1(x))))
        out = torch.relu(out + self.shortcut(x))
        return self.head(out.mean(dim=(2, 3)))


def damaged_fashion_mnist(folder: Path) -> Path:
    """A Fashion-MNIST folder whose four IDX files exist but hold garbage.

    A study accepts it (the files are there and the dataset's sizes are known without reading
    them), and every run that loads it fails: a crash that happens on any machine, with or
    without a GPU.
    """
    from emergeinit.bench.data import idx

    folder.mkdir(parents=True, exist_ok=True)
    for stem in idx.FILES.values():
        (folder / stem).write_bytes(b"this is not an IDX file")
    return folder


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc; Linux only)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


_EXECUTE_RUN = """
import json, sys, torch
from pathlib import Path
torch.set_num_threads(int(sys.argv[3]))
from emergeinit.bench.runner import execute_run
summary = execute_run(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
print(json.dumps(summary))
"""


def execute_run_in_a_fresh_process(run: dict[str, Any], folder: Path, threads: int = 1) -> Any:
    """``execute_run(run, folder)`` in a new Python process with ``threads`` torch threads, as
    a study's worker runs it: the reference for a result another process computed. In the
    test process the last bits can differ, depending on what earlier tests left behind (seen:
    a test loss 4e-5 apart after an in-process study, whatever the thread count set)."""
    spec = folder.parent / f"{folder.name}.run.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(run))
    done = subprocess.run(
        [sys.executable, "-c", _EXECUTE_RUN, str(spec), str(folder), str(threads)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
