"""Data-parallel runs: two CPU processes under torchrun (gloo) train the same run as one
process does (same global batch), after proving that the emergence init gave both ranks the
same weights."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from emergeinit.bench import config, ddp, runtime
from emergeinit.bench.runner import execute_run
from emergeinit.bench.study import StudyDir, expand
from emergeinit.errors import ConfigError
from emergeinit.models import build_model

STUDY = ["train.seeds=[0,1]", "init.names=['emergence']", "stats.baseline=''",
         "train.checkpoint_every=8"]  # fmt: skip


def events(folder: Path, kind: str) -> list[dict[str, Any]]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


class Stop(BaseException):
    pass


def stop_at_20(step: int, total: int) -> None:
    if step == 20:
        raise Stop


@pytest.mark.slow
def test_two_cpu_ranks_match_the_single_process_run(tmp_path: Path) -> None:
    cfg = config.load("smoke", STUDY)
    fresh, resumed = expand(cfg)
    study = tmp_path / "study"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {r["run_id"]: execute_run(r, tmp_path / r["run_id"]) for r in (fresh, resumed)}
        # The second run was interrupted (one process, checkpoint at step 16): under DDP it
        # continues from there, rank 0 handing the checkpoint to rank 1.
        StudyDir(study).claim(cfg)
        with pytest.raises(Stop):
            execute_run(resumed, study / "runs" / resumed["run_id"], on_progress=stop_at_20)
    finally:
        torch.set_num_threads(previous)

    sets = [a for s in STUDY for a in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "emergeinit.bench.ddp", "smoke", "--out", "study", "--quiet",
           *sets]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "EMERGEINIT_DATA_DIR"}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=fo, stderr=fe)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # ranks out of step wait on each other for good
            for pid in [*_descendants(proc.pid), proc.pid]:  # workers: their own sessions
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"the DDP study hung: its ranks fell out of step\n{err.read_text()}")
    assert proc.returncode == 0, err.read_text()[-3000:]
    assert out.read_text().strip().splitlines()[-1] == "study"

    with (study / "results.csv").open() as fh:
        rows = {r["run_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(single) and {r["status"] for r in rows.values()} == {"ok"}
    (check,) = events(study / "runs" / fresh["run_id"], "ddp")
    assert check["world_size"] == 2 and check["backend"] == "gloo"
    assert len(check["weights_sha256"]) == 64

    # Same global batch: the two halves' averaged gradient is the whole batch's gradient, so
    # the loss trajectory is the single process's up to float summation order. Those last-bit
    # differences (1e-7 at first) grow as SGD goes (measured: 3e-6 after epoch 1, 2e-3 at
    # step 64), so epoch 1 is held tight and the rest loosely; a wrong shard (measured: both
    # ranks on the same half) is already off by 1.7% at the first record, step 4.
    for rid, run_single in single.items():
        folder = study / "runs" / rid
        ddp_loss = [(e["step"], e["loss"]) for e in events(folder, "train")]
        one_loss = [(e["step"], e["loss"]) for e in events(tmp_path / rid, "train")]
        assert [s for s, _ in ddp_loss] == [s for s, _ in one_loss] and len(one_loss) == 16
        assert ddp_loss[0][1] == pytest.approx(one_loss[0][1], rel=1e-6)  # nothing built up
        for (step, a), (_, b) in zip(ddp_loss, one_loss):
            assert a == pytest.approx(b, rel=2e-5 if step <= 32 else 1e-2), (rid, step)
        row = rows[rid]
        assert float(row["test_acc_final"]) == pytest.approx(run_single["test_acc_final"], abs=0.02)
        assert float(row["test_loss"]) == pytest.approx(run_single["test_loss"], rel=1e-2)
    # The resumed run kept its first 16 steps' events from the single process, bit for bit,
    # and was not initialized (or announced) again.
    folder = study / "runs" / resumed["run_id"]
    assert len(events(folder, "init")) == 1 and not events(folder, "ddp")
    kept = [e for e in events(folder, "train") if e["step"] <= 16]
    assert kept == [e for e in events(tmp_path / resumed["run_id"], "train") if e["step"] <= 16]


def _ranks(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(7)
        model = build_model("mlp:16-8x2-3")
        same = runtime.check_identical(model)
        shared = runtime.share({"from": rank})
        if rank == 1:
            with torch.no_grad():
                next(model.parameters())[0, 0] += 1e-6  # one weight, one ulp-sized change
        try:
            runtime.check_identical(model)
            caught = ""
        except RuntimeError as exc:
            caught = str(exc)
        Path(out, f"{rank}.json").write_text(
            json.dumps({"same": same, "shared": shared, "caught": caught})
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_with_different_weights_are_caught(tmp_path: Path) -> None:
    mp.spawn(_ranks, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["same"] == r1["same"]  # same seed, same weights
    assert r0["shared"] == r1["shared"] == {"from": 0}  # rank 0's object everywhere
    assert "ranks [1] differ from rank 0" in r0["caught"] and r0["caught"] == r1["caught"]


def test_outside_torchrun_or_with_an_uneven_batch_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.main(["smoke"]) == 2
    assert "torchrun" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "3")  # batch 32 does not split over 3 ranks
    assert ddp.main(["smoke"]) == 2
    assert "train.batch_size: 32 does not split evenly over 3" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="split evenly"):
        runtime.Distributed(0, 3, 0, "gloo").shard(32)
