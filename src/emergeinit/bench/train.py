"""Training loops and their metrics stream.

:func:`run_steps` is the bare step loop (index a batch from in-memory tensors, forward, loss,
backward, step) with hooks at log, eval and epoch boundaries; the throughput benchmark times it
against a plain PyTorch loop. :func:`train_classification` wraps it with evaluation, divergence
handling and the per-run summary. A translation loop (issue 5) joins as a sibling function,
dispatched by task name in :mod:`.runner`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError
from .data import Splits

MetricSink = Callable[[dict[str, Any]], None]
Progress = Callable[[int, int], None]


def build_optimizer(
    params: Iterable[Any], train_cfg: dict[str, Any], lr: float
) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or Adam; ``params`` may be parameter groups."""
    if train_cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=train_cfg["momentum"],
            nesterov=train_cfg["nesterov"] and train_cfg["momentum"] > 0,
            weight_decay=train_cfg["weight_decay"],
        )
    return torch.optim.Adam(params, lr=lr, weight_decay=train_cfg["weight_decay"])


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: dict[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warmup then constant or cosine decay, as a multiplier on every group's lr.

    A multiplier keeps ``emergence-lr``'s per-group ratios intact through the schedule.
    """
    warmup = train_cfg["warmup_steps"]
    if train_cfg["schedule"] == "none" and warmup == 0:
        return None
    cosine = train_cfg["schedule"] == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    # drop_last: a final batch of one example would break BatchNorm and skew the loss.
    return max(1, num_examples // batch_size)


@dataclass
class LoopResult:
    steps: int
    diverged: bool
    train_seconds: float  # loop time with the time spent in eval hooks taken out


@dataclass
class LoopState:
    """Where the step loop stands, enough (with the data-order generator) to continue it.

    ``batch`` is the next batch of epoch ``epoch``; ``order`` is that epoch's permutation, or
    ``None`` when it is still to be drawn (at the start of an epoch). ``running``/``window``
    are the loss accumulated since the last log record, so a resumed loop logs the same means.
    """

    step: int = 0
    epoch: int = 1
    batch: int = 0
    order: torch.Tensor | None = None
    running: torch.Tensor | None = None
    window: int = 0
    train_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "order": None if self.order is None else self.order.detach().cpu().clone(),
            "running": None if self.running is None else self.running.detach().cpu().clone(),
            "window": self.window,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**d)


@dataclass(frozen=True)
class Shard:
    """This process's share of every global batch under data parallelism (rank of world).

    Every rank draws the same permutation and takes ``batch[rank::world]``, so the ranks
    together see exactly the single-process batch; ``reduce`` sums a tensor over ranks.
    """

    rank: int
    world: int
    reduce: Callable[[torch.Tensor], torch.Tensor]


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

    ``state`` continues an interrupted loop (it is updated in place); ``on_checkpoint`` gets
    it every ``checkpoint_every`` steps, after that step's hooks (an epoch's last step
    includes ``on_epoch_end``), never at the final step (the caller saves the end itself).
    ``shard`` trains this rank's slice of each batch (DDP); ``autocast`` runs the forward pass
    under ``torch.autocast`` with that dtype.
    """
    n = len(y)
    per_epoch = steps_per_epoch(n, batch_size)
    total = per_epoch * epochs
    st = state if state is not None else LoopState()
    step = st.step
    hook_seconds = 0.0
    running = (
        st.running.to(x.device) if st.running is not None else torch.zeros((), device=x.device)
    )
    window = st.window
    cast = (
        functools.partial(torch.autocast, device_type=x.device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext
    )
    start = time.perf_counter()

    def elapsed() -> float:
        return st.train_seconds + time.perf_counter() - start - hook_seconds

    def mean_loss() -> float:
        total_loss = running if shard is None else shard.reduce(running.clone())
        world = 1 if shard is None else shard.world
        return float(total_loss) / (window * world)

    model.train()
    while st.epoch <= epochs:
        epoch = st.epoch
        if st.order is None:
            st.order = torch.randperm(n, generator=generator).to(x.device)
        elif st.order.device != x.device:  # restored from a checkpoint, which holds CPU tensors
            st.order = st.order.to(x.device)
        order = st.order
        for b in range(st.batch, per_epoch):
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
            step += 1
            st.batch = b + 1
            running += loss.detach()
            window += 1
            if step % log_every == 0 or step == total:
                mean = mean_loss()
                running.zero_()
                window = 0
                if not math.isfinite(mean):
                    st.step, st.window = step, window
                    st.train_seconds = elapsed()
                    return LoopResult(step, True, st.train_seconds)
                if on_log is not None or on_progress is not None:
                    t = time.perf_counter()
                    if on_log is not None:
                        on_log(step, epoch, mean)
                    if on_progress is not None:
                        on_progress(step, total)
                    hook_seconds += time.perf_counter() - t
            if on_eval is not None and eval_every and step % eval_every == 0:
                t = time.perf_counter()
                on_eval(step, epoch)
                model.train()
                hook_seconds += time.perf_counter() - t
            if b == per_epoch - 1:
                if on_epoch_end is not None:
                    t = time.perf_counter()
                    on_epoch_end(step, epoch)
                    model.train()
                    hook_seconds += time.perf_counter() - t
                st.epoch, st.batch, st.order = epoch + 1, 0, None
            if (
                on_checkpoint is not None
                and checkpoint_every
                and step % checkpoint_every == 0
                and step < total
            ):
                t = time.perf_counter()
                st.step, st.running, st.window = step, running, window
                st.train_seconds = elapsed()
                on_checkpoint(st)
                hook_seconds += time.perf_counter() - t
    st.step, st.running, st.window = step, running, window
    st.train_seconds = elapsed()
    return LoopResult(step, False, st.train_seconds)


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
    state (what :func:`training_state` gives, for the final checkpoint).

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
    loop = LoopState()
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            generator.set_state(resume["generator"])
            loop = LoopState.from_dict(resume["loop"])
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
            "test_loss": _finite_or_none(test_loss),
        }
        # Validation only feeds model selection at epoch ends; skipping it at intermediate
        # steps keeps evaluation from dominating small runs.
        if kind != "step":
            val_acc, val_loss = evaluate(model, splits.val_x, splits.val_y, eval_bs)
            event.update(val_acc=val_acc, val_loss=_finite_or_none(val_loss))
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
        state=loop,
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


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
