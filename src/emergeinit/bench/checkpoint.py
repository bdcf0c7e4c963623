"""Durable runs: atomic checkpoints, every random stream captured, a metrics stream that resumes.

A run directory holds ``metrics.jsonl`` (one JSON event per line, streamed as the run goes)
and ``checkpoint.pt`` (written every ``train.checkpoint_every`` steps and at the end). The
checkpoint records the byte length of ``metrics.jsonl`` it was taken at, so a resumed run cuts
the stream back to that length and every event after it is written again exactly once.

What makes it safe to kill a run at any instant:

- the metrics stream is fsynced *before* the checkpoint that points into it is written, so a
  checkpoint never refers to bytes that a crash could take back;
- a checkpoint is written to a temp file in the same folder, flushed, fsynced, and renamed over
  the old one (``os.replace`` is atomic on POSIX), then the folder is fsynced: a reader sees the
  old checkpoint or the new one, never half of one;
- checkpoints hold only tensors and plain Python values and are read with
  ``torch.load(weights_only=True)``, so a tampered file cannot run code; a file that does not
  load, belongs to another run, or points past the end of the metrics stream is set aside as
  ``checkpoint.pt.corrupt`` and the run restarts from scratch, with a message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import EmergeInitError
from .files import fsync_dir, remove_stale_temps, temp_path

FORMAT = 1
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"

log = logging.getLogger(__name__)


class CheckpointError(EmergeInitError, RuntimeError):
    """A checkpoint that cannot be used: unreadable, another run's, or inconsistent."""


# --- files ------------------------------------------------------------------------------------


def atomic_save(obj: dict[str, Any], path: Path) -> int:
    """``torch.save`` through a temp file, fsync and ``os.replace``; returns the bytes written."""
    tmp = temp_path(path)
    try:
        with tmp.open("xb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return size


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain values only)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, garbage, a pickle that is not just data
        raise CheckpointError(f"cannot be read ({type(exc).__name__}: {_first_line(exc)})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"is not an emergeinit checkpoint of format {FORMAT}")
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


@contextlib.contextmanager
def exclusive(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an ``flock`` on ``path`` (released by the kernel even on SIGKILL).

    Yields whether the lock is held; with ``wait`` it blocks until it is.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- random streams ---------------------------------------------------------------------------


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every global random stream, as tensors and plain lists (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(v) for v in state], "gauss": gauss},
        "cuda": [],
    }
    if device.type == "cuda":  # asking otherwise would initialize CUDA for nothing
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the run journal --------------------------------------------------------------------------


class RunJournal:
    """A run's durable record: its metrics stream and its checkpoint.

    :meth:`open` decides between resuming and starting afresh; :meth:`emit` appends an event;
    :meth:`save` fsyncs the stream and writes a checkpoint that points at its end. A journal
    with ``writer=False`` (DDP ranks other than 0) writes nothing: only rank 0 owns the files.
    """

    def __init__(self, run_dir: Path, run_id: str, *, writer: bool = True) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.writer = writer
        self.checkpoint_path = run_dir / CHECKPOINT
        self.metrics_path = run_dir / METRICS
        self.stream: BinaryIO | None = None
        self.resumed: dict[str, Any] | None = None
        self.previous_wall = 0.0  # wall seconds of earlier attempts, from the checkpoint
        self.started = time.perf_counter()
        self.notes: list[str] = []  # what open() had to repair, for the caller to report

    # opening -----------------------------------------------------------------------------

    def open(self) -> dict[str, Any] | None:
        """Resume from the checkpoint if there is a usable one, else start afresh.

        Returns the checkpoint (also kept as :attr:`resumed`) or ``None``. Never raises for a
        bad checkpoint: it is set aside, :attr:`notes` says why, and the run starts over.
        """
        self.started = time.perf_counter()
        if not self.writer:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.run_dir, CHECKPOINT)
        state: dict[str, Any] | None = None
        if self.checkpoint_path.is_file():
            try:
                state = self._check(load(self.checkpoint_path))
            except CheckpointError as exc:
                self.set_aside(f"checkpoint {self.checkpoint_path} {exc}")
        if state is None:
            self.stream = self.metrics_path.open("wb")
            for note in self.notes:
                self.emit({"event": "restart", "reason": note})
            return None
        self.stream = self.metrics_path.open("r+b")
        self.stream.truncate(state["metrics_offset"])  # events after the checkpoint go
        self.stream.seek(state["metrics_offset"])
        self.resumed = state
        self.previous_wall = float(state.get("wall_seconds", 0.0))
        return state

    def _check(self, state: dict[str, Any]) -> dict[str, Any]:
        if state.get("run_id") != self.run_id:
            raise CheckpointError(f"belongs to run {state.get('run_id')!r}, not {self.run_id!r}")
        if state.get("finished") and not isinstance(state.get("summary"), dict):
            raise CheckpointError("is marked finished but holds no summary")
        offset = state.get("metrics_offset")
        size = self.metrics_path.stat().st_size if self.metrics_path.is_file() else -1
        if not isinstance(offset, int) or not 0 <= offset <= size:
            raise CheckpointError(
                f"points at byte {offset} of {METRICS}, which holds {max(size, 0)} bytes"
            )
        return state

    def set_aside(self, reason: str) -> None:
        """Move an unusable checkpoint out of the way (kept for inspection) and say so."""
        message = f"run {self.run_id}: {reason}; the run restarts from scratch"
        self.notes.append(message)
        if not self.writer:  # under DDP rank 0 says it, once
            return
        log.error(message)
        if self.checkpoint_path.exists():
            os.replace(
                self.checkpoint_path, self.checkpoint_path.with_name(CHECKPOINT + ".corrupt")
            )

    def restart(self, reason: str) -> None:
        """Start over after a checkpoint that loaded but did not fit (:meth:`open` again)."""
        self.close()
        self.set_aside(reason)
        self.resumed = None
        self.previous_wall = 0.0
        if self.writer:
            self.stream = self.metrics_path.open("wb")
            self.emit({"event": "restart", "reason": self.notes[-1]})

    # writing -----------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        if self.stream is None:
            return
        line = json.dumps(event, default=_jsonable) + "\n"
        self.stream.write(line.encode("utf-8"))
        self.stream.flush()  # readers (and a crash) see whole lines as they come

    def wall_seconds(self) -> float:
        return self.previous_wall + time.perf_counter() - self.started

    def save(
        self,
        state: dict[str, Any],
        *,
        finished: bool = False,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Write a checkpoint holding ``state`` that points at the current end of the stream."""
        if not self.writer or self.stream is None:
            return
        self.stream.flush()
        os.fsync(self.stream.fileno())  # the stream first: the checkpoint must not outrun it
        payload = {
            **state,
            "format": FORMAT,
            "run_id": self.run_id,
            "finished": finished,
            "summary": summary,
            "metrics_offset": self.stream.tell(),
            "wall_seconds": self.wall_seconds(),
            "torch_version": str(torch.__version__),
        }
        atomic_save(payload, self.checkpoint_path)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.flush()
            with contextlib.suppress(OSError):
                os.fsync(self.stream.fileno())
            self.stream.close()
            self.stream = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """The events of a run's ``metrics.jsonl``, in order (none when there is no stream)."""
    path = run_dir / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
