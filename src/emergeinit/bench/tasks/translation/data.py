"""From data settings to token ids: pick the corpus, train or load the tokenizers, encode.

The result (:class:`TranslationData`) is a function of the settings alone, so a process that
runs several runs of a study prepares it once (:func:`prepare_data` is cached per process, and
the tokenizers are cached on disk in the study directory for every other process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ....errors import ConfigError
from .corpus import CorpusSettings, build_corpus
from .metrics import moses_detokenizer
from .parallel import ParallelText, has_bpe, load_parallel, undo_bpe
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, TokenizerSettings, load_or_train

SOURCES = ("numbers", "dates", "parallel")
TOKENIZED = ("auto", "yes", "no")


@dataclass(frozen=True)
class DataSettings:
    """Where the sentences come from (the ``data.*`` keys of a translation study).

    ``source`` is ``numbers`` or ``dates`` (the built-in corpus; ``train_size`` etc. apply)
    or ``parallel`` (``{train,valid,test}.{src_lang|tgt_lang}`` files in ``dir``).
    ``tokenized`` says whether the files are Moses-tokenized, which decides how ``bleu`` and
    ``chrf`` detokenize; ``auto`` = yes exactly when BPE marks are found (the IWSLT'14
    preparation does both).
    """

    source: str = "numbers"
    dir: str = ""
    src_lang: str = "en"
    tgt_lang: str = "de"
    tokenized: str = "auto"
    max_train: int = 0  # parallel: keep only the first N training pairs (0 = all)
    max_len: int = 256  # longer training pairs are dropped, longer test sources truncated
    train_size: int = 20000
    valid_size: int = 500
    test_size: int = 500
    max_number: int = 999_999
    max_terms: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(
                f"data.source must be one of {', '.join(SOURCES)}, got {self.source!r}."
            )
        if self.tokenized not in TOKENIZED:
            raise ConfigError(
                f"data.tokenized must be one of {', '.join(TOKENIZED)}, got {self.tokenized!r}."
            )
        if self.source == "parallel" and not self.dir:
            raise ConfigError(
                "data.source='parallel' needs data.dir, the folder holding "
                "{train,valid,test}.{src_lang,tgt_lang} "
                "(e.g. --set data.dir=iwslt14.tokenized.de-en)."
            )
        if not isinstance(self.max_len, int) or self.max_len < 8:
            raise ConfigError(f"data.max_len must be an integer >= 8, got {self.max_len!r}.")

    def corpus(self) -> CorpusSettings:
        """The built-in corpus's settings: ``source`` is its ``kind``, the rest share names."""
        shared = {f.name: getattr(self, f.name) for f in fields(CorpusSettings) if f.name != "kind"}
        return CorpusSettings(kind=self.source, **shared)


@dataclass
class EncodedSplit:
    """Token ids of one split: sources end with EOS, targets are BOS ... EOS."""

    src: list[Tensor]
    tgt: list[Tensor]
    references: list[str]  # target lines as given (BPE undone), for scoring

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class TranslationData:
    """Everything a run needs from the data."""

    train: EncodedSplit
    valid: EncodedSplit
    test: EncodedSplit
    src_vocab: int
    tgt_vocab: int
    decode_target: Callable[[Sequence[int]], str]
    bpe: bool = False  # hypotheses carry ``@@ `` marks to undo before scoring
    detokenize: Callable[[str], str] | None = None
    notes: list[str] = field(default_factory=list)

    def example_batch(self, size: int = 4) -> tuple[Tensor, Tensor]:
        """``(src, tgt_in)`` of the first training pairs: an example input for tracing."""
        pad = torch.nn.utils.rnn.pad_sequence
        src = pad(self.train.src[:size], batch_first=True, padding_value=PAD_ID)
        tgt = pad([t[:-1] for t in self.train.tgt[:size]], batch_first=True, padding_value=PAD_ID)
        return src, tgt


