"""``--executor ray``: each run a Ray task on a local Ray instance the tests start; the driver
writes results.csv; a task whose worker dies is retried and resumes from its checkpoint; a run
that keeps failing is recorded as failed."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import damaged_fashion_mnist, execute_run_in_a_fresh_process

from emergeinit.bench import config
from emergeinit.bench.cli import run_bench
from emergeinit.bench.study import expand

TIMING = {"seconds", "wall_seconds", "init_seconds", "train_seconds"}
# One run of 320 steps with a checkpoint every 8: long enough to kill its worker mid-way.
LONG = ["train.seeds=[0]", "init.names=['kaiming']", "train.epochs=10", "train.eval_every=64",
        "train.checkpoint_every=8"]  # fmt: skip


def rows(study: Path) -> list[dict[str, str]]:
    with (study / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def events(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_missing_ray_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert run_bench("smoke", tmp_path / "s", executor="ray", quiet=True) == 2
    assert "pip install 'emergeinit[ray]'" in capfd.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)  # fmt: skip
    try:
        yield ray
    finally:
        ray.shutdown()


def _holders(lock: Path) -> list[int]:
    """Processes with ``lock`` open: the Ray worker executing that run."""
    out = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        if str(lock) in links:
            out.append(int(fd_dir.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_is_retried_and_resumes(tmp_path: Path, ray_instance: Any) -> None:
    (run,) = expand(config.load("smoke", LONG))
    # In a fresh process with one thread, as the Ray task runs it (1 CPU -> 1 thread).
    reference = execute_run_in_a_fresh_process(run, tmp_path / "ref", threads=1)

    study = tmp_path / "study"
    folder = (study / "runs" / run["run_id"]).resolve()
    result: list[int] = []
    driver = threading.Thread(
        target=lambda: result.append(
            run_bench("smoke", study, LONG, quiet=True, executor="ray", max_retries=2)
        )
    )
    driver.start()
    killed = []
    deadline = time.monotonic() + 120
    while not killed and driver.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            steps = [e["step"] for e in events(folder) if e["event"] == "train"]
        except (OSError, json.JSONDecodeError):
            continue
        if (folder / "checkpoint.pt").is_file() and steps and 16 <= steps[-1] <= 160:
            for pid in _holders(folder / ".lock"):
                os.kill(pid, signal.SIGKILL)  # the worker (a node) dies mid-run
                killed.append(pid)
    driver.join(timeout=300)
    assert killed, "never caught the run mid-way"
    assert result == [0]
    (row,) = rows(study)
    assert row["status"] == "ok" and row["run_id"] == run["run_id"]
    assert float(row["test_acc_final"]) == reference["test_acc_final"]
    assert float(row["test_loss"]) == reference["test_loss"]
    assert float(row["train_loss_final"]) == reference["train_loss_final"]
    assert events(folder) == events(tmp_path / "ref")  # resumed: every event exactly once


@pytest.mark.slow
def test_a_run_that_keeps_failing_is_recorded_as_failed(
    tmp_path: Path, ray_instance: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    data = damaged_fashion_mnist(tmp_path / "data")
    overrides = ["train.seeds=[0,1]", "init.names=['kaiming']", "data.dataset='fashion-mnist'"]
    code = run_bench("smoke", tmp_path / "s", overrides, quiet=True, data_dir=data,
                     executor="ray", max_retries=1)  # fmt: skip
    assert code == 1
    table = rows(tmp_path / "s")
    assert [r["status"] for r in table] == ["failed", "failed"]
    assert all("not an IDX file" in r["error"] for r in table)
    assert "crashed" in capfd.readouterr().err
    assert (tmp_path / "s" / "report.md").is_file()
