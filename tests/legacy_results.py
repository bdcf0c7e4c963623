"""How ``results.csv`` was written and read before the results store (a frozen copy of the old
``emergeinit.bench.study`` helpers): the reference the store's tests and benchmark compare
with, so that files written by earlier versions keep loading exactly as they did."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FINISHED = ("ok", "diverged")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.legacy.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_results(path: Path, rows: Iterable[dict[str, Any]], cols: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in cols})
    atomic_write(path, buf.getvalue())


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


STATUSES = (*FINISHED, "failed")


def check_results(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The well-formed rows of ``results.csv`` (first per run id) and what is wrong with it.

    A row is well formed when it has exactly the header's fields, a 12-hex-digit run id and a
    known status. Nothing is raised: a damaged file costs only the runs whose rows it lost.
    """
    if not path.is_file():
        return [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"cannot be read ({type(exc).__name__}: {exc})"]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        raw = list(reader)
    except csv.Error as exc:
        return [], [f"is not valid CSV ({exc})"]
    header = reader.fieldnames or []
    if "run_id" not in header or "status" not in header:
        return [], ["has no run_id/status header"]
    rows: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for line, row in enumerate(raw, start=2):
        rid, status = row.get("run_id") or "", row.get("status") or ""
        if None in row or None in row.values():
            problems.append(
                f"row {line} has {'more' if None in row else 'fewer'} fields than the header"
            )
        elif not re.fullmatch(r"[0-9a-f]{12}", rid) or status not in STATUSES:
            problems.append(f"row {line} has run_id {rid[:20]!r} and status {status[:20]!r}")
        elif rid in rows:
            problems.append(f"row {line} repeats run {rid}")
        else:
            rows[rid] = row
    if not text.endswith("\n") and raw:
        problems.append("its last line is cut off")  # the row may be incomplete: drop it
        rows.pop(raw[-1].get("run_id") or "", None)
    return list(rows.values()), problems


_INT_COLUMNS = ("seed", "epochs", "steps")
_TEXT_COLUMNS = (
    "run_id",
    "status",
    "task",
    "dataset",
    "model",
    "init",
    "base",
    "order",  # the depth order and units columns came with the store (text, as base is)
    "units",
    "optimizer",
    "error",
)


def typed_rows(path: Path) -> list[dict[str, Any]]:
    """``results.csv`` rows with numbers as numbers and empty cells as ``None``."""
    out = []
    for raw in read_results(path):
        row: dict[str, Any] = {}
        for key, text in raw.items():
            if key in _TEXT_COLUMNS:
                row[key] = text
            elif text == "":
                row[key] = None
            elif key == "head":
                row[key] = text == "true"
            elif key in _INT_COLUMNS:
                row[key] = int(text)
            else:
                row[key] = float(text)
        out.append(row)
    return out
