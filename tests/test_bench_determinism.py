"""Runs repeat bit for bit on CPU, and the paired design holds: one seed, one data order,
one set of base-init draws, whatever the init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emergeinit.bench import config
from emergeinit.bench.runner import execute_run
from emergeinit.bench.study import expand

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TIMING = {"seconds", "wall_seconds"}


def _run(tmp: Path, name: str, overrides: list[str], init: str = "kaiming") -> tuple[dict, list]:
    cfg = config.load("smoke", ["train.seeds=[0]", "train.epochs=1", *overrides])
    (run,) = [r for r in expand(cfg) if r["init"]["name"] == init]
    summary = execute_run(run, tmp / name)
    events = [json.loads(line) for line in (tmp / name / "metrics.jsonl").read_text().splitlines()]
    return summary, [{k: v for k, v in e.items() if k not in TIMING} for e in events]


@pytest.mark.slow
def test_same_run_twice_is_identical(tmp_path: Path) -> None:
    a, events_a = _run(tmp_path, "a", [], "emergence")
    b, events_b = _run(tmp_path, "b", [], "emergence")
    assert a["status"] == "ok"
    assert events_a == events_b
    drop = {"init_seconds", "train_seconds", "wall_seconds"}
    assert {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }


def test_emergence_at_alpha_one_is_the_kaiming_run(tmp_path: Path) -> None:
    # Same seed -> same base draws and same data order, so alpha = 1 reproduces kaiming exactly.
    _, kaiming = _run(tmp_path, "k", [], "kaiming")
    _, emergence = _run(tmp_path, "e", ["init.alpha=1.0"], "emergence")
    strip = [{k: v for k, v in e.items() if k != "units"} for e in emergence]
    assert strip == kaiming


def test_a_different_seed_changes_the_run(tmp_path: Path) -> None:
    _, a = _run(tmp_path, "a", [], "kaiming")
    _, b = _run(tmp_path, "b", ["train.seeds=[1]"], "kaiming")
    assert a != b


def test_divergence_ends_the_run_as_a_result(tmp_path: Path) -> None:
    summary, events = _run(tmp_path, "d", ["train.lr=1e6", "data.synthetic.noise=50.0"])
    assert summary["status"] == "diverged"
    assert any(e["event"] == "diverged" for e in events)
    assert summary["steps"] < 32  # stopped early
    assert 0.0 <= summary["test_acc_final"] <= 1.0


def test_adam_with_warmup_and_cosine_repeats(tmp_path: Path) -> None:
    opts = ["train.optimizer='adam'", "train.lr=0.003", "train.schedule='cosine'",
            "train.warmup_steps=5"]  # fmt: skip
    a, events_a = _run(tmp_path, "a", opts, "emergence")
    _, events_b = _run(tmp_path, "b", opts, "emergence")
    assert a["status"] == "ok" and events_a == events_b
