"""The smoke study end to end through the installed CLI: results, report, resume, refusals."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import damaged_fashion_mnist

pytestmark = pytest.mark.slow  # every test runs the CLI in a fresh process

REQUIRED = [
    "run_id", "status", "task", "dataset", "model", "init", "base", "alpha", "pivot", "head",
    "lr", "seed", "val_acc_epoch1", "test_acc_epoch1", "val_acc_final", "test_acc_final",
    "test_loss", "steps_to_0.6", "steps_to_0.9", "log10_e_init", "init_seconds",
    "train_seconds", "bleu", "bleu_tok", "chrf",
]  # fmt: skip


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("EMERGEINIT_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "emergeinit", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def rows(study: Path) -> list[dict[str, str]]:
    with (study / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke study, run once through the CLI in a pool of two workers."""
    work = tmp_path_factory.mktemp("cli")
    result = cli("bench", "smoke", "--out", "study", "--quiet", "--workers", "2", cwd=work)
    assert result.returncode == 0, result.stderr
    # --quiet: nothing but the study directory, last.
    assert result.stdout.strip() == "study" and result.stderr == ""
    return work / "study"


def test_smoke_study_writes_every_artifact(smoke: Path) -> None:
    for name in ("config.toml", "environment.json", "results.csv", "report.md"):
        assert (smoke / name).is_file(), name
    assert list((smoke / "plots").glob("*.png"))
    table = rows(smoke)
    assert len(table) == 6  # 3 inits x 2 seeds
    assert set(REQUIRED) <= set(table[0])
    assert {r["init"] for r in table} == {"kaiming", "emergence", "xavier"}
    assert {r["status"] for r in table} <= {"ok", "diverged"}
    for r in table:
        assert len(r["run_id"]) == 12 and (smoke / "runs" / r["run_id"] / "metrics.jsonl").is_file()
        for col in ("val_acc_epoch1", "test_acc_epoch1", "val_acc_final", "test_acc_final"):
            assert 0.0 <= float(r[col]) <= 1.0
        assert (r["alpha"] == "") == (r["init"] != "emergence")  # axes only where they apply
    report = (smoke / "report.md").read_text()
    assert "Paired differences vs `kaiming`" in report and "p (Holm)" in report
    assert "held-out" in report


