"""The optimizer axis, values keyed by optimizer, the init's order/units axes and
``init.exclude``: resolution, validation, expansion, labels, grouping and run-id stability."""

from __future__ import annotations

import hashlib
import random

import pytest

from emergeinit.bench import config, stats
from emergeinit.bench.labels import label
from emergeinit.bench.study import count_runs, expand, order_rows, result_row, run_id
from emergeinit.errors import ConfigError

TWO = {"optimizer": ["sgd", "adamw"], "lr": {"sgd": [0.05, 0.1], "adamw": 0.001}}


def _train(**train: object) -> dict:
    return config.resolve({"train": train})


def _smoke_runs(*overrides: str) -> list[dict]:
    """The runs of the smoke preset with these ``--set`` overrides."""
    return expand(config.load("smoke", list(overrides)))


# --- the optimizer axis -------------------------------------------------------------------


def test_one_optimizer_resolves_to_a_string_as_it_always_did() -> None:
    assert _train(optimizer="adamw")["train"]["optimizer"] == "adamw"
    assert _train(optimizer=["adamw"])["train"]["optimizer"] == "adamw"  # the same study
    assert config.resolve({})["train"]["optimizer"] == "sgd"
    assert _train(optimizer=["sgd", "adamw"])["train"]["optimizer"] == ["sgd", "adamw"]


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"optimizer": ["sgd", "rmsprop"]}, r"train\.optimizer: 'rmsprop' is not one of"),
        ({"optimizer": ["sgd", "sgd"]}, r"train\.optimizer: values repeat"),
        ({"optimizer": []}, r"train\.optimizer: must not be an empty list"),
        ({"optimizer": ["sgd", "adamw"], "lr": {"sgd": 0.1}},
         r"train\.lr: no value for optimizer 'adamw'"),
        ({"lr": {"sgd": 0.1, "adamW": 0.1}}, r"train\.lr\.adamW: 'adamW' is not among"),
        ({"lr": {}}, r"train\.lr: an empty table"),
        ({"lr": {"sgd": [0.1, -1.0]}}, r"train\.lr\.sgd: must be > 0"),
        ({"lr": {"sgd": "fast"}}, r"train\.lr\.sgd: expected number or a list of numbers"),
        ({"lr": "fast"}, r"train\.lr: expected .*or a table of them keyed by optimizer"),
        ({"optimizer": ["sgd", "adamw"], "weight_decay": {"adamw": 0.05}},
         r"train\.weight_decay: no value for optimizer 'sgd'"),
        ({"weight_decay": {"sgd": -0.1}}, r"train\.weight_decay\.sgd: must be >= 0"),
    ],
)  # fmt: skip
def test_bad_optimizer_axes_name_the_key(train: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.resolve({"train": train})


def test_a_table_keyed_by_optimizer_is_canonical() -> None:
    cfg = _train(**TWO)
    assert cfg["train"]["lr"] == {"sgd": [0.05, 0.1], "adamw": [0.001]}
    assert config.learning_rates(cfg) == {"sgd": [0.05, 0.1], "adamw": [0.001]}
    # One optimizer: its entry only, as a plain list, so both spellings are the same study.
    narrowed = _train(optimizer="adamw", lr=TWO["lr"], weight_decay={"sgd": 0.0, "adamw": 0.1})
    assert narrowed["train"]["lr"] == [0.001] and narrowed["train"]["weight_decay"] == 0.1
    assert narrowed == _train(optimizer="adamw", lr=0.001, weight_decay=0.1)
    # A list applies to every optimizer.
    assert config.learning_rates(_train(optimizer=["sgd", "adam"], lr=[0.01, 0.1])) == {
        "sgd": [0.01, 0.1],
        "adam": [0.01, 0.1],
    }


def test_the_optimizer_axis_expands_each_optimizer_with_its_own_values() -> None:
    runs = _smoke_runs(
        "train.optimizer=['sgd','adamw']", "train.lr={sgd=[0.05,0.1],adamw=0.001}",
        "train.weight_decay={sgd=0.0,adamw=0.05}", "init.names=['kaiming']",
    )  # fmt: skip
    seen = [(r["train"]["optimizer"], r["train"]["lr"], r["seed"]) for r in runs]
    assert seen == [
        ("sgd", 0.05, 0), ("sgd", 0.05, 1), ("sgd", 0.1, 0), ("sgd", 0.1, 1),
        ("adamw", 0.001, 0), ("adamw", 0.001, 1),
    ]  # fmt: skip
    for run in runs:
        sgd = run["train"]["optimizer"] == "sgd"
        assert ("momentum" in run["train"]) == sgd and ("nesterov" in run["train"]) == sgd
        assert run["train"]["weight_decay"] == (0.0 if sgd else 0.05)
    assert len({r["run_id"] for r in runs}) == len(runs)
    # A run of a two-optimizer study is the run of the one-optimizer study it contains.
    alone = _smoke_runs("train.lr=0.05", "init.names=['kaiming']")
    assert [r["run_id"] for r in alone] == [r["run_id"] for r in runs[:2]]


def test_set_can_change_one_entry_of_a_table() -> None:
    cfg = config.load(
        "results-resnet", ["train.lr.adamw=[0.001,0.003]", "train.weight_decay.adamw=0.1"]
    )
    assert cfg["train"]["lr"] == {"sgd": [0.02], "adamw": [0.001, 0.003]}
    assert cfg["train"]["weight_decay"] == {"sgd": 0.0, "adamw": 0.1}


def test_a_full_table_sets_a_keyed_value(tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[study]\nname = "s"\n[init]\nnames = ["kaiming"]\n[train]\noptimizer = ["sgd", "adamw"]'
        "\nlr = {sgd = 0.1, adamw = 0.001}\nseeds = 2\n"
        '[full]\n"train.lr" = {sgd = [0.1, 0.2], adamw = [0.001, 0.003]}\n'
    )
    assert config.load(str(path))["train"]["lr"] == {"sgd": [0.1], "adamw": [0.001]}
    full = config.load(str(path), full=True)
    assert full["train"]["lr"] == {"sgd": [0.1, 0.2], "adamw": [0.001, 0.003]}
    # A table merges into a table (the entries it names), and replaces a list.
    merged = config.load(str(path), ["train.lr={adamw=[0.01]}"])
    assert merged["train"]["lr"] == {"sgd": [0.1], "adamw": [0.01]}
    assert config.load("smoke", ["train.optimizer=['sgd','adam']",
                                 "train.lr={sgd=0.1,adam=0.01}"])["train"]["lr"] == {
        "sgd": [0.1], "adam": [0.01]
    }  # fmt: skip
    path.write_text(path.read_text().replace('"train.lr" = {', '"train.lr.sgd" = [0.3]\nx = {'))
    with pytest.raises(ConfigError, match=r"full\.train\.lr\.sgd: give train\.lr as a whole"):
        config.load(str(path))


# --- run ids of existing studies ------------------------------------------------------------

# (runs, sha256 of the comma-joined run ids)[:16] of every preset as the code before the
# optimizer axis and the order/units axes expanded it (main at 0902eb3): a study recorded
# then must resume now with zero reruns.
RECORDED = {
    "cifar-cnn": (63, "7b46feff54a7543d"),
    "default": (84, "f39f27c02230b177"),
    "iwslt": (9, "a3bb15367014b594"),
    "lr-sweep": (160, "922d247fe45ea9e5"),
    "paper-cnn": (110, "6bda00fcb8e203a8"),
    "paper-mlp": (150, "25732fb3d1a5c1b4"),
    "pivot-ablation": (104, "12393a29cb2e3064"),
    "results-cnn": (70, "8a308950d68df9be"),
    "results-cnn --full": (220, "3be595bdc6879938"),
    "results-lr": (300, "27d685684f59998f"),
    "results-lr --full": (1080, "3a0a9016c45444a9"),
    "results-mlp": (110, "992d09244881c1d3"),
    "results-mlp --full": (220, "ea8b5a1a7c460b15"),
    "results-pivot": (130, "a9d55f1dce30590b"),
    "results-pivot --full": (260, "e2b8e4c2fb00c149"),
    "smoke": (6, "1dba214f71eb3d7c"),
    "translation": (12, "0f9986cf16c0f092"),
    "translation-smoke": (4, "09f6086e43cc7455"),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_existing_presets_keep_their_run_ids(name: str) -> None:
    preset, _, full = name.partition(" ")
    ids = [r["run_id"] for r in expand(config.load(preset, full=bool(full)))]
    assert (len(ids), hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]) == RECORDED[name]


def test_added_init_keys_leave_the_id_alone_at_their_defaults() -> None:
    run = _smoke_runs("init.names=['kaiming','emergence']")[2]
    assert run["init"]["order"] == "call" and run["init"]["units"] == "auto"
    without = {**run, "init": {k: v for k, v in run["init"].items() if k not in ("order", "units")}}
    assert run_id(without) == run["run_id"]
    assert run_id({**run, "init": {**run["init"], "order": "graph"}}) != run["run_id"]
    assert run_id({**run, "init": {**run["init"], "units": "blocks"}}) != run["run_id"]


def test_emergence_lr_with_weight_decay_is_marked_and_gets_its_own_id() -> None:
    # Its groups now carry the per-unit decay (docs/method.md), so it is not the run an
    # earlier version recorded with the optimizer-wide decay.
    base = "init.names=['kaiming','emergence-lr']"
    plain = _smoke_runs(base)
    decayed = _smoke_runs(base, "train.weight_decay=0.01")
    assert all("decay" not in r["init"] for r in plain)
    marked = [r["init"].get("decay") for r in decayed]
    assert marked == [None, None, "per-unit", "per-unit"]


# --- order, units and exclude ------------------------------------------------------------


def test_order_and_units_multiply_only_the_emergence_inits() -> None:
    runs = _smoke_runs(
        "init.names=['kaiming','emergence','emergence-lr']", "init.order=['call','graph']",
        "init.units=['auto','blocks']", "train.seeds=1",
    )  # fmt: skip
    assert [r["init"]["name"] for r in runs].count("kaiming") == 1
    for name in ("emergence", "emergence-lr"):
        mine = [r["init"] for r in runs if r["init"]["name"] == name]
        assert [(i["order"], i["units"]) for i in mine] == [
            ("call", "auto"), ("call", "blocks"), ("graph", "auto"), ("graph", "blocks")
        ]  # fmt: skip
    assert "order" not in runs[0]["init"]  # kaiming's table has no emergence options


def test_exclude_leaves_matching_configurations_out() -> None:
    cfg = config.load(
        "smoke",
        ["init.names=['kaiming','emergence']", "init.alpha=[1.1,1]", "train.seeds=1",
         "init.order=['call','graph']", "init.units=['auto','blocks']",
         "init.exclude=[{order='graph',units='blocks'},{alpha=1,order='call'}]"],
    )  # fmt: skip
    assert cfg["init"]["exclude"][1] == {"alpha": 1.0, "order": "call"}  # normalized
    kept = [
        (r["init"]["alpha"], r["init"]["order"], r["init"]["units"])
        for r in expand(cfg)
        if r["init"]["name"] == "emergence"
    ]
    assert kept == [(1.1, "call", "auto"), (1.1, "call", "blocks"), (1.1, "graph", "auto"),
                    (1.0, "graph", "auto")]  # fmt: skip


@pytest.mark.parametrize(
    ("exclude", "message"),
    [
        ("[{}]", r"init\.exclude\[0\]: an empty table"),
        ("[{lr=0.1}]", r"init\.exclude\[0\]\.lr: not an emergence axis"),
        ("[{order='grpah'}]", r"init\.exclude\[0\]\.order: 'grpah' is not one of"),
        ("[{units='blocks'}]", r"init\.exclude\[0\]\.units: 'blocks' is not among init\.units"),
        ("[{order='call'}]", r"init\.exclude: leaves no configuration"),
        ("{order='call'}", r"init\.exclude: expected a list of tables"),
    ],
)
def test_bad_exclusions_are_errors(exclude: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load("smoke", [f"init.exclude={exclude}"])


def test_rows_labels_and_groups_tell_order_and_units_apart() -> None:
    runs = _smoke_runs(
        "init.names=['kaiming','emergence']", "init.order=['call','graph']",
        "init.units=['auto','blocks']", "train.seeds=1", "init.alpha=1.2",
    )  # fmt: skip
    rows = [result_row(r, {"status": "ok", "test_acc_final": 0.5}) for r in runs]
    cells = [(r["init"], r["order"], r["units"]) for r in rows]
    # Empty at the defaults, as in rows recorded before these columns existed.
    assert cells == [("kaiming", "", ""), ("emergence", "", ""), ("emergence", "", "blocks"),
                     ("emergence", "graph", ""), ("emergence", "graph", "blocks")]  # fmt: skip
    typed = [{**r, **{k: (r[k] or None) for k in ("order", "units", "alpha", "base", "pivot",
                                                  "head")}} for r in rows]  # fmt: skip
    assert [label(r) for r in typed] == [
        "kaiming", "emergence α=1.2", "emergence α=1.2 (blocks)", "emergence α=1.2 (graph)",
        "emergence α=1.2 (graph, blocks)",
    ]  # fmt: skip
    assert len(stats.group(typed, stats.CONFIG)) == 5
    comparisons = stats.compare_to_baseline(typed, "kaiming", ["test_acc_final"])
    assert len(comparisons) == 4  # one per emergence configuration


def test_the_new_presets_resolve_with_a_full_size() -> None:
    adamw, adamw_full = config.load("results-adamw"), config.load("results-adamw", full=True)
    assert adamw["train"]["optimizer"] == "adamw" and len(adamw["model"]["spec"]) == 4
    assert len(adamw_full["train"]["seeds"]) > len(adamw["train"]["seeds"])
    assert adamw_full["data"]["train_size"] == 0 and adamw_full["train"]["epochs"] == 10
    resnet = config.load("results-resnet")
    assert config.learning_rates(resnet) == {"sgd": [0.02], "adamw": [0.003]}
    variants = {
        (r["init"]["order"], r["init"]["units"]) for r in expand(resnet)
        if r["init"]["name"] == "emergence"
    }  # fmt: skip
    assert variants == {("call", "auto"), ("graph", "auto"), ("call", "blocks")}
    full = config.load("results-resnet", full=True)
    assert full["data"]["train_size"] == 0 and full["train"]["epochs"] == 10


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("results-adamw", []),
        ("results-resnet", []),
        # The defaults (empty cells) listed last: the rows still follow the config's order.
        ("results-resnet", ["init.order=['graph','call']", "init.units=['blocks','auto']",
                            "init.exclude=[]"]),
    ],
)  # fmt: skip
def test_counting_and_ordering_follow_the_new_axes(name: str, overrides: list[str]) -> None:
    cfg = config.load(name, ["train.seeds=2", "stats.select_seeds=1", *overrides])
    runs = expand(cfg)
    assert count_runs(cfg) == len(runs)
    rows = [result_row(r, {"status": "ok"}) for r in runs]
    typed = [{k: (None if v == "" and k not in ("order", "units") else v) for k, v in r.items()}
             for r in rows]  # fmt: skip
    shuffled = typed[::-1]
    random.Random(0).shuffle(shuffled)
    ordered = order_rows(shuffled, cfg)
    assert [r["run_id"] for r in ordered] == [r["run_id"] for r in runs]
