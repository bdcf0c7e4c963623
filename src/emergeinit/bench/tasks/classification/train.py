"""The classification task's training: the step loop over in-memory tensors, evaluation,
and the per-run summary.

:func:`run_steps` is the bare step loop (index a batch from in-memory tensors, forward, loss,
backward, step) on the shared skeleton :func:`emergeinit.bench.loop.train_loop`; the throughput
benchmark times it against a plain PyTorch loop. :func:`train_classification` wraps it with
evaluation, divergence handling and the per-run summary.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import CheckpointError
from ...data import Splits
from ...loop import LoopResult, LoopState, steps_per_epoch, train_loop
from ...optim import build_scheduler
from ...runtime import Shard

MetricSink = Callable[[dict[str, Any]], None]
Progress = Callable[[int, int], None]


class _MeanWindow:
    """Classification's loss accounting: the step losses summed on the device (no sync per
    step), read as a mean over the window's steps (and over ranks under data parallelism). A
    NaN anywhere in the window poisons the mean, which ends the run as diverged."""

    def __init__(self, device: torch.device, shard: Shard | None) -> None:
        self.running = torch.zeros((), device=device)
        self.count = 0
        self.shard = shard

    def add(self, loss: torch.Tensor) -> bool:
        self.running += loss.detach()
        self.count += 1
        return True

    def read(self) -> float:
        shard = self.shard
        total = self.running if shard is None else shard.reduce(self.running.clone())
        world = 1 if shard is None else shard.world
        mean = float(total) / (self.count * world)
        self.running.zero_()
        self.count = 0
        return mean


@dataclass
class _Loop:
    """A classification loop's resumable state: the skeleton's position and the open window
    (``running``/``window``: the loss accumulated since the last log record), stored in the
    checkpoint's ``loop`` entry as it always was."""

    position: LoopState
    window: _MeanWindow

    def to_dict(self) -> dict[str, Any]:
        p = self.position
        return {
            "step": p.step,
            "epoch": p.epoch,
            "batch": p.batch,
            "order": None if p.order is None else p.order.detach().cpu().clone(),
            "running": self.window.running.detach().cpu().clone(),
            "window": self.window.count,
            "train_seconds": p.train_seconds,
        }

    def load(self, d: dict[str, Any], device: torch.device) -> None:
        order = d["order"]
        self.position = LoopState(
            step=d["step"], epoch=d["epoch"], batch=d["batch"],
            order=None if order is None else order.to(device), train_seconds=d["train_seconds"],
        )  # fmt: skip
        if d["running"] is not None:
            self.window.running = d["running"].to(device)
        self.window.count = d["window"]


