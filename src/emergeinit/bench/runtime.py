"""What every run needs from its surroundings: named seed streams, its device, and its place
in a data-parallel process group.

A leaf of the bench wing: it imports torch and :mod:`emergeinit.errors` only, so any layer (the
run template, a task's training loop, the torchrun driver) can use it without an import cycle.

Seed streams: everything random in a run derives from the run seed through a *named* stream
(:func:`derive_seed`), so two inits run with one seed see the same data order and the same
base-init draws (the paired design, see ``docs/bench.md#runs-data-and-determinism``).

Distributed primitives: under ``torchrun`` (see :mod:`emergeinit.bench.ddp`) each rank trains
``batch[rank::world]`` of every global batch; :func:`check_identical` proves that every rank
initialized the same weights before DistributedDataParallel wraps the model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError

__all__ = [
    "Distributed",
    "Shard",
    "check_identical",
    "current",
    "derive_seed",
    "generator",
    "prepare",
    "resolve_device",
    "share",
    "weights_digest",
]


# --- seed streams -------------------------------------------------------------------------------


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one named random stream of a run.

    >>> derive_seed(0, "init") == derive_seed(0, "init") != derive_seed(0, "data-order")
    True
    """
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed` of ``(seed, stream)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream))


# --- data parallelism ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """This process's share of every global batch under data parallelism (rank of world).

    Every rank draws the same permutation and takes ``batch[rank::world]``, so the ranks
    together see exactly the single-process batch; ``reduce`` sums a tensor over ranks.
    """

    rank: int
    world: int
    reduce: Callable[[torch.Tensor], torch.Tensor]


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@dataclass(frozen=True)
class Distributed:
    """This process's place in the process group."""

    rank: int
    world: int
    local_rank: int
    backend: str

    def shard(self, batch_size: int) -> Shard:
        if batch_size % self.world:
            raise ConfigError(
                f"train.batch_size: {batch_size} does not split evenly over {self.world} "
                "processes; use a multiple of --nproc_per_node"
            )
        return Shard(self.rank, self.world, _sum_over_ranks)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[device.index])
        return DistributedDataParallel(model)


def current() -> Distributed | None:
    """The process group this process belongs to, or ``None`` when it trains alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Distributed(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=str(dist.get_backend()),
    )


def share(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a no-op without a process group)."""
    if current() is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state-dict order (exact, bit for bit)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_identical(model: nn.Module) -> str:
    """Raise unless every rank holds exactly the same weights; return their digest."""
    mine = weights_digest(model)
    every: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    if len(set(every)) != 1:
        differ = [r for r, d in enumerate(every) if d != every[0]]
        raise RuntimeError(
            f"the initialized weights differ between ranks (ranks {differ} differ from rank 0); "
            "every rank must build and initialize the model from the same seed"
        )
    return mine


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """Per-backend model changes before wrapping: SyncBatchNorm on CUDA."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


# --- devices --------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a device: ``auto`` = CUDA when available; under data parallelism
    each rank takes ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    group = current()
    if device.type == "cuda" and device.index is None and group is not None:
        device = torch.device("cuda", group.local_rank)
    return device
