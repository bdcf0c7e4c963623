"""Training and evaluation of one translation run.

The recipe is the standard one for transformer NMT (Vaswani et al. 2017; fairseq's IWSLT'14
recipe): Adam with betas (0.9, 0.98), a learning rate that rises linearly for ``warmup`` steps
and then decays as the inverse square root of the step, label-smoothed cross-entropy, and
batches holding about ``max_tokens`` (padded) tokens of sentences of similar length.

Batches are built once from the length-sorted training set and only their order is shuffled
each epoch, by a generator seeded from the run's seed alone, so for a given seed every init
sees the same data in the same order (the paired design). Padded batch tensors are built up
front; a training step is the model's forward and backward and nothing else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ....errors import ConfigError
from ....models.transformer import Seq2SeqTransformer
from ...checkpoint import CheckpointError, capture_rng, restore_rng
from ...loop import LoopState, train_loop
from .data import EncodedSplit, TranslationData
from .decode import beam_search, greedy_decode
from .metrics import Scores, score
from .tokenizer import PAD_ID

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainSettings:
    """Optimization and evaluation settings of one run (from a study's ``train.*`` and
    ``translation.*`` keys)."""

    epochs: int = 10
    max_steps: int | None = None  # stop early after this many updates (quick runs)
    lr: float = 5e-4
    warmup: int = 4000
    constant: bool = False  # after warmup keep the peak lr instead of the 1/sqrt decay
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    max_tokens: int = 4096
    clip_norm: float = 0.0  # 0 = no clipping
    log_every: int = 50
    beam: int = 5  # 1 = greedy
    length_penalty: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    decode_max_tokens: int = 8192
    valid_bleu: bool = False  # also decode the validation split at the end
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive_ints = ("epochs", "warmup", "max_tokens", "log_every", "beam",
                         "decode_max_tokens")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {value!r}.")
        if self.max_steps is not None and (not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise ConfigError(
                f"train.max_steps must be a positive integer, got {self.max_steps!r}."
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be a finite number > 0, got {self.lr!r}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"train.label_smoothing must lie in [0, 1), got {self.label_smoothing!r}."
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas!r}.")


@dataclass(frozen=True)
class Batch:
    src: Tensor  # (B, S)
    tgt_in: Tensor  # (B, T): BOS w1 ... wn
    tgt_out: Tensor  # (B, T): w1 ... wn EOS
    tokens: int  # non-pad target tokens


@dataclass
class TranslationOutcome:
    """What a run produced; ``status`` is ``ok`` or ``diverged``."""

    status: str
    steps: int
    epochs: float
    train_loss: float  # mean label-smoothed loss per token over the last log window
    val_loss: float
    test_loss: float
    scores: Scores | None
    valid_scores: Scores | None
    train_seconds: float
    eval_seconds: float
    hypotheses: list[str]
    val_losses: list[float]
    # The training state at the end (what ``on_checkpoint`` gets), for the final checkpoint.
    end_state: dict[str, Any] = field(default_factory=dict, repr=False)

    def row(self) -> dict[str, Any]:
        """The columns a results table needs (NaN where not measured)."""
        nan = float("nan")
        s = self.scores.as_dict() if self.scores else {"bleu": nan, "bleu_tok": nan, "chrf": nan}
        return {
            "status": self.status, **s,
            "val_bleu": self.valid_scores.bleu if self.valid_scores else nan,
            "train_loss_final": self.train_loss, "val_loss": self.val_loss,
            "test_loss": self.test_loss, "steps": self.steps,
            "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
        }


def make_batches(split: EncodedSplit, max_tokens: int, device: str = "cpu") -> list[Batch]:
    """Pad similar-length pairs together, at most ``max_tokens`` padded tokens per batch side.

    A pair longer than ``max_tokens`` alone still gets a batch of its own.
    """
    order = sorted(range(len(split)), key=lambda i: (len(split.src[i]), len(split.tgt[i]), i))
    batches: list[Batch] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = max(len(split.src[i]), len(split.tgt[i]) - 1)
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            batches.append(_pad(split, current, device))
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(_pad(split, current, device))
    return batches


def _pad(split: EncodedSplit, index: list[int], device: str) -> Batch:
    src = torch.nn.utils.rnn.pad_sequence([split.src[i] for i in index], batch_first=True,
                                          padding_value=PAD_ID)
    tgt = torch.nn.utils.rnn.pad_sequence([split.tgt[i] for i in index], batch_first=True,
                                          padding_value=PAD_ID)
    tgt_out = tgt[:, 1:]
    return Batch(src.to(device), tgt[:, :-1].to(device), tgt_out.to(device),
                 int(tgt_out.ne(PAD_ID).sum()))


def inverse_sqrt(warmup: int, *, constant: bool = False) -> Callable[[int], float]:
    """Multiplier of the peak lr for update ``step + 1``: linear warmup over ``warmup``
    updates, then ``sqrt(warmup / step)`` (or 1 with ``constant``). A multiplier, so the
    per-group ratios of ``emergence-lr`` survive the schedule."""
    def factor(step: int) -> float:
        step += 1  # LambdaLR counts from 0; the first update uses 1/warmup of the peak
        if step <= warmup:
            return step / warmup
        return 1.0 if constant else math.sqrt(warmup / step)
    return factor


def batch_loss(model: Seq2SeqTransformer, batch: Batch, label_smoothing: float) -> Tensor:
    """Label-smoothed cross-entropy summed over the batch's target tokens."""
    logits = model(batch.src, batch.tgt_in)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), batch.tgt_out.reshape(-1),
        ignore_index=PAD_ID, label_smoothing=label_smoothing, reduction="sum",
    )


