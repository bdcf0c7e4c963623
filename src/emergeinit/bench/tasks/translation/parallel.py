"""Parallel text: the in-memory pair of sentence lists, and users' files on disk.

Users' data follows the layout the standard IWSLT'14 preparation (fairseq's
``prepare-iwslt14.sh``) writes: one sentence per line, ``{train,valid,test}.{LANG}`` in one
directory, the two languages line-aligned. That preparation Moses-tokenizes, lowercases and
applies subword-nmt BPE, marking split words with ``@@ ``; :func:`undo_bpe` reverses the last
step exactly as fairseq's ``--remove-bpe`` does, which scoring must do first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ....errors import ConfigError

SPLITS = ("train", "valid", "test")
BPE_MARK = "@@"
_LANG = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ParallelText:
    """Line-aligned source and target sentences of one split."""

    src: list[str]
    tgt: list[str]

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ConfigError(
                f"parallel text needs as many targets as sources, got {len(self.src)} sources "
                f"and {len(self.tgt)} targets."
            )

    def __len__(self) -> int:
        return len(self.src)


def has_bpe(lines: list[str], *, sample: int = 2000) -> bool:
    """Whether ``lines`` carry subword-nmt BPE marks (a token ending in ``@@``).

    Only the first ``sample`` lines are read: BPE-encoded files mark dozens of words in any
    few hundred lines, and plain text essentially never ends a word in ``@@``.
    """
    return any(
        token.endswith(BPE_MARK) for line in lines[:sample] for token in line.split()
    )


def undo_bpe(line: str) -> str:
    """Join BPE pieces back into words: ``"ver@@ stehen"`` -> ``"verstehen"`` (fairseq's rule)."""
    return (line + " ").replace(BPE_MARK + " ", "").rstrip()


def read_lines(path: Path) -> list[str]:
    """The stripped lines of a UTF-8 text file, with errors that name the file and line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"missing file {path}.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_number = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path} is not valid UTF-8 (byte {exc.start}, line {line_number}); convert it, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.name}.utf8`."
        ) from None
    # splitlines() would also split on \x1c, \x85, \u2028 and other Unicode line breaks,
    # which occur inside sentences of real corpora and would silently misalign the sides.
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.rstrip("\r").strip() for line in lines]
    if not lines:
        raise ConfigError(f"{path} is empty; each split needs at least one sentence.")
    return lines


def load_parallel(
    directory: str | Path,
    src_lang: str,
    tgt_lang: str,
    *,
    splits: tuple[str, ...] = SPLITS,
    max_train: int | None = None,
) -> dict[str, ParallelText]:
    """Read ``{split}.{src_lang}`` and ``{split}.{tgt_lang}`` for every split in ``directory``.

    Training pairs with an empty side are dropped (they teach nothing); validation and test
    pairs are kept as they are, so scores stay comparable with other tools. ``max_train``
    keeps only the first training pairs (for quick runs).
    """
    root = Path(directory).expanduser()
    for name, lang in (("data.src_lang", src_lang), ("data.tgt_lang", tgt_lang)):
        if not isinstance(lang, str) or not _LANG.fullmatch(lang):
            raise ConfigError(
                f"{name} must be a language suffix such as 'de' or 'en', got {lang!r}."
            )
    if src_lang == tgt_lang:
        raise ConfigError(f"data.src_lang and data.tgt_lang are both {src_lang!r}.")
    if not root.is_dir():
        raise ConfigError(
            f"parallel data directory {root} does not exist; it must hold "
            f"{', '.join(f'{s}.{src_lang}/{s}.{tgt_lang}' for s in splits)} "
            "(see docs/translation.md for the IWSLT'14 preparation)."
        )
    missing = [
        f"{split}.{lang}" for split in splits for lang in (src_lang, tgt_lang)
        if not (root / f"{split}.{lang}").is_file()
    ]
    if missing:
        present = sorted(p.name for p in root.iterdir() if p.is_file())[:12]
        raise ConfigError(
            f"parallel data directory {root} lacks {', '.join(missing)}; files present: "
            f"{', '.join(present) or 'none'}. Set data.src_lang/data.tgt_lang to the suffixes "
            "your files use."
        )
    result: dict[str, ParallelText] = {}
    for split in splits:
        src_path, tgt_path = root / f"{split}.{src_lang}", root / f"{split}.{tgt_lang}"
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if len(src) != len(tgt):
            raise ConfigError(
                f"{src_path.name} has {len(src)} lines but {tgt_path.name} has {len(tgt)} in "
                f"{root}; parallel files must be line-aligned."
            )
        if split == "train":
            pairs = [(s, t) for s, t in zip(src, tgt, strict=True) if s and t]
            if not pairs:
                raise ConfigError(f"every training pair in {root} has an empty side.")
            if max_train is not None:
                pairs = pairs[:max_train]
            src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
        result[split] = ParallelText(src, tgt)
    return result


__all__ = ["SPLITS", "ParallelText", "has_bpe", "load_parallel", "read_lines", "undo_bpe"]
