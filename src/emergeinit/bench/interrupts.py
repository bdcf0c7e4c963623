"""Ctrl-C and SIGTERM for a study's driver: one clean stop, whatever phase the study is in.

While :func:`stop_on_signals` is active (in the main thread), the first SIGINT or SIGTERM raises
:class:`Stopped` where the driver is, and every later one is ignored, so the stop (pool
workers terminated, the progress display closed, files left whole) runs to its end undisturbed:
a double Ctrl-C gives one message, not a traceback. Pool workers never see Ctrl-C (they ignore
SIGINT from the moment they start; the driver stops them). The driver turns :class:`Stopped`
into :class:`StudyInterrupted`, which says what was saved and how to resume.

Exit statuses of ``emergeinit bench`` / ``emergeinit report``: 130 after SIGINT, 143 after
SIGTERM (128 + the signal number, as shells report them).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Stopped", "StudyInterrupted", "holding_sigint", "stop_on_signals"]

_NAMES: dict[int, str] = {
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "terminated (SIGTERM)",
}


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while :func:`stop_on_signals` was active."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StudyInterrupted(KeyboardInterrupt):
    """The study was stopped by Ctrl-C (SIGINT) or SIGTERM; finished runs are saved, and
    running it again with the same ``out`` resumes it.

    ``path``: the study directory (``None`` when it was not created yet); ``signum``: the
    signal; ``phase``: what the driver was doing (``"preparing"``, ``"starting the workers"``,
    ``"training"``, ``"writing the report"``); ``finished``/``total``: runs finished so far.
    """

    def __init__(
        self,
        path: Path | None,
        signum: int = signal.SIGINT,
        phase: str = "training",
        finished: int = 0,
        total: int = 0,
    ) -> None:
        super().__init__(str(path))
        self.path = path
        self.signum = signum
        self.phase = phase
        self.finished = finished
        self.total = total

    @property
    def exit_status(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.signum)

    def message(self) -> str:
        """One line: what stopped the study, in which phase, what is saved, how to go on."""
        what = f"{_NAMES.get(self.signum, 'stopped')} while {self.phase}"
        if self.path is None:
            return f"{what}; nothing was written. Rerun the same command to start the study"
        if self.phase == "writing the report":
            return (
                f"{what}; all {self.total} runs are finished and saved. To write the report, "
                f"rerun the same command with --out {self.path} (or: emergeinit report "
                f"{self.path})"
            )
        saved = f"{self.finished} of {self.total} runs finished and saved" if self.total else (
            "finished runs are saved"
        )
        return f"{what}; {saved}. To resume, rerun the same command with --out {self.path}"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_on_signals(*, restore_after_stop: bool = True) -> Iterator[None]:
    """Raise :class:`Stopped` at the first SIGINT or SIGTERM, then ignore both.

    Installs handlers only in the main thread and only where the process has Python's defaults
    (a handler of the caller's own, or an outer :func:`stop_on_signals`, is left alone). On
    exit the previous handlers come back; with ``restore_after_stop=False`` signals stay
    ignored after a stop (a command line that is about to exit).
    """
    if not _main_thread():
        yield
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {s: signal.getsignal(s) for s in defaults}
    mine = [s for s, handler in previous.items() if handler is defaults[s]]
    stopped = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True
        for s in mine:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    for s in mine:
        signal.signal(s, handler)
    try:
        yield
    finally:
        if not (stopped and not restore_after_stop):
            for s in mine:
                signal.signal(s, previous[s])


@contextlib.contextmanager
def holding_sigint() -> Iterator[None]:
    """SIGINT held back for the block (main thread only), so that processes started in it
    never see Ctrl-C: a child inherits the blocked signal mask across fork and exec, and Python
    leaves the mask alone, so a spawned worker cannot turn Ctrl-C into a traceback, even while
    it is still importing (it then ignores SIGINT for good). A Ctrl-C that arrives during the
    block is not lost: another thread of the driver (torch's, say) takes it and the driver
    stops at once, or it stays pending until the block ends. Where signal masks do not exist
    (Windows), SIGINT is ignored for the block instead."""
    if not _main_thread():
        yield
        return
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
