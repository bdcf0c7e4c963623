"""Tokenizers: round trips, reserved ids, and the on-disk cache keyed by data + settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from emergeinit.bench.tasks.translation import tokenizer as tk
from emergeinit.bench.tasks.translation.corpus import CorpusSettings, build_corpus
from emergeinit.errors import ConfigError

LINES = build_corpus(CorpusSettings(train_size=300, valid_size=5, test_size=5))["train"].tgt
SETTINGS = tk.TokenizerSettings(vocab_size=64)


def test_sentencepiece_round_trip_and_reserved_ids(tmp_path: Path) -> None:
    tok = tk.load_or_train(LINES, SETTINGS, tmp_path, "tgt-de")
    ids = tok.encode(LINES[:20])
    assert all(min(row) > tk.EOS_ID for row in ids)  # 0-3 are never produced for text
    assert [tok.decode(row) for row in ids] == LINES[:20]
    assert tok.decode([tk.BOS_ID, *ids[0], tk.EOS_ID, tk.PAD_ID]) == LINES[0]
    assert 8 <= tok.vocab_size <= 64


def test_cache_reuses_the_trained_model(tmp_path: Path) -> None:
    first = tk.load_or_train(LINES, SETTINGS, tmp_path, "tgt-de")
    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".model"]
    stamp = files[0].stat().st_mtime_ns
    second = tk.load_or_train(LINES, SETTINGS, tmp_path, "tgt-de")
    assert sorted(tmp_path.iterdir()) == files and files[0].stat().st_mtime_ns == stamp
    assert second.encode(LINES[:5]) == first.encode(LINES[:5])


def test_cache_key_depends_on_data_and_settings(tmp_path: Path) -> None:
    key = tk.cache_key(LINES, SETTINGS)
    assert tk.cache_key(list(LINES), tk.TokenizerSettings(vocab_size=64)) == key
    assert tk.cache_key(LINES[:-1], SETTINGS) != key
    assert tk.cache_key(LINES, tk.TokenizerSettings(vocab_size=65)) != key
    tk.load_or_train(LINES, SETTINGS, tmp_path, "tgt-de")
    tk.load_or_train(LINES[:-1], SETTINGS, tmp_path, "tgt-de")
    assert len(list(tmp_path.glob("*.model"))) == 2


def test_word_tokenizer_keeps_given_segmentation(tmp_path: Path) -> None:
    lines = ["wir ver@@ stehen das", "das ist gut", "gut"]
    settings = tk.TokenizerSettings(kind="words", vocab_size=100)
    tok = tk.load_or_train(lines, settings, tmp_path, "src-de")
    assert tok.decode(tok.encode(["das ver@@ stehen wir"])[0]) == "das ver@@ stehen wir"
    assert tok.encode(["unbekannt"]) == [[tk.UNK_ID]]
    again = tk.load_or_train(lines, settings, tmp_path, "src-de")
    assert again.encode(lines) == tok.encode(lines)
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.kind"):
        tk.TokenizerSettings(kind="chars")
    with pytest.raises(ConfigError, match="vocab_size"):
        tk.TokenizerSettings(vocab_size=2)
    with pytest.raises(ConfigError, match="empty training split"):
        tk.load_or_train([], SETTINGS, tmp_path, "src")
