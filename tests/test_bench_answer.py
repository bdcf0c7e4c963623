"""The Answer wired into a study: planted results give the four verdicts in report.md, on the
terminal and through the Python API; the degenerate cases give a verdict with its reason;
stats.margin / stats.power are validated; a study written before they existed still resumes.

The slow tests run one small study (5 configurations x 3 seeds on synthetic data) once; each
copies it and rewrites the results of its copy: results.csv rewritten whole, with the header it
had, through the csv module. The fast ones judge result rows made in memory, as the store
reads them, with the study's resolved config.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch

from emergeinit.bench import config, load_study, run_study
from emergeinit.bench.answer import answer_markdown
from emergeinit.bench.cli import run_bench, run_report
from emergeinit.bench.markdown import pvalue
from emergeinit.bench.report import _paired_section, answer_of
from emergeinit.bench.study import expand
from emergeinit.bench.verdict import Verdict
from emergeinit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# kaiming is the baseline; the four candidates, one per planted outcome.
STUDY: dict[str, Any] = {
    "study": {"name": "planted"},
    "data": {"dataset": "synthetic", "val_size": 64,
             "synthetic": {"classes": 4, "shape": [1, 4, 4], "train": 256, "test": 128}},
    "model": {"spec": "mlp:{features}-16-{classes}"},
    "init": {"names": ["kaiming", "emergence", "xavier", "default"], "alpha": [1.5, 2.0]},
    "train": {"lr": 0.05, "epochs": 1, "batch_size": 32, "seeds": 3, "log_every": 4},
    "measure": {"enabled": False},
    "stats": {"baseline": "kaiming", "primary": ["test_acc_final"]},
}  # fmt: skip
BASE = [0.800, 0.820, 0.810]  # kaiming's planted test accuracy, seeds 0-2
PLANTED = {  # candidate (init, alpha cell) -> difference from kaiming per seed
    ("emergence", "1.5"): [0.050, 0.052, 0.049],  # a clear gain: better
    ("emergence", "2.0"): [-0.040, -0.042, -0.039],  # a clear loss: worse
    ("xavier", ""): [0.0002, -0.0001, 0.0000],  # near zero: equivalent within +-0.5 points
    ("default", ""): [0.040, -0.035, 0.010],  # noisy: inconclusive
}
WORDS = {
    "emergence α=1.5": "better",
    "emergence α=2": "worse",
    "xavier": "equivalent",
    "default": "inconclusive",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("answer") / "planted"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the per-test fixture runs
    try:
        study = run_study(STUDY, out=out, workers=1)
    finally:
        torch.set_num_threads(previous)
    assert len(study.rows) == 15 and not study.failed
    return out


@pytest.fixture
def study(finished: Path, tmp_path: Path) -> Path:
    """A fresh copy of the finished study for one test to edit."""
    return Path(shutil.copytree(finished, tmp_path / "planted"))


def rewrite(study: Path, change: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> None:
    """Rewrite results.csv whole, same header, rows as ``change`` returns them."""
    path = study / "results.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    rows = change(rows)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plant(rows: list[dict[str, str]], metric: str = "test_acc_final") -> list[dict[str, str]]:
    for row in rows:
        seed = int(row["seed"])
        diff = 0.0 if row["init"] == "kaiming" else PLANTED[(row["init"], row["alpha"])][seed]
        row[metric] = repr(BASE[seed] + diff)
    return rows


def answer_rows(report: str) -> dict[str, list[str]]:
    """The Answer table of a report.md: init -> its cells."""
    section = report.split("## Answer\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return {c[1]: c for c in cells}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "emergeinit", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


# --- done when: planted results, four verdicts ---------------------------------------------


@pytest.mark.slow
def test_planted_results_give_the_four_verdicts(study: Path) -> None:
    rewrite(study, plant)
    result = cli("report", str(study), cwd=study.parent)
    assert result.returncode == 0, result.stderr
    report = (study / "report.md").read_text()
    # report.md opens with the Answer: no other section before it.
    assert next(line for line in report.splitlines() if line.startswith("## ")) == "## Answer"
    table = answer_rows(report)
    assert {init: cells[4] for init, cells in table.items()} == WORDS
    assert table["emergence α=1.5"][3].startswith("+5.03 [")  # mean of 5.0, 5.2, 4.9 points
    assert table["emergence α=2"][3].startswith("-4.03 [")
    assert all(cells[5] == "±0.5" for cells in table.values())
    assert table["default"][7].isdigit() and int(table["default"][7]) > 3  # seeds needed
    assert all(cells[7] == "–" for init, cells in table.items() if init != "default")
    section = report.split("## Answer\n", 1)[1].split("\n## ", 1)[0]
    assert "emergence α=1.5 is better on final test accuracy" in section
    assert "xavier is equivalent within ±0.5 points on final test accuracy" in section
    # The terminal shows the same verdicts, the report's path last.
    out = result.stdout
    assert out.strip().splitlines()[-1] == str(study / "report.md")
    assert "Answer: against kaiming" in out
    for init, word in WORDS.items():
        line = next(x for x in out.splitlines() if x.lstrip().startswith(init + " "))
        assert word in line, (init, line)
    assert "The inconclusive comparison would need about" in " ".join(out.split())
    # --quiet: only the report's path
    quiet = cli("report", str(study), "--quiet", cwd=study.parent)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == f"{study / 'report.md'}\n" and quiet.stderr == ""
    assert (study / "report.md").read_text() == report


@pytest.mark.slow
def test_the_verdicts_as_data_and_a_study_without_values(study: Path) -> None:
    rewrite(study, plant)
    entries = load_study(study).verdicts
    assert {e.init: e.word for e in entries} == WORDS
    assert entries[0].config["model"] in entries[0].setting
    rewrite(study, lambda rows: [{**r, "test_acc_final": ""} for r in rows])
    entries = load_study(study).verdicts
    assert len(entries) == 4
    for e in entries:
        assert e.verdict.reason == "inconclusive: 3 of 3 seeds have no value"
        assert e.verdict.mean_diff is None and e.verdict.mde is None
    json.dumps([e.to_dict() for e in entries], allow_nan=False)
    assert run_report(study, quiet=True) == 0
    report = (study / "report.md").read_text()
    assert "| – | inconclusive (3 of 3 seeds have no value) |" in report


@pytest.mark.slow
def test_a_study_without_a_baseline_says_so(study: Path) -> None:
    cfg = tomllib.loads((study / "config.toml").read_text())
    cfg["stats"]["baseline"] = ""
    (study / "config.toml").write_text(tomli_w.dumps(cfg))
    assert load_study(study).verdicts == []
    assert run_report(study) == 0
    assert "## Answer\n\nThis study declares no baseline" in (study / "report.md").read_text()


# --- in memory: the wiring on result rows as the store gives them ----------------------------

CANDIDATES = [("kaiming", None), ("emergence", 1.5), ("emergence", 2.0), ("xavier", None),
              ("default", None)]  # fmt: skip


def typed(values: dict[str, list[float | None]], seeds: int = 3) -> list[dict[str, Any]]:
    """Result rows of the study (as the store reads them): test_acc_final per init label and
    seed; every other init at the planted values."""
    rows = []
    for init, alpha in CANDIDATES:
        shown = f"emergence α={alpha:g}" if alpha else init
        planted = values.get(shown)
        for seed in range(seeds):
            value: float | None = BASE[seed]
            if planted is not None:
                value = planted[seed]
            elif init != "kaiming":  # PLANTED is keyed by the csv cells: alpha as repr
                value = BASE[seed] + PLANTED[(init, "" if alpha is None else repr(alpha))][seed]
            rows.append({
                "run_id": f"{init}{alpha}{seed}", "status": "ok", "task": "classification",
                "dataset": "synthetic", "model": "mlp:16-16-4", "init": init,
                "base": "kaiming_normal" if alpha else "", "alpha": alpha,
                "pivot": 0.5 if alpha else None, "head": True if alpha else None,
                "optimizer": "sgd", "lr": 0.05, "seed": seed, "test_acc_final": value,
            })  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return config.load(STUDY)


def judged(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Verdict]:
    return {e.init: e.verdict for e in answer_of(cfg, rows).entries}


def test_in_memory_the_planted_rows_give_the_four_verdicts(cfg: dict[str, Any]) -> None:
    answer = answer_of(cfg, typed({}))
    assert answer.baseline == "kaiming"
    assert {e.init: e.word for e in answer.entries} == WORDS
    gain = answer.entries[0]
    assert gain.verdict.mean_diff == pytest.approx(0.0503333, abs=1e-6)
    assert gain.config["init"] == "emergence" and gain.config["alpha"] == 1.5
    assert gain.setting == "synthetic · mlp:16-16-4 · sgd lr=0.05"
    record = gain.to_dict()
    assert record["word"] == "better" and record["config"]["alpha"] == 1.5
    json.dumps([e.to_dict() for e in answer.entries], allow_nan=False)  # JSON-ready, no nan


def test_the_paired_table_and_the_answer_share_one_holm_family(cfg: dict[str, Any]) -> None:
    answer = answer_of(cfg, typed({}))
    raw = [c.result.p for c in answer.comparisons]  # the paired table's own p-values
    assert [e.verdict.p for e in answer.entries] == pytest.approx(raw, rel=1e-9)
    # Holm over the 4 comparisons, by hand: sorted raw p times 4, 3, 2, 1, running maximum.
    running, expected = 0.0, [0.0] * 4
    for rank, i in enumerate(sorted(range(4), key=lambda k: raw[k])):
        running = max(running, min(1.0, (4 - rank) * raw[i]))
        expected[i] = running
    assert [e.verdict.p_holm for e in answer.entries] == pytest.approx(expected, rel=1e-9)
    # and the paired table shows these adjusted p-values, in the same order
    paired = _paired_text(cfg, typed({}))
    assert "corrects across all 4 comparisons of this study" in paired
    shown = [line.strip("|").split(" | ")[-1].strip() for line in paired.splitlines()
             if line.startswith("| synthetic")]  # fmt: skip
    assert shown == [pvalue(p) for p in expected]


def test_the_answer_docs_bench_md_shows_is_this_one(cfg: dict[str, Any]) -> None:
    answer = answer_of(cfg, typed({}))
    lines = answer_markdown(answer.entries, answer.baseline).splitlines()
    table, sentences = lines[2:8], lines[9]
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bench.md").read_text()
    section = doc.split("## Reading the Answer\n", 1)[1].split("\n## ", 1)[0]
    assert "\n".join(table) in section and f"\n{sentences}\n" in section


def test_a_diverged_run_keeps_its_low_accuracy(cfg: dict[str, Any]) -> None:
    rows = typed({})
    low = next(r for r in rows if r["alpha"] == 1.5 and r["seed"] == 1)
    low["status"], low["test_acc_final"] = "diverged", 0.25
    v = judged(cfg, rows)["emergence α=1.5"]
    assert v.n == 3 and v.n_missing == 0  # counted, not dropped
    assert v.mean_diff == pytest.approx((0.050 + (0.25 - 0.82) + 0.049) / 3, abs=1e-12)
    assert v.word == "inconclusive"


def test_a_seed_one_side_lacks_is_left_out_of_the_pairing(cfg: dict[str, Any]) -> None:
    rows = [r for r in typed({}) if not (r["init"] == "xavier" and r["seed"] == 2)]
    verdicts = judged(cfg, rows)
    v = verdicts["xavier"]
    assert (v.n, v.n_missing) == (2, 0)
    assert v.word == "inconclusive" and v.reason == "inconclusive: 2 seeds"
    assert v.mean_diff == pytest.approx(0.00005, abs=1e-12)
    assert v.p_holm is None and v.mde is not None  # not in the Holm family; a spread exists
    # the others are still judged, in a family of 3
    assert verdicts["emergence α=1.5"].word == "better"
    assert sum(v.p_holm is not None for v in verdicts.values()) == 3
    paired = _paired_text(cfg, rows)
    assert "corrects across the 3 of 4 comparisons of this study that can be tested" in paired
    assert paired.count("| – |") == 1  # xavier's row: no Holm p


def _paired_text(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    return "\n".join(_paired_section(cfg, answer_of(cfg, rows)))


def test_a_crashed_run_is_left_out_too(cfg: dict[str, Any]) -> None:
    rows = typed({})
    crashed = next(r for r in rows if r["init"] == "default" and r["seed"] == 0)
    crashed["status"], crashed["test_acc_final"] = "failed", None
    v = judged(cfg, rows)["default"]
    assert (v.n, v.n_missing, v.reason) == (2, 0, "inconclusive: 2 seeds")


def test_a_finished_run_without_a_value_makes_it_inconclusive(cfg: dict[str, Any]) -> None:
    rows = typed({})
    next(r for r in rows if r["alpha"] == 2.0 and r["seed"] == 0)["test_acc_final"] = None
    next(r for r in rows if r["init"] == "xavier" and r["seed"] == 1)["test_acc_final"] = math.nan
    verdicts = judged(cfg, rows)
    for init in ("emergence α=2", "xavier"):
        v = verdicts[init]
        assert (v.n, v.n_missing) == (2, 1)
        assert v.reason == "inconclusive: 1 of 3 seeds has no value"
        assert v.seeds_needed is None and "no value" in v.seeds_note


def test_identical_results_and_a_constant_difference(cfg: dict[str, Any]) -> None:
    dyadic = [0.5, 0.625, 0.75]  # exact in binary: every difference below is exact
    rows = typed({"kaiming": dyadic, "xavier": dyadic, "default": [x + 0.125 for x in dyadic]})
    verdicts = judged(cfg, rows)
    assert verdicts["xavier"].reason == "equivalent: all 3 differences are 0"
    shifted = verdicts["default"]
    assert shifted.word == "better" and shifted.degenerate and shifted.sd == 0.0
    assert shifted.reason == "better: all 3 differences are +12.50 points"


def test_a_user_margin_reaches_the_verdict(cfg: dict[str, Any]) -> None:
    tight = config.load(STUDY, ["stats.margin.test_acc_final=0.0001", "stats.power=0.9"])
    verdicts = judged(tight, typed({}))
    assert verdicts["xavier"].margin == 0.0001 and verdicts["xavier"].word == "inconclusive"
    assert all(v.power == 0.9 for v in verdicts.values())
    assert judged(cfg, typed({}))["xavier"].word == "equivalent"  # at the default margin


def test_no_baseline_no_verdicts(cfg: dict[str, Any]) -> None:
    plain = config.load(STUDY, ["stats.baseline=''"])
    assert answer_of(plain, typed({})).entries == []
    assert answer_of(plain, typed({})).baseline == ""


# --- config: stats.margin and stats.power ---------------------------------------------------


def test_margin_and_power_defaults_and_overrides() -> None:
    cfg = config.load("smoke")
    assert cfg["stats"]["margin"] == {} and cfg["stats"]["power"] == 0.8
    cfg = config.load("smoke", ["stats.margin.test_acc_final=0.01", "stats.power=0.9"])
    assert cfg["stats"]["margin"] == {"test_acc_final": 0.01} and cfg["stats"]["power"] == 0.9


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stats.margin.test_acc_final=-0.01", r"stats\.margin\.test_acc_final: must be finite"),
        ("stats.margin.test_acc_final=0", r"stats\.margin\.test_acc_final: must be finite"),
        ("stats.margin.test_acc_final='wide'", r"stats\.margin\.test_acc_final: expected a"),
        ("stats.margin.test_acc_final=true", r"stats\.margin\.test_acc_final: expected a"),
        ("stats.margin.bleu=0.5", r"stats\.margin\.bleu: 'bleu' is not measured"),
        ("stats.margin=0.01", r"stats\.margin: expected a table"),
        ("stats.power=1.0", r"stats\.power: must lie strictly between 0 and 1"),
        ("stats.power=0", r"stats\.power: must lie strictly between 0 and 1"),
        ("stats.primary=['test_loss']", r"stats\.margin: metric 'test_loss' has no default"),
    ],
)
def test_bad_stats_tables_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load("smoke", [override])


def test_a_loss_needs_a_margin_only_when_it_is_judged() -> None:
    cfg = config.load("smoke", ["stats.primary=['test_loss']", "stats.margin.test_loss=0.02"])
    assert cfg["stats"]["margin"] == {"test_loss": 0.02}
    config.load("smoke", ["stats.primary=['test_loss']", "stats.baseline=''"])


# --- a study written before stats.margin / stats.power existed ------------------------------


def test_run_ids_do_not_depend_on_the_stats_table() -> None:
    plain = [r["run_id"] for r in expand(config.load("smoke"))]
    tuned = config.load("smoke", ["stats.margin.test_acc_final=0.01", "stats.power=0.9"])
    assert [r["run_id"] for r in expand(tuned)] == plain


@pytest.mark.slow
def test_an_older_study_without_the_new_keys_resumes_and_reports(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = Path(shutil.copytree(finished, tmp_path / "older"))
    cfg = tomllib.loads((older / "config.toml").read_text())
    del cfg["stats"]["margin"], cfg["stats"]["power"]  # as written before they existed
    (older / "config.toml").write_text(tomli_w.dumps(cfg))
    rewrite(older, plant)
    code = run_bench(str(_study_file(tmp_path)), older, workers=1)
    assert code == 0
    out = capsys.readouterr().out
    assert "0 to run" in out and out.strip().splitlines()[-1] == str(older)
    assert "Answer: against kaiming" in out
    assert {e.init: e.word for e in load_study(older).verdicts} == WORDS


def _study_file(folder: Path) -> Path:
    path = folder / "planted.toml"
    path.write_text(tomli_w.dumps(STUDY))
    return path


@pytest.fixture(autouse=True)
def _no_data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("EMERGEINIT_DATA_DIR", raising=False)
    yield
