"""Study configuration: the TOML schema, presets, ``--set`` overrides and validation.

A config is a nested table. Every key is declared in the schema (:func:`schema`: the generic
keys below plus each registered task's own, :meth:`.tasks.Task.schema`) with its type, default
and allowed values; anything else is an error that names the dotted key. Grid axes (a value or
a list of values) are normalized to lists, so the *resolved* config written to a study
directory is explicit and two runs of the same study compare equal key by key. The keys are
documented in ``docs/bench.md#study-toml-schema``.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, get_args

from ..errors import ConfigError
from ..units import DepthOrder, UnitsMode
from . import tasks
from .labels import BUILTIN_INITS, EMERGENCE_INITS
from .optim import BUILTIN as OPTIMIZERS
from .schema import Field, coerce, fraction, merge, resolve_table, unit_interval_open, unknown_key
from .verdict import DEFAULT_POWER, has_direction, resolve_margins

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

__all__ = [
    "BASES",
    "EMERGENCE_INITS",
    "FULL",
    "INITS",
    "apply_full",
    "apply_overrides",
    "diff_keys",
    "excluded",
    "for_optimizer",
    "full_table",
    "learning_rates",
    "load",
    "load_file",
    "load_preset",
    "load_target",
    "optimizers",
    "parse_override",
    "preset_names",
    "resolve",
    "schema",
]

#: The built-in inits (a study may also name plug-ins, see docs/bench.md).
INITS = BUILTIN_INITS
BASES = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal")
#: ``init.order`` and ``init.units``: the core's options (docs/method.md#order, #units).
ORDERS: tuple[str, ...] = get_args(DepthOrder)
UNITS: tuple[str, ...] = get_args(UnitsMode)


def _plain_name(value: Any) -> str | None:
    """A study name names a folder under ``runs/``: no path separators."""
    if "/" in value or "\\" in value or "\0" in value:
        return (
            "must be a plain name (it names the folder runs/<name>-<time>), without / or \\; "
            "to put the study elsewhere, use --out"
        )
    return None


def _generic() -> dict[str, Any]:
    """The keys every study has; choices that depend on the registered tasks are read now."""
    registered = tasks.registered()
    task_names = tuple(tasks.names())
    datasets = tuple(dict.fromkeys(d for t in registered for d in t.datasets))
    schedules = tuple(dict.fromkeys(s for t in registered for s in t.schedules))
    metrics = tuple(dict.fromkeys(m for t in registered for m in t.metrics))
    return {
        "study": {
            "name": Field(
                "str",
                "study",
                nonempty=True,
                check=_plain_name,
                doc="study name (directory prefix under runs/)",
            ),
            "description": Field("str", "", doc="one paragraph for the report"),
            "task": Field(
                "str", "classification", choices=task_names, plugin="task", doc="what a run trains"
            ),
        },
        "data": {
            "dataset": Field(
                "str_list",
                ["synthetic"],
                axis=True,
                choices=datasets,
                plugin="dataset",
                nonempty=True,
            ),
            "train_size": Field("int", 0, low=0, doc="training examples (0 = all left after val)"),
            "val_size": Field("int", 1000, low=1, doc="validation examples held out of train"),
            "test_size": Field("int", 0, low=0, doc="test examples (0 = all)"),
            "seed": Field("int", 0, low=0, doc="fixes the subsets; not the run seed"),
            "options": Field("table", {}, doc="handed to a plug-in dataset in its data table"),
        },
        "model": {
            "spec": Field("str_list", ["mlp:{features}-64x3-{classes}"], axis=True, nonempty=True),
        },
        "init": {
            "names": Field(
                "str_list",
                ["kaiming", "emergence"],
                axis=True,
                choices=BUILTIN_INITS,
                plugin="init",
                nonempty=True,
            ),
            "alpha": Field("float_list", [1.5], axis=True, positive=True, nonempty=True),
            "pivot": Field(
                "float_list", [0.5], axis=True, check=unit_interval_open, nonempty=True
            ),
            "head": Field("bool", [True], axis=True, nonempty=True),
            "base": Field("str_list", ["kaiming_normal"], axis=True, choices=BASES, nonempty=True),
            "order": Field(
                "str_list",
                ["call"],
                axis=True,
                choices=ORDERS,
                nonempty=True,
                doc="depth order: forward call order, or longest path in the traced graph",
            ),
            "units": Field(
                "str_list",
                ["auto"],
                axis=True,
                choices=UNITS,
                nonempty=True,
                doc="depth units: layers, residual/transformer blocks, or auto",
            ),
            "exclude": Field(
                "table_list",
                [],
                doc="emergence configurations left out of the grid, e.g. "
                '[{order = "graph", units = "blocks"}]',
            ),
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
            "optimizer": Field(
                "str_list",
                "sgd",
                axis=True,
                single=True,
                choices=OPTIMIZERS,
                plugin="optimizer",
                nonempty=True,
                doc="one optimizer, or a list (an axis)",
            ),
            "lr": Field(
                "float_list",
                [0.05],
                axis=True,
                positive=True,
                nonempty=True,
                keyed_by="optimizer",
                doc="a list for every optimizer, or a table of lists keyed by optimizer",
            ),
            "momentum": Field("float", 0.9, low=0.0, high=0.999),
            "nesterov": Field("bool", False),
            "weight_decay": Field(
                "float",
                0.0,
                low=0.0,
                keyed_by="optimizer",
                doc="one value, or a table keyed by optimizer",
            ),
            "schedule": Field("str", "none", choices=schedules),
            "warmup_steps": Field("int", 0, low=0),
            "epochs": Field("int", 1, low=1),
            "batch_size": Field("int", 128, low=2),
            "seeds": Field(
                "int_list", [0, 1], nonempty=True, low=0, doc="a list, or N meaning [0, ..., N-1]"
            ),
            "log_every": Field("int", 10, low=1, doc="training-loss record interval (steps)"),
            "eval_every": Field("int", 0, low=0, doc="eval interval in steps; 0 = epoch ends only"),
            "eval_batch_size": Field("int", 1000, low=1),
            "targets": Field("float_list", [], check=fraction, doc="test accuracies to time"),
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
        "stats": {
            "baseline": Field("str", "kaiming", doc="an init of init.names, or '' for none"),
            "primary": Field(
                "str_list", ["test_acc_epoch1", "test_acc_final"], choices=metrics, nonempty=True
            ),
            "confidence": Field("float", 0.95, check=unit_interval_open),
            "select_metric": Field("str", "val_acc_final", choices=metrics),
            "select_seeds": Field("int", 0, low=0, doc="seeds used to choose alpha; 0 = half"),
            "margin": Field(
                "table", {}, doc="equivalence margin per metric, in its units; see verdicts.md"
            ),
            "power": Field("float", DEFAULT_POWER, check=unit_interval_open, doc="for the MDE"),
        },
    }


def schema() -> dict[str, Any]:
    """The whole schema: the generic keys and every registered task's own keys."""
    out = _generic()
    for task in tasks.registered():
        merge(out, task.schema(), f"task {task.name!r}")
    return out


