"""Metric sinks against the real packages: TensorBoard event files read back, an MLflow store
in the study directory queried with MLflow's own client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from emergeinit.bench import run_study
from emergeinit.bench.sinks import scalars
from emergeinit.cli import app
from emergeinit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ["train.seeds=[0]", "init.names=['kaiming','xavier']", "train.epochs=1",
         "stats.baseline=''"]  # fmt: skip


def stream(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_scalars_are_every_numeric_field_of_stepped_events() -> None:
    events = [
        {"event": "init", "seconds": 0.1, "log10_e": 3.0},  # no step: not a curve
        {"event": "train", "step": 4, "epoch": 1, "loss": 0.5},
        {"event": "eval", "kind": "epoch", "step": 8, "test_acc": 0.75, "test_loss": None},
    ]
    assert scalars(events) == [("train/loss", 0.5, 4), ("eval/test_acc", 0.75, 8)]


def test_an_unknown_sink_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--log must be one of tensorboard, mlflow"):
        run_study("smoke", out=tmp_path / "s", overrides=SMALL, log=["wandb"])
    assert not (tmp_path / "s").exists()
    result = CliRunner().invoke(app, ["bench", "smoke", "--out", str(tmp_path / "c"), "--log",
                                      "tensorboard", "--log", "wandb"])  # fmt: skip
    assert result.exit_code == 2 and "--log must be one of" in result.output
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_tensorboard_event_files_hold_every_runs_curves(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = run_study("smoke", out=tmp_path / "s", overrides=SMALL, workers=1,
                      log=["tensorboard"])  # fmt: skip
    for row in study.rows:
        folder = study.dir / "tensorboard" / row["run_id"]
        acc = EventAccumulator(str(folder))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        losses = [(e["step"], e["loss"]) for e in stream(study.dir / "runs" / row["run_id"])
                  if e["event"] == "train"]  # fmt: skip
        logged = [(s.step, s.value) for s in acc.Scalars("train/loss")]
        assert [s for s, _ in logged] == [s for s, _ in losses]
        assert [v for _, v in logged] == pytest.approx([v for _, v in losses], rel=1e-6)  # f32
        assert {"eval/test_acc", "result/test_acc_final"} <= set(tags)
        (final,) = acc.Scalars("result/test_acc_final")
        assert final.value == pytest.approx(row["test_acc_final"], rel=1e-6)


@pytest.mark.slow
def test_mlflow_gets_one_run_per_study_run_in_a_local_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    study = run_study("smoke", out=tmp_path / "s", overrides=SMALL, workers=1, log=["mlflow"])
    assert (study.dir / "mlflow.db").is_file()  # the default: a SQLite file in the study
    client = MlflowClient(tracking_uri=f"sqlite:///{study.dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id])
    by_id = {r.data.tags["emergeinit.run_id"]: r for r in found}
    assert set(by_id) == {r["run_id"] for r in study.rows}
    for row in study.rows:
        run = by_id[row["run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["init"] == row["init"]
        assert run.data.params["train.lr"] == "0.05" and run.data.params["seed"] == "0"
        assert run.data.metrics["result/test_acc_final"] == pytest.approx(row["test_acc_final"])
        history = client.get_metric_history(run.info.run_id, "train/loss")
        losses = [e["loss"] for e in stream(study.dir / "runs" / row["run_id"])
                  if e["event"] == "train"]  # fmt: skip
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(losses)
