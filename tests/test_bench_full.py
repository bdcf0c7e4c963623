"""The ``[full]`` table (a preset at full size) and ``emergeinit bench --full``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from emergeinit.bench import config
from emergeinit.bench.cli import run_bench
from emergeinit.cli import app
from emergeinit.errors import ConfigError

RESULTS = (
    "results-mlp", "results-cnn", "results-lr", "results-pivot", "results-headline-mlp",
    "results-headline-cnn",
)  # fmt: skip


def _study(tmp_path: Path, full: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(
        '[study]\nname = "s"\n[train]\nepochs = 1\nseeds = 2\n[init]\nnames = ["kaiming"]\n'
        f"[full]\n{full}\n"
    )
    return str(path)


@pytest.mark.parametrize("name", RESULTS)
def test_results_presets_have_a_full_size(name: str) -> None:
    small, full = config.load(name), config.load(name, full=True)
    assert "full" not in small and "full" not in full  # never kept in the resolved config
    changed = config.diff_keys(small, full)
    assert {"train.epochs", "train.seeds", "data.train_size"} <= set(changed)
    assert full["train"]["epochs"] > small["train"]["epochs"]
    assert len(full["train"]["seeds"]) > len(small["train"]["seeds"])
    assert full["data"]["train_size"] == 0  # the whole training set


def test_full_applies_before_set(tmp_path: Path) -> None:
    target = _study(tmp_path, '"train.epochs" = 5\n"train.seeds" = 4')
    assert config.load(target)["train"]["epochs"] == 1
    full = config.load(target, full=True)
    assert full["train"]["epochs"] == 5 and full["train"]["seeds"] == [0, 1, 2, 3]
    assert config.load(target, ["train.epochs=3"], full=True)["train"]["epochs"] == 3


def test_full_accepts_nested_tables(tmp_path: Path) -> None:
    target = _study(tmp_path, "[full.train]\nlr = [0.1, 0.2]\n[full.init.gradinit]\niterations = 7")
    cfg = config.load(target, full=True)
    assert cfg["train"]["lr"] == [0.1, 0.2]
    assert cfg["init"]["gradinit"]["iterations"] == 7


@pytest.mark.parametrize(
    ("full", "message"),
    [
        ('"train.epoch" = 5', r"full\.train\.epoch.*did you mean full\.train\.epochs"),
        ('"nope.epochs" = 5', r"unknown key 'full\.nope'"),
        ('"train.epochs" = 0', r"full\.train\.epochs: must be >= 1"),
        ('"train.epochs" = "ten"', r"full\.train\.epochs: expected an integer"),
        ('"init.names" = ["kaiming", "bogus"]', r"full\.init\.names: 'bogus' is not one of"),
        ('"data.synthetic" = 3', r"full\.data\.synthetic: is a table"),
        ('"train.epochs.x" = 3', r"full\.train\.epochs\.x: train\.epochs is a value"),
        # Fine alone; with the study's 2 seeds it leaves no held-out seed (the cross checks).
        ('"stats.select_seeds" = 2', r"stats\.select_seeds: 2 leaves no held-out seed"),
    ],
)
def test_a_bad_full_table_fails_even_without_full(tmp_path: Path, full: str, message: str) -> None:
    target = _study(tmp_path, full)
    with pytest.raises(ConfigError, match=message):
        config.load(target)
    with pytest.raises(ConfigError, match=message):
        config.load(target, full=True)


def test_full_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="full: expected a table"):
        config.resolve({"full": 3})


def test_full_without_a_full_table_is_an_error_naming_the_presets() -> None:
    with pytest.raises(ConfigError, match=r"no \[full\] table.*results-mlp"):
        config.load("smoke", full=True)


def test_run_bench_full_exits_2_without_a_table(tmp_path: Path, capsys) -> None:
    assert run_bench("smoke", tmp_path / "x", [], workers=1, quiet=True, full=True) == 2
    assert "--full" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_full_flag_reaches_the_config(tmp_path: Path) -> None:
    # A study small enough to run: --full doubles its seeds and epochs, and a --set after
    # --full wins over the [full] table. The written config shows what was applied.
    target = tmp_path / "tiny.toml"
    target.write_text(
        '[study]\nname = "tiny"\n'
        '[data]\nval_size = 64\n[data.synthetic]\nclasses = 2\nshape = [1, 2, 2]\n'
        "train = 192\ntest = 64\n"
        '[model]\nspec = "mlp:{features}-4-{classes}"\n'
        '[init]\nnames = ["kaiming"]\n'
        "[train]\nepochs = 1\nseeds = 1\nbatch_size = 64\n"
        '[measure]\nenabled = false\n[stats]\nbaseline = ""\n'
        '[full]\n"train.epochs" = 3\n"train.seeds" = 2\n'
    )
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app, ["bench", str(target), "--full", "--set", "train.epochs=2", "--out", str(out),
              "--quiet", "--workers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    applied = config.load(str(out / "config.toml"))
    assert applied["train"]["seeds"] == [0, 1]  # from [full]
    assert applied["train"]["epochs"] == 2  # --set after --full
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 2  # header + 2 seeds

    result = CliRunner().invoke(app, ["bench", "smoke", "--full", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "no [full] table" in result.output and not (tmp_path / "x").exists()
