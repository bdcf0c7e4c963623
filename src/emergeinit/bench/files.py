"""Durable file writes shared by the study directory, the results store, checkpoints and the
translation task's tokenizer files (docs/scaling.md, "Resume and durability").

A file is written to a temp name next to it (same filesystem, so the rename is atomic), flushed
and fsynced, then ``os.replace``-d over the target and the folder fsynced: readers, and a crash
at any instant, see the old file or the new one, never a part. A leaf module: it imports
nothing from the package.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(path: Path) -> Path:
    """A fresh temp name next to ``path``, ``.NAME.<pid>-<hex>.tmp``, matched by
    :func:`remove_stale_temps`. Opened with ``"x"``, it gets the umask's permissions (not
    ``mkstemp``'s 0600), so other users of a shared study directory can read the result."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def remove_stale_temps(folder: Path, name: str) -> None:
    """Temp files a killed writer of ``folder/name`` left behind; only call as the sole writer."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably and atomically, creating its folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with tmp.open("xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8, line ends as given."""
    atomic_write_bytes(path, text.encode("utf-8"))
