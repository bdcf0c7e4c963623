"""Study configuration: the TOML schema, presets, ``--set`` overrides and validation.

A config is a nested table. Every key is declared in :data:`SCHEMA` with its type, default and
allowed values; anything else is an error that names the dotted key. Grid axes (a value or a
list of values) are normalized to lists, so the *resolved* config written to a study directory
is explicit and two runs of the same study compare equal key by key.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

TASKS = ("classification", "translation")
# The last three are translation corpora (issue 5; see emergeinit.bench.translation).
DATASETS = ("fashion-mnist", "digits", "cifar10", "synthetic", "numbers", "dates", "parallel")
INITS = ("default", "xavier", "kaiming", "emergence", "emergence-lr", "lsuv", "gradinit")
EMERGENCE_INITS = ("emergence", "emergence-lr")
BASES = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal")
# Per-run result columns a study can declare as primary or select on.
METRICS = (
    "val_acc_epoch1",
    "test_acc_epoch1",
    "val_acc_final",
    "test_acc_final",
    "test_loss",
    "train_loss_final",
    "log10_e_init",
    "log10_e_final",
    "init_seconds",
    "train_seconds",
    "bleu",  # translation (issue 5): test sacreBLEU, tokenized BLEU, chrF, validation BLEU
    "bleu_tok",
    "chrf",
    "val_bleu",
)


@dataclass(frozen=True)
class Field:
    """One config key: its type, default and constraints."""

    kind: str  # "str", "int", "float", "bool", "int_list", "float_list", "str_list"
    default: Any
    axis: bool = False  # a grid axis: one value or a list, resolved to a list
    choices: tuple[Any, ...] | None = None
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    positive: bool = False  # strictly > 0
    nonempty: bool = False
    check: Callable[[Any], str | None] | None = None
    whole: bool = False  # ``check`` judges the whole list, not each item
    doc: str = ""


def _unit_interval_open(value: Any) -> str | None:
    return None if 0.0 < value < 1.0 else "must lie strictly between 0 and 1"


def _fraction(value: Any) -> str | None:
    return None if 0.0 < value <= 1.0 else "must lie in (0, 1]"


def _shape(value: Any) -> str | None:
    if len(value) != 3 or any(v < 1 for v in value):
        return "must be [channels, height, width] with every entry >= 1"
    return None


SCHEMA: dict[str, Any] = {
    "study": {
        "name": Field("str", "study", nonempty=True, doc="study name (directory prefix)"),
        "description": Field("str", "", doc="one paragraph for the report"),
        "task": Field("str", "classification", choices=TASKS, doc="what a run trains"),
    },
    "data": {
        "dataset": Field("str_list", ["synthetic"], axis=True, choices=DATASETS, nonempty=True),
        "fallback": Field(
            "str", "", choices=("", *DATASETS), doc="used when a file dataset is missing"
        ),
        "train_size": Field("int", 0, low=0, doc="training examples (0 = all left after val)"),
        "val_size": Field("int", 1000, low=1, doc="validation examples held out of train"),
        "test_size": Field("int", 0, low=0, doc="test examples (0 = all)"),
        "seed": Field("int", 0, low=0, doc="fixes the subsets; not the run seed"),
        "synthetic": {
            "classes": Field("int", 10, low=2),
            "shape": Field("int_list", [1, 8, 8], check=_shape, whole=True),
            "train": Field("int", 2048, low=16, doc="examples generated for train + val"),
            "test": Field("int", 512, low=16),
            "noise": Field("float", 1.0, low=0.0),
        },
        # Translation only (issue 5); see docs/translation.md.
        "dir": Field("str", "", doc="translation: folder of {train,valid,test}.{LANG} files"),
        "src_lang": Field("str", "en", nonempty=True, doc="translation: source file suffix"),
        "tgt_lang": Field("str", "de", nonempty=True, doc="translation: target file suffix"),
        "tokenized": Field(
            "str",
            "auto",
            choices=("auto", "yes", "no"),
            doc="translation: files are Moses-tokenized (auto = BPE found)",
        ),
        "max_len": Field("int", 256, low=8, high=512, doc="translation: tokens per sentence"),
        "max_number": Field(
            "int", 999_999, low=1000, high=10**12, doc="numbers corpus: largest number"
        ),
        "max_terms": Field("int", 3, low=1, doc="numbers corpus: numbers per sentence"),
    },
    "model": {
        "spec": Field("str_list", ["mlp:{features}-64x3-{classes}"], axis=True, nonempty=True),
    },
    "init": {
        "names": Field(
            "str_list", ["kaiming", "emergence"], axis=True, choices=INITS, nonempty=True
        ),
        "alpha": Field("float_list", [1.5], axis=True, positive=True, nonempty=True),
        "pivot": Field("float_list", [0.5], axis=True, check=_unit_interval_open, nonempty=True),
        "head": Field("bool", [True], axis=True, nonempty=True),
        "base": Field("str_list", ["kaiming_normal"], axis=True, choices=BASES, nonempty=True),
        "even": Field("str", "integer", choices=("integer", "half")),
        "lsuv": {
            "batch": Field("int", 256, low=2),
            "std": Field("float", 1.0, positive=True),
            "tol": Field("float", 0.1, positive=True),
            "max_attempts": Field("int", 10, low=1),
        },
        "gradinit": {
            "iterations": Field("int", 100, low=1, doc="CPU budget; the paper uses ~1 epoch"),
            "batch_size": Field("int", 64, low=2),
            "lr": Field("float", 0.01, positive=True, doc="Adam step on the scales"),
            "gamma": Field("float", 1.0, positive=True, doc="gradient-norm bound"),
            "min_scale": Field("float", 0.01, positive=True),
            "norm": Field("str", "auto", choices=("auto", "l1", "l2")),
        },
    },
    "train": {
        "optimizer": Field("str", "sgd", choices=("sgd", "adam")),
        "lr": Field("float_list", [0.05], axis=True, positive=True, nonempty=True),
        "momentum": Field("float", 0.9, low=0.0, high=0.999),
        "nesterov": Field("bool", False),
        "weight_decay": Field("float", 0.0, low=0.0),
        "schedule": Field("str", "none", choices=("none", "cosine", "inverse_sqrt")),
        "warmup_steps": Field("int", 0, low=0),
        "epochs": Field("int", 1, low=1),
        "batch_size": Field("int", 128, low=2),
        "seeds": Field(
            "int_list", [0, 1], nonempty=True, low=0, doc="a list, or N meaning [0, ..., N-1]"
        ),
        "log_every": Field("int", 10, low=1, doc="training-loss record interval (steps)"),
        "eval_every": Field("int", 0, low=0, doc="eval interval in steps; 0 = epoch ends only"),
        "eval_batch_size": Field("int", 1000, low=1),
        "targets": Field("float_list", [], check=_fraction, doc="test accuracies to time"),
        "device": Field("str", "cpu", choices=("cpu", "cuda", "auto")),
        "autocast": Field(
            "str", "none", choices=("none", "bf16"), doc="bf16 autocast of the forward (GPU)"
        ),
        "checkpoint_every": Field(
            "int", 200, low=0, doc="checkpoint interval (steps); 0 = only at the end"
        ),
    },
    "measure": {
        "enabled": Field("bool", True, doc="log10 E at init (needs emergeinit.measure)"),
        "during_training": Field("bool", False, doc="also at every evaluation"),
        "tau": Field("float", 0.05, low=0.0),
        "examples": Field("int", 128, low=1, doc="validation examples used for the measure"),
        "granularity": Field(
            "str",
            "neuron",
            choices=("neuron", "channel"),
            doc="conv nodes: each channel at each position, or each channel",
        ),
    },
    # Translation only (issue 5): tokenizer, batching, loss and decoding.
    "translation": {
        "tokenizer": Field(
            "str",
            "sentencepiece",
            choices=("sentencepiece", "words"),
            doc="words = the files' own (BPE) tokens, as fairseq",
        ),
        "vocab_size": Field("int", 8000, low=8, doc="per language (sentencepiece: at most)"),
        "max_tokens": Field("int", 4096, low=16, doc="padded tokens per training batch"),
        "label_smoothing": Field("float", 0.1, low=0.0, high=0.99),
        "clip_norm": Field("float", 0.0, low=0.0, doc="gradient-norm clip; 0 = none"),
        "beam": Field("int", 5, low=1, doc="1 = greedy decoding"),
        "length_penalty": Field("float", 1.0, low=0.0),
        "max_len_a": Field("float", 1.2, low=0.0, doc="output length <= a * source + b"),
        "max_len_b": Field("int", 10, low=1),
        "valid_bleu": Field("bool", True, doc="decode the validation split (val_bleu)"),
    },
    "stats": {
        "baseline": Field("str", "kaiming", choices=("", *INITS)),
        "primary": Field(
            "str_list", ["test_acc_epoch1", "test_acc_final"], choices=METRICS, nonempty=True
        ),
        "confidence": Field("float", 0.95, check=_unit_interval_open),
        "select_metric": Field("str", "val_acc_final", choices=METRICS),
        "select_seeds": Field("int", 0, low=0, doc="seeds used to choose alpha; 0 = half"),
    },
}


def _type_error(key: str, field: Field, value: Any) -> ConfigError:
    want = {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "int_list": "a list of integers",
        "float_list": "a list of numbers",
        "str_list": "a list of strings",
    }[field.kind]
    if field.axis:
        want = f"{want.removeprefix('a list of ').rstrip('s')} or {want}"
    return ConfigError(f"{key}: expected {want}, got {value!r}")


def _scalar(key: str, kind: str, value: Any, field: Field) -> Any:
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        return float(value)
    raise _type_error(key, field, value)


def _check_value(key: str, field: Field, value: Any) -> None:
    if field.choices is not None and value not in field.choices:
        allowed = ", ".join(repr(c) for c in field.choices)
        raise ConfigError(f"{key}: {value!r} is not one of {allowed}")
    if field.positive and not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {value!r}")
    if field.low is not None and value < field.low:
        raise ConfigError(f"{key}: must be >= {field.low:g}, got {value!r}")
    if field.high is not None and value > field.high:
        raise ConfigError(f"{key}: must be <= {field.high:g}, got {value!r}")
    if field.nonempty and field.kind == "str" and not value:
        raise ConfigError(f"{key}: must not be empty")


def _coerce(key: str, field: Field, value: Any) -> Any:
    """Type-check one value, normalize axes to lists, and apply its constraints."""
    if key == "train.seeds" and isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{key}: a seed count must be >= 1, got {value}")
        value = list(range(value))
    is_list = field.kind.endswith("_list") or field.axis
    if not is_list:
        out = _scalar(key, field.kind, value, field)
        _check_value(key, field, out)
    else:
        item_kind = field.kind.removesuffix("_list")
        if not isinstance(value, list):
            if not field.axis:
                raise _type_error(key, field, value)
            value = [value]
        out = [_scalar(key, item_kind, v, field) for v in value]
        if field.nonempty and not out:
            raise ConfigError(f"{key}: must not be an empty list")
        if not field.whole:
            for item in out:
                _check_value(key, field, item)
        if not field.whole and len(set(map(repr, out))) != len(out):
            raise ConfigError(f"{key}: values repeat in {out!r}")
    if field.check is not None:
        items = [out] if field.whole or not is_list else out
        for item in items:
            problem = field.check(item)
            if problem:
                raise ConfigError(f"{key}: {problem}, got {value!r}")
    return out


def _unknown(key: str, known: Mapping[str, Any]) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(known), n=1)
    hint = ""
    if close:  # (no close match used to raise IndexError here)
        hint = f" (did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?)"
    known_list = ", ".join(sorted(known))
    return ConfigError(f"unknown key {key!r}{hint}; known here: {known_list}")


def _resolve(raw: Mapping[str, Any], schema: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in raw:
        if key not in schema:
            raise _unknown(f"{prefix}{key}", schema)
    for key, spec in schema.items():
        dotted = f"{prefix}{key}"
        if isinstance(spec, dict):
            sub = raw.get(key, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{dotted}: expected a table, got {sub!r}")
            out[key] = _resolve(sub, spec, dotted + ".")
        elif key in raw:
            out[key] = _coerce(dotted, spec, raw[key])
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def _cross_checks(cfg: dict[str, Any]) -> None:
    names = cfg["init"]["names"]
    baseline = cfg["stats"]["baseline"]
    if baseline and baseline not in names:
        raise ConfigError(
            f"stats.baseline: {baseline!r} is not among init.names {names!r}; "
            'add it or set stats.baseline = "" to skip paired comparisons'
        )
    seeds = cfg["train"]["seeds"]
    if cfg["stats"]["select_seeds"] >= len(seeds) and cfg["stats"]["select_seeds"] > 0:
        raise ConfigError(
            f"stats.select_seeds: {cfg['stats']['select_seeds']} leaves no held-out seed "
            f"among train.seeds {seeds}"
        )
    for spec in cfg["model"]["spec"]:
        unknown = set(re.findall(r"\{(\w*)\}", spec)) - {"features", "shape", "classes"}
        if unknown:
            raise ConfigError(
                f"model.spec: unknown placeholder {{{sorted(unknown)[0]}}} in {spec!r}; "
                "use {features}, {shape} or {classes}"
            )
    if cfg["data"]["fallback"] in cfg["data"]["dataset"]:
        raise ConfigError("data.fallback: must differ from the datasets it replaces")
    if cfg["study"]["task"] == "translation" and cfg["train"]["autocast"] != "none":
        raise ConfigError('train.autocast: translation runs support only "none" so far')
    from .translation.schema import check_config as check_translation

    check_translation(cfg)


def resolve(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a raw config and return it with every default filled in and axes as lists.

    Raises :class:`ConfigError` naming the first offending dotted key.
    """
    raw = dict(raw)
    table = raw.pop(FULL, None)
    cfg = _resolve(raw, SCHEMA, "")
    _cross_checks(cfg)
    if table is not None:
        # The [full] table is validated (keys, values and the cross checks of the config it
        # would give) whether or not --full applies it, and never kept in the resolved config.
        try:
            _cross_checks(_resolve(apply_full(raw, full_table(table)), SCHEMA, ""))
        except ConfigError as exc:
            if str(exc).startswith(f"{FULL}."):
                raise
            raise ConfigError(f"{FULL}: with the [full] overrides applied: {exc}") from None
    return cfg


