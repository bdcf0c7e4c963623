"""The results store: O(1) appends, validated loads, damaged lines set aside, repeats counted once.

Fast lane: no training runs, only small CSV files.
"""

from __future__ import annotations

import csv
import doctest
import fcntl
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import legacy_results as legacy
import pytest

from emergeinit.bench import config, store, study
from emergeinit.bench.store import (
    SIDE_NAME,
    ResultsStore,
    ResultsStoreError,
    ResultsWarning,
    read_results,
    repair_results,
)

COLUMNS = study.columns(config.load("smoke"))


def make_row(i: int, status: str = "ok", **changes: Any) -> dict[str, Any]:
    """A row shaped like ``study.result_row``'s, with the awkward cells real rows have."""
    emergence = i % 3 == 0
    row: dict[str, Any] = {
        "run_id": f"{i:012x}",
        "status": status,
        "task": "classification",
        "dataset": "synthetic",
        "model": "mlp:64-32-10",
        "init": "emergence" if emergence else "kaiming",
        "base": "kaiming_normal" if emergence else "",
        "alpha": 2.0 if emergence else "",
        "pivot": 0.5 if emergence else "",
        "head": (i % 2 == 0) if emergence else "",
        "optimizer": "sgd",
        "lr": 0.1,
        "seed": i % 5,
        "epochs": 2,
        "val_acc_epoch1": 0.1 + i / 7,
        "test_acc_epoch1": 1 / 3,
        "val_acc_final": float("nan") if status == "diverged" else 0.9,
        "test_acc_final": 1e-300,
        "test_loss": float("inf") if status == "diverged" else 0.25,
        "train_loss_final": -0.0,
        "steps": 120,
        "steps_to_0.6": None,
        "steps_to_0.9": 60,
        "log10_e_init": 12.345678901234567,
        "log10_e_final": None,
        "init_seconds": 0.001,
        "train_seconds": 2.5,
        "wall_seconds": 3.0,
        "error": 'ValueError: bad "thing", see\nline two' if status == "failed" else "",
    }
    row.update(changes)
    return row


def todays_file(path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> bytes:
    """What the driver before the store wrote (``legacy_results.write_results``)."""
    legacy.write_results(path, rows, columns)
    return path.read_bytes()


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    return [make_row(0), make_row(1, "failed"), make_row(2, "diverged"), make_row(3)]


@pytest.fixture
def quiet() -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings (and fail a test that expected none by checking the list)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def lines_of(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResultsWarning)]


# --- writing ------------------------------------------------------------------------------------


def test_appended_lines_are_todays_exact_bytes(
    tmp_path: Path, rows: list[dict[str, Any]], quiet: list[warnings.WarningMessage]
) -> None:
    expected = todays_file(tmp_path / "old.csv", rows)
    path = tmp_path / "results.csv"
    with ResultsStore(path, COLUMNS) as results:
        for row in rows:
            results.append(row)
    assert path.read_bytes() == expected
    assert not messages(quiet)


def test_cells_are_formatted_as_today() -> None:
    values = [None, True, False, 0.1, 1e-300, float("nan"), float("inf"), -0.0, 3, "a,b", 'q"']
    assert [store.format_cell(v) for v in values] == [legacy._cell(v) for v in values]


