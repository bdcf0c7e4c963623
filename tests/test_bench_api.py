"""The Python API: run_study / load_study / Study, the same study the CLI runs; run ids that
never change; optimizers (AdamW, emergence-lr's forms)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch

from emergeinit.bench import config, load_study, run_study
from emergeinit.bench.api import StudyBusyError
from emergeinit.bench.inits import InitContext, apply_init
from emergeinit.bench.optim import build_optimizer, family
from emergeinit.bench.study import StudyDir, expand
from emergeinit.errors import ConfigError
from emergeinit.models import build_model, example_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ["train.seeds=[0,1]", "init.names=['kaiming','emergence']", "train.epochs=1"]


def test_run_ids_of_existing_studies_never_change() -> None:
    """Ids of the shipped presets as the harness first computed them: a study directory from
    any earlier version resumes instead of running everything again."""
    smoke = [r["run_id"] for r in expand(config.load("smoke"))]
    assert smoke == ["7f43abf855d0", "00ac8d029ee8", "c0d97351d6c6", "142de043ab36",
                     "3a52ab276d4b", "71e4127f7504"]  # fmt: skip
    translation = [r["run_id"] for r in expand(config.load("translation-smoke"))]
    assert translation == ["361802c5789d", "f1e9df26dcea", "8aa88a5833b9", "9ff871e6fd2f"]
    default = "".join(r["run_id"] for r in expand(config.load("default")))
    assert hashlib.sha256(default.encode()).hexdigest()[:16] == "b4df22bca93c8f97"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> object:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_study("smoke", out=tmp_path_factory.mktemp("api") / "s", overrides=SMALL,
                         workers=1)  # fmt: skip
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
def test_run_study_returns_the_study(study: object) -> None:
    s = load_study(study.dir)  # type: ignore[attr-defined]
    assert s == study and s.config["study"]["name"] == "smoke"
    rows = s.rows
    assert len(rows) == 4 and {r["init"] for r in rows} == {"kaiming", "emergence"}
    first = rows[0]
    assert isinstance(first["seed"], int) and isinstance(first["test_acc_final"], float)
    assert first["alpha"] is None and first["head"] is None  # empty cells: None
    assert s.report_path.read_text().startswith("# Study `smoke`")
    assert s.failed == []
    assert [e["event"] for e in s.events(first["run_id"])][:2] == ["init", "train"]


@pytest.mark.slow
def test_to_pandas_is_the_results_table(study: object) -> None:
    pd = pytest.importorskip("pandas")
    frame = study.to_pandas()  # type: ignore[attr-defined]
    assert isinstance(frame, pd.DataFrame) and len(frame) == 4
    assert list(frame.columns)[:3] == ["run_id", "status", "task"]
    means = frame.groupby("init")["test_acc_final"].mean()
    assert set(means.index) == {"kaiming", "emergence"}


@pytest.mark.slow
def test_run_study_again_resumes_and_runs_nothing(study: object, tmp_path: Path) -> None:
    folder = study.dir  # type: ignore[attr-defined]
    streams = sorted((folder / "runs").glob("*/metrics.jsonl"))
    before = [p.stat().st_mtime_ns for p in streams]
    again = run_study("smoke", out=folder, overrides=SMALL, workers=1)
    assert again.rows == study.rows  # type: ignore[attr-defined]
    assert [p.stat().st_mtime_ns for p in streams] == before
    with pytest.raises(ConfigError, match="different config"):
        run_study("smoke", out=folder, overrides=[*SMALL, "train.lr=0.2"])


def test_a_target_may_be_a_dict_or_a_path(tmp_path: Path) -> None:
    raw = {"study": {"name": "mine"}, "init": {"names": ["kaiming"]}}
    assert config.load(raw)["study"]["name"] == "mine"
    path = tmp_path / "mine.toml"
    path.write_text('[study]\nname = "from-a-path"\n')
    assert config.load(path)["study"]["name"] == "from-a-path"


def test_a_busy_study_and_a_bad_config_raise_before_running(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    StudyDir(folder).claim(config.load("smoke", SMALL))
    busy = pytest.raises(StudyBusyError, match="another 'emergeinit bench' is running")
    with StudyDir(folder).lock(), busy:
        run_study("smoke", out=folder, overrides=SMALL)
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        run_study("smoke", out=tmp_path / "t", overrides=["train.lrr=1"])
    assert not (tmp_path / "t").exists() and not (folder / "results.csv").exists()


def test_quiet_false_reports_progress_through_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emergeinit")
    run_study("smoke", out=tmp_path / "s", workers=1, quiet=False,
              overrides=["train.seeds=[0]", "init.names=['kaiming']", "train.epochs=1",
                         "stats.baseline=''"])  # fmt: skip
    assert "study smoke: 1 runs, 0 already finished, 1 to run" in caplog.text
    assert "1 runs in" in caplog.text


# --- optimizers ----------------------------------------------------------------------------


def _ctx(optimizer: str) -> InitContext:
    spec = "mlp:16-12x3-4"
    return InitContext(
        spec=spec, example_input=example_input(spec, 4),
        settings={"alpha": 2.0, "pivot": 0.5, "head": True, "base": "kaiming_normal",
                  "even": "integer"},
        train={"optimizer": optimizer, "lr": 0.1}, generator=torch.Generator().manual_seed(0),
        sample=lambda n: (torch.zeros(n, 16), torch.zeros(n, dtype=torch.long)), seed=0,
    )  # fmt: skip


def test_adamw_is_built_in_with_the_train_weight_decay() -> None:
    model = build_model("mlp:16-12x3-4")
    train = {"optimizer": "adamw", "weight_decay": 0.01, "momentum": 0.9, "nesterov": False}
    opt = build_optimizer(model.parameters(), train, 0.003)
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[0]["lr"] == 0.003
    assert family(train) == "adam" and family({"optimizer": "sgd"}) == "sgd"


def test_emergence_lr_takes_adams_multipliers_under_adamw() -> None:
    adam = apply_init("emergence-lr", build_model("mlp:16-12x3-4"), _ctx("adam"))
    adamw = apply_init("emergence-lr", build_model("mlp:16-12x3-4"), _ctx("adamw"))
    assert adam.param_groups is not None and adamw.param_groups is not None
    multipliers = [g["lr_multiplier"] for g in adamw.param_groups]
    assert multipliers == [g["lr_multiplier"] for g in adam.param_groups]
    assert multipliers == [4.0, 2.0, 0.5, 0.25, 1.0]  # alpha**(-e), not alpha**(-2e)


def test_adamw_runs_drop_the_sgd_keys_and_keep_their_ids_apart() -> None:
    (adam, *_) = expand(config.load("smoke", ["train.optimizer='adam'"]))
    (adamw, *_) = expand(config.load("smoke", ["train.optimizer='adamw'"]))
    assert "momentum" not in adamw["train"] and "nesterov" not in adamw["train"]
    assert adam["run_id"] != adamw["run_id"]