# --- presets, files and overrides -------------------------------------------------------------


def preset_names() -> list[str]:
    """Names of the presets shipped as package data."""
    folder = resources.files("emergeinit.bench") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    path = resources.files("emergeinit.bench") / "presets" / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {name!r}; presets: {', '.join(preset_names())} (or pass a .toml file)"
        )
    return tomllib.loads(path.read_text(encoding="utf-8"))


def load_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_target(target: str | None) -> dict[str, Any]:
    """A preset name or a TOML file: the CLI's rule (``.toml`` suffix or an existing file)."""
    if target is None:
        return load_preset("default")
    path = Path(target)
    if target.endswith(".toml") or path.is_file():
        return load_file(path)
    return load_preset(target)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key.sub=VALUE`` with VALUE a TOML literal; a bare word that is not TOML is a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
        raise ConfigError(f"--set {text!r}: expected key.path=VALUE, e.g. train.lr=[0.01,0.1]")
    value = value.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        if not value or any(c in value for c in "[]{}\"'="):
            raise ConfigError(f"--set {key}: {value!r} is not a TOML literal") from None
        parsed = value  # e.g. --set study.baseline=xavier
    return key.split("."), parsed


def _set_path(out: dict[str, Any], path: list[str], value: Any, what: str) -> None:
    node: dict[str, Any] = out
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what} {'.'.join(path)}: {'.'.join(path[: i + 1])} is a value")
        node = child
    node[path[-1]] = copy.deepcopy(value)


