"""``results.csv`` as an append-only store: one fsynced line per finished run, validated loads.

``results.csv`` is the study's single source of truth, a plain CSV that pandas and spreadsheets
open (header, columns and cell formatting as described in ``docs/bench.md``). This module is the
only code that should read or write it:

- :class:`ResultsStore` is the study driver's handle (it holds the study lock, so it is the one
  writer). Opening it runs :func:`repair_results` once; :meth:`ResultsStore.append` then writes
  one line per finished run, flushed and fsynced: recording a run costs O(1) in the study's size.
- :func:`read_results` is the read-only load for everyone else (the report, the plots, a user's
  script). It never writes, so it may run while a driver appends.

Both loads validate every line by the same rules. A line is **damaged** when it is not UTF-8,
not valid CSV, has another number of fields than the header, a ``run_id`` that is not 12 hex
digits, a status other than ok/diverged/failed, or a cell that is not a number (an integer for
``seed``, ``epochs``, ``steps``; true/false for ``head``) in a numeric column. A damaged line is
never counted and is named (line number and why). A **repeated** ``run_id`` is never counted
twice: the *last* row counts, because the store only ever appends, so a later row is the later
outcome (a failed run that ran again, or a corrected copy a user added). The earlier row is named
in a warning, unless it is the routine case of a ``failed`` row followed by the run's next
outcome (then it is only logged).

:func:`repair_results` then rewrites ``results.csv`` once, atomically, without those lines and
appends each of them, with its line number and reason, to ``results.setaside.csv`` beside it.
What survives a kill at any instant (see ``docs/scaling.md#the-results-store-resultscsv``
for the full argument):

- an append is one ``write`` of a whole line to a file opened in append mode, then ``fsync``: a
  kill leaves the line whole, absent, or cut off without its newline. A cut-off last line is
  damaged: the next repairing load sets it aside, so the next append starts on a fresh line,
  and the run it held runs again (from its final checkpoint, so without training again);
- the repairing rewrite writes the set-aside lines to the side file (fsynced) and the new
  ``results.csv`` to a temp file (fsynced) *before* the one ``os.replace`` that swaps it in: at
  every instant ``results.csv`` is the old file or the new one, each holding every intact row.

Example:

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "results.csv"
>>> with ResultsStore(path, ["run_id", "status", "seed", "test_acc_final"]) as store:
...     store.append({"run_id": "0123456789ab", "status": "ok", "seed": 0, "test_acc_final": 0.5})
>>> print(path.read_text(), end="")
run_id,status,seed,test_acc_final
0123456789ab,ok,0,0.5
>>> read_results(path).rows
[{'run_id': '0123456789ab', 'status': 'ok', 'seed': 0, 'test_acc_final': 0.5}]
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EmergeInitError
from .files import atomic_write_bytes, fsync_dir, remove_stale_temps, temp_path

log = logging.getLogger(__name__)

SIDE_NAME = "results.setaside.csv"
"""Where the repairing load puts the lines it takes out of ``results.csv`` (beside it)."""
SIDE_COLUMNS = ("set_aside_at", "line", "reason", "text")

STATUSES = ("ok", "diverged", "failed")
FINISHED = ("ok", "diverged")

# How each column is typed on load (numbers as numbers, empty cells as None), the same rules as
# the report has always used. A column the store does not know (one a user added) is text, so
# adding a column in a spreadsheet never turns every row into damage.
TEXT_COLUMNS = frozenset(
    (
        "run_id", "status", "task", "dataset", "model", "init", "base", "order", "units",
        "optimizer", "error",
    )
)  # fmt: skip
INT_COLUMNS = frozenset(("seed", "epochs", "steps"))
BOOL_COLUMNS = frozenset(("head",))
NUMBER_COLUMNS = frozenset(
    (
        "alpha", "pivot", "lr", "val_acc_epoch1", "test_acc_epoch1", "val_acc_final",
        "test_acc_final", "test_loss", "train_loss_final", "log10_e_init", "log10_e_final",
        "init_seconds", "train_seconds", "wall_seconds", "bleu", "bleu_tok", "chrf", "val_bleu",
    )
)  # fmt: skip
NUMBER_PREFIXES = ("steps_to_",)
# Columns with few distinct values: their strings are shared between rows (memory at 10^6 rows).
_SHARED_TEXT = frozenset(
    ("status", "task", "dataset", "model", "init", "base", "order", "units", "optimizer")
)

_RUN_ID = re.compile(r"[0-9a-f]{12}")
_BOM = b"\xef\xbb\xbf"


class ResultsStoreError(EmergeInitError, ValueError):
    """A row or a column list the store refuses to write (nothing is written)."""


class ResultsChangedError(EmergeInitError, RuntimeError):
    """``results.csv`` changed while the driver repaired it: someone else writes to it."""


class ResultsWarning(UserWarning):
    """``results.csv`` holds damaged lines or repeated run ids (named in the message)."""


# --- writing a row ------------------------------------------------------------------------


def format_cell(value: Any) -> str:
    """A value as its ``results.csv`` cell: ``None`` empty, booleans ``true``/``false``, floats
    by ``repr`` (so they read back exactly), anything else by ``str``.

    >>> [format_cell(v) for v in (None, True, 0.1, 3, "mlp:784-10")]
    ['', 'true', '0.1', '3', 'mlp:784-10']
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_line(cells: Sequence[str]) -> str:
    """One CSV record, quoted only where needed, ending in ``\\n`` (Python's ``excel`` dialect)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


# --- typing and checking a row ------------------------------------------------------------


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        number = float(text)  # pandas writes an int column with empty cells as 3.0
        if number.is_integer():
            return int(number)
        raise


def _to_bool(text: str) -> bool:
    word = text.strip().lower()  # a spreadsheet writes TRUE, pandas True
    if word in ("true", "false"):
        return word == "true"
    raise ValueError(text)


_Convert = Callable[[str], Any]


def _converter(name: str, expected: Sequence[str]) -> tuple[_Convert | None, str]:
    """How to type a column (``None``: text kept as it is) and what the error calls it."""
    if name in TEXT_COLUMNS:
        return None, ""
    if name in INT_COLUMNS:
        return _to_int, "an integer"
    if name in BOOL_COLUMNS:
        return _to_bool, "true or false"
    if name in expected or name in NUMBER_COLUMNS or name.startswith(NUMBER_PREFIXES):
        return float, "a number"
    return None, ""  # a column of the user's own


class _Schema:
    """A header and how each of its columns is checked and typed."""

    def __init__(self, header: Sequence[str], expected: Sequence[str]) -> None:
        self.header = list(header)
        self.width = len(self.header)
        kinds = [_converter(name, expected) for name in self.header]
        self.typed = [(i, convert, what) for i, (convert, what) in enumerate(kinds) if convert]
        self.floats = [i for i, (convert, _) in enumerate(kinds) if convert is float]
        self.others = [(i, c) for i, (c, _) in enumerate(kinds) if c is not None and c is not float]
        self.shared = [i for i, name in enumerate(self.header) if name in _SHARED_TEXT]
        self.run_id = self.header.index("run_id")
        self.status = self.header.index("status")
        # Columns the caller expects that this file lacks (an older study): typed rows get
        # them empty, so every row has every expected key.
        self.missing: dict[str, str | None] = {
            name: (None if _converter(name, expected)[0] else "")
            for name in expected
            if name not in self.header
        }
        self._texts: dict[str, str] = {}

    def check(self, cells: list[Any]) -> tuple[dict[str, Any] | None, str]:
        """The typed row, or ``None`` and why the cells are not a results row (``cells`` is
        typed in place: pass a copy to keep it)."""
        if len(cells) != self.width:
            return None, f"{len(cells)} fields where the header has {self.width}"
        rid, status = cells[self.run_id], cells[self.status]
        if not _RUN_ID.fullmatch(rid):
            return None, f"run_id {rid[:40]!r} is not 12 hex digits"
        if status not in STATUSES:
            return None, f"status {status[:40]!r} is not ok, diverged or failed"
        try:  # this loop is most of a load's time: keep it lean
            for i in self.floats:
                text = cells[i]
                cells[i] = float(text) if text else None
            for i, convert in self.others:
                text = cells[i]
                cells[i] = convert(text) if text else None
        except ValueError:
            return None, self._why(cells)
        texts = self._texts
        for i in self.shared:  # few distinct values: share the strings (memory at 10^6 rows)
            text = cells[i]
            cells[i] = texts.setdefault(text, text)
        row = dict(zip(self.header, cells))
        if self.missing:
            row.update(self.missing)
        return row, ""

    def _why(self, cells: list[Any]) -> str:
        for i, convert, what in self.typed:
            text = cells[i]
            if isinstance(text, str) and text:  # not yet typed
                try:
                    convert(text)
                except ValueError:
                    return f"{self.header[i]} is {text[:40]!r}, not {what}"
        return "a cell is not a number"  # not reached: check() found one


def _usable_header(cells: Sequence[str]) -> bool:
    return "run_id" in cells and "status" in cells and all(cells) and len(set(cells)) == len(cells)


def _fit(text: str) -> str:
    keep = csv.field_size_limit() // 2
    if len(text) <= keep:
        return text
    return f"{text[:keep]}… [{len(text) - keep} characters cut]"


def _check_columns(columns: Sequence[str]) -> list[str]:
    out = list(columns)
    if not _usable_header(out):
        raise ResultsStoreError(
            "results.csv columns must be distinct, non-empty and include run_id and status, "
            f"got {out}"
        )
    return out


# --- what a load finds --------------------------------------------------------------------


@dataclass(frozen=True)
class Damaged:
    """A line of ``results.csv`` that is not a results row."""

    line: int  # 1-based, as an editor shows it
    reason: str
    text: str  # the line as read (bytes that are not UTF-8 shown as \\x escapes), no newline

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Repeat:
    """An earlier row of a run id that has a later row (the later one counts)."""

    run_id: str
    line: int  # the earlier row's first line
    status: str  # the earlier row's status
    counted_line: int  # the first line of the row that counts

    @property
    def routine(self) -> bool:
        """A failed run's row followed by its next outcome: what a resumed study writes."""
        return self.status == "failed"

    def __str__(self) -> str:
        return (
            f"line {self.line}: run {self.run_id} ({self.status}) is repeated on line "
            f"{self.counted_line}, which counts"
        )


