"""Everything predictable fails before the first run, as one clear message naming the key:
the device, each model's memory and emergence scales, the grid's size, the study directory,
the study file; and the small config rules (a table in --set merges, study names are plain).

Fast lane: nothing trains (every case fails, or is checked, before a run starts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from emergeinit.bench import api, config, feasibility, run_study
from emergeinit.bench.api import TooManyRunsError
from emergeinit.bench.cli import run_bench
from emergeinit.bench.feasibility import (
    DeviceUnavailableError,
    OutOfMemoryError,
    check_memory,
    estimate_memory,
)
from emergeinit.bench.study import StudyDirError, check_runs, count_runs, expand, run_id
from emergeinit.cli import app
from emergeinit.errors import ConfigError

SMALL = ["train.seeds=[0]", "init.names=['kaiming','emergence']", "stats.baseline=''"]


class Notices:
    """An observer that keeps the notices (and fails the test if a run starts)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def notice(self, text: str) -> None:
        self.seen.append(text)

    def begin(self, *args: Any) -> None:
        raise AssertionError("the study started")


def refused(tmp_path: Path, *overrides: str, **kw: Any) -> ConfigError:
    """Run a study that must be refused; the error, once it is clear nothing was written."""
    with pytest.raises(ConfigError) as caught:
        run_study("smoke", out=tmp_path / "s", overrides=[*SMALL, *overrides], **kw)
    assert not (tmp_path / "s").exists()
    return caught.value


# --- the device -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["device", "set"])
def test_cuda_without_cuda_is_refused_before_the_study_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if how == "device":
        exc = refused(tmp_path, device="cuda")
    else:
        exc = refused(tmp_path, 'train.device="cuda"')
    assert isinstance(exc, DeviceUnavailableError)
    assert str(exc).startswith("train.device: 'cuda'") and "--device cpu" in str(exc)


def test_runs_on_a_ray_cluster_are_not_judged_by_the_drivers_device_or_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config.load("smoke", [*SMALL, 'train.device="cuda"',
                                'model.spec="mlp:{features}-100000x50-{classes}"'])  # fmt: skip
    assert check_runs(expand(cfg), None, here=False) == []
    with pytest.raises(DeviceUnavailableError):
        check_runs(expand(cfg), None)


# --- emergence scales -----------------------------------------------------------------------


@pytest.mark.parametrize("init", ["emergence", "emergence-lr"])
def test_an_alpha_out_of_the_dtypes_range_is_refused_naming_it(tmp_path: Path, init: str) -> None:
    """The issue's ``--set init.alpha=1e300``: every emergence run would fail its range check."""
    exc = refused(tmp_path, f"init.names=['kaiming','{init}']", "init.alpha=[2.0,1e300]")
    text = str(exc)
    assert text.startswith("init.alpha: alpha = 1e+300 does not fit model 'mlp:64-32x3-4'")
    assert "underflows torch.float32" in text and "remove it from init.alpha" in text


def test_alphas_in_range_pass_and_other_inits_are_not_planned() -> None:
    cfg = config.load("smoke", ["init.alpha=[0.5,1.5,1e6]", "model.spec='mlp:{features}-8x5-4'"])
    assert check_runs(expand(cfg), None) == []
    # alpha only multiplies the emergence inits: kaiming alone never plans a scale.
    cfg = config.load("smoke", ["init.names=['kaiming']", "init.alpha=1e300", "stats.baseline=''"])
    assert check_runs(expand(cfg), None) == []


# --- memory ---------------------------------------------------------------------------------


def test_the_memory_estimate_counts_weights_state_and_activations() -> None:
    # mlp:784-256-10: Flatten, Linear(784,256), ReLU, Linear(256,10); float32.
    weights = 4 * (784 * 256 + 256 + 256 * 10 + 10)
    sgd = estimate_memory("mlp:784-256-10", {"optimizer": "sgd", "momentum": 0.9,
                                             "batch_size": 100})  # fmt: skip
    assert (sgd.weights, sgd.gradients, sgd.optimizer) == (weights, weights, weights)
    assert sgd.activations == 4 * 100 * (784 + 256 + 256 + 10)  # each leaf module's output
    assert sgd.total == 3 * weights + sgd.activations
    plain = estimate_memory("mlp:784-256-10", {"optimizer": "sgd", "momentum": 0.0,
                                               "batch_size": 100})  # fmt: skip
    adam = estimate_memory("mlp:784-256-10", {"optimizer": "adam", "batch_size": 100})
    assert plain.optimizer == 0 and adam.optimizer == 2 * weights


