"""``results-adamw`` and ``results-resnet`` run end to end, shrunk with ``--set`` to
scikit-learn's digits (seconds), keep their axes in results and report, reach the init with
their order and units, and resume after a stop."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emergeinit.bench import run_study
from emergeinit.cli import app

SMALL = [
    "data.dataset=digits", "data.train_size=200", "data.val_size=100", "data.test_size=100",
    "train.epochs=1", "train.seeds=3", "stats.select_seeds=1", "measure.examples=16",
]  # fmt: skip
ADAMW = [*SMALL, "train.lr=[0.001,0.01]",
         "model.spec=['mlp-bn:{features}-16x3-{classes}','cnn:{shape}-4-M-{classes}']"]  # fmt: skip
RESNET = [*SMALL, "init.alpha=1.2", "model.spec='resnet-bn:{shape}-4x1-8x1-8x1-{classes}'"]


def _rows(study: Path) -> list[dict[str, str]]:
    with (study / "results.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_results_adamw_runs_shrunk_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "adamw"
    args = ["bench", "results-adamw", "--out", str(out), "--workers", "1", "--quiet"]
    result = CliRunner().invoke(app, [*args, *[a for s in ADAMW for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 2 * 2 * 3 * 3  # models x lrs x inits x seeds
    assert {r["status"] for r in rows} <= {"ok", "diverged"}
    assert {r["optimizer"] for r in rows} == {"adamw"}
    assert {r["init"] for r in rows} == {"kaiming", "emergence", "emergence-lr"}
    report = (out / "report.md").read_text()
    assert "## Learning rate tuned per init" in report
    assert "(from [0.001, 0.01])" in report
    assert "emergence-lr α=1.2" in report


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_results_resnet_runs_shrunk_reaches_the_init_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "resnet"
    study = run_study("results-resnet", out=out, overrides=RESNET, workers=1)
    rows = _rows(out)
    # 2 optimizers x (kaiming + 3 emergence variants) x 3 seeds
    assert len(rows) == 2 * 4 * 3
    variants = {(r["optimizer"], r["lr"], r["init"], r["order"], r["units"]) for r in rows}
    assert variants == {
        (opt, lr, init, order, units)
        for opt, lr in (("sgd", "0.02"), ("adamw", "0.003"))
        for init, order, units in (("kaiming", "", ""), ("emergence", "", ""),
                                   ("emergence", "graph", ""), ("emergence", "", "blocks"))
    }  # fmt: skip
    report = (out / "report.md").read_text()
    assert "- training: sgd, adamw," in report
    for shown in ("emergence α=1.2 (graph)", "emergence α=1.2 (blocks)", "adamw lr=0.003"):
        assert shown in report

    # The graph-order runs streamed the graph order's exponents: a projection shortcut has its
    # block's first convolution's; the call-order runs give it a deeper one.
    def exponents(order: str, units: str) -> dict[str, float]:
        rid = next(r["run_id"] for r in rows if r["init"] == "emergence" and r["order"] == order
                   and r["units"] == units)  # fmt: skip
        init = next(e for e in study.events(rid) if e["event"] == "init")
        return {name: exponent for name, exponent, _ in init["units"]}

    graph, call, blocks = exponents("graph", ""), exponents("", ""), exponents("", "blocks")
    for block in ("blocks.1", "blocks.2"):
        assert graph[f"{block}.shortcut.0"] == graph[f"{block}.conv1"]
        assert call[f"{block}.shortcut.0"] > call[f"{block}.conv2"]
    assert list(blocks) == ["stem.0", "blocks.0", "blocks.1", "blocks.2", "fc"]

    # Stopped part way (the rows of the last runs lost): the same call runs only those, from
    # their final checkpoints, and the results are the same.
    before = {r["run_id"]: r for r in rows}
    kept = rows[:10]
    with (out / "results.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    with caplog.at_level(logging.INFO, logger="emergeinit.bench"):
        run_study("results-resnet", out=out, overrides=RESNET, workers=1, quiet=False)
    assert "24 runs, 10 already finished, 14 to run" in caplog.text
    after = {r["run_id"]: r for r in _rows(out)}
    assert after.keys() == before.keys()
    timing = {"init_seconds", "train_seconds", "wall_seconds"}
    for rid, row in before.items():
        assert {k: v for k, v in after[rid].items() if k not in timing} == {
            k: v for k, v in row.items() if k not in timing
        }
