"""Greedy and beam search on a tiny random model, against brute force."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from emergeinit.bench.tasks.translation.decode import beam_search, greedy_decode
from emergeinit.bench.tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID
from emergeinit.errors import ConfigError
from emergeinit.models.transformer import Seq2SeqTransformer

VOCAB = 6  # ids 0-3 special; 1 (unk), 4 and 5 can be generated
REAL = (1, 4, 5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors


def model(seed: int = 0) -> Seq2SeqTransformer:
    torch.manual_seed(seed)
    m = Seq2SeqTransformer(9, VOCAB, d_model=16, nhead=2, num_encoder_layers=1,
                           num_decoder_layers=1, dim_feedforward=32, dropout=0.0)
    with torch.no_grad():  # sharpen the output so hypotheses differ clearly
        m.output.weight.mul_(8.0)
    return m.eval()


def sources() -> torch.Tensor:
    return torch.tensor([[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID], [4, 4, 6, EOS_ID]])


@torch.no_grad()
def log_prob(m: Seq2SeqTransformer, src: torch.Tensor, hyp: list[int]) -> float:
    memory, pad = m.encode(src[None])
    tokens = torch.tensor([[BOS_ID, *hyp]])
    logp = torch.log_softmax(m.decode(tokens, memory, pad)[0], -1)
    return float(sum(logp[i, t] for i, t in enumerate([*hyp, EOS_ID])))


def hypotheses(max_tokens: int) -> list[list[int]]:
    return [list(h) for n in range(max_tokens + 1) for h in itertools.product(REAL, repeat=n)]


def brute_force(m: Seq2SeqTransformer, src: torch.Tensor, max_tokens: int, lp: float) -> list[int]:
    return max(hypotheses(max_tokens), key=lambda h: log_prob(m, src, h) / (len(h) + 1) ** lp)


# Batching, padding and re-running the decoder on a longer prefix change the logits by
# rounding only (measured here: up to 4e-6 between a batched and a one-sentence beam search).
# A decision closer than MARGIN could go either way, so every test that compares two decodes
# token for token first checks that its inputs keep each decision at least MARGIN clear.
MARGIN = 1e-3


@contextlib.contextmanager
def ranking_gaps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Record, for each top-k ranking made inside the block, the smallest gap between
    consecutive finite scores among the best k + 1 (the kept ones and the first one left)."""
    gaps: list[float] = []
    topk = torch.Tensor.topk

    def recording(self: torch.Tensor, k: int, dim: int = -1, *args: Any, **kwargs: Any) -> Any:
        values, index = topk(self, min(k + 1, self.shape[dim]), dim, *args, **kwargs)
        step = values[..., :-1] - values[..., 1:]
        finite = step[values[..., 1:].isfinite() & values[..., :-1].isfinite()]
        if finite.numel():
            gaps.append(float(finite.min()))
        return torch.return_types.topk((values[..., :k], index[..., :k]))

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "topk", recording)
        yield gaps


@torch.no_grad()
def final_pick_gap(
    m: Seq2SeqTransformer, src: torch.Tensor, hyp: list[int], max_tokens: int, lp: float
) -> float:
    """How far the chosen hypothesis's length-normalized score is from every other
    hypothesis's (the choice among finished hypotheses is clear when this is large)."""
    hyps = hypotheses(max_tokens)
    tokens = torch.full((len(hyps), max_tokens + 2), PAD_ID)
    tokens[:, 0] = BOS_ID
    for i, h in enumerate(hyps):
        tokens[i, 1 : len(h) + 2] = torch.tensor([*h, EOS_ID])
    memory, pad = m.encode(src[None].expand(len(hyps), -1))
    logp = torch.log_softmax(m.decode(tokens[:, :-1], memory, pad), -1)
    targets = tokens[:, 1:]
    picked = logp.gather(2, targets[..., None])[..., 0].masked_fill(targets.eq(PAD_ID), 0.0)
    lengths = torch.tensor([len(h) + 1 for h in hyps], dtype=torch.float32)
    scores = picked.sum(1) / lengths**lp
    chosen = hyps.index(hyp)
    return float((scores - scores[chosen]).abs().masked_fill(torch.arange(len(hyps)).eq(chosen),
                                                              math.inf).min())