def test_a_model_too_large_for_memory_is_refused_naming_model_spec(tmp_path: Path) -> None:
    exc = refused(tmp_path, 'model.spec="mlp:{features}-100000x50-{classes}"')
    assert isinstance(exc, OutOfMemoryError)
    assert str(exc).startswith("model.spec: 'mlp:64-100000x50-4' needs at least")
    assert "available on cpu" in str(exc)


def test_runs_that_fit_alone_but_not_together_get_a_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = expand(config.load("smoke", SMALL))
    need = estimate_memory(runs[0]["model"], runs[0]["train"]).total
    monkeypatch.setattr(feasibility, "available_memory", lambda device: int(need * 2.5))
    assert check_memory(runs, concurrency=2) == []
    (notice,) = check_memory(runs, concurrency=4)
    assert "4 runs of 'mlp:64-32x3-4' at once" in notice and "--workers 2" in notice
    monkeypatch.setattr(feasibility, "available_memory", lambda device: need - 1)
    with pytest.raises(OutOfMemoryError, match=r"model\.spec"):
        check_memory(runs, concurrency=1)


# --- the grid's size ------------------------------------------------------------------------


def test_a_grid_larger_than_max_runs_is_refused_before_expanding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = ["init.alpha=[1.5,2.0,3.0]", "train.seeds=2501"]  # 2501 x (kaiming + 3 alphas)
    monkeypatch.setattr(api, "expand", lambda cfg: pytest.fail("expanded"))
    exc = refused(tmp_path, *grid)
    assert isinstance(exc, TooManyRunsError)
    assert str(exc) == (
        "study 'smoke' has 10,004 runs (data.dataset 1 x model.spec 1 x train.lr 1 x init "
        "settings 4 (init.alpha x pivot x head x base x order x units = 3 per emergence init) x "
        "train.seeds "
        "2501), more than --max-runs 10,000; to run them all, add --max-runs 10004 (Python: "
        "run_study(..., max_runs=10004)), or make an axis shorter"
    )
    assert "has 24 runs" in str(refused(tmp_path, "train.seeds=12", max_runs=11))


def test_a_grid_of_max_runs_runs_is_allowed(tmp_path: Path) -> None:
    exc = refused(tmp_path, "init.alpha=1e300", max_runs=2)  # 2 runs: on to the next check
    assert str(exc).startswith("init.alpha: alpha = 1e+300")


def test_a_large_grid_is_announced_with_its_count_before_it_expands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "LARGE_GRID", 4)
    seen = Notices()
    with pytest.raises(ConfigError, match=r"init\.alpha"):  # refused later, so nothing runs
        run_study("smoke", out=tmp_path / "s", overrides=["init.alpha=1e300"], observer=seen,
                  workers=64)  # fmt: skip
    assert seen.seen[0] == "study smoke: 6 runs in the grid; expanding them"
    assert any(f"--workers 64 is more than the {os.cpu_count()} CPU cores" in n
               for n in seen.seen)  # fmt: skip


def test_max_runs_must_be_a_positive_integer(tmp_path: Path) -> None:
    assert "--max-runs must be an integer >= 1" in str(refused(tmp_path, max_runs=0))


@pytest.mark.parametrize(
    "overrides",
    [
        ["init.alpha=[1.5,2.0]", "train.lr=[0.01,0.1]", "init.head=[true,false]"],
        ["init.names=['default','lsuv','gradinit','emergence-lr']", "init.pivot=[0.25,0.5]",
         "stats.baseline=''"],
        ["data.dataset=['synthetic','digits']", "model.spec=['mlp:{features}-8-{classes}',"
         "'mlp:{features}-16x2-{classes}']", "train.optimizer='adam'"],
    ],
)  # fmt: skip
def test_expansion_counts_and_ids_agree_with_their_definitions(overrides: list[str]) -> None:
    cfg = config.load("smoke", overrides)
    runs = expand(cfg)
    assert len(runs) == count_runs(cfg)
    assert [r["run_id"] for r in runs] == [run_id(r) for r in runs]
    assert len({r["run_id"] for r in runs}) == len(runs)


def test_translation_runs_keep_their_ids() -> None:
    runs = expand(config.load("translation"))
    assert [r["run_id"] for r in runs] == [run_id(r) for r in runs]


# --- the study directory and the study file -------------------------------------------------


def test_out_at_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StudyDirError, match=r"--out: .*a-file is a file, not a directory"):
        run_study("smoke", out=tmp_path / "a-file", overrides=SMALL)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(StudyDirError, match="cannot write the study directory"):
        run_study("smoke", out=locked / "s", overrides=SMALL)


