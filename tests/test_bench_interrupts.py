"""Ctrl-C and SIGTERM stop a study with one line, whatever it is doing: workers starting,
training, writing the report; never a worker's traceback, not even on a double Ctrl-C. The
line names the study directory and how to resume; the exit status is 130 (SIGINT) or 143
(SIGTERM).

The signal tests run the CLI in a process group of its own and signal the group, as a
terminal's Ctrl-C does (slow: each starts a study). The report-phase and the handler tests
run in-process.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import child_pids, is_alive

from emergeinit.bench import report
from emergeinit.bench.cli import run_bench, run_report
from emergeinit.bench.interrupts import Stopped, StudyInterrupted, stop_on_signals

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Runs of 20 epochs (640 steps): long enough to be caught training.
LONG = ["--set", "train.epochs=20", "--set", "train.eval_every=64"]


def _start(study: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "EMERGEINIT_DATA_DIR"}
    env["COLUMNS"] = "120"
    return subprocess.Popen(
        [sys.executable, "-m", "emergeinit", "bench", "smoke", "--out", str(study),
         "--workers", "2", *extra],
        cwd=study.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, signalled as a whole below
    )  # fmt: skip


def _gone(pids: list[int]) -> None:
    """Every one of ``pids`` ends within seconds (the pool's workers at once; its resource
    tracker when it sees the driver's end of its pipe close)."""
    deadline = time.monotonic() + 10
    while any(is_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if is_alive(p)]


def _training(study: Path) -> bool:
    for stream in study.glob("runs/*/metrics.jsonl"):
        try:
            if '"event": "train"' in stream.read_text():
                return True
        except OSError:
            continue
    return False


def _wait(condition: object, proc: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    assert condition(), "timed out"  # type: ignore[operator]


def _one_line(err: str) -> str:
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    (line,) = err.strip().splitlines()
    return line


@pytest.mark.slow
def test_ctrl_c_while_the_workers_start_is_one_line(tmp_path: Path) -> None:
    study = tmp_path / "s"
    proc = _start(study)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "study smoke: 6 runs ...": the workers are starting now
    assert first.startswith("study smoke: 6 runs")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    line = _one_line(err)
    assert line.startswith("error: interrupted (Ctrl-C) while ")
    assert line.endswith(f"To resume, rerun the same command with --out {study}")


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_training_is_one_line_and_the_study_resumes(
    tmp_path: Path, presses: int
) -> None:
    study = tmp_path / "s"
    proc = _start(study, *LONG, "--quiet")
    _wait(lambda: _training(study), proc)
    workers = child_pids(proc.pid)
    for _ in range(presses):  # a double Ctrl-C: the second arrives during the stop
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    line = _one_line(err)
    assert line.startswith("error: interrupted (Ctrl-C) while training; ")
    assert line.endswith(f"of 6 runs finished and saved. To resume, rerun the same command "
                         f"with --out {study}")  # fmt: skip
    _gone(workers)  # the driver stopped its workers
    if presses == 2:
        return
    again = _start(study, *LONG, "--quiet")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    with (study / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6


@pytest.mark.slow
def test_sigterm_to_the_driver_is_one_line_and_stops_the_workers(tmp_path: Path) -> None:
    study = tmp_path / "s"
    proc = _start(study, *LONG, "--quiet")
    _wait(lambda: _training(study), proc)
    workers = child_pids(proc.pid)
    assert workers
    proc.send_signal(signal.SIGTERM)  # the driver alone, as a scheduler or `kill` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    line = _one_line(err)
    assert line.startswith("error: terminated (SIGTERM) while training; ")
    assert line.endswith(f"--out {study}")
    _gone(workers)


# --- in-process ---------------------------------------------------------------------------


TINY = ["train.seeds=[0]", "init.names=['kaiming']", "stats.baseline=''", "train.epochs=1"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_writing_the_report_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    signum: int,
) -> None:
    def stopped(path: Path, **kw: object) -> Path:
        raise Stopped(signum)  # what the handler raises when the signal arrives here

    monkeypatch.setattr(report, "write_report", stopped)
    code = run_bench("smoke", tmp_path / "s", TINY, workers=1, quiet=True)
    assert code == 128 + signum
    line = _one_line(capfd.readouterr().err)
    what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)"
    assert line == (
        f"error: {what} while writing the report; all 1 runs are finished and saved. To write "
        f"the report, rerun the same command with --out {tmp_path / 's'} (or: emergeinit "
        f"report {tmp_path / 's'})"
    )
    monkeypatch.undo()
    assert run_report(tmp_path / "s") == 0  # and the report can be written afterwards
    capfd.readouterr()

    def interrupted(path: Path, **kw: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", interrupted)
    (tmp_path / "s" / "report.md").write_text("before")
    assert run_report(tmp_path / "s") == 130
    line = _one_line(capfd.readouterr().err)
    assert line.startswith("error: interrupted (Ctrl-C) while writing the report; report.md ")
    assert line.endswith(f"rerun: emergeinit report {tmp_path / 's'}")
    assert (tmp_path / "s" / "report.md").read_text() == "before"


def test_the_first_signal_stops_and_later_ones_are_ignored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Stopped) as caught, stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs at the next instruction
    assert caught.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before  # restored
    with pytest.raises(Stopped), stop_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # during the stop: ignored
            time.sleep(0.1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_handler_of_the_callers_own_is_left_alone() -> None:
    seen: list[int] = []

    def mine(signum: int, frame: object) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is mine
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_message_before_the_study_exists_says_nothing_was_written() -> None:
    stop = StudyInterrupted(None, signal.SIGINT, "preparing")
    assert stop.message() == (
        "interrupted (Ctrl-C) while preparing; nothing was written. Rerun the same command to "
        "start the study"
    )
    assert StudyInterrupted(Path("x"), signal.SIGTERM).exit_status == 143


def test_pool_workers_never_see_sigint(tmp_path: Path) -> None:
    """A process started inside ``holding_sigint`` has SIGINT blocked from its first
    instruction (how pool workers are started), so Ctrl-C never reaches their imports."""
    from emergeinit.bench.interrupts import holding_sigint

    code = "import signal; print(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))"
    with holding_sigint():
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.stdout.strip() == "True"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.stdout.strip() == "False"


def test_a_ctrl_c_while_workers_start_is_not_lost() -> None:
    """A SIGINT that arrives while workers are being started still reaches the driver (at once
    through another thread, or when the block ends): ignoring it there lost the Ctrl-C."""
    from emergeinit.bench.interrupts import holding_sigint

    with pytest.raises(KeyboardInterrupt), holding_sigint():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