def run_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    log_every: int = 10,
    eval_every: int = 0,
    on_log: Callable[[int, int, float], None] | None = None,
    on_eval: Callable[[int, int], None] | None = None,
    on_epoch_end: Callable[[int, int], None] | None = None,
    on_progress: Progress | None = None,
    state: LoopState | None = None,
    window: _MeanWindow | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[LoopState], None] | None = None,
    shard: Shard | None = None,
    autocast: torch.dtype | None = None,
) -> LoopResult:
    """Train for ``epochs`` epochs over ``(x, y)`` in the order drawn from ``generator``.

    The loss is accumulated on-device and read every ``log_every`` steps, where a NaN/inf mean
    loss stops the loop as diverged (a NaN anywhere in the window poisons the mean).
    ``on_eval`` runs every ``eval_every`` steps and ``on_epoch_end`` after each epoch; their
    time is excluded from ``train_seconds``.

    ``state`` (and ``window``, the open loss window) continue an interrupted loop (updated in
    place); ``on_checkpoint`` gets ``state`` every ``checkpoint_every`` steps, after that step's
    hooks (an epoch's last step includes ``on_epoch_end``), never at the final step (the
    caller saves the end itself). ``shard`` trains this rank's slice of each batch (data
    parallelism); ``autocast`` runs the forward pass under ``torch.autocast`` with that dtype.
    """
    n = len(y)
    cast = (
        functools.partial(torch.autocast, device_type=x.device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext
    )

    def train_step(order: torch.Tensor, b: int) -> torch.Tensor:
        idx = order[b * batch_size : (b + 1) * batch_size]
        if shard is not None:
            idx = idx[shard.rank :: shard.world]
        with cast():
            loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss

    return train_loop(
        model,
        state if state is not None else LoopState(),
        epochs=epochs,
        per_epoch=steps_per_epoch(n, batch_size),
        draw_order=lambda: torch.randperm(n, generator=generator).to(x.device),
        train_step=train_step,
        window=window if window is not None else _MeanWindow(x.device, shard),
        log_every=log_every,
        on_log=None if on_log is None else lambda step, epoch, _, mean: on_log(step, epoch, mean),
        on_progress=on_progress,
        eval_every=eval_every,
        on_eval=on_eval,
        on_epoch_end=None if on_epoch_end is None else lambda step, epoch, _: on_epoch_end(
            step, epoch
        ),
        checkpoint_every=checkpoint_every,
        on_checkpoint=on_checkpoint,
    )


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; a non-finite logit row counts as wrong."""
    was_training = model.training
    model.eval()
    correct = 0
    loss_sum = 0.0
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size])
        target = y[i : i + batch_size]
        finite = torch.isfinite(logits).all(dim=1)
        correct += int(((logits.argmax(dim=1) == target) & finite).sum())
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
    model.train(was_training)
    n = max(1, len(y))
    return correct / n, loss_sum / n


def _target_key(target: float) -> str:
    return f"steps_to_{target:g}"


def train_classification(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    splits: Splits,
    train_cfg: dict[str, Any],
    *,
    generator: torch.Generator,
    emit: MetricSink,
    measure: Callable[[nn.Module], float | None] | None = None,
    on_progress: Progress | None = None,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    train_model: nn.Module | None = None,
    shard: Shard | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one classifier; return its summary (the result row's metric columns) and its end
    state (what ``on_checkpoint`` gets, for the final checkpoint).

    Streams ``train`` events (mean loss over the last ``log_every`` steps) and ``eval`` events
    (test accuracy and loss, plus validation at epoch ends; optional log10 E) to ``emit``.
    Steps to a target accuracy are read on the test split at evaluation points, so their
    resolution is ``eval_every``.

    ``resume`` (a state from ``on_checkpoint``) continues an interrupted run bit for bit;
    ``on_checkpoint`` receives the state every ``train.checkpoint_every`` steps.
    ``train_model`` is what the training forward runs through (a DDP wrapper of ``model``);
    evaluation always uses ``model`` itself, so it needs no collective.
    """
    per_epoch = steps_per_epoch(len(splits.train_y), train_cfg["batch_size"])
    scheduler = build_scheduler(optimizer, train_cfg, per_epoch * train_cfg["epochs"])
    eval_bs = train_cfg["eval_batch_size"]
    targets = list(train_cfg["targets"])
    # The tracker: everything the summary is built from, checkpointed with the weights.
    summary: dict[str, Any] = {_target_key(t): None for t in targets}
    last: dict[str, Any] = {}
    loss_log: list[float] = []
    device = splits.train_x.device
    loop = _Loop(LoopState(), _MeanWindow(device, shard))
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            generator.set_state(resume["generator"])
            loop.load(resume["loop"], device)
            summary = dict(resume["tracker"]["summary"])
            last = dict(resume["tracker"]["last"])
            loss_log = list(resume["tracker"]["loss_log"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"does not fit this run ({type(exc).__name__}: {exc})") from exc

    def state() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "generator": generator.get_state(),
            "loop": loop.to_dict(),
            # Only the last logged loss feeds the summary; the stream has the rest.
            "tracker": {"summary": dict(summary), "last": dict(last), "loss_log": loss_log[-1:]},
        }

    def do_eval(step: int, epoch: int, kind: str) -> None:
        test_acc, test_loss = evaluate(model, splits.test_x, splits.test_y, eval_bs)
        event: dict[str, Any] = {
            "event": "eval",
            "kind": kind,
            "step": step,
            "epoch": epoch,
            "test_acc": test_acc,
            "test_loss": finite_or_none(test_loss),
        }
        # Validation only feeds model selection at epoch ends; skipping it at intermediate
        # steps keeps evaluation from dominating small runs.
        if kind != "step":
            val_acc, val_loss = evaluate(model, splits.val_x, splits.val_y, eval_bs)
            event.update(val_acc=val_acc, val_loss=finite_or_none(val_loss))
        if measure is not None:
            event["log10_e"] = measure(model)
        emit(event)
        for t in targets:
            if summary[_target_key(t)] is None and test_acc >= t:
                summary[_target_key(t)] = step
        last.update(event)
        if kind == "epoch" and epoch == 1:
            summary["val_acc_epoch1"] = val_acc
            summary["test_acc_epoch1"] = test_acc

    def on_log(step: int, epoch: int, loss: float) -> None:
        loss_log.append(loss)
        emit({"event": "train", "step": step, "epoch": epoch, "loss": loss})

    result = run_steps(
        train_model if train_model is not None else model,
        optimizer,
        splits.train_x,
        splits.train_y,
        epochs=train_cfg["epochs"],
        batch_size=train_cfg["batch_size"],
        generator=generator,
        scheduler=scheduler,
        log_every=train_cfg["log_every"],
        eval_every=train_cfg["eval_every"],
        on_log=on_log,
        on_eval=lambda s, e: do_eval(s, e, "step"),
        on_epoch_end=lambda s, e: do_eval(s, e, "epoch"),
        on_progress=on_progress,
        state=loop.position,
        window=loop.window,
        checkpoint_every=train_cfg.get("checkpoint_every", 0),
        on_checkpoint=None if on_checkpoint is None else lambda _: on_checkpoint(state()),
        shard=shard,
        autocast=AUTOCAST[train_cfg.get("autocast", "none")],
    )
    if result.diverged:
        emit({"event": "diverged", "step": result.steps})
        # The diverged model is evaluated as it is (non-finite logits count as wrong), so a
        # diverged run scores what it would deliver, not a blank that stats would drop.
        epoch = (result.steps - 1) // per_epoch + 1
        do_eval(result.steps, epoch, "diverged")
        if "test_acc_epoch1" not in summary:
            summary["val_acc_epoch1"] = last["val_acc"]
            summary["test_acc_epoch1"] = last["test_acc"]
    summary.update(
        status="diverged" if result.diverged else "ok",
        steps=result.steps,
        val_acc_final=last["val_acc"],
        test_acc_final=last["test_acc"],
        test_loss=last["test_loss"],
        train_loss_final=loss_log[-1] if loss_log and not result.diverged else None,
        log10_e_final=last.get("log10_e"),
        train_seconds=result.train_seconds,
    )
    return summary, state()


# train.autocast -> the dtype of the autocast region (None = full precision).
AUTOCAST: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16}


def finite_or_none(value: float) -> float | None:
    """``value``, or ``None`` when it is NaN or infinite (an empty cell in results.csv)."""
    return value if math.isfinite(value) else None


def to_device(splits: Splits, device: torch.device) -> Splits:
    """The splits on ``device`` (the same object on the CPU)."""
    if device.type == "cpu":
        return splits
    moved = {
        k: getattr(splits, k).to(device)
        for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    }
    return Splits(name=splits.name, shape=splits.shape, classes=splits.classes, **moved)
