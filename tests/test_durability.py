"""A study survives anything: SIGKILL mid-run, corrupt checkpoints, cut metrics, a damaged
results file. Resumed runs continue bit for bit, so their results equal an uninterrupted run's."""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import child_pids, is_alive

from emergeinit.bench import config
from emergeinit.bench.checkpoint import capture_rng, load, restore_rng
from emergeinit.bench.cli import run_bench
from emergeinit.bench.executors import threads_per_worker
from emergeinit.bench.runner import execute_run
from emergeinit.bench.store import SIDE_NAME, ResultsStore, ResultsWarning, read_results
from emergeinit.bench.study import StudyDir, columns, expand

TIMING = {"seconds", "wall_seconds", "init_seconds", "train_seconds"}
WORKERS = 2

# Three runs of 320 steps, a checkpoint every 8: long enough to be killed in the middle.
STUDY = """
[study]
name = "durable"
[data]
dataset = "synthetic"
val_size = 256
[data.synthetic]
classes = 4
shape = [1, 8, 8]
train = 1280
test = 256
noise = 2.0
[model]
spec = "mlp:{features}-32x3-{classes}"
[init]
names = ["kaiming", "emergence", "xavier"]
alpha = [2.0]
[train]
lr = 0.05
epochs = 10
batch_size = 32
seeds = [0]
log_every = 4
eval_every = 64
checkpoint_every = 8
[measure]
examples = 64
"""
STEPS = 10 * (1024 // 32)


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    # The pool's workers run threads_per_worker(WORKERS) torch threads; the in-process
    # reference runs must use as many to be bit-identical with them.
    previous = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(WORKERS))
    yield
    torch.set_num_threads(previous)


def events(path: Path) -> list[dict[str, Any]]:
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def untimed(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMING}


def small_run(*overrides: str) -> dict[str, Any]:
    cfg = config.load("smoke", ["train.seeds=[0]", "init.names=['kaiming']", *overrides])
    (run,) = expand(cfg)
    return run


class Stop(BaseException):
    """Leaves execute_run the way a kill would: no exception handler sees it."""


def stop_at(step: int) -> Any:
    def progress(done: int, total: int) -> None:
        if done == step:
            raise Stop

    return progress


# --- SIGKILL of a whole study ---------------------------------------------------------------


