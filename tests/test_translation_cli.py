"""`emergeinit bench translation-smoke` end to end through the installed CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a translation study through the CLI


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("EMERGEINIT_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "emergeinit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("translation-cli")
    result = cli("bench", "translation-smoke", "--out", "study", "--quiet", cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "study"
    return work / "study"


def test_results_have_translation_scores(study: Path) -> None:
    with (study / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4  # xavier and emergence x 2 seeds
    assert {r["init"] for r in rows} == {"xavier", "emergence"}
    for r in rows:
        assert r["status"] == "ok" and r["task"] == "translation" and r["dataset"] == "numbers"
        for col in ("bleu", "bleu_tok", "chrf", "val_bleu"):
            assert 0.0 <= float(r[col]) <= 100.0
        for col in ("val_acc_epoch1", "test_acc_epoch1", "val_acc_final", "test_acc_final"):
            assert r[col] == ""  # accuracy columns stay empty
        run = study / "runs" / r["run_id"]
        hyps = (run / "hypotheses.txt").read_text(encoding="utf-8").splitlines()
        assert len(hyps) == 40
    assert len(list((study / "tokenizers").glob("*.model"))) == 2  # trained once, shared


def test_report_and_plots(study: Path) -> None:
    report = (study / "report.md").read_text(encoding="utf-8")
    assert "## Translation scores" in report
    assert "Paired differences vs `xavier`" in report
    assert "| bleu | chrf | val_bleu | test_loss |" in report  # the per-configuration table
    assert (study / "plots" / "loss-curves-1.png").is_file()