def test_a_study_directory_that_cannot_be_written_is_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a read-only directory does, wherever the tests run (root writes anyway)."""

    def denied(*args: Any, **kw: Any) -> None:
        raise PermissionError(13, "Permission denied")

    from emergeinit.bench import study

    monkeypatch.setattr(study, "atomic_write_text", denied)
    with pytest.raises(StudyDirError) as caught:
        run_study("smoke", out=tmp_path / "s", overrides=SMALL)
    assert str(caught.value) == (
        f"--out: cannot write the study directory {tmp_path / 's'} (Permission denied); "
        "choose a directory you can write to"
    )


def test_an_empty_out_is_an_error_not_the_default(tmp_path: Path) -> None:
    for out in ("", "  "):
        with pytest.raises(ConfigError, match="--out: empty"):
            run_study("smoke", out=out, overrides=SMALL)
    result = CliRunner().invoke(app, ["bench", "smoke", "--out", "", "--quiet"])
    assert result.exit_code == 2 and "--out: empty" in result.output


def test_a_study_file_that_is_not_utf8_is_a_message(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes(b'[study]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    assert str(caught.value) == (
        f"{path}: not UTF-8 text (byte 0xe9 at offset 19); TOML files are UTF-8: save it as "
        "UTF-8"
    )


def test_a_study_file_that_is_a_directory_is_a_message(tmp_path: Path) -> None:
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(ConfigError, match="cannot be read"):
        config.load(tmp_path / "d.toml")


@pytest.mark.parametrize("name", ["../escape", "/tmp/elsewhere", "a/b", "back\\slash"])
def test_a_study_name_is_a_plain_name(name: str) -> None:
    with pytest.raises(ConfigError, match=r"study\.name: must be a plain name"):
        config.load("smoke", [f"study.name={name!r}"])


def test_a_table_in_set_merges_into_the_table() -> None:
    cfg = config.load("smoke", ["train={lr=0.1}"])
    preset = config.load("smoke")
    assert cfg["train"] == {**preset["train"], "lr": [0.1]}
    nested = config.load("smoke", ["data={synthetic={classes=3}}"])
    assert nested["data"]["synthetic"] == {**preset["data"]["synthetic"], "classes": 3}
    assert config.load("smoke", ["train.lr=0.1"]) == cfg


def test_a_boolean_axis_says_what_it_expects_once() -> None:
    with pytest.raises(ConfigError) as caught:
        config.load("smoke", ["init.head=3"])
    assert str(caught.value) == "init.head: expected true or false, or a list of them, got 3"


def test_cli_exit_status_2_and_one_message_for_every_refusal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("")
    cases = [
        ({"set_": ["init.alpha=1e300"]}, "error: init.alpha: alpha = 1e+300"),
        ({"out": "f"}, "error: --out: f is a file, not a directory"),
        ({"set_": ["init.alpha=[1.5,2.0]", "train.seeds=3000"], "max_runs": 100},
         "error: study 'smoke' has 12,000 runs"),
    ]  # fmt: skip
    for kw, expected in cases:
        assert run_bench("smoke", **{"out": "s", "quiet": True, **kw}) == 2
        err = capfd.readouterr().err
        assert err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


# --- plan and measure with sizes that cannot be allocated ---------------------------------


def _overcommit_refuses_huge_allocations() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() in ("0", "2")
    except OSError:
        return False


@pytest.mark.skipif(
    not _overcommit_refuses_huge_allocations(),
    reason="the kernel might grant 4 TB and then kill the test",
)
@pytest.mark.parametrize("command", ["plan", "measure"])
def test_a_model_too_large_to_allocate_is_a_message(command: str) -> None:
    result = CliRunner().invoke(app, [command, "mlp:1000000-1000000-10"])
    assert result.exit_code == 2, result.output
    assert "error: not enough memory for 'mlp:1000000-1000000-10' (one allocation of 4,000.0 " \
        "GB); use smaller sizes in the spec" in result.output  # fmt: skip


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail] DefaultCPUAllocator: not enough memory: you tried to "
                     "allocate 123000000000 bytes."),
        MemoryError(),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)  # fmt: skip
def test_an_allocation_failure_while_building_is_a_message(
    failure: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load_model(*args: Any, **kw: Any) -> Any:
        raise failure

    monkeypatch.setattr("emergeinit.models.load_model", load_model)
    for command in ("plan", "measure"):
        result = CliRunner().invoke(app, [command, "mlp:8-8-2"])
        assert result.exit_code == 2
        assert result.output.startswith("error: not enough memory for 'mlp:8-8-2'")
    other = RuntimeError("something else")

    def broken(*args: Any, **kw: Any) -> Any:
        raise other

    monkeypatch.setattr("emergeinit.models.load_model", broken)
    result = CliRunner().invoke(app, ["plan", "mlp:8-8-2"])
    assert result.exception is other  # not a memory problem: not disguised as one