@dataclass(frozen=True, eq=False)
class Results:
    """What a load of ``results.csv`` found.

    ``rows`` holds one typed row per run id (its last intact row), in file order: numbers as
    ``int``/``float``, ``head`` as ``bool``, empty numeric cells as ``None``, text as ``str``.
    """

    path: Path
    header: tuple[str, ...]
    rows: list[dict[str, Any]]
    damaged: tuple[Damaged, ...] = ()
    repeats: tuple[Repeat, ...] = ()
    unfinished_tail: bool = False
    """Read-only loads: the file ended in a line without its newline (an append under way, or
    one a kill cut off), left out and not reported; the driver's next repair sets it aside."""
    set_aside: bool = False  # the repairing load moved lines to :data:`SIDE_NAME`

    def finished(self) -> dict[str, dict[str, Any]]:
        """Rows of runs that finished (status ok or diverged), by run id."""
        return {r["run_id"]: r for r in self.rows if r["status"] in FINISHED}

    def problems(self) -> list[str]:
        """One line per damaged line and per repeat that is not routine, in line order."""
        found: list[tuple[int, str]] = [(d.line, str(d)) for d in self.damaged]
        found += [(r.line, str(r)) for r in self.repeats if not r.routine]
        return [text for _, text in sorted(found)]

    def ordered(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The rows in the order of ``run_ids`` (a study's run order), then any others."""
        by_id = {r["run_id"]: r for r in self.rows}
        out = [by_id.pop(rid) for rid in run_ids if rid in by_id]
        return out + list(by_id.values())


# --- the scan: one pass over the file, validating every line -------------------------------


@dataclass
class _File:
    """``results.csv`` as read: its complete lines (endings kept, split as ``csv`` expects:
    at ``\\n``, ``\\r\\n`` or ``\\r``) and a last line without its newline kept apart."""

    lines: list[str]
    tail: str | None
    not_text: frozenset[int]  # indexes of lines that are not UTF-8 (held surrogate-escaped)
    size: int
    identity: tuple[int, int, int, int]

    @classmethod
    def read(cls, path: Path) -> _File:
        with path.open("rb") as fh:
            identity = _identity(os.fstat(fh.fileno()))
            data = fh.read()
        size = len(data)
        if data.startswith(_BOM):  # a spreadsheet's "CSV UTF-8"
            data = data[len(_BOM) :]
        try:
            text, clean = data.decode("utf-8"), True
        except UnicodeDecodeError:
            text, clean = data.decode("utf-8", "surrogateescape"), False
        del data
        lines = io.StringIO(text, newline="").readlines()
        del text
        tail = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else None
        bad = frozenset() if clean else frozenset(i for i, t in enumerate(lines) if _bad_byte(t))
        return cls(lines, tail, bad, size, identity)


def _bad_byte(text: str) -> str:
    """The first byte of ``text`` that was not UTF-8, as ``0xff`` (empty if there is none)."""
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            return f"{ord(ch) - 0xDC00:#04x}"
    return ""


def _shown(text: str) -> str:
    """A line as the side file keeps it: no line end, bytes that are not UTF-8 as escapes."""
    text = text.rstrip("\r\n")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class _Scan:
    file: _File
    expected: list[str] | None
    schema: _Schema | None = None
    header_lines: range = range(0)  # the header's line indexes (empty: no header found)
    header_seen: bool = False
    counted: dict[str, tuple[int, int, dict[str, Any]]] = field(default_factory=dict)
    damaged: list[Damaged] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)
    drop: set[int] = field(default_factory=set)  # line indexes a rewrite leaves out
    repeat_lines: dict[int, int] = field(default_factory=dict)  # index -> its row's first index

    def damage(self, index: int, reason: str) -> None:
        lines = self.file.lines
        text = lines[index] if index < len(lines) else self.file.tail or ""
        self.damaged.append(Damaged(index + 1, reason, _shown(text)))
        self.drop.add(index)

    def alone(self, index: int) -> str:
        """Why one line, read on its own, is not a row (empty: no reason of its own)."""
        text = self.file.lines[index]
        if index in self.file.not_text:
            return f"not UTF-8 text (byte {_bad_byte(text)})"
        try:
            list(csv.reader([text], strict=True))
        except csv.Error as exc:
            return f"not valid CSV ({exc})"
        return ""

    def reject(self, first: int, last: int, reason: str) -> bool:
        """The record's first line is damaged. Returns False for a record of several lines:
        those after the first are then read again on their own (a stray quote on one line
        must not take the intact rows after it down with it)."""
        if last > first:
            reason = self.alone(first) or reason
        self.damage(first, reason)
        return last == first

    def record(self, cells: list[str], first: int, last: int) -> bool:
        """Judge one CSV record (lines ``first`` to ``last``); False: read on from ``first + 1``."""
        if not cells:  # a blank line: no data, left out of a rewrite without a word
            self.drop.update(range(first, last + 1))
            return True
        not_text = self.file.not_text
        if not_text and not not_text.isdisjoint(range(first, last + 1)):
            return self.reject(first, last, f"not UTF-8 text (byte {_bad_byte(''.join(cells))})")
        if not self.header_seen:
            self.header_seen = True
            if _usable_header(cells):
                self.schema = _Schema(cells, self.expected or [])
                self.header_lines = range(first, last + 1)
                return True
            broken = "not a results.csv header (no run_id and status columns)"
            if self.expected is None:
                return self.reject(first, last, broken)
            # No usable header: read the rows by the expected columns; the first line is
            # either a row (the header was deleted) or a broken header, set aside.
            self.schema = _Schema(self.expected, self.expected)
            if self.schema.check(list(cells))[0] is None:
                return self.reject(first, last, broken)
        if self.schema is None:
            return self.reject(first, last, "no usable header to read this line by")
        row, reason = self.schema.check(cells)
        if row is None:
            return self.reject(first, last, reason)
        rid = row["run_id"]
        earlier = self.counted.pop(rid, None)
        if earlier is not None:  # the last row counts; the earlier one goes
            self.repeats.append(Repeat(rid, earlier[0] + 1, earlier[2]["status"], first + 1))
            span = range(earlier[0], earlier[1] + 1)
            self.drop.update(span)
            self.repeat_lines.update(dict.fromkeys(span, earlier[0]))
        self.counted[rid] = (first, last, row)
        return True


def _scan(file: _File, expected: list[str] | None) -> _Scan:
    """Validate every line. Records are read by ``csv`` (C speed) from a position; a rejected
    record of several lines, or a CSV error, restarts the reader on the line after its first.
    A stray quote makes the reader run on until the quote closes or the cell passes csv's field
    size limit (128 KiB by default), so each one costs at most that much reading again."""
    scan = _Scan(file, expected)
    lines, end = file.lines, len(file.lines)
    start = 0
    while start < end:
        reader = csv.reader(map(lines.__getitem__, range(start, end)), strict=True)
        used = 0  # lines the reader has consumed
        restart = end
        try:
            for cells in reader:
                first, used = start + used, reader.line_num
                if not scan.record(cells, first, start + used - 1):
                    restart = first + 1
                    break
        except csv.Error as exc:
            first = start + used
            scan.damage(first, scan.alone(first) or f"not valid CSV ({exc})")
            restart = first + 1
        start = restart
    return scan


# --- files ----------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> int:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])
    return done


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _append_side(path: Path, entries: list[tuple[int, str, str]]) -> None:
    """Append set-aside lines to the side file, fsynced (created atomically with its header)."""
    side = path.with_name(SIDE_NAME)
    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    body = "".join(format_line([stamp, str(line), reason, text]) for line, reason, text in entries)
    if not side.exists():
        atomic_write_bytes(side, (format_line(SIDE_COLUMNS) + body).encode())
        return
    fd = os.open(side, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a kill cut the last entry short
            body = "\n" + body
        _write_all(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


# --- loads ----------------------------------------------------------------------------------


def _results(path: Path, scan: _Scan, header: Sequence[str], **kw: Any) -> Results:
    return Results(
        path=path,
        header=tuple(header),
        rows=[row for _, _, row in scan.counted.values()],
        damaged=tuple(sorted(scan.damaged, key=lambda d: d.line)),
        repeats=tuple(scan.repeats),
        **kw,
    )


def _listed(items: Sequence[object], most: int = 5) -> str:
    shown = "; ".join(str(i) for i in items[:most])
    return shown + (f"; and {len(items) - most} more" if len(items) > most else "")


def read_results(
    path: Path | str, columns: Sequence[str] | None = None, *, live: bool = True
) -> Results:
    """Load ``results.csv`` read-only: validated, typed, one row per run id; never writes.

    ``columns`` (the study's columns, when known) types columns the store does not know by
    name as numbers, reads a file whose header was lost, and gives every row every column.
    Damaged lines and repeated run ids are named in a :class:`ResultsWarning` (and returned);
    nothing raises for what the file holds (an ``OSError`` does for a file that cannot be
    read). A missing file is an empty result.

    ``live``: a driver may be appending (the default). A last line without its newline is then
    an append under way: left out quietly (``unfinished_tail``), and the file is read again if
    it grew meanwhile. With ``live=False`` (the caller knows no driver runs, e.g. it could take
    the study lock) such a line is damage, named like any other.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.csv"
    >>> _ = path.write_text("run_id,status,seed\\n0123456789ab,ok,1\\n0123456789ab,ok,2\\n")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     loaded = read_results(path)
    >>> loaded.rows
    [{'run_id': '0123456789ab', 'status': 'ok', 'seed': 2}]
    >>> print(caught[0].message)
    results.csv: 1 repeated run id(s) (the last row counts): line 2: run 0123456789ab (ok) is \
repeated on line 3, which counts
    """
    path = Path(path)
    expected = None if columns is None else _check_columns(columns)
    for _ in range(3 if live else 1):
        try:
            file = _File.read(path)
        except FileNotFoundError:
            return Results(path, tuple(expected or ()), [])
        try:
            grew = path.stat().st_size != file.size
        except FileNotFoundError:  # replaced under us: what we read was a whole file
            grew = False
        if file.tail is None or not grew:
            break
    scan = _scan(file, expected)
    if file.tail is not None and live:
        log.info("%s: left out the unfinished last line %d", path, len(file.lines) + 1)
    elif file.tail is not None:
        scan.damage(len(file.lines), _CUT_OFF)
    header = scan.schema.header if scan.schema else (expected or [])
    results = _results(path, scan, header, unfinished_tail=file.tail is not None and live)
    _warn(results, "not counted")
    return results


_CUT_OFF = "cut off: the last line has no newline (a write killed mid-line, or an editor)"


def repair_results(path: Path | str, columns: Sequence[str]) -> Results:
    """The driver's load: validate ``results.csv``, then make it hold only intact rows.

    Call it only as the study's one writer (holding the study lock). A missing file is created
    with the header ``columns``. Damaged lines (a cut-off last line included) and earlier rows
    of repeated run ids are appended to ``results.setaside.csv`` (with line number and reason),
    and ``results.csv`` is rewritten once without them, through an fsynced temp file and
    ``os.replace``; a header that lacks some of ``columns`` is completed (columns of the
    user's own are kept, at the end). An intact file is not rewritten. Returns what it found;
    raises :class:`ResultsChangedError` (having changed nothing) if the file changes meanwhile.
    """
    path = Path(path)
    expected = _check_columns(columns)
    remove_stale_temps(path.parent, path.name)
    remove_stale_temps(path.parent, SIDE_NAME)
    if not path.exists():
        atomic_write_bytes(path, format_line(expected).encode())
        return Results(path, tuple(expected), [])
    file = _File.read(path)
    scan = _scan(file, expected)
    if file.tail is not None:
        scan.damage(len(file.lines), _CUT_OFF)
    schema = scan.schema or _Schema(expected, expected)
    header = expected + [c for c in schema.header if c not in expected]
    rewrite = bool(scan.drop) or not scan.header_lines or schema.header != header
    if rewrite:
        _rewrite(path, scan, schema.header, header)
    results = _results(path, scan, header, set_aside=bool(scan.damaged or scan.repeats))
    if rewrite:
        log.info(
            "%s: rewritten with %d rows (%d damaged lines and %d repeated rows set aside to %s)",
            path, len(results.rows), len(results.damaged), len(results.repeats), SIDE_NAME,
        )  # fmt: skip
    _warn(results, f"set aside to {SIDE_NAME}")
    return results


def _warn(results: Results, fate: str) -> None:
    name = results.path.name
    if results.damaged:
        warnings.warn(
            f"{name}: {len(results.damaged)} damaged line(s) {fate}: {_listed(results.damaged)}",
            ResultsWarning,
            stacklevel=3,
        )
    loud = [r for r in results.repeats if not r.routine]
    if loud:
        warnings.warn(
            f"{name}: {len(loud)} repeated run id(s) (the last row counts): {_listed(loud)}",
            ResultsWarning,
            stacklevel=3,
        )
    quiet = len(results.repeats) - len(loud)
    if quiet:
        log.info("%s: %d failed row(s) superseded by the run's later row", name, quiet)


def _rewrite(path: Path, scan: _Scan, old: list[str], new: list[str]) -> None:
    """Write the kept lines to a temp file, set the dropped ones aside, swap the file in.

    Order matters for a kill at any instant: the temp file and the side file are fsynced
    before ``os.replace``, so ``results.csv`` is always a whole file holding every intact row,
    and every line taken out of it is already in the side file.
    """
    repeat_text: dict[int, list[str]] = {}
    tmp = temp_path(path)
    try:
        with tmp.open("xb") as dst:
            dst.write(format_line(new).encode())
            kept = _kept_lines(scan, repeat_text)
            if old == new:  # rows copied as they are (record ends made \n)
                dst.write("".join(kept).encode())
            else:  # header completed: each row's cells moved to their new columns
                where = [old.index(c) if c in old else -1 for c in new]
                for cells in csv.reader(kept, strict=True):
                    dst.write(format_line([cells[i] if i >= 0 else "" for i in where]).encode())
            dst.flush()
            os.fsync(dst.fileno())
        if _identity(path.stat()) != scan.file.identity:
            raise ResultsChangedError(
                f"{path} changed while it was being repaired: only the study's driver may "
                "write it (nothing was changed; run again)"
            )
        entries = [(d.line, d.reason, d.text) for d in scan.damaged]
        for r in scan.repeats:
            reason = f"superseded: run {r.run_id} has a later row (line {r.counted_line})"
            entries.append(
                (r.line, reason, "".join(repeat_text.get(r.line - 1, [])).rstrip("\r\n"))
            )
        if entries:
            _append_side(path, sorted(entries))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _kept_lines(scan: _Scan, repeat_text: dict[int, list[str]]) -> Iterator[str]:
    """The lines of counted rows, each row's last line ending in ``\\n`` (inner lines of a
    quoted cell kept as they are); collects the text of repeated rows set aside on the way."""
    drop, header, repeats = scan.drop, scan.header_lines, scan.repeat_lines
    ends = {last for _, last, _ in scan.counted.values()}
    for i, line in enumerate(scan.file.lines):
        if i in drop or i in header:
            if i in repeats:
                repeat_text.setdefault(repeats[i], []).append(line)
            continue
        yield line.rstrip("\r\n") + "\n" if i in ends else line


# --- the driver's handle ----------------------------------------------------------------------


class ResultsStore:
    """The study driver's handle on ``results.csv``: a repairing load, then O(1) appends.

    Use it while holding the study lock (the driver is the one writer). Entering (or
    :meth:`open`) runs :func:`repair_results` and keeps what it found in :attr:`results`;
    :meth:`append` writes one run's row. Rows are written in the file's column order (the
    ``columns`` given, then any column a user added, left empty).
    """

    def __init__(self, path: Path | str, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = _check_columns(columns)
        self.results: Results | None = None
        self._fd: int | None = None
        self._schema: _Schema | None = None

    def open(self) -> Results:
        """Repair ``results.csv`` (creating it if missing) and open it for appending."""
        self.close()
        self.results = repair_results(self.path, self.columns)
        self._schema = _Schema(self.results.header, self.columns)
        # Read access too: append checks the last byte before writing (``pread``).
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        return self.results

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultsStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line_of(self, row: Mapping[str, Any]) -> str:
        """``row`` as the line :meth:`append` writes; raises :class:`ResultsStoreError` if the
        line would not load back as the same row (a bad run id, status or number).

        A text cell longer than half of ``csv.field_size_limit()`` (64 Ki characters by
        default; readers refuse cells past the limit) is cut there, ending in
        ``… [N characters cut]``: only a runaway error message gets that long, and the run's
        ``error.txt`` keeps it whole.
        """
        if self._schema is None:
            raise ResultsStoreError("the results store is not open")
        cells = [_fit(format_cell(row.get(c))) for c in self._schema.header]
        typed, reason = self._schema.check(list(cells))
        if typed is None:
            raise ResultsStoreError(f"refusing to write run {row.get('run_id')!r}: {reason}")
        return format_line(cells)

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one run's row as one line, flushed and fsynced (O(1) in the file's size).

        A bad row raises :class:`ResultsStoreError` before anything is written. If the write
        fails part way, the file is cut back to where it was. If ``results.csv`` was replaced
        or removed behind the store's back (an editor saving it), the new file is repaired and
        the row appended there, with a warning.
        """
        data = self.line_of(row).encode("utf-8")
        fd = self._current_fd()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # Only a writer that broke the one-writer rule can leave this; never glue our row
            # onto its cut-off line.
            warnings.warn(
                f"{self.path.name} did not end with a newline; the row of run "
                f"{row.get('run_id')} starts on a new line",
                ResultsWarning,
                stacklevel=2,
            )
            data = b"\n" + data
        written = 0
        try:
            written = _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            if written < len(data):  # never leave half a row behind us
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            raise

    def _current_fd(self) -> int:
        if self._fd is None:
            raise ResultsStoreError("the results store is not open")
        try:
            replaced = os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            replaced = True
        if replaced:
            warnings.warn(
                f"{self.path} was replaced or removed while the study ran; appending to the "
                "file now there (runs whose rows it lacks run again on the next resume)",
                ResultsWarning,
                stacklevel=3,
            )
            self.open()
            assert self._fd is not None
        return self._fd
