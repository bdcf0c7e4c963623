"""Greedy and beam search on a tiny random model, against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from emergeinit.bench.tasks.translation.decode import beam_search, greedy_decode
from emergeinit.bench.tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID
from emergeinit.errors import ConfigError
from emergeinit.models.transformer import Seq2SeqTransformer

VOCAB = 6  # ids 0-3 special; 1 (unk), 4 and 5 can be generated
REAL = (1, 4, 5)


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


def brute_force(m: Seq2SeqTransformer, src: torch.Tensor, max_tokens: int, lp: float) -> list[int]:
    hyps = [list(h) for n in range(max_tokens + 1) for h in itertools.product(REAL, repeat=n)]
    return max(hyps, key=lambda h: log_prob(m, src, h) / (len(h) + 1) ** lp)


def test_greedy_matches_stepwise_argmax() -> None:
    m = model()
    src = sources()
    out = greedy_decode(m, src, max_len_a=0.0, max_len_b=4)
    for row, hyp in zip(src, out, strict=True):
        memory, pad = m.encode(row[None])
        tokens = [BOS_ID]
        for _ in range(4):  # at most max_len_b tokens, then the output is cut
            logits = m.decode(torch.tensor([tokens]), memory, pad)[0, -1]
            logits[[PAD_ID, BOS_ID]] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == EOS_ID:
                break
            tokens.append(nxt)
        assert hyp == tokens[1:]


def test_beam_one_is_greedy() -> None:
    m = model(1)
    src = sources()
    assert beam_search(m, src, beam=1, max_len_a=0.0, max_len_b=5) == greedy_decode(
        m, src, max_len_a=0.0, max_len_b=5
    )


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_is_exact_search(length_penalty: float) -> None:
    # With a beam wider than every set of live hypotheses, nothing is pruned: beam search
    # must return the best-scoring hypothesis of all 1 + 3 + 9 possible ones.
    m = model(2)
    src = sources()
    out = beam_search(m, src, beam=20, length_penalty=length_penalty, max_len_a=0.0,
                      max_len_b=2)
    for row, hyp in zip(src, out, strict=True):
        expected = brute_force(m, row[row.ne(PAD_ID)], 2, length_penalty)
        assert log_prob(m, row[row.ne(PAD_ID)], hyp) == pytest.approx(
            log_prob(m, row[row.ne(PAD_ID)], expected), abs=1e-5
        )


def test_beam_scores_at_least_greedy_on_these_inputs() -> None:
    m = model(3)
    src = sources()
    greedy = greedy_decode(m, src, max_len_a=0.0, max_len_b=4)
    beam = beam_search(m, src, beam=4, length_penalty=0.0, max_len_a=0.0, max_len_b=4)
    for row, g, b in zip(src, greedy, beam, strict=True):
        real = row[row.ne(PAD_ID)]
        assert log_prob(m, real, b) >= log_prob(m, real, g) - 1e-5


def test_batched_equals_one_by_one() -> None:
    m = model(4)
    src = sources()
    for decode in (greedy_decode, lambda m, s, **k: beam_search(m, s, beam=3, **k)):
        together = decode(m, src, max_len_a=0.0, max_len_b=4)
        alone = [decode(m, row[row.ne(PAD_ID)][None], max_len_a=0.0, max_len_b=4)[0]
                 for row in src]
        assert together == alone


def test_outputs_hold_no_special_ids_and_respect_length() -> None:
    m = model(5)
    for hyp in beam_search(m, sources(), beam=3, max_len_a=0.0, max_len_b=3):
        assert len(hyp) <= 3 and not set(hyp) & {PAD_ID, BOS_ID, EOS_ID}


def test_bad_beam() -> None:
    with pytest.raises(ConfigError, match="beam"):
        beam_search(model(), sources(), beam=0)
