"""The translation task inside the harness: config rules, preflight, a parallel-text study."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from emergeinit.bench import config
from emergeinit.bench.cli import run_bench
from emergeinit.bench.study import expand
from emergeinit.errors import ConfigError

SRC = ["wir ver@@ stehen das .", "das ist gut .", "gut , danke .", "ver@@ stehen wir ?"]
TGT = ["we under@@ stand that .", "that is good .", "good , thanks .", "do we under@@ stand ?"]


def parallel(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / f"{split}.de").write_text("\n".join(SRC * 3) + "\n", encoding="utf-8")
        (folder / f"{split}.en").write_text("\n".join(TGT * 3) + "\n", encoding="utf-8")
    return folder


TINY = [
    "model.spec=\"transformer:tiny,dropout=0.0,tie=true\"", "train.epochs=1", "train.seeds=[0]",
    "init.names=[\"xavier\",\"emergence\"]", "train.warmup_steps=2", "translation.beam=2",
    "stats.select_seeds=0", "translation.max_len_a=0.5", "translation.max_len_b=4",
]


@pytest.mark.parametrize(("override", "message"), [
    ("train.optimizer=\"sgd\"", "train.optimizer"),
    ("train.schedule=\"cosine\"", "train.schedule"),
    ("init.names=[\"xavier\",\"gradinit\"]", "init.names"),
    ("model.spec=\"transformer:tiny,vocab=100\"", "set from the trained tokenizers"),
    ("stats.primary=[\"test_acc_final\"]", "not measured by translation"),
    ("translation.beam=0", "translation.beam"),
    ("data.tokenized=\"maybe\"", "data.tokenized"),
    ("translation.valid_bleu=false", "valid_bleu"),
])
def test_config_rules(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load("translation-smoke", [override])


def test_expand_carries_translation_settings() -> None:
    runs = expand(config.load("translation-smoke"))
    assert len(runs) == 4
    first = runs[0]
    assert first["task"] == "translation" and first["model"].startswith("transformer:tiny")
    assert first["translation"]["vocab_size"] == 64 and first["data"]["dataset"] == "numbers"
    assert len({r["run_id"] for r in runs}) == 4


def test_preflight_rejects_misaligned_files_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = parallel(tmp_path / "data")
    (data / "test.en").write_text("one line\n", encoding="utf-8")
    code = run_bench("iwslt", tmp_path / "study", [f"data.dir=\"{data}\"", *TINY], quiet=True)
    assert code == 2
    assert "test.de has 12 lines but test.en has 1" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_parallel_bpe_study_in_process(tmp_path: Path) -> None:
    pytest.importorskip("sacremoses")
    data = parallel(tmp_path / "data")
    code = run_bench("iwslt", tmp_path / "study", [f"data.dir=\"{data}\"", *TINY],
                     workers=1, quiet=True)
    assert code == 0
    with (tmp_path / "study" / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r in rows:
        hyps = (tmp_path / "study" / "runs" / r["run_id"] / "hypotheses.txt").read_text()
        assert len(hyps.splitlines()) == 12
        assert 0.0 <= float(r["bleu_tok"]) <= 100.0
    report = (tmp_path / "study" / "report.md").read_text()
    assert "BPE marks (@@) found" in report