def _mid_run(study: Path) -> Path | None:
    """A run folder with a checkpoint, not finished and at most half-way: killing the study
    now cannot race the run's end."""
    if not read_results(study / "results.csv").rows:
        return None  # wait until one run is finished and recorded too
    for folder in (study / "runs").glob("*"):
        try:
            lines = (folder / "metrics.jsonl").read_text().splitlines()
        except OSError:
            continue
        if not (folder / "checkpoint.pt").is_file() or any('"end"' in ln for ln in lines):
            continue
        steps = [json.loads(ln)["step"] for ln in lines[:-1] if '"train"' in ln]
        if steps and 8 <= steps[-1] <= STEPS // 2:
            return folder
    return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    toml = tmp_path / "durable.toml"
    toml.write_text(STUDY)
    study = tmp_path / "study"
    cmd = [sys.executable, "-m", "emergeinit", "bench", str(toml), "--out", str(study),
           "--workers", str(WORKERS), "--quiet"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "EMERGEINIT_DATA_DIR"}
    # The reference: the same command, uninterrupted, in a fresh process as the killed one is
    # (an in-process run would depend on the threading state other tests leave behind).
    ref = tmp_path / "ref"
    whole = subprocess.run(
        [*cmd[:6], str(ref), *cmd[7:]], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    with (ref / "results.csv").open() as fh:
        reference = {r["run_id"]: r for r in csv.DictReader(fh)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
        victim = _mid_run(study)
    workers = child_pids(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert victim is not None, f"never caught a run mid-way: {proc.stderr.read()}"  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]

    # The killed study's workers die with it: no orphan goes on writing a run folder.
    deadline = time.monotonic() + 10
    while any(is_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers and not any(is_alive(p) for p in workers)

    state = load(victim / "checkpoint.pt")  # weights_only
    assert state["finished"] is False and 0 < state["loop"]["step"] < STEPS
    finished = {r["run_id"] for r in read_results(study / "results.csv").rows}
    assert finished and victim.name not in finished
    untouched = {
        rid: (study / "runs" / rid / "metrics.jsonl").stat().st_mtime_ns for rid in finished
    }

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    with (study / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["run_id"] for r in rows) == sorted(reference)  # each run once, none lost
    for row in rows:
        rid = row["run_id"]
        want = reference[rid]
        for key, cell in row.items():
            if key not in TIMING and key != "error":
                assert cell == want[key], (rid, key, cell, want[key])  # bit for bit
        # The stream holds every event exactly once, as the uninterrupted run wrote it.
        assert events(study / "runs" / rid) == events(ref / "runs" / rid), rid
    for rid, mtime in untouched.items():  # finished runs were skipped, not redone
        assert (study / "runs" / rid / "metrics.jsonl").stat().st_mtime_ns == mtime


# --- resume within a run --------------------------------------------------------------------


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path: Path) -> None:
    run = small_run("train.checkpoint_every=8", "train.optimizer='adam'", "train.lr=0.003",
                    "train.schedule='cosine'", "train.warmup_steps=5")  # fmt: skip
    whole = execute_run(run, tmp_path / "whole")

    cut = tmp_path / "cut"
    with pytest.raises(Stop):  # progress is reported at log steps: 20 is after checkpoint 16
        execute_run(run, cut, on_progress=stop_at(20))
    state = load(cut / "checkpoint.pt")
    assert state["loop"]["step"] == 16 and not state["finished"]
    with (cut / "metrics.jsonl").open("a") as fh:
        fh.write('{"event": "train", "st')  # a line cut off by the kill
    lines = (cut / "metrics.jsonl").read_bytes()
    assert state["metrics_offset"] < len(lines)
    assert b'"step": 20' in lines[state["metrics_offset"] :]  # written after the checkpoint
    assert b'"step": 20' not in lines[: state["metrics_offset"]]

    resumed = execute_run(run, cut)
    assert untimed(resumed) == untimed(whole)
    assert events(cut) == events(tmp_path / "whole")


def test_a_finished_run_whose_row_was_lost_is_not_trained_again(tmp_path: Path) -> None:
    run = small_run("train.epochs=1")
    first = execute_run(run, tmp_path / "r")
    stream = events(tmp_path / "r")
    again = execute_run(run, tmp_path / "r")  # only the end checkpoint is read
    assert untimed(again) == untimed(first)
    assert events(tmp_path / "r") == stream  # no event repeated


def _malicious(path: Path, marker: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    with path.open("wb") as fh:
        pickle.dump({"format": 1, "x": Exploit()}, fh, protocol=2)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other-run", "code"])
def test_a_corrupt_checkpoint_restarts_the_run(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = small_run("train.epochs=1", "train.checkpoint_every=8")
    folder = tmp_path / "r"
    with pytest.raises(Stop):
        execute_run(run, folder, on_progress=stop_at(20))
    reference = execute_run(run, tmp_path / "ref")
    ckpt = folder / "checkpoint.pt"
    marker = tmp_path / "pwned"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    elif damage == "other-run":
        torch.save({**load(ckpt), "run_id": "0123456789ab"}, ckpt)
    else:
        _malicious(ckpt, marker)

    summary = execute_run(run, folder)
    err = caplog.text  # logged as an error (the CLI shows it on stderr)
    assert "restarts from scratch" in err and run["run_id"] in err
    assert not marker.exists()  # weights_only: the pickle's code never ran
    assert (folder / "checkpoint.pt.corrupt").is_file()
    assert untimed(summary) == untimed(reference)
    restart, *rest = events(folder)
    assert restart["event"] == "restart" and "checkpoint" in restart["reason"]
    assert rest == events(tmp_path / "ref")


def test_a_checkpoint_pointing_past_the_metrics_restarts(tmp_path: Path) -> None:
    run = small_run("train.epochs=1", "train.checkpoint_every=8")
    with pytest.raises(Stop):
        execute_run(run, tmp_path / "r", on_progress=stop_at(20))
    (tmp_path / "r" / "metrics.jsonl").write_text("")  # lost, e.g. restored from a backup
    summary = execute_run(run, tmp_path / "r")
    assert summary["status"] == "ok"
    assert events(tmp_path / "r")[0]["event"] == "restart"
    assert [e["event"] for e in events(tmp_path / "r")].count("init") == 1


# --- what a checkpoint holds ----------------------------------------------------------------


def test_checkpoint_holds_everything_and_loads_with_weights_only(tmp_path: Path) -> None:
    run = small_run("train.checkpoint_every=8", "train.schedule='cosine'")
    with pytest.raises(Stop):
        execute_run(run, tmp_path / "r", on_progress=stop_at(20))
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "generator", "rng", "loop", "tracker", "init",
            "metrics_offset", "run_id", "finished", "format"} <= set(state)  # fmt: skip
    assert set(state["rng"]) == {"torch", "numpy", "python", "cuda"}
    loop = state["loop"]
    assert (loop["step"], loop["epoch"], loop["batch"]) == (16, 1, 16)
    assert sorted(loop["order"].tolist()) == list(range(1024))  # this epoch's permutation
    assert state["optimizer"]["state"]  # momentum buffers
    assert state["scheduler"]["last_epoch"] == 16
    assert state["tracker"]["summary"]["steps_to_0.6"] is not None
    offset = state["metrics_offset"]
    head = (tmp_path / "r" / "metrics.jsonl").read_bytes()[:offset].decode()
    assert head.endswith("\n") and json.loads(head.splitlines()[-1])["step"] == 16


def test_rng_capture_round_trips_every_stream() -> None:
    state = capture_rng(torch.device("cpu"))

    def draw() -> tuple[Any, ...]:
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(),
                random.random())  # fmt: skip

    first = draw()
    restore_rng(state)
    assert draw() == first


# --- the results file -----------------------------------------------------------------------


def test_a_damaged_results_file_is_set_aside_keeping_intact_rows(tmp_path: Path) -> None:
    """The driver's load at a (re)start: damaged lines are named and moved to the side file,
    every intact row stays in results.csv, a repeated run id counts once (its last row)."""
    cols = columns(config.load("smoke"))
    good = [f"{i:012x}" for i in range(3)]

    def line(rid: str, status: str, acc: str, extra: str = "") -> str:
        cells = {"run_id": rid, "status": status, "test_acc_final": acc}
        return ",".join(cells.get(c, "") for c in cols) + extra + "\n"

    intact = [line(good[0], "ok", "0.5"), line(good[1], "ok", "0.2")]
    text = ",".join(cols) + "\n" + intact[0]
    text += "\x00\x00garbage,,\n"
    text += line(good[1], "diverged", "0.1")
    text += intact[1]  # a repeat: the later row counts
    text += line(good[2], "ok", "0.7", extra=",extra")
    text += good[2][:6]  # cut off by a crash
    path = tmp_path / "results.csv"
    path.write_text(text)
    with pytest.warns(ResultsWarning) as caught, ResultsStore(
        path, cols
    ) as store:
        assert store.results is not None
        done = store.results.finished()
    assert {k: (v["status"], v["test_acc_final"]) for k, v in done.items()} == {
        good[0]: ("ok", 0.5), good[1]: ("ok", 0.2)
    }
    shown = " ".join(str(w.message) for w in caught)
    assert "3 damaged line(s) set aside" in shown
    assert "line 3: " in shown and "line 6: " in shown and "line 7: cut off" in shown
    assert "line 4: run 000000000001 (diverged) is repeated on line 5" in shown
    assert path.read_text() == ",".join(cols) + "\n" + "".join(intact)
    with (tmp_path / SIDE_NAME).open(newline="") as fh:
        side = list(csv.DictReader(fh))
    assert [int(r["line"]) for r in side] == [3, 4, 6, 7]
    kept = {r["text"] for r in side} | set(path.read_text().splitlines())
    assert kept == set(text.splitlines()) - {""}  # nothing is thrown away


def test_a_second_driver_on_the_same_study_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    overrides = ["train.seeds=[0]", "init.names=['kaiming']"]
    args = ("smoke", tmp_path / "s", overrides)
    study = StudyDir(tmp_path / "s")
    study.claim(config.load("smoke", overrides))
    with study.lock() as held:
        assert held
        assert run_bench(*args, workers=1, quiet=True) == 2
    assert "another 'emergeinit bench' is running" in capfd.readouterr().err
    assert not (study.path / "results.csv").exists()
