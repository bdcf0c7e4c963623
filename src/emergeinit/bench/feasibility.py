"""Can every run of a study run at all? Checked before any run starts (see
``docs/bench.md#preflight``), once per distinct setting, never by training:

- **device**: ``train.device = "cuda"`` needs a torch that sees a CUDA device;
- **scale range**: for every model x alpha x pivot x head x even of the emergence inits, the
  scales ``alpha**e`` fit the weights' dtype: the check ``emergence_init_`` makes when it plans,
  made by the core's own planner (through :func:`emergeinit.emergence_param_groups`, which
  plans and range-checks exactly as ``emergence_init_`` does but writes nothing) on a model
  whose weights take no memory;
- **memory**: a rough estimate of what one run holds (:func:`estimate_memory`) against the
  memory available on its device.

Each failure is a :class:`~emergeinit.errors.ConfigError` that names the key and the fix.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, EmergeInitError, ScaleRangeError
from .labels import EMERGENCE_INITS

__all__ = [
    "DeviceUnavailableError",
    "MemoryEstimate",
    "OutOfMemoryError",
    "available_memory",
    "check_device",
    "check_memory",
    "check_scales",
    "estimate_memory",
]


class DeviceUnavailableError(ConfigError):
    """``train.device`` names a device this machine or this torch does not have."""


class OutOfMemoryError(ConfigError):
    """A run's model cannot fit in the memory available on its device."""


# --- device ---------------------------------------------------------------------------------


def check_device(device: str) -> None:
    """Raise :class:`DeviceUnavailableError` for ``cuda`` on a torch that sees no CUDA device."""
    if device != "cuda" or torch.cuda.is_available():
        return
    why = (
        "was built without CUDA"
        if torch.version.cuda is None
        else f"(CUDA {torch.version.cuda}) sees no CUDA device"
    )
    raise DeviceUnavailableError(
        f"train.device: 'cuda' (--device cuda), but this torch {torch.__version__} {why}; use "
        "--device cpu, or --device auto to train on a GPU when there is one"
    )


# --- scale range ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _weightless(spec: str) -> nn.Module:
    """The model of ``spec`` with every parameter a stride-0 view of one element: the shapes
    and dtypes the planner reads, without the memory (the model is never run or written)."""
    from ..models import build_model

    with torch.device("meta"):
        model = build_model(spec)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            view = torch.zeros((), dtype=param.dtype).expand(param.shape)
            setattr(module, name, nn.Parameter(view, requires_grad=param.requires_grad))
    return model


def check_scales(runs: Iterable[dict[str, Any]]) -> None:
    """Every emergence run's scales fit its weights' dtype (else ``ConfigError`` on
    ``init.alpha``). Other problems the planner finds are left to the run, which plans on its
    own traced example and reports them in its row. The planner reads the units in
    registration order here (no example batch is traced): the range check depends only on the
    exponents and the weights' dtypes, not on which unit gets which exponent. The run's units
    (``init.units``) are used; ``order = "graph"`` needs a traced batch, so it is checked as
    call order, whose levels (one per unit) are at least as many as graph order's distinct
    depths: its exponents are at least as large, so the check may refuse an alpha that only
    graph order would take, but never passes one that fails."""
    from ..init import emergence_param_groups

    seen: set[tuple[Any, ...]] = set()
    for run in runs:
        init = run["init"]
        if init["name"] not in EMERGENCE_INITS:
            continue
        units = init.get("units", "auto")
        key = (run["model"], init["alpha"], init["pivot"], init["head"], init["even"], units)
        if key in seen:
            continue
        seen.add(key)
        spec, alpha = run["model"], init["alpha"]
        try:
            emergence_param_groups(
                _weightless(spec),
                alpha,
                units=units,
                example_input=None,
                pivot=init["pivot"],
                even=init["even"],
                head=init["head"],
            )
        except ScaleRangeError as exc:
            raise ConfigError(
                f"init.alpha: alpha = {alpha:g} does not fit model {spec!r} (pivot "
                f"{init['pivot']:g}, head {str(init['head']).lower()}): {exc} Every run with "
                "this alpha would fail; remove it from init.alpha."
            ) from None
        except EmergeInitError:
            continue  # not a range problem: the run says what it is


# --- memory ---------------------------------------------------------------------------------

#: Optimizer state per trainable parameter, in parameter-sized slots.
_SLOTS = {"adam": 2, "adamw": 2}


@dataclass(frozen=True)
class MemoryEstimate:
    """What one training run holds at its peak, roughly, in bytes.

    ``weights``: parameters and buffers; ``gradients``: one per trainable parameter;
    ``optimizer``: its state (SGD: a momentum buffer when momentum > 0; Adam, AdamW: two
    moments; a plug-in optimizer: counted as two); ``activations``: the outputs of every leaf
    module for one training batch, what autograd keeps for the backward pass. Left out: the
    data set, the evaluation batches, and PyTorch's own memory (about 90 MB per
    process), so it is a lower bound.
    """

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def _slots(train: dict[str, Any]) -> int:
    name = train["optimizer"]
    if name == "sgd":
        return 1 if train.get("momentum", 0.0) > 0 else 0
    return _SLOTS.get(name, 2)