@torch.no_grad()
def stepwise_greedy(m: Seq2SeqTransformer, src: torch.Tensor, max_tokens: int) -> list[int]:
    """Greedy decoding of one sentence by hand: the argmax of a fresh decode at each step.
    Checks that each argmax is clear (by MARGIN) of the runner-up."""
    memory, pad = m.encode(src[None])
    tokens = [BOS_ID]
    for _ in range(max_tokens):  # at most max_len_b tokens, then the output is cut
        logits = m.decode(torch.tensor([tokens]), memory, pad)[0, -1]
        logits[[PAD_ID, BOS_ID]] = float("-inf")
        best, second = logits.topk(2).values.tolist()
        assert best - second > MARGIN  # rounding cannot flip this argmax
        nxt = int(logits.argmax())
        if nxt == EOS_ID:
            break
        tokens.append(nxt)
    return tokens[1:]


def test_greedy_matches_stepwise_argmax() -> None:
    m = model()
    src = sources()
    out = greedy_decode(m, src, max_len_a=0.0, max_len_b=4)
    for row, hyp in zip(src, out, strict=True):
        assert hyp == stepwise_greedy(m, row, 4)


def test_beam_one_is_greedy(monkeypatch: pytest.MonkeyPatch) -> None:
    m = model(1)
    src = sources()
    with ranking_gaps(monkeypatch) as gaps:
        beam = beam_search(m, src, beam=1, max_len_a=0.0, max_len_b=5)
        greedy = greedy_decode(m, src, max_len_a=0.0, max_len_b=5)
    assert gaps and min(gaps) > MARGIN  # greedy's argmax is beam's top 1 of these
    assert beam == greedy


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_is_exact_search(length_penalty: float) -> None:
    # With a beam wider than every set of live hypotheses, nothing is pruned: beam search
    # must return the best-scoring hypothesis of all 1 + 3 + 9 possible ones.
    m = model(2)
    src = sources()
    out = beam_search(m, src, beam=20, length_penalty=length_penalty, max_len_a=0.0,
                      max_len_b=2)
    for row, hyp in zip(src, out, strict=True):
        real = row[row.ne(PAD_ID)]
        scores = sorted(
            (log_prob(m, real, h) / (len(h) + 1) ** length_penalty, h) for h in hypotheses(2)
        )
        (runner_up, _), (best, expected) = scores[-2:]
        assert best - runner_up > MARGIN  # one clear optimum
        assert hyp == expected


def test_beam_scores_at_least_greedy_on_these_inputs() -> None:
    m = model(3)
    src = sources()
    greedy = greedy_decode(m, src, max_len_a=0.0, max_len_b=4)
    beam = beam_search(m, src, beam=4, length_penalty=0.0, max_len_a=0.0, max_len_b=4)
    for row, g, b in zip(src, greedy, beam, strict=True):
        real = row[row.ne(PAD_ID)]
        assert log_prob(m, real, b) >= log_prob(m, real, g) - 1e-5


def test_batched_equals_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    m = model(4)
    src = sources()
    for decode in (greedy_decode, lambda m, s, **k: beam_search(m, s, beam=3, **k)):
        with ranking_gaps(monkeypatch) as gaps:
            together = decode(m, src, max_len_a=0.0, max_len_b=4)
            alone = [decode(m, row[row.ne(PAD_ID)][None], max_len_a=0.0, max_len_b=4)[0]
                     for row in src]
        assert together == alone
        if decode is greedy_decode:
            assert alone == [stepwise_greedy(m, row[row.ne(PAD_ID)], 4) for row in src]
            continue
        assert gaps and min(gaps) > MARGIN  # every pruning decision is clear
        for row, hyp in zip(src, alone, strict=True):  # and so is the pick among finished ones
            assert final_pick_gap(m, row[row.ne(PAD_ID)], hyp, 4, 1.0) > MARGIN


def test_outputs_hold_no_special_ids_and_respect_length() -> None:
    m = model(5)
    for hyp in beam_search(m, sources(), beam=3, max_len_a=0.0, max_len_b=3):
        assert len(hyp) <= 3 and not set(hyp) & {PAD_ID, BOS_ID, EOS_ID}


def test_bad_beam() -> None:
    with pytest.raises(ConfigError, match="beam"):
        beam_search(model(), sources(), beam=0)
