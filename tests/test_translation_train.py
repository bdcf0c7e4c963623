"""The translation training loop: schedule, batching, determinism, divergence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from emergeinit.bench.tasks.translation.data import DataSettings, prepare_data
from emergeinit.bench.tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID, TokenizerSettings
from emergeinit.bench.tasks.translation.train import (
    TrainSettings,
    inverse_sqrt,
    make_batches,
    train_translation,
)
from emergeinit.errors import ConfigError
from emergeinit.models.transformer import build_transformer

DATA = DataSettings(train_size=120, valid_size=16, test_size=16, max_number=9999, max_terms=2)
# Short outputs: an untrained model never says EOS and would decode to the length cap.
QUICK = TrainSettings(epochs=2, lr=3e-3, warmup=5, max_tokens=512, log_every=2, beam=2,
                      max_len_a=0.5, max_len_b=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return prepare_data(DATA, TokenizerSettings(vocab_size=48), tmp_path_factory.mktemp("tok"))


def test_inverse_sqrt_schedule() -> None:
    f = inverse_sqrt(4)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # LambdaLR passes steps from 0
    assert f(15) == pytest.approx(math.sqrt(4 / 16))
    assert inverse_sqrt(4, constant=True)(99) == 1.0


def test_batches_respect_the_token_budget_and_shift_targets(data) -> None:  # type: ignore[no-untyped-def]
    batches = make_batches(data.train, 256)
    assert sum(len(b.src) for b in batches) == len(data.train)
    for b in batches:
        assert b.src.numel() <= 256 or len(b.src) == 1
        assert b.tgt_in.shape == b.tgt_out.shape
        assert (b.tgt_in[:, 0] == BOS_ID).all()
        assert b.tokens == int(b.tgt_out.ne(PAD_ID).sum())
        # tgt_out is tgt_in shifted left by one, ending with EOS
        assert torch.equal(b.tgt_in[:, 1:][b.tgt_out[:, :-1] != PAD_ID],
                           b.tgt_out[:, :-1][b.tgt_out[:, :-1] != PAD_ID])
        assert (b.tgt_out == EOS_ID).sum() == len(b.src)


def run(data, seed: int = 0, settings: TrainSettings = QUICK):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_transformer(data.src_vocab, data.tgt_vocab, "tiny")
    events: list[dict] = []
    outcome = train_translation(model, data, settings, seed=seed, emit=events.append)
    return outcome, events


@pytest.mark.slow
def test_training_streams_metrics_and_scores(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outcome, events = run(data)
    kinds = [e["event"] for e in events]
    assert kinds.count("valid") == 2 and kinds[-1] == "test"
    assert all(math.isfinite(e["loss"]) for e in events if e["event"] == "train")
    assert outcome.status == "ok" and outcome.scores is not None
    assert len(outcome.hypotheses) == len(data.test)
    row = outcome.row()
    assert {"bleu", "bleu_tok", "chrf", "val_bleu", "test_loss", "steps"} <= set(row)
    assert 0.0 <= row["bleu"] <= 100.0 and 0.0 <= row["chrf"] <= 100.0
    assert outcome.val_losses[-1] < outcome.val_losses[0] * 1.05


@pytest.mark.slow
def test_same_seed_same_run_and_seed_changes_order(data) -> None:  # type: ignore[no-untyped-def]
    short = TrainSettings(epochs=1, lr=3e-3, warmup=5, max_tokens=512, log_every=1, beam=1,
                          max_steps=4, max_len_a=0.0, max_len_b=2)
    a, b, c = (run(data, seed, short)[1] for seed in (0, 0, 1))
    losses = [[e["loss"] for e in ev if e["event"] == "train"] for ev in (a, b, c)]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


@pytest.mark.slow
def test_non_finite_loss_ends_run_as_diverged(data) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_transformer(data.src_vocab, data.tgt_vocab, "tiny")
    with torch.no_grad():
        model.output.weight.fill_(float("nan"))
    outcome = train_translation(model, data, QUICK, seed=0)
    assert outcome.status == "diverged" and outcome.steps == 1
    assert outcome.row()["bleu"] == 0.0


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="lr"):
        TrainSettings(lr=0.0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainSettings(label_smoothing=1.0)