def load_texts(settings: DataSettings) -> dict[str, ParallelText]:
    """The raw sentence pairs of every split."""
    if settings.source == "parallel":
        return load_parallel(settings.dir, settings.src_lang, settings.tgt_lang,
                             max_train=settings.max_train or None)
    pair = (settings.src_lang, settings.tgt_lang)
    if pair not in (("en", "de"), ("de", "en")):
        raise ConfigError(
            f"the built-in {settings.source} corpus is English-German; data.src_lang and "
            f"data.tgt_lang must be 'en' and 'de' (either way round), got {pair}."
        )
    texts = build_corpus(settings.corpus())
    if pair == ("de", "en"):
        texts = {k: ParallelText(v.tgt, v.src) for k, v in texts.items()}
    return texts


def prepare_data(
    settings: DataSettings, tokenizer: TokenizerSettings, cache_dir: str | Path
) -> TranslationData:
    """Texts -> tokenizers (trained on the training split, cached in ``cache_dir``) -> ids."""
    return _prepare(settings, tokenizer, str(Path(cache_dir).resolve()))


@lru_cache(maxsize=2)
def _prepare(settings: DataSettings, tok: TokenizerSettings, cache_dir: str) -> TranslationData:
    texts = load_texts(settings)
    bpe = has_bpe(texts["train"].tgt) or has_bpe(texts["train"].src)
    tokenized = settings.tokenized == "yes" or (settings.tokenized == "auto" and bpe)
    # Fail before training, not at scoring time, if detokenizing is impossible.
    detokenize = moses_detokenizer(settings.tgt_lang) if tokenized else None
    notes: list[str] = []
    if bpe:
        notes.append("BPE marks (@@) found: undone before scoring"
                     + (", and before training sentencepiece" if tok.kind != "words" else ""))
    if bpe and tok.kind != "words":
        # sentencepiece learns its own subwords from whole words.
        texts = {k: ParallelText([undo_bpe(s) for s in v.src], [undo_bpe(t) for t in v.tgt])
                 for k, v in texts.items()}
    src_tok = load_or_train(texts["train"].src, tok, cache_dir, f"src-{settings.src_lang}")
    tgt_tok = load_or_train(texts["train"].tgt, tok, cache_dir, f"tgt-{settings.tgt_lang}")
    splits = {}
    for name, text in texts.items():
        split, affected = encode_split(
            text.src, text.tgt, src_tok.encode, tgt_tok.encode,
            max_len=settings.max_len, drop_long=name == "train",
        )
        if affected:
            what = "dropped" if name == "train" else "truncated"
            notes.append(f"{affected} {name} pairs longer than data.max_len="
                         f"{settings.max_len} tokens {what}")
        if not len(split):
            raise ConfigError(f"no {name} pairs left after the data.max_len filter.")
        split.references = [undo_bpe(r) for r in split.references] if name != "train" else []
        splits[name] = split
    return TranslationData(
        train=splits["train"], valid=splits["valid"], test=splits["test"],
        src_vocab=src_tok.vocab_size, tgt_vocab=tgt_tok.vocab_size,
        decode_target=tgt_tok.decode, bpe=bpe, detokenize=detokenize, notes=notes,
    )


def encode_split(
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    src_encode: Callable[[Sequence[str]], list[list[int]]],
    tgt_encode: Callable[[Sequence[str]], list[list[int]]],
    *,
    max_len: int,
    drop_long: bool,
) -> tuple[EncodedSplit, int]:
    """Encode a split; return it and how many pairs were dropped (``drop_long``) or truncated
    for exceeding ``max_len`` tokens (BOS/EOS included)."""
    src_ids, tgt_ids = src_encode(src_lines), tgt_encode(tgt_lines)
    src, tgt, refs, affected = [], [], [], 0
    for s, t, ref in zip(src_ids, tgt_ids, tgt_lines, strict=True):
        s, t = [*s, EOS_ID], [BOS_ID, *t, EOS_ID]
        if len(s) > max_len or len(t) > max_len:
            affected += 1
            if drop_long:
                continue
            s, t = [*s[: max_len - 1], EOS_ID], [*t[: max_len - 1], EOS_ID]
        src.append(torch.tensor(s, dtype=torch.long))
        tgt.append(torch.tensor(t, dtype=torch.long))
        refs.append(ref)
    return EncodedSplit(src, tgt, refs), affected


__all__ = ["SOURCES", "DataSettings", "EncodedSplit", "TranslationData", "encode_split",
           "load_texts", "prepare_data"]
