"""Growing a study (docs/bench.md, "Growing a study"): more seeds and a new analysis on the same
directory, never a silent change of what the runs compute."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from emergeinit.bench import config, run_study
from emergeinit.bench.study import StudyDir, StudyDirError, expand

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = ["init.names=['kaiming','emergence']", "train.epochs=1"]


def _claimed(tmp_path: Path, *overrides: str) -> StudyDir:
    study = StudyDir(tmp_path / "s")
    study.claim(config.load("smoke", [*BASE, "train.seeds=[0,1]", *overrides]))
    return study


def test_more_seeds_and_a_new_analysis_are_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = _claimed(tmp_path)
    grown = config.load("smoke", [*BASE, "train.seeds=[0,1,2]", "stats.power=0.9"])
    with caplog.at_level(logging.WARNING):
        study.claim(grown)
    assert study.load_config() == grown
    assert "1 seed(s) added" in caplog.text and "train.seeds" in caplog.text
    assert "stats.power" in caplog.text


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.seeds=[0]", "train.seeds"),  # fewer seeds: a finished run would leave the report
        ("train.seeds=[0,2]", "train.seeds"),
        ("train.lr=0.5", "train.lr"),
        ("init.alpha=3.0", "init.alpha"),
    ],
)
def test_any_other_change_is_refused_and_the_config_kept(
    tmp_path: Path, override: str, key: str
) -> None:
    study = _claimed(tmp_path)
    before = study.config_path.read_bytes()
    changed = config.load("smoke", [*BASE, "train.seeds=[0,1]", override])
    with pytest.raises(StudyDirError, match=key):
        study.claim(changed)
    assert study.config_path.read_bytes() == before


def test_the_same_config_does_not_rewrite_the_file(tmp_path: Path) -> None:
    study = _claimed(tmp_path)
    stamp = study.config_path.stat().st_mtime_ns
    study.claim(config.load("smoke", [*BASE, "train.seeds=[0,1]"]))
    assert study.config_path.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_a_grown_study_trains_only_the_new_seeds(tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = run_study("smoke", out=out, overrides=[*BASE, "train.seeds=[0,1]"], workers=1)
    streams = {r["run_id"]: out / "runs" / r["run_id"] / "metrics.jsonl" for r in first.rows}
    written = {rid: path.stat().st_mtime_ns for rid, path in streams.items()}
    grown = run_study("smoke", out=out, overrides=[*BASE, "train.seeds=3"], workers=1)
    rows = grown.rows
    assert len(rows) == len(expand(grown.config)) == 6
    assert {r["seed"] for r in rows} == {0, 1, 2}
    # the first study's runs were not trained again: their metric streams are untouched
    assert {rid: path.stat().st_mtime_ns for rid, path in streams.items()} == written
    assert {r["run_id"] for r in rows if r["seed"] < 2} == set(written)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r["run_id"] for r in rows)
