"""Users' parallel text: layout, clear errors, BPE detection and undo."""

from __future__ import annotations

from pathlib import Path

import pytest

from emergeinit.bench.tasks.translation.parallel import has_bpe, load_parallel, undo_bpe
from emergeinit.errors import ConfigError


def write(folder: Path, name: str, lines: list[str] | bytes) -> None:
    path = folder / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make(folder: Path, n: int = 3, src: str = "de", tgt: str = "en") -> Path:
    for split in ("train", "valid", "test"):
        write(folder, f"{split}.{src}", [f"das ist satz {i} ." for i in range(n)])
        write(folder, f"{split}.{tgt}", [f"this is sentence {i} ." for i in range(n)])
    return folder


def test_loads_three_splits(tmp_path: Path) -> None:
    texts = load_parallel(make(tmp_path), "de", "en")
    assert set(texts) == {"train", "valid", "test"}
    assert texts["test"].src[1] == "das ist satz 1 ."
    assert texts["test"].tgt[1] == "this is sentence 1 ."


def test_mismatched_line_counts(tmp_path: Path) -> None:
    make(tmp_path)
    write(tmp_path, "valid.en", ["one", "two"])
    with pytest.raises(ConfigError, match=r"valid\.de has 3 lines but valid\.en has 2"):
        load_parallel(tmp_path, "de", "en")


def test_empty_file(tmp_path: Path) -> None:
    make(tmp_path)
    write(tmp_path, "test.de", b"")
    with pytest.raises(ConfigError, match=r"test\.de is empty"):
        load_parallel(tmp_path, "de", "en")


def test_bad_encoding_names_file_and_line(tmp_path: Path) -> None:
    make(tmp_path)
    write(tmp_path, "train.de", "erste zeile\nzweite \xfcberraschung\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"train\.de is not valid UTF-8 .*line 2"):
        load_parallel(tmp_path, "de", "en")


def test_missing_files_and_directory(tmp_path: Path) -> None:
    make(tmp_path)
    with pytest.raises(ConfigError, match=r"lacks train\.fr"):
        load_parallel(tmp_path, "fr", "en")
    with pytest.raises(ConfigError, match="does not exist"):
        load_parallel(tmp_path / "nowhere", "de", "en")
    with pytest.raises(ConfigError, match="both 'de'"):
        load_parallel(tmp_path, "de", "de")


def test_empty_training_pairs_are_dropped_and_crlf_stripped(tmp_path: Path) -> None:
    make(tmp_path)
    write(tmp_path, "train.de", b"a\r\n\r\nc\r\n")
    write(tmp_path, "train.en", b"x\r\ny\r\n\r\n")
    texts = load_parallel(tmp_path, "de", "en")
    assert (texts["train"].src, texts["train"].tgt) == (["a"], ["x"])


def test_unicode_line_separators_do_not_split_sentences(tmp_path: Path) -> None:
    make(tmp_path)
    write(tmp_path, "test.de", ["eins\u2028zwei", "drei", "vier"])
    assert load_parallel(tmp_path, "de", "en")["test"].src[0] == "eins\u2028zwei"


def test_bpe_detection_and_undo() -> None:
    assert has_bpe(["wir ver@@ stehen das", "gut"])
    assert not has_bpe(["wir verstehen das", "e-mail @ home"])
    assert undo_bpe("wir ver@@ stehen das") == "wir verstehen das"
    assert undo_bpe("un@@ ver@@ ständ@@ lich .") == "unverständlich ."
    assert undo_bpe("ende@@") == "ende"  # a hypothesis cut mid-word: fairseq drops the mark
    assert undo_bpe("plain text") == "plain text"
