"""Tasks are plug-ins: a third task defined in tests/ registers, is configured, runs a study
through the shared run template and loop, and gets its own columns and report section."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench_toy_task import TOY_STUDY, ToyTask

from emergeinit.bench import config, run_study, tasks
from emergeinit.bench.checkpoint import load
from emergeinit.bench.runner import execute_run
from emergeinit.bench.study import columns, expand
from emergeinit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def toy() -> Iterator[ToyTask]:
    task = tasks.register(ToyTask())
    yield task
    tasks.unregister("toy")


def test_the_registry_holds_the_built_in_tasks() -> None:
    assert tasks.names()[:2] == ("classification", "translation")
    with pytest.raises(ConfigError, match=r"study\.task: 'nope' is not one of"):
        config.load("smoke", ["study.task='nope'"])
    with pytest.raises(ValueError, match="registered already"):
        tasks.register(type(tasks.get("translation"))())


def test_a_registered_task_brings_its_own_keys_and_rules(toy: ToyTask) -> None:
    cfg = config.load(TOY_STUDY)
    assert cfg["toy"] == {"dims": 3, "points": 128}
    assert "toy_acc" in columns(cfg) and columns(cfg)[-1] == "error"
    runs = expand(cfg)
    assert len(runs) == 9 and runs[0]["model"] == "mlp:3-8-2"
    assert runs[0]["data"] == {"dataset": "hyperplane", "seed": 0, "dims": 3, "points": 128}
    with pytest.raises(ConfigError, match=r"data\.dataset: 'digits' is a dataset of the "
                       r"classification task"):  # fmt: skip
        config.load({**TOY_STUDY, "data": {"dataset": "digits"}})
    with pytest.raises(ConfigError, match=r"stats: 'test_acc_epoch1' is not measured by toy"):
        config.load({**TOY_STUDY, "stats": {"baseline": "kaiming"}})
    with pytest.raises(ConfigError, match=r"measure\.enabled"):
        config.load({**TOY_STUDY, "measure": {"enabled": True}})


@pytest.mark.slow
def test_a_study_of_the_toy_task_runs_and_reports(toy: ToyTask, tmp_path: Path) -> None:
    study = run_study(TOY_STUDY, out=tmp_path / "toy", workers=1)
    rows = study.rows
    assert len(rows) == 9 and {r["status"] for r in rows} == {"ok"}
    assert {r["init"] for r in rows} == {"kaiming", "xavier", "half-kaiming"}
    assert all(0.0 <= r["toy_acc"] <= 1.0 for r in rows)
    with (study.dir / "results.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[-3:] == ["toy_acc", "toy_loss", "error"]
    report = study.report_path.read_text()
    assert "## The toy task" in report and "9 runs on a 3-d hyperplane." in report
    assert "## Paired differences vs `kaiming`" in report
    assert "| half-kaiming | toy_acc | 3 |" in report
    assert not (study.dir / "plots" / "accuracy-vs-lr.png").exists()  # one lr only
    # Its runs checkpoint through the template: the end state holds the task's own state.
    final = load(study.dir / "runs" / rows[0]["run_id"] / "checkpoint.pt")
    assert final["finished"] and {"model", "optimizer", "loop", "init", "rng"} <= set(final)


def test_a_toy_run_resumes_bit_for_bit(toy: ToyTask, tmp_path: Path) -> None:
    (run, *_) = expand(config.load(TOY_STUDY))
    whole = execute_run(run, tmp_path / "whole")

    class Stop(BaseException):
        pass

    def stop(step: int, total: int) -> None:
        if step == 6:  # after the checkpoint at step 4
            raise Stop

    with pytest.raises(Stop):
        execute_run(run, tmp_path / "cut", on_progress=stop)
    assert load(tmp_path / "cut" / "checkpoint.pt")["loop"]["step"] == 4
    resumed = execute_run(run, tmp_path / "cut")
    timing = {"train_seconds", "wall_seconds", "init_seconds"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in whole.items() if k not in timing
    }

    def events(folder: Path) -> list[dict[str, Any]]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        drop = {"seconds", "wall_seconds"}
        return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]

    assert events(tmp_path / "cut") == events(tmp_path / "whole")


def test_a_task_named_by_import_path_needs_no_registration() -> None:
    cfg = config.load({**TOY_STUDY, "study": {"name": "toy", "task": "bench_toy_task:ToyTask"}})
    try:
        runs = expand(cfg)
        assert runs[0]["task"] == "bench_toy_task:ToyTask"
        assert isinstance(tasks.get("bench_toy_task:ToyTask"), ToyTask)
    finally:
        tasks.unregister("bench_toy_task:ToyTask")


@pytest.mark.slow
def test_a_registered_task_reaches_the_worker_processes(toy: ToyTask, tmp_path: Path) -> None:
    assert tasks.portable() == {"toy": "bench_toy_task:ToyTask"}
    cfg = {**TOY_STUDY, "train": {**TOY_STUDY["train"], "seeds": [0]}}
    study = run_study(cfg, out=tmp_path / "pool", workers=2)  # spawned worker processes
    assert [r["status"] for r in study.rows] == ["ok", "ok", "ok"]