@torch.no_grad()
def evaluate_loss(model: Seq2SeqTransformer, batches: Sequence[Batch]) -> float:
    """Per-token negative log-likelihood (nats, no smoothing) of the batches, in eval mode."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        total += float(batch_loss(model, batch, 0.0))
        tokens += batch.tokens
    model.train(was_training)
    return total / max(tokens, 1)


@torch.no_grad()
def translate(
    model: Seq2SeqTransformer, split: EncodedSplit, settings: TrainSettings,
    decode_target: Callable[[Sequence[int]], str],
) -> list[str]:
    """Decode every source of ``split`` (beam or greedy), in the split's order."""
    was_training = model.training
    model.eval()
    # Beam search multiplies the batch by the beam; keep the decoder's work per batch bounded.
    budget = max(1, settings.decode_max_tokens // settings.beam)
    order = sorted(range(len(split)), key=lambda i: len(split.src[i]))
    out: list[str] = [""] * len(split)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and len(split.src[order[end]]) * (end - start + 1) <= budget:
            end += 1
        index = order[start:end]
        src = torch.nn.utils.rnn.pad_sequence([split.src[i] for i in index], batch_first=True,
                                              padding_value=PAD_ID).to(settings.device)
        if settings.beam == 1:
            ids = greedy_decode(model, src, max_len_a=settings.max_len_a,
                                max_len_b=settings.max_len_b)
        else:
            ids = beam_search(model, src, beam=settings.beam,
                              length_penalty=settings.length_penalty,
                              max_len_a=settings.max_len_a, max_len_b=settings.max_len_b)
        for i, hyp in zip(index, ids, strict=True):
            out[i] = decode_target(hyp)
        start = end
    model.train(was_training)
    return out


def _cell(text: str) -> str:
    return " ".join(text.split())  # no tab or newline may break the TSV


class _TokenWindow:
    """Translation's loss accounting: token-summed losses over the window's target tokens. A
    non-finite step loss stops the run at once (it is read every step)."""

    def __init__(self) -> None:
        self.running = 0.0
        self.tokens = 0

    def add(self, loss: tuple[Tensor, int]) -> bool:
        value = float(loss[0].detach())
        if not math.isfinite(value):
            return False
        self.running, self.tokens = self.running + value, self.tokens + loss[1]
        return True

    def read(self) -> float:
        mean = self.running / self.tokens
        self.running, self.tokens = 0.0, 0
        return mean


def train_translation(
    model: Seq2SeqTransformer,
    data: TranslationData,
    settings: TrainSettings,
    *,
    seed: int,
    emit: Emit | None = None,
    out_dir: str | Path | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    resume: dict[str, Any] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> TranslationOutcome:
    """Train ``model`` (already initialized) on ``data``; evaluate; score the test split.

    ``seed`` fixes the batch order and dropout. ``param_groups`` (optimizer groups with their
    own ``lr``, as ``emergence-lr`` makes) replace "all parameters at ``settings.lr``".
    Streams ``{"event": "train", step, epoch, loss, lr}`` (mean label-smoothed loss per token
    since the last record) every ``log_every`` updates, ``{"event": "valid", step, epoch,
    val_loss}`` after every epoch and ``{"event": "test", ...scores}`` at the end through
    ``emit``. Writes the test hypotheses to ``out_dir/hypotheses.txt`` (and, next to their
    references, to ``out_dir/test.tsv``) when ``out_dir`` is given. A non-finite loss ends
    the run as ``diverged`` (a result, not an error).

    The loop is :func:`emergeinit.bench.loop.train_loop`. ``on_checkpoint`` receives the
    training state (model, optimizer, schedule, every random stream, the position in the batch
    order, the logged losses) every ``checkpoint_every`` updates before the last; ``resume``
    (such a state) continues an interrupted run bit for bit. The state at the end is the
    outcome's ``end_state``.
    """
    emit = emit or (lambda record: None)
    device = settings.device
    model.to(device).train()
    train_batches = make_batches(data.train, settings.max_tokens, device)
    valid_batches = make_batches(data.valid, settings.max_tokens, device)
    test_batches = make_batches(data.test, settings.max_tokens, device)
    params: Any = param_groups if param_groups is not None else model.parameters()
    optimizer = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas,
                                 eps=settings.eps, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, inverse_sqrt(settings.warmup, constant=settings.constant)
    )
    per_epoch = len(train_batches)
    # Data order depends on the seed only, never on the init's draws (paired design);
    # dropout draws from the global generator, seeded here so a run is reproducible.
    order_rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    window = _TokenWindow()
    position = LoopState()
    train_loss, epoch_done = math.nan, 0.0
    val_losses: list[float] = []
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            schedule.load_state_dict(resume["scheduler"])
            order_rng.set_state(resume["generator"])
            restore_rng(resume["rng"])
            loop = resume["loop"]
            position = LoopState(step=loop["step"], epoch=loop["epoch"], batch=loop["position"],
                                 order=loop["order"], train_seconds=loop["train_seconds"])
            window.running, window.tokens = loop["running"], loop["running_tokens"]
            train_loss, val_losses = loop["train_loss"], list(loop["val_losses"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"does not fit this run ({type(exc).__name__}: {exc})") from exc

    def state() -> dict[str, Any]:
        p = position
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(), "generator": order_rng.get_state(),
            "rng": capture_rng(torch.device(device)),
            "loop": {"step": p.step, "epoch": p.epoch, "position": p.batch,
                     "order": None if p.order is None else p.order.clone(),
                     "running": window.running, "running_tokens": window.tokens,
                     "train_loss": train_loss, "val_losses": list(val_losses),
                     "train_seconds": p.train_seconds},
        }

    def train_step(order: Tensor, b: int) -> tuple[Tensor, int]:
        batch = train_batches[int(order[b])]
        loss = batch_loss(model, batch, settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        (loss / batch.tokens).backward()
        if settings.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
        optimizer.step()
        schedule.step()
        return loss, batch.tokens

    def on_log(step: int, epoch: int, batch: int, mean: float) -> None:
        nonlocal train_loss
        train_loss = mean
        emit({"event": "train", "step": step, "epoch": epoch - 1 + batch / per_epoch,
              "loss": mean, "lr": optimizer.param_groups[0]["lr"]})

    def on_epoch_end(step: int, epoch: int, batches: int) -> None:
        nonlocal epoch_done
        epoch_done = epoch - 1 + batches / per_epoch
        val_losses.append(evaluate_loss(model, valid_batches))
        emit({"event": "valid", "epoch": epoch_done, "step": step, "val_loss": val_losses[-1]})

    result = train_loop(
        model, position, epochs=settings.epochs, per_epoch=per_epoch,
        draw_order=lambda: torch.randperm(per_epoch, generator=order_rng),
        train_step=train_step, window=window, log_every=settings.log_every, on_log=on_log,
        on_progress=on_progress, on_epoch_end=on_epoch_end, checkpoint_every=checkpoint_every,
        on_checkpoint=None if on_checkpoint is None else lambda _: on_checkpoint(state()),
        max_steps=settings.max_steps,
    )  # fmt: skip
    status = "diverged" if result.diverged else "ok"
    step, train_seconds = result.steps, result.train_seconds
    if result.diverged:
        epoch_done = position.epoch - 1 + position.batch / per_epoch
        emit({"event": "diverged", "step": step, "epoch": position.epoch})
    end_state = state()

    nan = float("nan")
    if status != "ok":
        # A diverged model translates nothing: it scores 0, and so weighs in every mean
        # instead of flattering the init that diverged by dropping out.
        zero = Scores(bleu=0.0, bleu_tok=0.0, chrf=0.0)
        return TranslationOutcome(status, step, epoch_done, nan, nan, nan, zero,
                                  zero if settings.valid_bleu else None,
                                  train_seconds, 0.0, [], val_losses, end_state)
    started = time.perf_counter()
    test_loss = evaluate_loss(model, test_batches)
    hypotheses = translate(model, data.test, settings, data.decode_target)
    scores = score(hypotheses, data.test.references, bpe=data.bpe, detokenize=data.detokenize)
    valid_scores = None
    if settings.valid_bleu:
        valid_hyps = translate(model, data.valid, settings, data.decode_target)
        valid_scores = score(valid_hyps, data.valid.references, bpe=data.bpe,
                             detokenize=data.detokenize)
    eval_seconds = time.perf_counter() - started
    if out_dir is not None:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "hypotheses.txt").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
        pairs = (f"{_cell(h)}\t{_cell(r)}" for h, r in
                 zip(hypotheses, data.test.references, strict=True))
        (path / "test.tsv").write_text("hypothesis\treference\n" + "\n".join(pairs) + "\n",
                                       encoding="utf-8")
    emit({"event": "test", "step": step, "test_loss": test_loss, **scores.as_dict(),
          **({"val_bleu": valid_scores.bleu} if valid_scores else {})})
    return TranslationOutcome(status, step, epoch_done, train_loss,
                              val_losses[-1] if val_losses else nan,
                              test_loss, scores, valid_scores, train_seconds, eval_seconds,
                              hypotheses, val_losses, end_state)


__all__ = ["Batch", "TrainSettings", "TranslationOutcome", "batch_loss", "evaluate_loss",
           "inverse_sqrt", "make_batches", "train_translation", "translate"]
