"""Users' own inits, datasets and optimizers in a study: named by import path (or entry point),
checked at preflight, labelled in results and report, paired against a built-in baseline."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch

from emergeinit.bench import config, plugins, run_study
from emergeinit.bench.data import load_splits
from emergeinit.bench.study import expand
from emergeinit.errors import ConfigError

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDY: dict[str, Any] = {
    "study": {"name": "plugins", "description": "A plug-in init, dataset and optimizer."},
    "data": {"dataset": "bench_plugins:blobs", "val_size": 80, "options": {"shift": 1}},
    "model": {"spec": "mlp:{features}-16x2-{classes}"},
    "init": {"names": ["kaiming", "bench_plugins:half_kaiming"]},
    "train": {"optimizer": "bench_plugins:rmsprop", "lr": 0.003, "epochs": 1, "batch_size": 32,
              "seeds": [0, 1, 2], "log_every": 4},
    "stats": {"baseline": "kaiming", "select_seeds": 1},
}  # fmt: skip


def with_(**tables: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in STUDY.items()}
    for key, table in tables.items():
        out[key] = {**out.get(key, {}), **table}
    return out


def rows(study: Path) -> list[dict[str, str]]:
    with (study / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


# --- config and preflight --------------------------------------------------------------------


def test_plug_in_names_pass_the_schema_and_expand() -> None:
    runs = expand(config.load(STUDY))
    assert len(runs) == 6
    assert {r["init"]["name"] for r in runs} == {"kaiming", "bench_plugins:half_kaiming"}
    first = runs[0]
    assert first["data"] == {
        "dataset": "bench_plugins:blobs", "train_size": 0, "val_size": 80, "test_size": 0,
        "seed": 0, "options": {"shift": 1},
    }  # fmt: skip
    assert first["model"] == "mlp:6-16x2-3"  # {features} and {classes} from the plug-in
    assert first["train"]["optimizer"] == "bench_plugins:rmsprop"
    assert "momentum" in first["train"]  # a plug-in optimizer gets the whole train table


@pytest.mark.parametrize(
    ("tables", "key", "message"),
    [
        ({"init": {"names": ["kaiming", "bench_plugins:nope"]}}, "init.names", "has no 'nope'"),
        ({"init": {"names": ["kaiming", "no_such_module:fn"]}}, "init.names",
         "cannot import module 'no_such_module'"),
        ({"init": {"names": ["kaiming", "bench_plugins:NOT_CALLABLE"]}}, "init.names",
         "not callable"),
        ({"init": {"names": ["kaiming", "bench_plugins:returns_a_number"]}}, "init.names",
         "returned int"),
        ({"init": {"names": ["kaiming", "bench_plugins:foreign_parameters"]}}, "init.names",
         "not a parameter of the model"),
        ({"data": {"dataset": "bench_plugins:ragged"}}, "data.dataset",
         "must be 10 integer labels"),
        ({"data": {"dataset": "bench_plugins:float_labels"}}, "data.dataset", "integer labels"),
        ({"data": {"dataset": "bench_plugins:missing"}}, "data.dataset", "has no 'missing'"),
        ({"train": {"optimizer": "bench_plugins:not_an_optimizer"}}, "train.optimizer",
         "returned str, not a torch.optim.Optimizer"),
        ({"train": {"optimizer": "bench_plugins:sgd_no_family"},
          "init": {"names": ["kaiming", "emergence-lr"]}}, "train.optimizer", "family"),
        ({"init": {"names": ["kaiming", "not-an-entry-point"]}}, "init.names",
         "is not one of 'default'"),
    ],
)  # fmt: skip
def test_a_bad_plug_in_fails_at_preflight_naming_the_key(
    tmp_path: Path, tables: dict[str, Any], key: str, message: str
) -> None:
    out = tmp_path / "study"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
        run_study(with_(**tables), out=out, workers=1)
    assert message in str(caught.value)
    assert not out.exists()  # nothing ran, nothing was written


def test_a_plug_in_dataset_is_cut_and_standardized_like_a_built_in() -> None:
    table = {"dataset": "bench_plugins:blobs", "train_size": 200, "val_size": 80,
             "test_size": 60, "seed": 0, "options": {}}  # fmt: skip
    splits = load_splits("bench_plugins:blobs", table)
    assert splits.shape == (6,) and splits.classes == 3
    assert splits.train_x.shape == (200, 6) and splits.val_x.shape == (80, 6)
    assert splits.test_x.shape == (60, 6) and splits.train_y.dtype == torch.int64
    # Standardized per feature with training-subset statistics.
    assert torch.allclose(splits.train_x.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(splits.train_x.std(0), torch.ones(6), atol=1e-5)
    images = load_splits("bench_plugins:tiny_images", {**table, "dataset": "x", "train_size": 0,
                                                       "val_size": 30, "test_size": 0})
    assert images.shape == (1, 4, 4) and images.train_x.shape == (120, 1, 4, 4)
    assert images.classes == 2 and images.test_x.shape == (50, 1, 4, 4)


def test_a_plug_in_init_returns_parameter_groups() -> None:
    from emergeinit.bench.inits import InitContext, apply_init
    from emergeinit.models import build_model, example_input

    model = build_model("mlp:6-8-3")
    ctx = InitContext(
        spec="mlp:6-8-3", example_input=example_input("mlp:6-8-3", 4), settings={},
        train={"optimizer": "sgd", "lr": 0.1}, generator=torch.Generator().manual_seed(0),
        sample=lambda n: (torch.zeros(n, 6), torch.zeros(n, dtype=torch.long)), seed=0,
    )  # fmt: skip
    outcome = apply_init("bench_plugins:slow_last_layer", model, ctx)
    assert outcome.param_groups is not None and len(outcome.param_groups) == 2
    assert outcome.param_groups[1]["lr"] == pytest.approx(0.01)


# --- a study with all three kinds -------------------------------------------------------------


@pytest.fixture(scope="module")
def api_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_study(STUDY, out=tmp_path_factory.mktemp("api") / "s", workers=1)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
def test_run_study_with_plug_ins_pairs_them_with_kaiming(api_study: Any) -> None:
    table = api_study.rows
    assert len(table) == 6 and {r["status"] for r in table} == {"ok"}
    assert {r["init"] for r in table} == {"kaiming", "half-kaiming"}  # the name attribute
    assert {r["dataset"] for r in table} == {"blobs"}
    assert {r["optimizer"] for r in table} == {"bench_plugins:rmsprop"}  # the import path
    for r in table:
        assert 0.0 <= r["test_acc_final"] <= 1.0 and math.isfinite(r["log10_e_init"])
    report = api_study.report_path.read_text()
    assert "## Paired differences vs `kaiming`" in report
    assert "| half-kaiming | test_acc_final | 3 |" in report  # paired on the 3 seeds
    assert "- **half-kaiming**: plug-in `bench_plugins:half_kaiming`: Kaiming-normal" in report
    env = (api_study.dir / "environment.json").read_text()
    assert '"bench_plugins:blobs"' in env and "Three Gaussian blobs" in env


@pytest.mark.slow
def test_the_cli_runs_the_same_plug_in_study(api_study: Any, tmp_path: Path) -> None:
    path = tmp_path / "plugins.toml"
    path.write_text(tomli_w.dumps(STUDY))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get(
        "PYTHONPATH", "")])}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "emergeinit", "bench", str(path), "--out", "s", "--quiet",
         "--workers", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli_rows = rows(tmp_path / "s")
    assert [r["run_id"] for r in cli_rows] == [r["run_id"] for r in api_study.rows]
    assert {r["init"] for r in cli_rows} == {"kaiming", "half-kaiming"}
    assert "Paired differences vs `kaiming`" in (tmp_path / "s" / "report.md").read_text()


@pytest.mark.slow
def test_the_cli_names_a_missing_plug_in_and_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(with_(init={"names": ["kaiming", "bench_plugins:gone"]})))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    result = subprocess.run(
        [sys.executable, "-m", "emergeinit", "bench", str(path), "--out", "s"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "init.names" in result.stderr and "has no 'gone'" in result.stderr
    assert not (tmp_path / "s").exists()


# --- entry points -----------------------------------------------------------------------------


def test_an_init_offered_by_an_installed_package_is_found_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package's ``[project.entry-points."emergeinit.inits"]`` makes its init a name."""
    (tmp_path / "fancy_inits.py").write_text(
        "def fancy(model, ctx):\n    '''The fancy init.'''\n"
    )
    info = tmp_path / "fancy_inits-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-inits\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[emergeinit.inits]\nfancy = fancy_inits:fancy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.refresh()
    try:
        assert "fancy" in plugins.entry_point_names("init")
        cfg = config.load("smoke", ["init.names=['kaiming','fancy']"])
        assert cfg["init"]["names"] == ["kaiming", "fancy"]
        fn = plugins.resolve("init", "fancy", "init.names")
        assert fn.__doc__ == "The fancy init."
    finally:
        monkeypatch.undo()
        plugins.refresh()
