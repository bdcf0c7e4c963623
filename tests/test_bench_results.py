"""results.csv as the study driver, the report and the API read it: through the store.

The study here is made by hand (its config, and rows appended as the driver appends them), so
nothing trains: the fast lane. The same cases on a real smoke study, through the CLI, are in
``test_bench_cli.py``.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import legacy_results as legacy
import pytest

from emergeinit.bench import config, load_study, plots, run_study
from emergeinit.bench.cli import run_report
from emergeinit.bench.report import write_report
from emergeinit.bench.store import SIDE_NAME, ResultsStore, ResultsWarning, read_results
from emergeinit.bench.study import StudyDir, columns, expand, order_rows, result_row

# Two inits x two alphas (emergence) x two lrs x two seeds: rows whose order matters.
OVERRIDES = [
    "init.names=['kaiming','emergence']",
    "init.alpha=[1.5,2.0]",
    "train.lr=[0.02,0.05]",
    "train.seeds=[0,1]",
]


def summary(run: dict[str, Any], status: str = "ok") -> dict[str, Any]:
    """A run's metric columns, made up but shaped like a real run's."""
    rng = random.Random(run["run_id"])
    acc = round(rng.uniform(0.5, 0.9), 4)
    return {
        "status": status, "val_acc_epoch1": acc, "test_acc_epoch1": acc, "val_acc_final": acc,
        "test_acc_final": acc, "test_loss": 0.5, "train_loss_final": 0.4, "steps": 64,
        "steps_to_0.6": 8, "steps_to_0.9": None, "log10_e_init": rng.uniform(1, 5),
        "log10_e_final": None, "init_seconds": 0.01, "train_seconds": 1.0,
        "wall_seconds": 1.5, "error": "",
    }  # fmt: skip


@pytest.fixture
def made(tmp_path: Path) -> Iterator[tuple[StudyDir, dict[str, Any], list[dict[str, Any]]]]:
    """A study directory whose runs all finished, rows appended in a shuffled order."""
    cfg = config.load("smoke", OVERRIDES)
    study = StudyDir(tmp_path / "s")
    study.claim(cfg)
    runs = expand(cfg)
    finished = list(runs)
    random.Random(0).shuffle(finished)
    with ResultsStore(study.results_path, columns(cfg)) as store:
        for run in finished:
            store.append(result_row(run, summary(run)))
    yield study, cfg, runs


@pytest.fixture
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports without their figures (drawing them takes seconds; the plot tests draw)."""
    monkeypatch.setattr(plots, "make_plots", lambda study, rows=None: [])


def _loaded(study: StudyDir, cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = study.results(cfg).rows
    return rows, [str(w.message) for w in caught if issubclass(w.category, ResultsWarning)]


def test_rows_come_in_the_studys_run_order_whatever_order_they_ended_in(made: Any) -> None:
    study, cfg, runs = made
    rows, problems = _loaded(study, cfg)
    assert problems == []
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in runs]
    assert [r["run_id"] for r in load_study(study.path).rows] == [r["run_id"] for r in runs]


def test_the_order_is_read_from_the_rows_alone(made: Any) -> None:
    study, cfg, _ = made
    rows, _ = _loaded(study, cfg)
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    assert order_rows(shuffled, cfg) == rows
    # A row the config does not list (a user's own) goes last instead of failing.
    stranger = {**rows[0], "run_id": "ffffffffffff", "model": "mlp:1-1", "lr": 9.0}
    assert order_rows([stranger, *shuffled], cfg)[-1] is stranger


@pytest.mark.usefixtures("no_figures")
def test_a_duplicated_row_is_counted_once_and_named(made: Any) -> None:
    """Bug 2 of the issue, on a study made by hand: a copy of one row appended."""
    study, cfg, runs = made
    lines = study.results_path.read_text().splitlines(keepends=True)
    with study.results_path.open("a") as fh:
        fh.write(lines[3])
    rows, problems = _loaded(study, cfg)
    assert len(rows) == len(runs)
    assert len(problems) == 1 and f"line 4: run {lines[3][:12]} (ok) is repeated on line " in (
        problems[0]
    )
    with pytest.warns(ResultsWarning, match="repeated run id"):
        report = write_report(study.path).read_text()
    assert f"runs in results.csv: {len(runs)} (ok {len(runs)}," in report
    assert "1 line(s) not counted" in report and f"run {lines[3][:12]} (ok) is repeated" in report
    # Every configuration has one row per seed: n = 2 in the table, never 3.
    table = report.split("## Per configuration")[1].split("##")[0]
    counts = [line.split("|")[3].strip() for line in table.splitlines() if "| 0." in line]
    assert counts and set(counts) == {"2"}