def apply_overrides(raw: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``--set`` applied; keys are checked by :func:`resolve`."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        _set_path(out, path, value, "--set")
    return out


# --- the [full] table: the preset at full size ------------------------------------------------

FULL = "full"


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def full_table(table: Any) -> dict[str, Any]:
    """The ``[full]`` table of a study as ``{dotted key: value}``, every entry validated.

    Keys are dotted config keys, quoted (``"train.epochs" = 10``) or as nested tables
    (``[full.train]``); each must name a key of the schema (not a table) and its value must
    pass that key's checks, exactly as a ``--set`` of the same key would.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(
            f'{FULL}: expected a table of dotted keys, e.g. "train.epochs" = 10; got {table!r}'
        )
    flat = _flatten(table)
    for key, value in flat.items():
        node: Any = SCHEMA
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                raise ConfigError(f"{FULL}.{key}: {'.'.join(parts[:i])} is a value, not a table")
            if part not in node:
                raise _unknown(f"{FULL}.{'.'.join(parts[: i + 1])}", node)
            node = node[part]
        if isinstance(node, dict):
            raise ConfigError(f"{FULL}.{key}: is a table; name one of its keys: {', '.join(node)}")
        try:
            _coerce(key, node, value)
        except ConfigError as exc:  # the message starts with the key: name the table too
            raise ConfigError(f"{FULL}.{exc}") from None
    return flat


def apply_full(raw: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` (without its ``[full]`` table) with the full-size overrides applied."""
    out = copy.deepcopy({k: v for k, v in raw.items() if k != FULL})
    for key, value in flat.items():
        _set_path(out, key.split("."), value, "--full")
    return out


def load(
    target: str | None, overrides: list[str] | None = None, *, full: bool = False
) -> dict[str, Any]:
    """Load a preset or file, apply its ``[full]`` table (with ``full``), then the ``--set``
    overrides, and validate: the resolved config."""
    raw = load_target(target)
    if full:
        if FULL not in raw:
            raise ConfigError(
                f"--full: study {target or 'default'!r} has no [full] table; presets with one: "
                + ", ".join(n for n in preset_names() if FULL in load_preset(n))
            )
        raw = apply_full(raw, full_table(raw[FULL]))
    return resolve(apply_overrides(raw, overrides or []))


def diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (resolved) configs."""
    keys: list[str] = []
    for key in sorted(set(a) | set(b)):
        dotted = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            keys += diff_keys(va, vb, dotted + ".")
        elif va != vb:
            keys.append(dotted)
    return keys
