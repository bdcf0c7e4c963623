"""The built-in corpus: English number words to German number words, generated offline.

``"three hundred twenty-one times forty"`` -> ``"dreihunderteinundzwanzig mal vierzig"``.
Sentences are one to ``max_terms`` numbers joined by ``plus``/``minus``/``times``, spelled by
``num2words`` (``lang="en"`` without the British "and" and commas; ``lang="de"``).

Splits are over disjoint *numbers*: no number in a test sentence occurs anywhere in training,
so test BLEU measures whether the model learned the spelling rules (German puts units before
tens, "einundzwanzig", and writes numbers below a million as one word) rather than memorised
pairs. Numbers below 100 are the exception: they are the atoms the others are built from (no
rule yields "siebzehn"), so they are always training numbers and never appear in valid/test.

German numbers below a million are single words, so word-level BLEU on this corpus counts
whole numbers right or wrong; chrF, on characters, gives partial credit for a nearly right
number. Both are reported.

``kind="dates"`` gives ``"the twenty-first of march nineteen ninety-nine"`` ->
``"der einundzwanzigste März neunzehnhundertneunundneunzig"``, split over disjoint dates.

Everything is a pure function of the arguments (``random.Random(seed)``, stable across Python
versions for integer seeds), so every run of a study sees the same corpus.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ....errors import ConfigError
from .parallel import ParallelText

CorpusKind = Literal["numbers", "dates"]
KINDS: tuple[str, ...] = ("numbers", "dates")

#: The words joining the numbers of one sentence (English, German).
OPERATORS = (("plus", "plus"), ("minus", "minus"), ("times", "mal"))
_ATOMS = 100  # numbers below this are always training numbers (see the module docstring)
_MONTHS_EN = ("january", "february", "march", "april", "may", "june", "july", "august",
              "september", "october", "november", "december")
_MONTHS_DE = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
              "September", "Oktober", "November", "Dezember")


@dataclass(frozen=True)
class CorpusSettings:
    """What to generate; sizes are sentence counts per split."""

    kind: str = "numbers"
    train_size: int = 20000
    valid_size: int = 500
    test_size: int = 500
    max_number: int = 999_999
    max_terms: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"data.kind must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        for name in ("train_size", "valid_size", "test_size", "max_terms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.max_number, int) or not 1000 <= self.max_number <= 10**12:
            raise ConfigError(
                f"data.max_number must be an integer from 1000 to 10**12, got {self.max_number!r}."
            )


def english_number(n: int) -> str:
    """American-style English words: 321 -> ``"three hundred twenty-one"``."""
    from num2words import num2words

    return _american(num2words(n, lang="en"))


def german_number(n: int) -> str:
    """German words: 321 -> ``"dreihunderteinundzwanzig"``."""
    from num2words import num2words

    return str(num2words(n, lang="de"))


def _american(words: str) -> str:
    # num2words writes British English ("one hundred and one", "nine thousand, nine");
    # dropping "and" and commas gives the form most users expect and shorter sentences.
    return " ".join(w for w in words.replace(",", "").split() if w != "and")


def build_corpus(settings: CorpusSettings | None = None) -> dict[str, ParallelText]:
    """The ``train``/``valid``/``test`` splits the settings describe (same result every call)."""
    settings = settings or CorpusSettings()
    _require_num2words()
    return dict(_build(settings))


@lru_cache(maxsize=4)
def _build(settings: CorpusSettings) -> tuple[tuple[str, ParallelText], ...]:
    if settings.kind == "dates":
        return _dates(settings)
    return _numbers(settings)


def _numbers(s: CorpusSettings) -> tuple[tuple[str, ParallelText], ...]:
    held = _held_out_numbers(s)
    excluded = set(held["valid"]) | set(held["test"])

    def draw_train(r: random.Random) -> int:
        while True:
            n = _draw_magnitude(r, s.max_number)
            if n not in excluded:
                return n

    def pool_draw(pool: list[int]) -> Callable[[random.Random], int]:
        # Same digit-count balance as training, restricted to the split's own numbers.
        buckets = _by_digits(pool)
        return lambda r: r.choice(buckets[r.randrange(len(buckets))])

    draws = (("train", s.train_size, draw_train),
             ("valid", s.valid_size, pool_draw(held["valid"])),
             ("test", s.test_size, pool_draw(held["test"])))
    result = []
    for name, size, draw in draws:
        r = random.Random(f"{s.seed}:{name}")
        src, tgt = [], []
        for _ in range(size):
            terms = [draw(r) for _ in range(r.randint(1, s.max_terms))]
            ops = [r.choice(OPERATORS) for _ in terms[1:]]
            src.append(_join([english_number(n) for n in terms], [en for en, _ in ops]))
            tgt.append(_join([german_number(n) for n in terms], [de for _, de in ops]))
        result.append((name, ParallelText(src, tgt)))
    return tuple(result)


def _held_out_numbers(s: CorpusSettings) -> dict[str, list[int]]:
    """Disjoint valid and test numbers, balanced over digit counts (3 digits and up).

    Each split takes up to ``size * max_terms / buckets`` numbers per digit count, but never
    more than a tenth of a bucket, so training keeps most of every magnitude (the 900
    three-digit numbers would otherwise be swallowed by the held-out splits).
    """
    rng = random.Random(s.seed)
    ranges = [(max(_ATOMS, 10 ** (d - 1)), min(s.max_number, 10**d - 1))
              for d in range(3, len(str(s.max_number)) + 1)]
    ranges = [(lo, hi) for lo, hi in ranges if hi - lo + 1 >= 20]  # skip a 1-number tail
    held: dict[str, list[int]] = {"valid": [], "test": []}
    for lo, hi in ranges:
        span = hi - lo + 1
        chosen = iter(rng.sample(range(lo, hi + 1), 2 * max(1, span // 10)))
        for name, size in (("valid", s.valid_size), ("test", s.test_size)):
            quota = min(span // 10, -(-size * s.max_terms // len(ranges)))
            held[name] += [next(chosen) for _ in range(max(1, quota))]
    return held


def _by_digits(numbers: list[int]) -> list[list[int]]:
    buckets: dict[int, list[int]] = {}
    for n in numbers:
        buckets.setdefault(len(str(n)), []).append(n)
    return [buckets[d] for d in sorted(buckets)]


def _draw_magnitude(r: random.Random, high: int) -> int:
    """A number in ``[0, high]`` whose digit count is uniform, so small numbers (the atoms)
    are seen often and six-digit ones do not make up 90% of the sentences."""
    digits = r.randint(1, len(str(high)))
    return r.randint(10 ** (digits - 1) if digits > 1 else 0, min(high, 10**digits - 1))


def _join(words: list[str], ops: list[str]) -> str:
    parts = [words[0]]
    for op, w in zip(ops, words[1:], strict=True):
        parts += [op, w]
    return " ".join(parts)


def _dates(s: CorpusSettings) -> tuple[tuple[str, ParallelText], ...]:
    from num2words import num2words

    first, last = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
    days = (last - first).days + 1
    total = s.train_size + s.valid_size + s.test_size
    if total > days:
        raise ConfigError(f"the dates corpus has {days} distinct dates; asked for {total}.")
    chosen = random.Random(s.seed).sample(range(days), total)
    bounds = {"train": (0, s.train_size),
              "valid": (s.train_size, s.train_size + s.valid_size),
              "test": (s.train_size + s.valid_size, total)}
    result = []
    for name, (lo, hi) in bounds.items():
        src, tgt = [], []
        for offset in chosen[lo:hi]:
            date = first + dt.timedelta(days=offset)
            month_en = _MONTHS_EN[date.month - 1]  # not calendar: it follows the locale
            src.append(f"the {_american(num2words(date.day, lang='en', to='ordinal'))} of "
                       f"{month_en} {_american(num2words(date.year, lang='en', to='year'))}")
            tgt.append(f"der {num2words(date.day, lang='de', to='ordinal')} "
                       f"{_MONTHS_DE[date.month - 1]} {num2words(date.year, lang='de', to='year')}")
        result.append((name, ParallelText(src, tgt)))
    return tuple(result)


def _require_num2words() -> None:
    try:
        import num2words  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the built-in number corpus needs num2words: pip install 'emergeinit[translation]'."
        ) from None


__all__ = ["KINDS", "OPERATORS", "CorpusSettings", "build_corpus", "english_number",
           "german_number"]
