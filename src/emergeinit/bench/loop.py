"""The training-loop skeleton every task trains with: epochs of batches in a seeded order, a
loss record every ``log_every`` steps, evaluation hooks, divergence, checkpoints, resume.

A task supplies what differs: how an epoch's order is drawn (``draw_order``), what one step
does (``train_step``: forward, backward, update) and how the losses of a logging window add up
(a :class:`LossWindow`); the skeleton owns the rest, so every task counts steps, logs, stops
on a non-finite loss, checkpoints and resumes the same way (see
``docs/scaling.md#resume-and-durability``).

The order of things within a step is part of the contract (a resumed run must retrace it bit
for bit): train step -> loss window -> log record (and progress) -> ``on_eval`` (every
``eval_every`` steps) -> ``on_epoch_end`` (after an epoch's last batch) -> checkpoint (every
``checkpoint_every`` steps, never at the last one) -> ``max_steps``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["LoopResult", "LoopState", "LossWindow", "steps_per_epoch", "train_loop"]


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch. drop_last: a final batch of one example would break BatchNorm
    and skew the loss."""
    return max(1, num_examples // batch_size)


@dataclass
class LoopState:
    """Where the loop stands, enough (with the order generator) to continue it.

    ``batch`` is the next batch of epoch ``epoch``; ``order`` is that epoch's order, or
    ``None`` when it is still to be drawn (at the start of an epoch).
    """

    step: int = 0
    epoch: int = 1
    batch: int = 0
    order: torch.Tensor | None = None
    train_seconds: float = 0.0


@dataclass
class LoopResult:
    steps: int
    diverged: bool
    train_seconds: float  # loop time with the time spent in the hooks taken out


class LossWindow(Protocol):
    """How the training losses of one logging window add up (a task's own accounting)."""

    def add(self, loss: Any) -> bool:
        """Take one step's loss; ``False`` when it is non-finite and the run stops now."""
        ...

    def read(self) -> float:
        """The window's mean loss (NaN/inf when it diverged); starts the next window."""
        ...


def train_loop(
    model: nn.Module,
    state: LoopState,
    *,
    epochs: int,
    per_epoch: int,
    draw_order: Callable[[], torch.Tensor],
    train_step: Callable[[torch.Tensor, int], Any],
    window: LossWindow,
    log_every: int,
    on_log: Callable[[int, int, int, float], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    eval_every: int = 0,
    on_eval: Callable[[int, int], None] | None = None,
    on_epoch_end: Callable[[int, int, int], None] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[LoopState], None] | None = None,
    max_steps: int | None = None,
) -> LoopResult:
    """Train for ``epochs`` epochs of ``per_epoch`` batches; ``state`` is updated in place.

    ``train_step(order, b)`` runs batch ``b`` of the epoch's ``order`` and returns its loss
    for ``window``. Every ``log_every`` steps (and at the last) the window's mean goes to
    ``on_log(step, epoch, batch, mean)`` and ``on_progress(step, total)``; a non-finite mean,
    or a step the window refuses, ends the loop as diverged. ``on_eval(step, epoch)`` runs every
    ``eval_every`` steps and ``on_epoch_end(step, epoch, batches)`` after each epoch (and when
    ``max_steps`` stops one early); the model is put back in training mode after each, and their
    time is left out of ``train_seconds``. ``on_checkpoint`` gets ``state`` every
    ``checkpoint_every`` steps, after that step's hooks, never at the last step (the caller
    saves the end itself). A ``state`` whose ``batch`` is already ``per_epoch`` (an epoch's last
    step saved before its end) finishes that epoch first.
    """
    total = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    st = state
    step = st.step
    hook_seconds = 0.0
    before = st.train_seconds  # spent by the attempts that wrote the checkpoint resumed from
    start = time.perf_counter()

    def elapsed() -> float:
        return before + time.perf_counter() - start - hook_seconds

    def stop(diverged: bool) -> LoopResult:
        st.step = step
        st.train_seconds = elapsed()
        return LoopResult(step, diverged, st.train_seconds)

    def end_epoch(epoch: int, batches: int) -> None:
        nonlocal hook_seconds
        if on_epoch_end is not None:
            t = time.perf_counter()
            on_epoch_end(step, epoch, batches)
            model.train()
            hook_seconds += time.perf_counter() - t
        st.epoch, st.batch, st.order = epoch + 1, 0, None

    model.train()
    while st.epoch <= epochs:
        epoch = st.epoch
        if st.order is None:
            st.order = draw_order()
        elif st.batch >= per_epoch:
            end_epoch(epoch, st.batch)
            continue
        order = st.order
        for b in range(st.batch, per_epoch):
            loss = train_step(order, b)
            step += 1
            st.batch = b + 1
            if not window.add(loss):
                return stop(True)
            if step % log_every == 0 or step == total:
                mean = window.read()
                if not math.isfinite(mean):
                    return stop(True)
                if on_log is not None or on_progress is not None:
                    t = time.perf_counter()
                    if on_log is not None:
                        on_log(step, epoch, b + 1, mean)
                    if on_progress is not None:
                        on_progress(step, total)
                    hook_seconds += time.perf_counter() - t
            if on_eval is not None and eval_every and step % eval_every == 0:
                t = time.perf_counter()
                on_eval(step, epoch)
                model.train()
                hook_seconds += time.perf_counter() - t
            last = b == per_epoch - 1
            if last:
                end_epoch(epoch, per_epoch)
            if (
                on_checkpoint is not None
                and checkpoint_every
                and step % checkpoint_every == 0
                and step < total
            ):
                t = time.perf_counter()
                st.step = step
                st.train_seconds = elapsed()
                on_checkpoint(st)
                hook_seconds += time.perf_counter() - t
            if max_steps is not None and step >= max_steps:
                if not last:
                    end_epoch(epoch, b + 1)
                return stop(False)
    return stop(False)