@pytest.mark.usefixtures("no_figures")
@pytest.mark.parametrize(
    "damage", ["truncated", "garbage", "non-numeric cell", "not UTF-8", "header only"]
)
def test_report_never_fails_on_a_damaged_file_and_names_the_damage(
    made: Any, damage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Bug 3 of the issue: ``emergeinit report`` on a damaged results.csv."""
    study, _, runs = made
    path = study.results_path
    text = path.read_bytes()
    lines = text.splitlines(keepends=True)
    if damage == "truncated":
        path.write_bytes(text[: len(text) - len(lines[-1]) // 2])
        named = f"line {len(lines)}: cut off"
    elif damage == "garbage":
        path.write_bytes(text + b"\x00garbage: not a row\n")
        named = f"line {len(lines) + 1}: 1 fields where the header has"
    elif damage == "non-numeric cell":
        lines[2] = lines[2].replace(b",64,", b",sixty-four,")
        path.write_bytes(b"".join(lines))
        named = "line 3: steps is 'sixty-four', not an integer"
    elif damage == "not UTF-8":
        lines[2] = lines[2].replace(b"classification", b"classific\xe9tion")
        path.write_bytes(b"".join(lines))
        named = "line 3: not UTF-8 text (byte 0xe9)"
    else:
        path.write_bytes(lines[0])
        named = ""
    (study.path / "report.md").write_text("an old report")
    assert run_report(study.path) == 0
    err = capfd.readouterr().err
    report = (study.path / "report.md").read_text()
    assert report.startswith("# Study `smoke`")  # written again, not left as it was
    assert "Traceback" not in err
    if named:
        assert f"warning: results.csv: 1 damaged line(s) not counted: {named}" in err
        assert named in report
        lost = 0 if damage == "garbage" else 1  # the row the damaged line held
        assert f"runs in results.csv: {len(runs) - lost} " in report
    else:
        assert "No finished runs yet." in report and err == ""


@pytest.mark.slow
def test_a_report_without_finished_runs_removes_the_stale_plots(made: Any) -> None:
    study = made[0]
    write_report(study.path)
    plots = study.path / "plots"
    assert list(plots.glob("*.png"))
    (plots / "notes.txt").write_text("mine")  # a file of the user's own stays
    with study.results_path.open() as fh:
        header = fh.readline()
    study.results_path.write_text(header)
    report = write_report(study.path).read_text()
    assert "No finished runs yet." in report and "plots/" not in report
    assert not list(plots.glob("*.png")) and (plots / "notes.txt").is_file()


@pytest.mark.slow
def test_a_plot_the_rows_no_longer_support_is_removed(made: Any) -> None:
    study, cfg, _ = made
    write_report(study.path)
    assert (study.path / "plots" / "accuracy-vs-lr.png").is_file()
    one_lr = [r for r in read_results(study.results_path).rows if r["lr"] == 0.02]
    legacy.write_results(study.results_path, one_lr, columns(cfg))
    report = write_report(study.path).read_text()
    assert not (study.path / "plots" / "accuracy-vs-lr.png").exists()
    assert "accuracy-vs-lr" not in report and (study.path / "plots" / "curves-1.png").is_file()


@pytest.mark.usefixtures("no_figures")
def test_a_study_written_before_the_store_resumes_with_no_run_again(tmp_path: Path) -> None:
    """results.csv as the old driver wrote it (rewritten whole, in run order): the store reads
    it as it is, leaves the file untouched, and finds every run finished."""
    overrides = ["train.seeds=[0]", "init.names=['kaiming']", "stats.baseline=''"]
    cfg = config.load("smoke", overrides)
    study = StudyDir(tmp_path / "s")
    study.claim(cfg)
    runs = expand(cfg)
    legacy.write_results(study.results_path, [result_row(r, summary(r)) for r in runs],
                         columns(cfg))  # fmt: skip
    before = study.results_path.read_bytes()
    again = run_study("smoke", out=study.path, overrides=overrides, workers=1)
    assert study.results_path.read_bytes() == before  # intact: not rewritten, nothing added
    assert not (study.path / "runs").exists()  # no run ran again
    assert [r["run_id"] for r in again.rows] == [r["run_id"] for r in runs]
    assert json.loads((study.path / "environment.json").read_text())["workers"] == 1


@pytest.mark.usefixtures("no_figures")
def test_the_driver_sets_damage_aside_and_keeps_every_intact_row(tmp_path: Path) -> None:
    """Bug 1 of the issue, on a study made by hand: garbage appended, then the same study
    run again. The intact rows stay in results.csv, the garbage goes to the side file."""
    overrides = ["train.seeds=[0]", "init.names=['kaiming']", "stats.baseline=''"]
    cfg = config.load("smoke", overrides)
    study = StudyDir(tmp_path / "s")
    study.claim(cfg)
    (run,) = expand(cfg)
    with ResultsStore(study.results_path, columns(cfg)) as store:
        store.append(result_row(run, summary(run)))
    intact = study.results_path.read_text()
    with study.results_path.open("a") as fh:
        fh.write("garbage\n")
    with pytest.warns(ResultsWarning, match="line 3: 1 fields where the header has"):
        again = run_study("smoke", out=study.path, overrides=overrides, workers=1)
    assert study.results_path.read_text() == intact
    assert "garbage" in (study.path / SIDE_NAME).read_text()
    assert [r["run_id"] for r in again.rows] == [run["run_id"]]
    assert not (study.path / "runs").exists()
    report = again.report_path.read_text()
    assert "runs in results.csv: 1 (ok 1," in report
    assert "results.setaside.csv holds 1 line(s) taken out of results.csv" in report


def test_the_legend_goes_to_the_first_panel_with_labelled_curves() -> None:
    from emergeinit.bench import figures

    _, (loss, acc) = figures.figure(2)
    figures.band(loss, [([0, 1], [1.0, 0.5])], "kaiming", figures.color(0))
    figures.band(acc, [], "kaiming", figures.color(0))  # never evaluated: nothing drawn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend without artists
        figures.legend(acc, loss)
        assert acc.get_legend() is None
        assert [t.get_text() for t in loss.get_legend().get_texts()] == ["kaiming (n=1)"]
        _, (empty,) = figures.figure(1)
        figures.legend(empty)
        assert empty.get_legend() is None
