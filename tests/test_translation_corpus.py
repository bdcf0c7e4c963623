"""The built-in number corpus: deterministic, disjoint splits, correct spellings."""

from __future__ import annotations

import re

import pytest

from emergeinit.bench.tasks.translation.corpus import (
    OPERATORS,
    CorpusSettings,
    build_corpus,
    english_number,
    german_number,
)
from emergeinit.errors import ConfigError

SMALL = CorpusSettings(train_size=400, valid_size=60, test_size=60, max_number=99_999, seed=3)
OPS_EN = "|".join(en for en, _ in OPERATORS)


def numbers_of(line: str) -> list[str]:
    """The number phrases of an English sentence (split at the operators)."""
    return [part.strip() for part in re.split(rf"\b(?:{OPS_EN})\b", line)]


def test_spellings() -> None:
    assert english_number(321) == "three hundred twenty-one"
    assert english_number(999_999) == "nine hundred ninety-nine thousand nine hundred ninety-nine"
    assert german_number(321) == "dreihunderteinundzwanzig"
    assert german_number(17) == "siebzehn"


def test_deterministic() -> None:
    a = build_corpus(SMALL)
    b = build_corpus(CorpusSettings(**{**SMALL.__dict__}))  # a distinct but equal object
    assert {k: (v.src, v.tgt) for k, v in a.items()} == {k: (v.src, v.tgt) for k, v in b.items()}
    other = build_corpus(CorpusSettings(**{**SMALL.__dict__, "seed": 4}))
    assert other["train"].src != a["train"].src


def test_sizes_and_alignment() -> None:
    corpus = build_corpus(SMALL)
    assert [len(corpus[s]) for s in ("train", "valid", "test")] == [400, 60, 60]
    for split in corpus.values():
        for src, tgt in zip(split.src, split.tgt, strict=True):
            assert len(numbers_of(src)) == len(tgt.split()) // 2 + 1
            assert src == src.lower() and src.strip() == src


def test_held_out_numbers_never_occur_in_training() -> None:
    corpus = build_corpus(SMALL)
    train = {n for line in corpus["train"].src for n in numbers_of(line)}
    valid = {n for line in corpus["valid"].src for n in numbers_of(line)}
    test = {n for line in corpus["test"].src for n in numbers_of(line)}
    assert test and valid
    assert not test & train
    assert not valid & train
    assert not valid & test
    # Numbers below 100 are training atoms only (valid/test numbers have 3+ digits).
    assert all(("hundred" in n or "thousand" in n) for n in test | valid)


def test_each_target_matches_its_source() -> None:
    corpus = build_corpus(SMALL)
    lookup = {english_number(n): german_number(n) for n in range(0, 100_000, 1)
              if n % 97 == 0 or n < 1000}
    checked = 0
    for src, tgt in zip(corpus["test"].src, corpus["test"].tgt, strict=True):
        for en, de in zip(numbers_of(src), tgt.split()[::2], strict=True):
            if en in lookup:
                assert lookup[en] == de
                checked += 1
    assert checked > 0


def test_dates() -> None:
    settings = CorpusSettings(kind="dates", train_size=50, valid_size=10, test_size=10, seed=1)
    corpus = build_corpus(settings)
    assert corpus["test"].src[0].startswith("the ")
    assert corpus["test"].tgt[0].startswith("der ")
    assert not set(corpus["test"].src) & set(corpus["train"].src)


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match=r"data\.kind"):
        CorpusSettings(kind="letters")
    with pytest.raises(ConfigError, match="train_size"):
        CorpusSettings(train_size=0)
    with pytest.raises(ConfigError, match="max_number"):
        CorpusSettings(max_number=50)