#: Models with weights up to this size are built for real to measure their activations (a
#: forward pass of two examples): cheaper than the meta device's first use (~2 s of imports).
_REAL_UP_TO = 256 * 1024**2


def _activation_bytes(spec: str, batch_size: int, weights: int) -> int:
    """Bytes of every leaf module's outputs in one forward pass of a batch: measured on two
    examples and scaled (every output here grows with the batch), on a real model when it is
    small, else on the meta device (nothing allocated); 0 when the forward cannot run."""
    from ..models import build_model, example_input, is_builtin_spec

    if not is_builtin_spec(spec):
        return 0
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for out in outputs:
            if isinstance(out, torch.Tensor):
                total += out.numel() * out.element_size()

    device = torch.device("cpu" if weights <= _REAL_UP_TO else "meta")
    with torch.random.fork_rng(devices=[]), torch.device(device):  # leaves the RNG as it was
        model = build_model(spec)
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        pair = example_input(spec, 2, generator=torch.Generator().manual_seed(0))
        batch = tuple(pair) if isinstance(pair, tuple) else (pair,)
        with torch.no_grad():
            model.eval()  # the outputs' sizes are those of training; BatchNorm takes 2 rows
            model(*(t.to(device) for t in batch))
    except Exception:  # a forward this check cannot run: no estimate of activations
        return 0
    finally:
        for handle in handles:
            handle.remove()
    return total * batch_size // 2


def estimate_memory(
    spec: str, train: dict[str, Any], *, activations: bool = True
) -> MemoryEstimate:
    """A rough estimate of the memory one training run of model ``spec`` holds (see
    :class:`MemoryEstimate`), from the model built on the meta device: nothing is allocated
    (but for measuring the activations of a small model: ``activations=False`` skips them).

    >>> estimate = estimate_memory("mlp:784-256-10", {"optimizer": "sgd", "momentum": 0.9,
    ...                                                "batch_size": 128})
    >>> estimate.weights, estimate.optimizer  # (784*256 + 256 + 256*10 + 10) floats
    (814120, 814120)
    """
    from ..models import build_model

    with torch.device("meta"):
        model = build_model(spec)
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    held = _activation_bytes(spec, train["batch_size"], weights) if activations else 0
    return MemoryEstimate(weights, trainable, trainable * _slots(train), held)


def _cgroup_free() -> int | None:
    """What this process's cgroup (v2) may still allocate, when it has a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_memory(device: torch.device) -> int | None:
    """Bytes a new run can use on ``device``: free GPU memory, or the kernel's
    ``MemAvailable`` (capped by a cgroup limit); ``None`` when it cannot be told."""
    if device.type == "cuda":
        with contextlib.suppress(RuntimeError, AssertionError):
            return int(torch.cuda.mem_get_info(device)[0])
        return None
    if device.type != "cpu":
        return None
    free: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    if free is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = _cgroup_free()
    if limit is not None:
        free = limit if free is None else min(free, limit)
    return free


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def check_memory(runs: Sequence[dict[str, Any]], concurrency: int) -> list[str]:
    """Refuse a model that cannot fit (its estimate alone exceeds the memory available on its
    device: :class:`OutOfMemoryError` on ``model.spec``); return notices where
    ``concurrency`` runs at once may not fit together."""
    from .runtime import resolve_device

    notices: list[str] = []
    seen: set[tuple[Any, ...]] = set()
    free_by_device: dict[str, int | None] = {}
    for run in runs:
        train = run["train"]
        key = (run["model"], train["device"], train["batch_size"], train["optimizer"],
               _slots(train))  # fmt: skip
        if key in seen:
            continue
        seen.add(key)
        device = resolve_device(train["device"])
        if str(device) not in free_by_device:
            free_by_device[str(device)] = available_memory(device)
        free = free_by_device[str(device)]
        if free is None:
            continue
        # Weights and optimizer state first: a model they alone rule out needs no forward pass.
        need = estimate_memory(run["model"], train, activations=False)
        if need.total <= free:
            need = estimate_memory(run["model"], train)
        if need.total > free:
            batch = (
                f", activations of a batch of {train['batch_size']} {_gb(need.activations)}"
                if need.activations
                else ""
            )
            raise OutOfMemoryError(
                f"model.spec: {run['model']!r} needs at least {_gb(need.total)} to train "
                f"(weights {_gb(need.weights)}, gradients {_gb(need.gradients)}, optimizer "
                f"state {_gb(need.optimizer)}{batch}), more than the {_gb(free)} available on "
                f"{device}; use a smaller model.spec (or train.batch_size)"
            )
        together = need.total * concurrency
        if concurrency > 1 and together > free:
            fit = max(1, math.floor(free / max(need.total, 1)))
            notices.append(
                f"NOTICE: {concurrency} runs of {run['model']!r} at once need about "
                f"{_gb(together)}, more than the {_gb(free)} available on {device}; if workers "
                f"run out of memory, use --workers {fit}."
            )
    return notices