def _owner(value: str, attribute: str) -> str | None:
    """The registered task whose ``attribute`` lists ``value`` (for a helpful message)."""
    return next((t.name for t in tasks.registered() if value in getattr(t, attribute)), None)


def _task_checks(cfg: dict[str, Any], task: tasks.Task) -> None:
    """What the study's task accepts: its datasets, inits, optimizers, schedules, metrics and
    plug-in kinds; a value another task has gets a message that says which one."""
    here = f"study.task = {task.name!r}"
    for name in cfg["data"]["dataset"]:
        if name in task.datasets:
            continue
        other = _owner(name, "datasets")
        if other is not None:
            raise ConfigError(
                f"data.dataset: {name!r} is a dataset of the {other} task; set "
                f'study.task = "{other}" (or choose from {", ".join(task.datasets)})'
            )
        if "dataset" not in task.plugins:
            raise ConfigError(
                f"data.dataset: {name!r} is not a dataset of {here}; choose from "
                f"{', '.join(task.datasets)} (this task takes no plug-in datasets)"
            )
    for name in cfg["init"]["names"]:
        if name in BUILTIN_INITS:
            if task.inits is not None and name not in task.inits:
                raise ConfigError(
                    f"init.names: {name!r} is not available for {task.name} "
                    f"(available: {', '.join(task.inits)})"
                )
        elif "init" not in task.plugins:
            raise ConfigError(f"init.names: {here} takes no plug-in inits, got {name!r}")
    for optimizer in optimizers(cfg):
        if optimizer not in OPTIMIZERS and "optimizer" not in task.plugins:
            raise ConfigError(f"train.optimizer: {here} takes no plug-in optimizers")
        if task.optimizers is not None and optimizer not in task.optimizers:
            raise ConfigError(
                f"train.optimizer: {task.name} trains with "
                f"{', '.join(map(repr, task.optimizers))}, got {optimizer!r}"
            )
    schedule = cfg["train"]["schedule"]
    if schedule not in task.schedules:
        other = _owner(schedule, "schedules")
        raise ConfigError(
            f"train.schedule: {schedule!r} is for study.task = \"{other}\"; {task.name} uses "
            f"one of {', '.join(task.schedules)}"
        )
    stats = cfg["stats"]
    for metric in [*stats["primary"], stats["select_metric"]]:
        if metric not in task.metrics:
            raise ConfigError(
                f"stats: {metric!r} is not measured by {task.name} runs; use "
                f"{', '.join(task.metrics)}"
            )
    _margin_checks(stats, task)