def test_resume_skips_finished_runs_and_reruns_the_missing_one(smoke: Path) -> None:
    table = rows(smoke)
    dropped = table[2]["run_id"]
    kept = smoke / "runs" / table[0]["run_id"] / "metrics.jsonl"
    before = kept.stat().st_mtime_ns
    with (smoke / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows([r for r in table if r["run_id"] != dropped])
    written = (smoke / "results.csv").read_bytes()
    result = cli("bench", "smoke", "--out", str(smoke), "--workers", "2", cwd=smoke.parent)
    assert result.returncode == 0, result.stderr
    assert "1 to run" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == str(smoke)
    # The run's row was appended: every byte before it is as it was.
    assert (smoke / "results.csv").read_bytes().startswith(written)
    again = rows(smoke)
    assert [r["run_id"] for r in again][-1] == dropped
    assert sorted(r["run_id"] for r in again) == sorted(r["run_id"] for r in table)
    assert kept.stat().st_mtime_ns == before  # finished runs were not touched
    # A run repeats bit for bit with the same torch threads per worker (here 2 x 1).
    old = {r["run_id"]: r for r in table}[dropped]
    new = {r["run_id"]: r for r in again}[dropped]
    assert new["test_acc_final"] == old["test_acc_final"] and new["test_loss"] == old["test_loss"]


def test_a_different_config_in_the_same_directory_is_refused(smoke: Path) -> None:
    result = cli("bench", "smoke", "--out", str(smoke), "--set", "train.lr=0.2",
                 "--set", "init.alpha=[3.0]", cwd=smoke.parent)  # fmt: skip
    assert result.returncode == 2
    assert "init.alpha, train.lr" in result.stderr


def test_report_regenerates(smoke: Path) -> None:
    (smoke / "report.md").unlink()
    result = cli("report", str(smoke), cwd=smoke.parent)
    assert result.returncode == 0, result.stderr
    assert (smoke / "report.md").read_text().startswith("# Study `smoke`")


def test_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = cli("bench", "smoke", "--set", "train.lrr=0.1", "--out", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "train.lrr" in result.stderr and not (tmp_path / "x").exists()
    result = cli("report", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a study directory" in result.stderr


def test_a_crashed_run_gives_a_failed_row_and_nonzero_exit(tmp_path: Path) -> None:
    data = damaged_fashion_mnist(tmp_path / "data")
    result = cli("bench", "smoke", "--set", "data.dataset=\"fashion-mnist\"",
                 "--set", "train.seeds=[0]", "--set", "init.names=[\"kaiming\"]",
                 "--data-dir", str(data), "--out", "s", "--workers", "1", "--quiet",
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "crashed" in result.stderr and "not an IDX file" in result.stderr
    (row,) = rows(tmp_path / "s")
    assert row["status"] == "failed" and "not an IDX file" in row["error"]
    assert (tmp_path / "s" / "report.md").is_file()


# --- the three results.csv bugs, reproduced as it describes them ----------------------


def _copy(smoke: Path, tmp_path: Path) -> Path:
    study = tmp_path / "study"
    shutil.copytree(smoke, study)
    return study


def test_a_rerun_after_garbage_keeps_every_intact_row(smoke: Path, tmp_path: Path) -> None:
    """Appending a garbage line and rerunning used to leave no results.csv and a report of
    0 runs. Now the line is named and set aside; the 6 rows stay; nothing runs again."""
    study = _copy(smoke, tmp_path)
    intact = (study / "results.csv").read_text()
    with (study / "results.csv").open("a") as fh:
        fh.write("garbage\n")
    result = cli("bench", "smoke", "--out", str(study), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "warning: results.csv: 1 damaged line(s) set aside to results.setaside.csv: line 8: "
        "1 fields where the header has 35\n"
    )
    assert (study / "results.csv").read_text() == intact
    assert "garbage" in (study / "results.setaside.csv").read_text()
    assert "runs in results.csv: 6 (ok 6," in (study / "report.md").read_text()


def test_report_counts_a_duplicated_row_once(smoke: Path, tmp_path: Path) -> None:
    study = _copy(smoke, tmp_path)
    last = (study / "results.csv").read_text().splitlines()[-1]
    with (study / "results.csv").open("a") as fh:
        fh.write(last + "\n")
    result = cli("report", str(study), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"run {last[:12]} (ok) is repeated on line 8, which counts" in result.stderr
    report = (study / "report.md").read_text()
    assert "runs in results.csv: 6 (ok 6," in report and "is repeated on line 8" in report
    table = report.split("## Per configuration")[1].split("\n## ")[0]
    n = [line.split("|")[3].strip() for line in table.splitlines() if line.startswith("| synth")]
    assert n == ["2", "2", "2"]  # kaiming, emergence, xavier: one run per seed, never 3


@pytest.mark.parametrize("damage", ["truncated", "garbage row", "non-numeric cell"])
def test_report_names_damage_instead_of_a_traceback(
    smoke: Path, tmp_path: Path, damage: str
) -> None:
    study = _copy(smoke, tmp_path)
    path = study / "results.csv"
    lines = path.read_text().splitlines(keepends=True)
    if damage == "truncated":
        path.write_text("".join(lines)[:-40])
    elif damage == "garbage row":
        path.write_text("".join([*lines[:3], "%%% not a row %%%\n", *lines[3:]]))
    else:
        lines[2] = lines[2].replace(",64,", ",sixty-four,", 1)  # the steps cell
        path.write_text("".join(lines))
    (study / "report.md").write_text("the old report")
    result = cli("report", str(study), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    named = {
        "truncated": "line 7: cut off",
        "garbage row": "line 4: 1 fields where the header has 35",
        "non-numeric cell": "line 3: steps is 'sixty-four', not an integer",
    }[damage]
    assert f"warning: results.csv: 1 damaged line(s) not counted: {named}" in result.stderr
    report = (study / "report.md").read_text()
    assert report.startswith("# Study `smoke`") and named in report
