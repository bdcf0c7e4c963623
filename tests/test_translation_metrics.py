"""Scores against sacrebleu called directly on known strings."""

from __future__ import annotations

import pytest
import sacrebleu

from emergeinit.bench.tasks.translation.metrics import score
from emergeinit.errors import ConfigError

REFS = ["The cat sat on the mat.", "It's raining, isn't it?", "dreihunderteinundzwanzig mal zwei"]
HYPS = ["The cat sat on a mat.", "It's raining, is n't it?", "dreihunderteinundzwanzig mal drei"]


def test_plain_text_matches_sacrebleu() -> None:
    s = score(HYPS, REFS)
    assert s.bleu == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert s.chrf == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    whitespace = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", force=True).score
    assert s.bleu_tok == pytest.approx(whitespace)
    assert s.bleu != s.bleu_tok  # 13a splits "mat." and "raining," ; whitespace does not


def test_perfect_and_empty_hypotheses() -> None:
    perfect = score(REFS, REFS)
    assert perfect.bleu == pytest.approx(100.0) and perfect.bleu_tok == pytest.approx(100.0)
    assert perfect.chrf == pytest.approx(100.0)
    assert score(["", "", ""], REFS).bleu == 0.0


def test_bpe_is_undone_before_scoring() -> None:
    refs = ["wir verstehen das ."]
    s = score(["wir ver@@ stehen das ."], refs, bpe=True)
    assert s.bleu_tok == pytest.approx(100.0)
    assert score(["wir ver@@ stehen das ."], refs).bleu_tok < 100.0


def test_tokenized_data_is_detokenized_for_bleu_and_chrf() -> None:
    # A stand-in for the Moses detokenizer: joins the space before punctuation.
    def detok(line: str) -> str:
        return line.replace(" .", ".").replace(" ,", ",")

    refs = ["hello , world ."]
    hyps = ["hello , world ."]
    s = score(hyps, refs, detokenize=detok)
    assert s.bleu_tok == pytest.approx(100.0)
    plain = sacrebleu.corpus_bleu(["hello, world."], [["hello, world."]]).score
    assert s.bleu == pytest.approx(plain)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="2 hypotheses for 3"):
        score(HYPS[:2], REFS)
    with pytest.raises(ConfigError, match="empty test set"):
        score([], [])