def _margin_checks(stats: dict[str, Any], task: tasks.Task) -> None:
    """``stats.margin``: a metric of the task -> a finite margin > 0 in the metric's units.
    With a baseline, every primary metric gets a verdict, so it needs a known direction and a
    margin (its default or the user's; see docs/verdicts.md#margins)."""
    for metric, margin in stats["margin"].items():
        key = f"stats.margin.{metric}"
        if metric not in task.metrics:
            raise ConfigError(
                f"{key}: {metric!r} is not measured by {task.name} runs; use "
                f"{', '.join(task.metrics)}"
            )
        if isinstance(margin, bool) or not isinstance(margin, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {margin!r}")
        if not math.isfinite(margin) or margin <= 0:
            raise ConfigError(f"{key}: must be finite and > 0, got {margin!r}")
    if not stats["baseline"]:
        return  # no comparison, no verdict, no margin needed
    for metric in stats["primary"]:
        if not has_direction(metric):
            raise ConfigError(
                f"stats.primary: {metric!r} has no known direction (is higher better?), so no "
                "verdict can call a difference better or worse; a name with 'acc' as a "
                "'_'-separated part is higher-better, one ending in 'loss' lower-better "
                '(docs/verdicts.md#the-four-words); or set stats.baseline = ""'
            )
    try:
        resolve_margins(stats["primary"], stats["margin"])
    except ConfigError as exc:
        raise ConfigError(f"stats.margin: {exc}") from None



def optimizers(cfg: Mapping[str, Any]) -> list[str]:
    """The study's optimizers (``train.optimizer``: one name, or a list of them)."""
    value = cfg["train"]["optimizer"]
    return [value] if isinstance(value, str) else list(value)


#: ``train`` keys that take one value for every optimizer or a table keyed by optimizer.
PER_OPTIMIZER = ("lr", "weight_decay")


def for_optimizer(train: Mapping[str, Any], key: str, optimizer: str) -> Any:
    """``train[key]`` as ``optimizer`` runs with it: its entry of a table keyed by optimizer,
    or the one value every optimizer shares."""
    value = train[key]
    return value[optimizer] if isinstance(value, Mapping) else value


def learning_rates(cfg: Mapping[str, Any]) -> dict[str, list[float]]:
    """Each optimizer of the study with its learning rates (``train.lr``: one list for every
    optimizer, or a table of lists keyed by optimizer), in ``train.optimizer``'s order.

    >>> learning_rates(resolve({"train": {"optimizer": ["sgd", "adamw"],
    ...                                   "lr": {"sgd": 0.05, "adamw": [1e-3, 3e-3]}}}))
    {'sgd': [0.05], 'adamw': [0.001, 0.003]}
    """
    return {o: list(for_optimizer(cfg["train"], "lr", o)) for o in optimizers(cfg)}


def _train_axes(cfg: dict[str, Any]) -> None:
    """Tables keyed by optimizer (``train.lr``, ``train.weight_decay``) checked against
    ``train.optimizer`` and put in their canonical form: an entry for every optimizer (in its
    order), entries of built-in optimizers the study does not run dropped (so
    ``--set train.optimizer=adamw`` narrows a study), and with one optimizer just its value
    (so the table and the plain spelling are the same study)."""
    names = optimizers(cfg)
    for key in PER_OPTIMIZER:
        value = cfg["train"][key]
        if not isinstance(value, Mapping):
            continue
        missing = [o for o in names if o not in value]
        if missing:
            raise ConfigError(
                f"train.{key}: no value for optimizer {missing[0]!r}; the table has "
                f"{', '.join(value)}. Add it: train.{key} = {{{missing[0]} = ..., ...}}"
            )
        stray = [k for k in value if k not in names and k not in OPTIMIZERS]
        if stray:
            raise ConfigError(
                f"train.{key}.{stray[0]}: {stray[0]!r} is not among train.optimizer "
                f"({', '.join(names)}) nor a built-in optimizer"
            )
        kept = {o: value[o] for o in names}
        cfg["train"][key] = kept[names[0]] if len(names) == 1 else kept


#: The axes that multiply only the emergence inits (what ``init.exclude`` entries name).
EMERGENCE_AXES = ("alpha", "pivot", "head", "base", "order", "units")


def _exclusions(cfg: dict[str, Any], init_schema: Mapping[str, Any]) -> None:
    """``init.exclude``: each entry a table of emergence axes and one value each, every value
    among its axis's values (else the entry would exclude nothing: a typo); normalized like
    the axis (``alpha = 1`` is ``1.0``). Entries that leave no emergence configuration are an
    error."""
    init = cfg["init"]
    entries = []
    for i, entry in enumerate(init["exclude"]):
        where = f"init.exclude[{i}]"
        if not entry:
            raise ConfigError(f"{where}: an empty table would exclude every configuration")
        normal = {}
        for key, value in entry.items():
            if key not in EMERGENCE_AXES:
                raise ConfigError(
                    f"{where}.{key}: not an emergence axis; use {', '.join(EMERGENCE_AXES)}"
                )
            field = init_schema[key]
            one = coerce(f"{where}.{key}", replace(field, axis=False, single=False,
                         kind=field.kind.removesuffix("_list")), value)  # fmt: skip
            if one not in init[key]:
                raise ConfigError(
                    f"{where}.{key}: {one!r} is not among init.{key} {init[key]!r}, so the "
                    "entry excludes nothing"
                )
            normal[key] = one
        entries.append(normal)
    init["exclude"] = entries
    if entries and set(init["names"]) & set(EMERGENCE_INITS):
        combos = itertools.product(*(init[k] for k in EMERGENCE_AXES))
        if not any(not excluded(dict(zip(EMERGENCE_AXES, c)), entries) for c in combos):
            raise ConfigError(
                "init.exclude: leaves no configuration of the emergence inits; remove an "
                "entry or widen an axis"
            )


def excluded(table: Mapping[str, Any], exclude: list[dict[str, Any]]) -> bool:
    """Whether an emergence init table matches an ``init.exclude`` entry (every key of it)."""
    return any(all(table.get(k) == v for k, v in entry.items()) for entry in exclude)


def _cross_checks(cfg: dict[str, Any]) -> None:
    _train_axes(cfg)
    _exclusions(cfg, schema()["init"])
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
    task = tasks.get(cfg["study"]["task"])
    _task_checks(cfg, task)
    task.check_config(cfg)
    if not task.measures_emergence and (
        cfg["measure"]["enabled"] or cfg["measure"]["during_training"]
    ):
        raise ConfigError(
            f"measure.enabled: {task.name} runs do not measure emergence at init; set "
            "measure.enabled = false"
        )


def resolve(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a raw config and return it with every default filled in and axes as lists.

    Raises :class:`ConfigError` naming the first offending dotted key.
    """
    raw = dict(raw)
    table = raw.pop(FULL, None)
    study = raw.get("study")
    if isinstance(study, Mapping) and isinstance(study.get("task"), str):
        tasks.get(study["task"])  # a plug-in task's own keys join the schema
    full_schema = schema()
    cfg = resolve_table(raw, full_schema)
    _cross_checks(cfg)
    if table is not None:
        # The [full] table is validated (keys, values and the cross checks of the config it
        # would give) whether or not --full applies it, and never kept in the resolved config.
        try:
            _cross_checks(resolve_table(apply_full(raw, full_table(table)), full_schema))
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
    """A study file's raw config; ``ConfigError`` for a file that is missing, unreadable, not
    UTF-8 or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "TOML files are UTF-8: save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_target(target: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """A study's raw config: ``None`` = the default preset; a mapping = the config itself; a
    path, or a string ending in ``.toml`` or naming an existing file = a TOML file; any other
    string = a preset name (the CLI's rule)."""
    if target is None:
        return load_preset("default")
    if isinstance(target, Mapping):
        return copy.deepcopy(dict(target))
    if isinstance(target, Path):
        return load_file(target)
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
    """Set the dotted ``path`` to ``value``; a table value merges into the table there
    (``--set 'train={lr=0.1}'`` sets ``train.lr`` and keeps the rest of ``[train]``)."""
    node: dict[str, Any] = out
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what} {'.'.join(path)}: {'.'.join(path[: i + 1])} is a value")
        node = child
    leaf = path[-1]
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        for key, item in value.items():
            _set_path(node[leaf], [key], item, what)
        return
    node[leaf] = copy.deepcopy(value)


def apply_overrides(raw: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``--set`` applied; keys are checked by :func:`resolve`."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        _set_path(out, path, value, "--set")
    return out


# --- the [full] table: the preset at full size ------------------------------------------------

FULL = "full"


def _flatten(
    table: Mapping[str, Any], prefix: str = "", whole: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Dotted keys of nested tables; a key in ``whole`` keeps its table as its value."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted not in whole:
            out.update(_flatten(value, dotted + ".", whole))
        else:
            out[dotted] = value
    return out


def _keyed_keys(node: Mapping[str, Any], prefix: str = "") -> frozenset[str]:
    """Dotted keys whose value may be a table (``train.lr`` keyed by optimizer)."""
    out: set[str] = set()
    for key, spec in node.items():
        if isinstance(spec, dict):
            out |= _keyed_keys(spec, f"{prefix}{key}.")
        elif isinstance(spec, Field) and spec.keyed_by:
            out.add(f"{prefix}{key}")
    return frozenset(out)


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
    full_schema = schema()
    flat = _flatten(table, whole=_keyed_keys(full_schema))
    for key, value in flat.items():
        node: Any = full_schema
        parts = key.split(".")
        for i, part in enumerate(parts):
            if isinstance(node, Field) and node.keyed_by:
                whole = ".".join(parts[:i])
                raise ConfigError(
                    f'{FULL}.{key}: give {whole} as a whole, e.g. "{whole}" = '
                    "{sgd = [0.05], adamw = [0.001]}"
                )
            if not isinstance(node, dict):
                raise ConfigError(f"{FULL}.{key}: {'.'.join(parts[:i])} is a value, not a table")
            if part not in node:
                raise unknown_key(f"{FULL}.{'.'.join(parts[: i + 1])}", node)
            node = node[part]
        if isinstance(node, dict):
            raise ConfigError(f"{FULL}.{key}: is a table; name one of its keys: {', '.join(node)}")
        try:
            coerce(key, node, value)
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
    target: str | Path | Mapping[str, Any] | None,
    overrides: list[str] | None = None,
    *,
    full: bool = False,
) -> dict[str, Any]:
    """Load a preset or file, apply its ``[full]`` table (with ``full``), then the ``--set``
    overrides, and validate: the resolved config."""
    raw = load_target(target)
    if full:
        if FULL not in raw:
            raise ConfigError(
                f"--full: study {_name(target)!r} has no [full] table; presets with one: "
                + ", ".join(n for n in preset_names() if FULL in load_preset(n))
            )
        raw = apply_full(raw, full_table(raw[FULL]))
    return resolve(apply_overrides(raw, overrides or []))


def _name(target: str | Path | Mapping[str, Any] | None) -> str:
    if isinstance(target, Mapping):
        study = target.get("study")
        return str(study.get("name", "study")) if isinstance(study, Mapping) else "study"
    return str(target or "default")


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
