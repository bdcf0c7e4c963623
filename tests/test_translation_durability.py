"""Translation runs are durable like classification runs: a run interrupted after a checkpoint
resumes from it bit for bit, and a corrupt checkpoint restarts it (see test_durability.py)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_durability import Stop, events, stop_at, untimed

from emergeinit.bench import config
from emergeinit.bench.checkpoint import load
from emergeinit.bench.runner import execute_run
from emergeinit.bench.study import expand

pytestmark = pytest.mark.slow  # each test trains a translation run twice

TIMING = {"train_seconds", "eval_seconds"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Bit for bit needs the same thread count in both attempts; one is also the quickest here.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_run(checkpoint_every: int) -> dict[str, Any]:
    """translation-smoke, one run of 2 epochs x 10 batches, with dropout so that the global
    random stream matters too."""
    cfg = config.load("translation-smoke", [
        "model.spec=\"transformer:tiny,dropout=0.1\"", "train.seeds=[0]", "train.epochs=2",
        "init.names=[\"emergence\"]", "stats.baseline=\"\"", "train.log_every=2",
        f"train.checkpoint_every={checkpoint_every}",
    ])
    (run,) = expand(cfg)
    return run


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    a, b = untimed(a), untimed(b)
    assert a.keys() == b.keys()
    for key in a.keys() - TIMING:  # NaN == NaN here: val_bleu and friends may be NaN
        x, y = a[key], b[key]
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        assert both_nan or x == y, (key, x, y)


@pytest.mark.parametrize(("every", "stop", "saved"), [
    (4, 14, 12),  # mid-epoch: the resumed epoch goes on in its own batch order
    (5, 12, 10),  # an epoch's last batch, taken after its validation: the next epoch follows
])
def test_an_interrupted_translation_run_resumes_bit_for_bit(
    tmp_path: Path, every: int, stop: int, saved: int
) -> None:
    run = tiny_run(every)
    whole = tmp_path / "runs" / "whole"  # both share the study's tokenizers/ cache
    reference = execute_run(run, whole)
    assert reference["status"] == "ok" and reference["steps"] == 20

    cut = tmp_path / "runs" / "cut"
    with pytest.raises(Stop):  # progress is reported at log steps, after the checkpoint
        execute_run(run, cut, on_progress=stop_at(stop))
    state = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "generator", "rng", "loop", "init",
            "metrics_offset", "run_id", "finished", "format"} <= set(state)  # fmt: skip
    assert not state["finished"] and state["loop"]["step"] == saved
    assert state["scheduler"]["last_epoch"] == saved and state["optimizer"]["state"]
    if saved % 10:  # mid-epoch: this epoch's order, to go on in
        assert sorted(state["loop"]["order"].tolist()) == list(range(10))
    else:  # at an epoch's end the validation is done and the next order is still to be drawn
        assert state["loop"]["order"] is None and len(state["loop"]["val_losses"]) == 1
    assert f'"step": {stop}'.encode() in (cut / "metrics.jsonl").read_bytes()[
        state["metrics_offset"]:]  # fmt: skip  # written after the checkpoint: dropped

    resumed = execute_run(run, cut)
    same(resumed, reference)
    assert events(cut) == events(whole)  # every event once, as the uninterrupted run wrote it
    assert (cut / "hypotheses.txt").read_text() == (whole / "hypotheses.txt").read_text()
    final = load(cut / "checkpoint.pt")
    assert final["finished"] and final["loop"]["step"] == 20
    same(execute_run(run, cut), reference)  # finished: its summary, not trained again
    assert events(cut) == events(whole)


def test_a_checkpoint_taken_before_its_epochs_validation_resumes(tmp_path: Path) -> None:
    """Checkpoints written before the shared training loop saved an epoch's last step before
    the epoch's validation (``position`` = the epoch's batch count); such a run, resumed now,
    validates that epoch first and goes on bit for bit."""
    run = tiny_run(5)
    whole = tmp_path / "runs" / "whole"
    reference = execute_run(run, whole)
    cut = tmp_path / "runs" / "cut"
    with pytest.raises(Stop):
        execute_run(run, cut, on_progress=stop_at(12))
    state = torch.load(cut / "checkpoint.pt", weights_only=True)
    lines = (cut / "metrics.jsonl").read_bytes()[: state["metrics_offset"]].splitlines(True)
    assert b'"valid"' in lines[-1]  # the checkpoint (step 10) came after epoch 1's validation
    # The same moment as the earlier loop saved it: before the validation event, still in
    # epoch 1 at its end (validation draws no random numbers, so the streams are the same).
    state["metrics_offset"] -= len(lines[-1])
    state["loop"].update(epoch=1, position=10, order=torch.randperm(10),
                         val_losses=state["loop"]["val_losses"][:-1])
    torch.save(state, cut / "checkpoint.pt")
    resumed = execute_run(run, cut)
    same(resumed, reference)
    assert events(cut) == events(whole)


def test_a_corrupt_translation_checkpoint_restarts_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tiny_run(4)
    reference = execute_run(run, tmp_path / "runs" / "ref")
    folder = tmp_path / "runs" / "r"
    with pytest.raises(Stop):
        execute_run(run, folder, on_progress=stop_at(14))
    (folder / "checkpoint.pt").write_bytes(os.urandom(4096))
    summary = execute_run(run, folder)
    assert "restarts from scratch" in caplog.text
    assert (folder / "checkpoint.pt.corrupt").is_file()
    same(summary, reference)
    restart, *rest = events(folder)
    assert restart["event"] == "restart"
    assert rest == events(tmp_path / "runs" / "ref")
