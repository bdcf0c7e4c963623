"""Subword tokenizers trained on the training split and cached on disk.

Two kinds:

* ``sentencepiece`` (default): a sentencepiece BPE model per language, trained on that side of
  the training split.
* ``words``: one id per whitespace token of the data as given. With the IWSLT'14 preparation,
  whose files are already BPE-encoded, this is exactly fairseq's dictionary over those
  subwords, i.e. the paper's setup.

A trained tokenizer is stored in the cache directory (the study directory, so every run of a
study shares it) under a name keyed by a hash of the training lines and the settings; a second
call with the same data and settings loads it instead of training. Files are written to a
temporary name and renamed, so parallel workers racing to train the same model are safe.

Ids 0-3 are reserved in both kinds: padding, unknown, begin and end of sentence.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from ....errors import ConfigError
from ...files import atomic_write_bytes

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = frozenset((PAD_ID, UNK_ID, BOS_ID, EOS_ID))
KINDS = ("sentencepiece", "words")


class Tokenizer(Protocol):
    """Text <-> ids. ``encode`` adds no BOS/EOS; ``decode`` drops every special id."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, lines: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class TokenizerSettings:
    """How to build a tokenizer; part of the cache key."""

    kind: str = "sentencepiece"
    vocab_size: int = 8000
    character_coverage: float = 1.0
    min_count: int = 1  # ``words`` only: rarer tokens map to the unknown id

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"tokenizer.kind must be one of {', '.join(KINDS)}, got {self.kind!r}."
            )
        if not isinstance(self.vocab_size, int) or self.vocab_size < 8:
            raise ConfigError(
                f"tokenizer.vocab_size must be an integer >= 8, got {self.vocab_size!r}."
            )
        if not 0.9 <= self.character_coverage <= 1.0:
            raise ConfigError(
                "tokenizer.character_coverage must lie in [0.9, 1.0], "
                f"got {self.character_coverage!r}."
            )
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise ConfigError(
                f"tokenizer.min_count must be an integer >= 1, got {self.min_count!r}."
            )


class SentencePieceTokenizer:
    """A trained sentencepiece model (ids 0-3 are pad, unk, bos, eos)."""

    def __init__(self, model: bytes, path: Path | None = None) -> None:
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor(model_proto=model)
        self.path = path

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self._sp.encode(list(lines))]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._sp.decode([int(i) for i in ids if int(i) not in SPECIAL_IDS]))


class WordTokenizer:
    """One id per whitespace token, most frequent first (ties alphabetical, so deterministic)."""

    def __init__(self, words: Sequence[str], path: Path | None = None) -> None:
        self.words = ["<pad>", "<unk>", "<s>", "</s>", *words]
        self._ids = {w: i for i, w in enumerate(self.words)}
        self.path = path

    @classmethod
    def train(cls, lines: Iterable[str], settings: TokenizerSettings) -> WordTokenizer:
        counts = Counter(token for line in lines for token in line.split())
        ranked = sorted((w for w, c in counts.items() if c >= settings.min_count),
                        key=lambda w: (-counts[w], w))
        return cls(ranked[: settings.vocab_size - len(SPECIAL_IDS)])

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return [[self._ids.get(t, UNK_ID) for t in line.split()] for line in lines]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.words[int(i)] for i in ids if int(i) not in SPECIAL_IDS)


def cache_key(lines: Sequence[str], settings: TokenizerSettings) -> str:
    """A hex digest of the training lines, the settings and the library version."""
    digest = hashlib.sha256()
    version = _spm_version() if settings.kind == "sentencepiece" else "words-1"
    digest.update(json.dumps([asdict(settings), version], sort_keys=True).encode())
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def load_or_train(
    lines: Sequence[str], settings: TokenizerSettings, cache_dir: str | Path, name: str
) -> SentencePieceTokenizer | WordTokenizer:
    """The tokenizer for ``lines`` from ``cache_dir``, training and saving it if absent.

    ``name`` (e.g. ``"src-en"``) makes the file easy to find; the hash makes it correct.
    """
    if not lines:
        raise ConfigError(f"cannot train the {name} tokenizer on an empty training split.")
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(lines, settings)
    if settings.kind == "words":
        path = directory / f"{name}-words-{key}.json"
        if path.exists():
            return WordTokenizer(json.loads(path.read_text(encoding="utf-8")), path)
        words = WordTokenizer.train(lines, settings)
        kept = words.words[len(SPECIAL_IDS) :]
        atomic_write_bytes(path, json.dumps(kept, ensure_ascii=False).encode())
        words.path = path
        return words
    path = directory / f"{name}-spm-{key}.model"
    if path.exists():
        return SentencePieceTokenizer(path.read_bytes(), path)
    model = _train_sentencepiece(lines, settings)
    atomic_write_bytes(path, model)
    return SentencePieceTokenizer(model, path)


def _train_sentencepiece(lines: Sequence[str], settings: TokenizerSettings) -> bytes:
    try:
        import sentencepiece as spm
    except ImportError:
        raise ConfigError(
            "tokenizer.kind='sentencepiece' needs sentencepiece: "
            "pip install 'emergeinit[translation]'."
        ) from None
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(line for line in lines if line),
            model_writer=buffer,
            model_type="bpe",
            vocab_size=settings.vocab_size,
            # A small corpus has fewer pieces than asked for; use what it has instead of failing.
            hard_vocab_limit=False,
            character_coverage=settings.character_coverage,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            # Every line, in order, on one thread: the model is then a function of the data.
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
            max_sentence_length=1 << 16,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise ConfigError(f"sentencepiece training failed: {exc}") from None
    return buffer.getvalue()


def _spm_version() -> str:
    try:
        import sentencepiece as spm
    except ImportError:
        return "missing"
    return str(getattr(spm, "__version__", "unknown"))


__all__ = ["BOS_ID", "EOS_ID", "KINDS", "PAD_ID", "UNK_ID", "SentencePieceTokenizer", "Tokenizer",
           "TokenizerSettings", "WordTokenizer", "cache_key", "load_or_train"]
