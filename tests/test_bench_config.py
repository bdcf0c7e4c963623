"""Study config: presets resolve, overrides parse, and bad configs fail naming the key."""

from __future__ import annotations

import pytest

from emergeinit.bench import config
from emergeinit.bench.study import expand
from emergeinit.errors import ConfigError

EXPECTED_PRESETS = {
    "smoke", "default", "paper-mlp", "paper-cnn", "cifar-cnn", "lr-sweep", "pivot-ablation",
    "results-mlp", "results-cnn", "results-lr", "results-pivot", "results-adamw", "results-resnet",
    "results-headline-mlp", "results-headline-cnn",
}  # fmt: skip


def test_every_preset_ships_and_resolves() -> None:
    assert set(config.preset_names()) >= EXPECTED_PRESETS
    for name in EXPECTED_PRESETS:
        cfg = config.load(name)
        assert cfg["study"]["name"] == name
        assert expand(cfg), name


def test_no_target_is_the_default_preset() -> None:
    assert config.load(None) == config.load("default")


def test_smoke_uses_synthetic_data_few_inits_two_seeds() -> None:
    cfg = config.load("smoke")
    assert cfg["data"]["dataset"] == ["synthetic"]
    assert 2 <= len(cfg["init"]["names"]) <= 3
    assert len(cfg["train"]["seeds"]) == 2


def test_defaults_are_filled_and_axes_become_lists() -> None:
    cfg = config.resolve({"train": {"lr": 0.1, "seeds": 3}, "init": {"names": "kaiming"}})
    assert cfg["train"]["lr"] == [0.1]
    assert cfg["train"]["seeds"] == [0, 1, 2]
    assert cfg["init"]["names"] == ["kaiming"]
    assert cfg["train"]["momentum"] == 0.9
    assert cfg["init"]["gradinit"]["iterations"] == 100


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"train": {"lrr": 0.1}}, "train.lrr"),
        ({"trian": {}}, "trian"),
        ({"init": {"gradinit": {"iters": 3}}}, "init.gradinit.iters"),
        ({"train": {"lr": -0.1}}, "train.lr"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"epochs": 1.5}}, "train.epochs"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer"),
        ({"train": {"targets": [1.5]}}, "train.targets"),
        ({"train": {"seeds": [0, 0]}}, "train.seeds"),
        ({"init": {"names": ["kaiming", "he"]}}, "init.names"),
        ({"init": {"pivot": [1.0]}}, "init.pivot"),
        ({"init": {"alpha": [0.0]}}, "init.alpha"),
        ({"init": {"head": ["yes"]}}, "init.head"),
        ({"data": {"dataset": "mnist"}}, "data.dataset"),
        ({"data": {"synthetic": {"shape": [8, 8]}}}, "data.synthetic.shape"),
        ({"data": {"synthetic": 3}}, "data.synthetic"),
        ({"stats": {"baseline": "xavier"}}, "stats.baseline"),
        ({"stats": {"primary": ["accuracy"]}}, "stats.primary"),
        ({"model": {"spec": "mlp:{inputs}-10"}}, "model.spec"),
    ],
)
def test_bad_configs_name_the_offending_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.resolve(raw)


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match=r"did you mean train\.lr"):
        config.resolve({"train": {"lrr": 0.1}})


def test_overrides_are_toml_literals_with_bare_word_strings() -> None:
    raw = config.apply_overrides(
        config.load_preset("smoke"),
        ["train.lr=[0.01,0.1]", "stats.baseline=xavier", "init.alpha=3", "train.nesterov=true"],
    )
    cfg = config.resolve(raw)
    assert cfg["train"]["lr"] == [0.01, 0.1]
    assert cfg["stats"]["baseline"] == "xavier"
    assert cfg["init"]["alpha"] == [3.0]
    assert cfg["train"]["nesterov"] is True


@pytest.mark.parametrize("text", ["train.lr", "=3", "train.lr=[0.1", "a..b=1"])
def test_malformed_overrides_are_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        config.apply_overrides({}, [text])


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"train\.speed"):
        config.load("smoke", ["train.speed=2"])


def test_target_rule_file_vs_preset(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[study]\nname = "mine"\n')
    assert config.load(str(path))["study"]["name"] == "mine"
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        config.load("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(str(bad))


def test_diff_keys_names_dotted_paths() -> None:
    a = config.load("smoke")
    b = config.load("smoke", ["train.lr=0.2", "init.lsuv.tol=0.2"])
    assert config.diff_keys(a, b) == ["init.lsuv.tol", "train.lr"]
    assert config.diff_keys(a, a) == []
