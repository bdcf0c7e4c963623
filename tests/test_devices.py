"""Devices: ``--device auto|cpu|cuda`` and bf16 autocast. The CUDA paths run only where a GPU
is; on CPU the autocast path itself is exercised (torch autocasts bf16 on CPU too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from emergeinit.bench import config
from emergeinit.bench.checkpoint import load
from emergeinit.bench.cli import device_override, run_bench
from emergeinit.bench.runner import execute_run
from emergeinit.bench.runtime import resolve_device
from emergeinit.bench.study import expand
from emergeinit.errors import ConfigError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_of(*overrides: str) -> dict[str, Any]:
    cfg = config.load("smoke", ["train.seeds=[0]", "init.names=['kaiming']", "train.epochs=1",
                                *overrides])  # fmt: skip
    (run,) = expand(cfg)
    return run


def losses(folder: Path) -> list[float]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [e["loss"] for e in map(json.loads, lines) if e["event"] == "train"]


def test_auto_means_cuda_when_available() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_device_flag_is_the_train_device_key(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert device_override(None) == []
    (run,) = expand(config.load("smoke", device_override("auto")))[:1]
    assert run["train"]["device"] == "auto"
    assert run_bench("smoke", tmp_path / "s", device="gpu", quiet=True) == 2
    assert "--device must be auto, cpu or cuda" in capfd.readouterr().err


def test_autocast_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"train\.autocast"):
        config.load("smoke", ["train.autocast='fp8'"])


def test_bf16_autocast_trains_in_bf16(tmp_path: Path) -> None:
    full = execute_run(run_of(), tmp_path / "fp32")
    half = execute_run(run_of("train.autocast='bf16'"), tmp_path / "bf16")
    assert half["status"] == "ok" and half["test_acc_final"] > 0.5
    # The forward ran in bf16 (8 mantissa bits): the losses move off the fp32 ones at once.
    a, b = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert a != b and b[0] == pytest.approx(a[0], rel=0.05)
    assert full["status"] == "ok"


@cuda
def test_a_cuda_run_with_bf16_resumes(tmp_path: Path) -> None:
    run = run_of("train.device='cuda'", "train.autocast='bf16'", "train.checkpoint_every=8")
    whole = execute_run(run, tmp_path / "whole")

    class Stop(BaseException):
        pass

    def stop(step: int, total: int) -> None:
        if step == 20:
            raise Stop

    with pytest.raises(Stop):
        execute_run(run, tmp_path / "cut", on_progress=stop)
    assert load(tmp_path / "cut" / "checkpoint.pt")["rng"]["cuda"]  # CUDA RNG captured
    resumed = execute_run(run, tmp_path / "cut")
    assert resumed["status"] == whole["status"] == "ok" and resumed["steps"] == whole["steps"]
    # cuBLAS may pick different reduction orders between processes unless deterministic
    # algorithms are forced, so on a GPU the continuation is held to a tolerance.
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "whole"), rel=1e-2)