def test_a_file_written_today_loads_identically_and_is_left_as_it_is(
    tmp_path: Path, rows: list[dict[str, Any]], quiet: list[warnings.WarningMessage]
) -> None:
    path = tmp_path / "results.csv"
    data = todays_file(path, rows)
    inode = path.stat().st_ino
    expected = legacy.typed_rows(path)
    loaded = read_results(path, COLUMNS)
    assert _same(loaded.rows, expected)
    assert loaded.header == tuple(COLUMNS)
    with ResultsStore(path, COLUMNS) as results:
        assert results.results is not None
        assert _same(results.results.rows, expected)
        assert set(results.results.finished()) == {"000000000000", "000000000002", "000000000003"}
    assert path.read_bytes() == data and path.stat().st_ino == inode  # not rewritten
    assert not list(tmp_path.glob(SIDE_NAME))
    assert not messages(quiet)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal rows, NaN equal to NaN (a diverged run's accuracy)."""

    def norm(v: Any) -> Any:
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [{k: norm(v) for k, v in r.items()} for r in a] == [
        {k: norm(v) for k, v in r.items()} for r in b
    ]


def test_typed_values(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "results.csv"
    todays_file(path, rows)
    first = read_results(path, COLUMNS).rows[0]
    assert first["seed"] == 0 and type(first["seed"]) is int
    assert first["head"] is True and first["alpha"] == 2.0
    assert first["steps_to_0.6"] is None and first["steps_to_0.9"] == 60.0
    assert first["error"] == "" and first["log10_e_init"] == 12.345678901234567
    failed = read_results(path, COLUMNS).rows[1]
    assert failed["error"] == 'ValueError: bad "thing", see\nline two'
    assert failed["base"] == "" and failed["alpha"] is None and failed["head"] is None


def test_the_append_is_one_line_added_to_the_same_file(
    tmp_path: Path, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    data = todays_file(path, rows)
    inode = path.stat().st_ino
    with ResultsStore(path, COLUMNS) as results:
        assert results._fd is not None
        assert fcntl.fcntl(results._fd, fcntl.F_GETFL) & os.O_APPEND
        fsyncs: list[int] = []
        real_fsync = os.fsync

        def counting_fsync(fd: int) -> None:
            fsyncs.append(fd)
            real_fsync(fd)

        def no_rewrite(*args: object) -> None:
            raise AssertionError("an append must not replace the file")

        monkeypatch.setattr(os, "fsync", counting_fsync)
        monkeypatch.setattr(os, "replace", no_rewrite)
        new = make_row(9)
        results.append(new)
        assert fsyncs == [results._fd]  # flushed to disk before append returns
    after = path.read_bytes()
    assert path.stat().st_ino == inode
    assert after[: len(data)] == data  # nothing before the new line moved
    line = store.format_line([legacy._cell(new.get(c)) for c in COLUMNS])
    assert after[len(data) :] == line.encode()


def test_a_bad_row_is_refused_before_anything_is_written(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    path = tmp_path / "results.csv"
    data = todays_file(path, rows)
    with ResultsStore(path, COLUMNS) as results:
        for bad in (
            make_row(9, status="done"),
            make_row(9, run_id="nothex"),
            make_row(9, test_loss="low"),
            make_row(9, seed=1.5),
        ):
            with pytest.raises(ResultsStoreError, match="refusing to write run"):
                results.append(bad)
    assert path.read_bytes() == data


def test_a_write_that_fails_part_way_is_cut_back(
    tmp_path: Path, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    data = todays_file(path, rows)
    real_write = os.write

    def half_then_fail(fd: int, payload: bytes) -> int:
        real_write(fd, payload[: len(payload) // 2])
        raise OSError(28, "No space left on device")

    with ResultsStore(path, COLUMNS) as results:
        monkeypatch.setattr(os, "write", half_then_fail)
        with pytest.raises(OSError):
            results.append(make_row(9))
        assert path.read_bytes() == data
        monkeypatch.setattr(os, "write", real_write)
        results.append(make_row(9))
    assert [r["run_id"] for r in read_results(path, COLUMNS).rows][-1] == "000000000009"


def test_a_new_store_writes_its_header_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with ResultsStore(path, COLUMNS):
        pass
    assert path.read_text() == ",".join(COLUMNS) + "\n"
    ((tmp, final),) = replaced
    assert tmp.startswith(".results.csv.") and tmp.endswith(".tmp") and final == "results.csv"


# --- damaged lines ------------------------------------------------------------------------------

INTACT = 4  # rows before and after the damaged line


def _row_line(row: dict[str, Any], columns: list[str] = COLUMNS) -> bytes:
    return store.format_line([legacy._cell(row.get(c)) for c in columns]).encode()


def _cells(**changes: Any) -> bytes:
    return _row_line(make_row(50, **changes))


DAMAGE = {
    "garbage": (b"hello world\n", "1 fields where the header has"),
    "fewer fields": (_cells().replace(b",0.25,", b","), "fields where the header has"),
    "more fields": (_cells().rstrip(b"\n") + b",extra\n", "fields where the header has"),
    "non-numeric cell": (_cells(test_loss="low"), "test_loss is 'low', not a number"),
    "non-integer seed": (_cells(seed="1.5"), "seed is '1.5', not an integer"),
    "bad head": (_cells(head="maybe"), "head is 'maybe', not true or false"),
    "bad status": (_cells(status="done"), "status 'done' is not ok, diverged or failed"),
    "bad run id": (_cells(run_id="run-7"), "run_id 'run-7' is not 12 hex digits"),
    "not utf-8": (b"\xff\xfe" + _cells()[2:], "not UTF-8 text (byte 0xff)"),
    "nul bytes": (b"\x00\x00\x00\x00\n", "1 fields where the header has"),
    "stray quote": (b'oops,"never closed\n', "not valid CSV"),
    "bad quoting": (b'"a"b,c\n', "not valid CSV"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_line_is_named_and_set_aside_keeping_every_intact_row(
    tmp_path: Path, kind: str, quiet: list[warnings.WarningMessage]
) -> None:
    bad, why = DAMAGE[kind]
    before = [make_row(i, "failed" if i == 1 else "ok") for i in range(INTACT)]
    after = [make_row(i) for i in range(INTACT, 2 * INTACT)]
    path = tmp_path / "results.csv"
    clean = todays_file(tmp_path / "clean.csv", before + after)
    lines = lines_of(clean)
    # The failed row's error cell spans two lines: header + 1 + 2 + 1 lines before the damage.
    at = 1 + INTACT + 1
    path.write_bytes(b"".join([*lines[:at], bad, *lines[at:]]))
    expected = legacy.typed_rows(tmp_path / "clean.csv")

    loaded = read_results(path, COLUMNS)  # read-only: named, not counted, nothing moved
    assert _same(loaded.rows, expected)
    assert [(d.line, d.reason) for d in loaded.damaged] == [
        (at + 1, loaded.damaged[0].reason)
    ] and why in loaded.damaged[0].reason
    (message,) = messages(quiet)
    assert f"line {at + 1}: " in message and why in message
    assert path.read_bytes().count(b"\n") == clean.count(b"\n") + 1
    assert not (tmp_path / SIDE_NAME).exists()

    quiet.clear()
    repaired = repair_results(path, COLUMNS)  # the driver's load: set aside, file rewritten
    assert _same(repaired.rows, expected)
    assert path.read_bytes() == clean
    side = (tmp_path / SIDE_NAME).read_text()
    assert f",{at + 1}," in side and why.split("'")[0] in side
    assert "set aside to results.setaside.csv" in messages(quiet)[0]

    quiet.clear()
    inode = path.stat().st_ino
    again = repair_results(path, COLUMNS)  # now intact: no rewrite, no word
    assert not again.damaged and path.stat().st_ino == inode and not messages(quiet)


def test_a_stray_quote_does_not_swallow_the_rows_after_it(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    good = [make_row(i) for i in range(30)]
    lines = lines_of(todays_file(tmp_path / "clean.csv", good))
    # Each stray quote opens a cell that the next rows would close if read as CSV.
    text = b"".join([lines[0], b'x,"a\n', *lines[1:11], b'"\n', *lines[11:]])
    path.write_bytes(text)
    with pytest.warns(ResultsWarning):
        loaded = read_results(path, COLUMNS)
    assert [r["run_id"] for r in loaded.rows] == [r["run_id"] for r in good]
    assert [d.line for d in loaded.damaged] == [2, 13]


class CountingLines(list):  # type: ignore[type-arg]
    """The file's lines, counting how often the reader fetches one."""

    fetched = 0

    def __getitem__(self, index: Any) -> Any:
        CountingLines.fetched += 1
        return super().__getitem__(index)


def test_a_stray_quote_costs_at_most_the_field_size_limit_of_reading_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    good = [make_row(i) for i in range(500)]  # no quote anywhere to close the stray one
    lines = lines_of(todays_file(tmp_path / "clean.csv", good))
    path.write_bytes(b"".join([lines[0], b'"stray\n', *lines[1:]]))
    real_read = store._File.read

    def counting_read(file: Path) -> Any:
        found = real_read(file)
        found.lines = CountingLines(found.lines)
        return found

    monkeypatch.setattr(store._File, "read", counting_read)
    CountingLines.fetched = 0
    limit = csv.field_size_limit(20 * len(lines[1]))  # the stray cell gives up after ~20 rows
    try:
        with pytest.warns(ResultsWarning, match="line 2: not valid CSV"):
            loaded = read_results(path, COLUMNS)
    finally:
        csv.field_size_limit(limit)
    assert len(loaded.rows) == 500
    assert CountingLines.fetched < len(lines) + 1 + 25  # not the whole file read twice


def test_a_runaway_error_message_is_cut_to_what_readers_accept(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    huge = "RuntimeError: " + "x" * csv.field_size_limit()
    with ResultsStore(path, COLUMNS) as results:
        results.append(make_row(1, "failed", error=huge))
    (row,) = read_results(path, COLUMNS).rows
    keep = csv.field_size_limit() // 2
    assert row["error"] == huge[:keep] + f"… [{len(huge) - keep} characters cut]"


def test_a_cut_off_last_line_is_not_damage_to_a_reader_but_is_set_aside_by_the_driver(
    tmp_path: Path, rows: list[dict[str, Any]], quiet: list[warnings.WarningMessage]
) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, rows)
    expected = legacy.typed_rows(path)
    cut = _row_line(make_row(7))[:40]  # a kill mid-append
    path.write_bytes(clean + cut)

    loaded = read_results(path, COLUMNS)
    assert loaded.unfinished_tail and not loaded.damaged and not messages(quiet)
    assert _same(loaded.rows, expected)
    settled = read_results(path, COLUMNS, live=False)  # no driver runs: it is damage
    assert not settled.unfinished_tail and _same(settled.rows, expected)
    assert [d.line for d in settled.damaged] == [len(lines_of(clean)) + 1]
    assert "cut off" in messages(quiet)[0]

    with ResultsStore(path, COLUMNS) as results:
        assert results.results is not None
        (damaged,) = results.results.damaged
        assert damaged.line == len(lines_of(clean)) + 1 and "cut off" in damaged.reason
        assert damaged.text == cut.decode()
        assert path.read_bytes() == clean  # set aside: the next append starts on a new line
        results.append(make_row(7))
    assert path.read_bytes() == clean + _row_line(make_row(7))
    assert cut.decode() in (tmp_path / SIDE_NAME).read_text()


def test_a_row_cut_inside_a_multi_line_cell_is_set_aside_line_by_line(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, rows)
    failed = _row_line(make_row(8, "failed"))
    cut = failed[: failed.index(b"\n") + 4]  # the first line of the row and a bit of the next
    path.write_bytes(clean + cut)
    with pytest.warns(ResultsWarning):
        repaired = repair_results(path, COLUMNS)
    assert len(repaired.rows) == len(rows)
    assert path.read_bytes() == clean
    assert [d.line for d in repaired.damaged] == [
        len(lines_of(clean)) + 1,
        len(lines_of(clean)) + 2,
    ]


def test_a_reader_racing_an_append_reads_again(
    tmp_path: Path, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, rows)
    line = _row_line(make_row(8, "failed"))  # two physical lines
    path.write_bytes(clean + line[:-5])  # the writer is mid-write as the reader starts
    real_read = store._File.read
    calls = []

    def read_then_finish(file: Path) -> Any:
        calls.append(1)
        found = real_read(file)
        if len(calls) == 1:
            with path.open("ab") as out:  # ...and finishes before the reader is done
                out.write(line[-5:])
        return found

    monkeypatch.setattr(store._File, "read", read_then_finish)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_results(path, COLUMNS)
    assert len(calls) == 2 and not loaded.unfinished_tail and not loaded.damaged
    assert [r["run_id"] for r in loaded.rows][-1] == "000000000008"


def test_a_spreadsheets_bom_and_crlf_are_read(
    tmp_path: Path, quiet: list[warnings.WarningMessage]
) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, [make_row(0), make_row(2, "diverged"), make_row(3)])
    expected = legacy.typed_rows(path)
    excel = b"\xef\xbb\xbf" + clean.replace(b"\n", b"\r\n")  # "CSV UTF-8" from a spreadsheet
    excel = excel.replace(b",true,", b",TRUE,").replace(b",false,", b",FALSE,")
    path.write_bytes(excel)
    assert _same(read_results(path, COLUMNS).rows, expected)
    with ResultsStore(path, COLUMNS) as results:
        results.append(make_row(9))
    assert _same(read_results(path, COLUMNS).rows, [*expected, *_typed([make_row(9)], tmp_path)])
    assert not messages(quiet)


def _typed(new: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    todays_file(tmp_path / "typed.csv", new)
    return legacy.typed_rows(tmp_path / "typed.csv")


def test_integers_written_as_floats_by_pandas_are_read(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, [make_row(0)])
    path.write_bytes(clean.replace(b",120,", b",120.0,"))
    (row,) = read_results(path, COLUMNS).rows
    assert row["steps"] == 120 and type(row["steps"]) is int


# --- repeated run ids ---------------------------------------------------------------------------


def test_a_copied_row_is_counted_once_with_a_warning(
    tmp_path: Path, rows: list[dict[str, Any]], quiet: list[warnings.WarningMessage]
) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, rows)
    last = lines_of(clean)[-1]
    path.write_bytes(clean + last)
    loaded = read_results(path, COLUMNS)
    assert [r["run_id"] for r in loaded.rows] == [r["run_id"] for r in rows]
    (repeat,) = loaded.repeats
    n = len(lines_of(clean))
    assert (repeat.line, repeat.counted_line) == (n, n + 1) and not repeat.routine
    (message,) = messages(quiet)
    assert f"line {n}: run 000000000003 (ok) is repeated on line {n + 1}, which counts" in message

    quiet.clear()
    repaired = repair_results(path, COLUMNS)
    assert path.read_bytes() == clean and len(repaired.rows) == len(rows)
    assert "superseded: run 000000000003 has a later row" in (tmp_path / SIDE_NAME).read_text()


def test_the_last_row_of_a_run_counts(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "results.csv"
    todays_file(path, rows)
    with ResultsStore(path, COLUMNS) as results:
        results.append(make_row(0, test_acc_final=0.75))  # a corrected copy, appended
    with pytest.warns(ResultsWarning, match="run 000000000000 .ok. is repeated"):
        loaded = read_results(path, COLUMNS)
    assert [r["test_acc_final"] for r in loaded.rows if r["run_id"] == "000000000000"] == [0.75]
    assert len(loaded.rows) == len(rows)


def test_a_failed_run_that_ran_again_is_routine(
    tmp_path: Path,
    rows: list[dict[str, Any]],
    quiet: list[warnings.WarningMessage],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "results.csv"
    todays_file(path, rows)
    with ResultsStore(path, COLUMNS) as results:
        assert results.results is not None
        assert "000000000001" not in results.results.finished()  # so the driver runs it again
        results.append(make_row(1, "ok"))
    caplog.set_level("INFO", logger="emergeinit.bench.store")
    loaded = read_results(path, COLUMNS)
    assert {r["run_id"]: r["status"] for r in loaded.rows}["000000000001"] == "ok"
    assert len(loaded.rows) == len(rows) and loaded.repeats[0].routine
    assert not loaded.problems() and not messages(quiet)
    assert "superseded" in caplog.text

    repaired = repair_results(path, COLUMNS)  # next resume: one row per run again
    assert len(lines_of(path.read_bytes())) == 1 + len(rows)
    assert [r["status"] for r in repaired.rows if r["run_id"] == "000000000001"] == ["ok"]
    with (tmp_path / SIDE_NAME).open(newline="") as fh:
        (entry,) = csv.DictReader(fh)
    assert entry["reason"].startswith("superseded: run 000000000001 has a later row")
    assert (
        entry["line"] == "3" and entry["text"] + "\n" == _row_line(make_row(1, "failed")).decode()
    )


# --- headers ------------------------------------------------------------------------------------


def test_a_lost_header_is_restored(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, rows)
    path.write_bytes(clean.split(b"\n", 1)[1])
    assert len(read_results(path, COLUMNS).rows) == len(rows)
    repair_results(path, COLUMNS)
    assert path.read_bytes() == clean


def test_a_broken_header_is_set_aside(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "results.csv"
    clean = todays_file(path, rows)
    path.write_bytes(b"id,state" + clean[clean.index(b"\n") :])
    with pytest.warns(ResultsWarning, match="line 1: not a results.csv header"):
        repaired = repair_results(path, COLUMNS)
    assert len(repaired.rows) == len(rows) and path.read_bytes() == clean


def test_without_columns_a_headerless_file_is_all_named_never_raised(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(b"garbage\n" + _row_line(make_row(0)))
    with pytest.warns(ResultsWarning):
        loaded = read_results(path)
    assert loaded.rows == [] and [d.line for d in loaded.damaged] == [1, 2]


def test_an_older_header_is_completed_and_a_users_column_kept(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    older = [c for c in COLUMNS if c not in ("bleu", "bleu_tok", "chrf", "val_bleu")]
    mine = [*older[:3], "note", *older[3:]]  # a column the user added in a spreadsheet
    path = tmp_path / "results.csv"
    marked = [dict(r, note=f"look at {r['run_id']}, later") for r in rows]
    todays_file(path, marked, mine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_results(path, COLUMNS)
        assert loaded.rows[0]["note"] == "look at 000000000000, later"
        assert loaded.rows[0]["bleu"] is None  # every expected column present
        with ResultsStore(path, COLUMNS) as results:
            results.append(make_row(9))
    assert path.read_text().splitlines()[0] == ",".join([*COLUMNS, "note"])
    again = read_results(path, COLUMNS)
    assert [r["note"] for r in again.rows] == [r["note"] for r in marked] + [""]
    assert _same(
        [{k: v for k, v in r.items() if k != "note"} for r in again.rows],
        _typed([*rows, make_row(9)], tmp_path),
    )


def test_an_empty_file_gets_its_header(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(b"")
    assert repair_results(path, COLUMNS).rows == []
    assert path.read_text() == ",".join(COLUMNS) + "\n"


def test_a_missing_file_reads_as_empty(tmp_path: Path) -> None:
    loaded = read_results(tmp_path / "results.csv", COLUMNS)
    assert loaded.rows == [] and not loaded.damaged and loaded.header == tuple(COLUMNS)


def test_bad_columns_are_refused() -> None:
    with pytest.raises(ResultsStoreError, match="run_id and status"):
        ResultsStore("results.csv", ["run_id", "seed"])


# --- a kill at any instant of the repairing load ------------------------------------------------


def _damaged_study(path: Path) -> tuple[bytes, bytes, list[str]]:
    """A file with two damaged lines, a repeat and a cut-off tail; returns (damaged bytes,
    repaired bytes, intact run ids)."""
    good = [make_row(i, "failed" if i == 2 else "ok") for i in range(6)]
    clean = todays_file(path, good)
    lines = lines_of(clean)
    damaged = b"".join([*lines[:3], b"garbage\n", *lines[3:6], _cells(status="??"), *lines[6:]])
    damaged += lines[-1] + b"00000"  # the last row again, then a cut-off line
    path.write_bytes(damaged)
    return damaged, clean, [r["run_id"] for r in good]


class KillSwitch:
    """Raises ``KeyboardInterrupt`` (what a signal raises) at the ``nth`` call it sees."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1
        if self.calls == self.nth:
            raise KeyboardInterrupt(f"killed at call {self.nth}")

    def around(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.tick()
            return real(*args, **kwargs)

        return wrapped

    def between_lines(self, real: Callable[..., Iterator[bytes]]) -> Callable[..., Iterator[bytes]]:
        def wrapped(*args: Any) -> Iterator[bytes]:
            for line in real(*args):
                self.tick()
                yield line

        return wrapped


# Each step, and the least number of places it can fail at: every fsync (temp file, side
# file, folder), each os.replace (side file creation, the swap), the temp file after each
# line written, the side file append.
STEPS = {"fsync": 3, "replace": 2, "write": 5, "side": 1}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_the_repair_loses_no_intact_row_whichever_step_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Fail each call of each step of the repair in turn and check that results.csv is the
    old file or the repaired one, holding every intact row, with no temp file left."""
    path = tmp_path / "results.csv"
    damaged, clean, ids = _damaged_study(path)
    outcomes: list[bytes] = []
    for nth in range(1, 100):
        switch = KillSwitch(nth)
        if step == "fsync":
            monkeypatch.setattr(os, "fsync", switch.around(os.fsync))
        elif step == "replace":
            monkeypatch.setattr(os, "replace", switch.around(os.replace))
        elif step == "side":
            monkeypatch.setattr(store, "_append_side", switch.around(store._append_side))
        else:
            monkeypatch.setattr(store, "_kept_lines", switch.between_lines(store._kept_lines))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                repair_results(path, COLUMNS)
            except KeyboardInterrupt:
                monkeypatch.undo()
                now = path.read_bytes()
                outcomes.append(now)
                assert now in (damaged, clean)  # the old file or the new one, never half
                loaded = read_results(path, COLUMNS)
                assert [r["run_id"] for r in loaded.rows] == ids
                assert not list(tmp_path.glob(".results.csv.*.tmp"))
                if now == clean:  # swapped in: every line it took out is in the side file
                    side = (tmp_path / SIDE_NAME).read_text()
                    assert "garbage" in side and "??" in side and "cut off" in side
                path.write_bytes(damaged)
                (tmp_path / SIDE_NAME).unlink(missing_ok=True)
                continue
        monkeypatch.undo()
        break  # nth is past the last call: the repair ran through
    assert len(outcomes) >= STEPS[step]
    assert path.read_bytes() == clean
    assert damaged in outcomes  # a kill before the swap leaves the old file


def test_a_file_changed_during_the_repair_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    damaged, _, _ = _damaged_study(path)
    real_scan = store._scan

    def scan_then_someone_writes(fh: Any, expected: Any) -> Any:
        found = real_scan(fh, expected)
        with path.open("ab") as out:
            out.write(b"\n")
        return found

    monkeypatch.setattr(store, "_scan", scan_then_someone_writes)
    with pytest.raises(store.ResultsChangedError):
        repair_results(path, COLUMNS)
    assert path.read_bytes() == damaged + b"\n"
    assert not (tmp_path / SIDE_NAME).exists()


def test_a_file_replaced_under_the_driver_gets_the_next_row(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    path = tmp_path / "results.csv"
    todays_file(path, rows)
    with ResultsStore(path, COLUMNS) as results:
        todays_file(tmp_path / "edited.csv", rows[:2])
        os.replace(tmp_path / "edited.csv", path)  # an editor saves over it
        with pytest.warns(ResultsWarning, match="was replaced"):
            results.append(make_row(9))
    assert [r["run_id"] for r in read_results(path, COLUMNS).rows] == [
        "000000000000",
        "000000000001",
        "000000000009",
    ]


# --- the rest of the API ------------------------------------------------------------------------


def test_rows_in_a_studys_order(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "results.csv"
    todays_file(path, rows)
    loaded = read_results(path, COLUMNS)
    order = ["000000000003", "000000000000", "ffffffffffff"]
    assert [r["run_id"] for r in loaded.ordered(order)] == [
        "000000000003",
        "000000000000",
        "000000000001",
        "000000000002",
    ]


def test_the_store_agrees_with_the_old_loader() -> None:
    assert store.STATUSES == legacy.STATUSES and store.FINISHED == legacy.FINISHED
    numeric = [c for c in COLUMNS if c not in store.TEXT_COLUMNS]
    assert all(
        c in store.INT_COLUMNS
        or c in store.BOOL_COLUMNS
        or c in store.NUMBER_COLUMNS
        or c.startswith(store.NUMBER_PREFIXES)
        for c in numeric
    )


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(store, verbose=False)
    assert tried > 0 and failures == 0
