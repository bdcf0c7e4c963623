"""A study on disk: grid expansion, stable run ids, preflight, results in run order, resume.

Layout of a study directory::

    config.toml         the resolved config (every default filled in)
    environment.json    torch/numpy/python versions, threads, CPU, data notices, plug-ins
    results.csv         one row per finished run, appended as it ends (:mod:`.store`)
    results.setaside.csv  lines the driver took out of results.csv (damaged, superseded)
    runs/<run_id>/      config.json, metrics.jsonl (streamed), checkpoint.pt (see
                        :mod:`.checkpoint`), error.txt for a crashed run
    report.md, plots/   written by :mod:`.report` and :mod:`.plots`

A run id is a hash of the run's own resolved config, so it is stable across machines and
studies; resuming skips every id already in ``results.csv`` with status ok or diverged, and
every other run continues from its last checkpoint. Only :mod:`.store` reads and writes
``results.csv``; :meth:`StudyDir.results` gives its rows in the study's run order.

The generic layer: what depends on the task is asked of it through the registry
(:mod:`.tasks`), never by its name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import itertools
import json
import logging
import os
import platform
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import config as cfgmod
from . import optim, plugins, tasks
from .checkpoint import capture_rng, exclusive, restore_rng
from .files import atomic_write_text
from .labels import BUILTIN_INITS, EMERGENCE_INITS
from .store import Results, read_results

log = logging.getLogger(__name__)

#: Result columns every study has, whatever its task (the historic layout of results.csv;
#: the last four are translation's scores).
RESERVED = ("bleu", "bleu_tok", "chrf", "val_bleu")


# --- preflight --------------------------------------------------------------------------------


def preflight(
    cfg: dict[str, Any], data_dir: Path | None
) -> tuple[dict[str, Any], list[str]]:
    """Everything that can fail before the study starts, raised as ``ConfigError`` naming the
    key: plug-in inits and optimizers resolve (and a plug-in optimizer builds), then the task's
    own preflight (data files, plug-in datasets, fallbacks). Returns
    the config to run and notices for the user."""
    from .inits import resolve_init

    task = tasks.get(cfg["study"]["task"])
    for name in cfg["init"]["names"]:
        if name not in BUILTIN_INITS:
            resolve_init(name)
    for optimizer, lrs in cfgmod.learning_rates(cfg).items():
        train = {**_train_table(cfg, optimizer), "lr": lrs[0]}
        optim.check_optimizer(train)
        if {"emergence-lr", "gradinit"} & set(cfg["init"]["names"]):
            optim.family(train)  # a plug-in optimizer must say how it scales updates
    return task.preflight(cfg, data_dir)


def resolve_datasets(
    cfg: dict[str, Any], data_dir: Path | None
) -> tuple[dict[str, Any], list[str]]:
    """The task's data preflight (missing files, fallbacks, plug-in datasets): the config to
    run and notices for the user."""
    return tasks.get(cfg["study"]["task"]).preflight(cfg, data_dir)


def _init_tables(cfg: dict[str, Any], name: str) -> list[dict[str, Any]]:
    init = cfg["init"]
    if name in EMERGENCE_INITS:
        return [
            {"name": name, "alpha": a, "pivot": p, "head": h, "base": b, "even": init["even"],
             "order": o, "units": u}
            for a, p, h, b, o, u in itertools.product(
                init["alpha"], init["pivot"], init["head"], init["base"], init["order"],
                init["units"],
            )
            if not cfgmod.excluded(
                {"alpha": a, "pivot": p, "head": h, "base": b, "order": o, "units": u},
                init["exclude"],
            )
        ]  # fmt: skip
    if name == "lsuv":
        return [{"name": name, "lsuv": dict(init["lsuv"])}]
    if name == "gradinit":
        return [{"name": name, "gradinit": dict(init["gradinit"])}]
    return [{"name": name}]


def _table_count(cfg: dict[str, Any], name: str) -> int:
    # The emergence axes' product is small (it is not multiplied by data, models, lrs, seeds).
    return len(_init_tables(cfg, name)) if name in EMERGENCE_INITS else 1


def count_runs(cfg: dict[str, Any]) -> int:
    """How many runs :func:`expand` gives, without expanding: datasets x models x (lrs summed
    over optimizers) x (init tables) x seeds.

    >>> from emergeinit.bench import config
    >>> count_runs(config.load("smoke"))
    6
    """
    tables = sum(_table_count(cfg, name) for name in cfg["init"]["names"])
    lrs = sum(len(v) for v in cfgmod.learning_rates(cfg).values())
    return (
        len(cfg["data"]["dataset"]) * len(cfg["model"]["spec"]) * lrs
        * tables * len(cfg["train"]["seeds"])
    )  # fmt: skip


def _train_table(cfg: dict[str, Any], optimizer: str) -> dict[str, Any]:
    """A run's ``train`` table for one optimizer, without its lr: the keys that optimizer
    reads (``momentum`` and ``nesterov`` only for SGD and plug-ins), ``weight_decay`` its own."""
    train = {k: v for k, v in cfg["train"].items() if k not in ("seeds", "lr")}
    train["optimizer"] = optimizer
    train["weight_decay"] = cfgmod.for_optimizer(cfg["train"], "weight_decay", optimizer)
    if optimizer in ("adam", "adamw"):
        for key in optim.SGD_ONLY:
            train.pop(key)
    return train


def _run_init(init: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """The init table as a run holds it. ``emergence-lr`` under a built-in optimizer with
    weight decay gives each group the decay that keeps it equal to the weight form
    (docs/method.md, "The learning-rate form"); such runs say so (``decay = "per-unit"``),
    which also keeps their ids apart from runs of earlier versions, whose groups took the
    optimizer-wide decay."""
    if (
        init["name"] == "emergence-lr"
        and train["optimizer"] in optim.BUILTIN
        and train["weight_decay"] > 0
    ):
        return {**init, "decay": "per-unit"}
    return init


def _json(value: Any) -> str:
    """JSON as :func:`run_id` hashes it (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def expand(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the study, as self-contained run configs, in a stable order.

    Emergence-only axes (alpha, pivot, head, base, order, units) multiply only the emergence
    inits; each other init runs once per (dataset, model, optimizer, lr, seed). Each optimizer
    runs with its own learning rates (``train.lr`` as a table keyed by optimizer). Runs share
    their tables (a run's ``data``, ``train``, ``init`` and ``measure`` are the same objects as
    its neighbours'): treat them as read-only. The run ids are those of :func:`run_id`,
    computed from JSON fragments built once per table, so a grid of 10^6 runs expands in
    seconds (see ``docs/performance.md#grid-expansion``).
    """
    # The loop makes millions of small dicts and no cycles: the cyclic garbage collector,
    # which would scan them again and again as they pile up, cost more than the loop itself.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _expand(cfg)
    finally:
        if collecting:
            gc.enable()


def _expand(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    task = tasks.get(cfg["study"]["task"])
    name = cfg["study"]["task"]
    schedule = cfgmod.learning_rates(cfg)
    measure = dict(cfg["measure"])
    own = task.run_tables(cfg)
    seeds = [(seed, _json(seed)) for seed in cfg["train"]["seeds"]]
    keys = sorted({"task", "data", "model", "init", "train", "measure", "seed", *own})
    fragments = {"task": _json(name), "measure": _json(measure)}
    fragments.update({key: _json(value) for key, value in own.items()})
    runs: list[dict[str, Any]] = []
    append = runs.append
    for dataset in cfg["data"]["dataset"]:
        data_table = task.data_table(cfg, dataset)
        fragments["data"] = _json(data_table)
        for template in cfg["model"]["spec"]:
            spec = task.model_spec(cfg, dataset, template)
            fragments["model"] = _json(spec)
            for optimizer, lrs in schedule.items():
                train = _train_table(cfg, optimizer)
                inits = [
                    _run_init(init, train)
                    for init_name in cfg["init"]["names"]
                    for init in _init_tables(cfg, init_name)
                ]
                init_texts = [_json(_identity_init(init)) for init in inits]
                for lr in lrs:
                    train_lr = {**train, "lr": lr}
                    fragments["train"] = _json(_identity_train(train_lr))
                    for init, init_text in zip(inits, init_texts, strict=True):
                        fragments["init"] = init_text
                        # The id's JSON text is head + seed + tail: hash the head once.
                        parts = [f"{_json(k)}:{fragments.get(k, '')}" for k in keys]
                        at = keys.index("seed")
                        head = "{" + ",".join([*parts[:at], f"{_json('seed')}:"])
                        tail = "".join("," + p for p in parts[at + 1 :]) + "}"
                        hashed = hashlib.sha256(head.encode())
                        template = {
                            "task": name,
                            "data": data_table,
                            "model": spec,
                            "init": init,
                            "train": train_lr,
                            "measure": measure,
                            "seed": 0,
                            **own,
                        }
                        for seed, seed_text in seeds:
                            digest = hashed.copy()
                            digest.update(f"{seed_text}{tail}".encode())
                            run = template.copy()
                            run["seed"] = seed
                            run["run_id"] = digest.hexdigest()[:12]
                            append(run)
    return runs


def check_runs(
    runs: list[dict[str, Any]],
    data_dir: Path | None,
    *,
    concurrency: int = 1,
    here: bool = True,
) -> list[str]:
    """Problems every run would hit, raised before anything runs: bad model specs (built on
    the meta device), the task's own (e.g. subsets larger than the data), emergence scales
    outside the weights' dtype, and plug-in inits, each tried once on the model of its first
    run. With ``here`` (the runs train on this machine, not on a cluster's nodes) also the
    device and a model too large for its memory. Returns notices (``concurrency`` runs at
    once that may not fit in memory together)."""
    import torch

    from ..models import build_model
    from .feasibility import check_device, check_memory, check_scales

    seen: set[str] = set()
    for run in runs:
        if run["model"] in seen:
            continue
        seen.add(run["model"])
        try:
            with torch.device("meta"):  # builds the structure without allocating weights
                build_model(run["model"])
        except ConfigError as exc:
            raise ConfigError(f"model.spec: {exc}") from None
    if runs:
        tasks.get(runs[0]["task"]).check_runs(runs, data_dir)
    check_scales(runs)
    notices: list[str] = []
    if here and runs:
        check_device(runs[0]["train"]["device"])  # one train table for the whole study
        notices = check_memory(runs, concurrency)
    probed: set[str] = set()
    for run in runs:
        name = run["init"]["name"]
        if name in BUILTIN_INITS or name in probed:
            continue
        probed.add(name)
        _probe(run, data_dir)
    return notices


def _probe(run: dict[str, Any], data_dir: Path | None) -> None:
    import torch

    from .runner import probe_init

    saved = capture_rng(torch.device("cpu"))  # the probe leaves no trace in global streams
    try:
        probe_init(run, data_dir)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"init.names: plug-in {run['init']['name']!r} raised {type(exc).__name__}: {exc} "
            f"when called as fn(model, ctx) on {run['model']!r}"
        ) from None
    finally:
        restore_rng(saved)


# ``train`` keys left out of the run id: how a run executes, never what it computes (so that
# checkpointing more or less often never makes a run a different one).
EXECUTION_ONLY = ("checkpoint_every",)
# Keys of a run's ``train`` and ``init`` tables added after studies were first recorded, left
# out of the run id while at their default (so adding an option never changes the ids, and
# with them the resumability, of existing studies).
ADDED_DEFAULTS = {"autocast": "none"}
ADDED_INIT_DEFAULTS = {"order": "call", "units": "auto"}


def _identity_train(train: dict[str, Any]) -> dict[str, Any]:
    """The ``train`` table as the run id sees it (execution-only and defaulted keys left out)."""
    return {
        k: v
        for k, v in train.items()
        if k not in EXECUTION_ONLY and (k not in ADDED_DEFAULTS or ADDED_DEFAULTS[k] != v)
    }


def _identity_init(init: dict[str, Any]) -> dict[str, Any]:
    """The ``init`` table as the run id sees it (later-added keys at their defaults left out)."""
    return {
        k: v
        for k, v in init.items()
        if k not in ADDED_INIT_DEFAULTS or ADDED_INIT_DEFAULTS[k] != v
    }


def run_id(run: dict[str, Any]) -> str:
    """A stable 12-hex-digit hash of a run's resolved config (``run_id`` itself, execution-only
    keys and later-added keys at their defaults excluded)."""
    body = {k: v for k, v in run.items() if k != "run_id"}
    if isinstance(body.get("train"), dict):
        body["train"] = _identity_train(body["train"])
    if isinstance(body.get("init"), dict):
        body["init"] = _identity_init(body["init"])
    return hashlib.sha256(_json(body).encode()).hexdigest()[:12]


def columns(cfg: dict[str, Any]) -> list[str]:
    """``results.csv`` columns; empty cells where an axis or metric does not apply. Every task
    writes the same standard columns; a task's own ones come before ``error``."""
    targets = [f"steps_to_{t:g}" for t in cfg["train"]["targets"]]
    own = list(tasks.get(cfg["study"]["task"]).columns)
    return [
        "run_id", "status", "task", "dataset", "model", "init", "base", "alpha", "pivot",
        "head", "order", "units", "optimizer", "lr", "seed", "epochs",
        "val_acc_epoch1", "test_acc_epoch1", "val_acc_final", "test_acc_final", "test_loss",
        "train_loss_final", "steps", *targets, "log10_e_init", "log10_e_final",
        "init_seconds", "train_seconds", "wall_seconds", *RESERVED, *own, "error",
    ]  # fmt: skip


_PLUGIN_KEYS = {"init": "init.names", "dataset": "data.dataset", "optimizer": "train.optimizer"}


@functools.lru_cache(maxsize=256)
def plugin_label(kind: str, name: str) -> str:
    """How results name a dataset, init or optimizer: a built-in's own name; a plug-in's
    ``name`` attribute, or the import path / entry point the study gave."""
    builtin = {
        "init": BUILTIN_INITS,
        "optimizer": optim.BUILTIN,
        "dataset": tuple(d for t in tasks.registered() for d in t.datasets),
    }[kind]
    if name in builtin:
        return name
    return plugins.label(name, plugins.resolve(kind, name, _PLUGIN_KEYS[kind]))


def plugin_info(cfg: dict[str, Any]) -> dict[str, dict[str, dict[str, str]]]:
    """The study's plug-ins by kind and name: their label and one line on what they are (kept
    in ``environment.json``, so the report never has to import them)."""
    named = {
        "init": cfg["init"]["names"],
        "dataset": cfg["data"]["dataset"],
        "optimizer": cfgmod.optimizers(cfg),
    }
    out: dict[str, dict[str, dict[str, str]]] = {}
    for kind, names in named.items():
        for name in names:
            text = plugin_label(kind, name)
            if text == name and not plugins.is_plugin(kind, name):
                continue
            obj = plugins.resolve(kind, name, _PLUGIN_KEYS[kind])
            out.setdefault(kind, {})[name] = {"label": text, "doc": plugins.describe(obj)}
    return out


def result_row(run: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The ``results.csv`` row of a run: its axes (plug-ins by label) plus its metric summary."""
    init = run["init"]
    row: dict[str, Any] = {
        "run_id": run["run_id"],
        "task": run["task"],
        "dataset": plugin_label("dataset", run["data"]["dataset"]),
        "model": run["model"],
        "init": plugin_label("init", init["name"]),
        "base": init.get("base", ""),
        "alpha": init.get("alpha", ""),
        "pivot": init.get("pivot", ""),
        "head": init.get("head", ""),
        # Empty at the default, as in runs recorded before these options existed, so a
        # resumed study's old and new rows name the same configuration alike.
        "order": _non_default(init, "order"),
        "units": _non_default(init, "units"),
        "optimizer": plugin_label("optimizer", run["train"]["optimizer"]),
        "lr": run["train"]["lr"],
        "seed": run["seed"],
        "epochs": run["train"]["epochs"],
    }
    row.update(summary)
    return row


def _non_default(init: dict[str, Any], key: str) -> str:
    value = init.get(key)
    return "" if value is None or value == ADDED_INIT_DEFAULTS[key] else str(value)


def environment(
    workers: int, threads: int, data_dir: Path | None, notices: list[str]
) -> dict[str, Any]:
    import numpy
    import torch

    from .. import __version__

    return {
        "emergeinit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "workers": workers,
        "torch_threads_per_worker": threads,
        "cuda": torch.cuda.is_available(),
        "data_dir": str(data_dir) if data_dir else "",
        "notices": notices,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- results in the study's order -------------------------------------------------------------


def _first_positions(values: Iterable[Any]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for i, value in enumerate(values):
        out.setdefault(value, i)
    return out


def _template_pattern(template: str) -> re.Pattern[str]:
    """A model spec template as a pattern its filled specs match (placeholders: digits and x)."""
    escaped = re.escape(template)
    for name in ("features", "shape", "classes"):
        escaped = escaped.replace(re.escape("{" + name + "}"), "[0-9x]+")
    return re.compile(escaped)


def order_rows(
    rows: list[dict[str, Any]], cfg: dict[str, Any], plugins: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``rows`` in the study's run order: by dataset, model, optimizer, lr, init, alpha, pivot,
    head, base, order, units and seed as ``cfg`` lists them (the order of :func:`expand`),
    read from the rows' own cells, so no plug-in is imported. Rows are appended to
    ``results.csv`` as runs end; this gives the report the same order whatever order they
    ended in. ``plugins`` is ``environment.json``'s table of plug-in labels (rows name a
    plug-in by its label).
    A cell the config does not list sorts after those it does, by its text."""
    plugins = plugins or {}

    def labels(kind: str, names: list[str]) -> dict[Any, int]:
        shown = plugins.get(kind, {})
        return _first_positions(shown.get(n, {}).get("label", n) for n in names)

    init = cfg["init"]
    grid = cfgmod.learning_rates(cfg)
    axes = [
        ("dataset", labels("dataset", cfg["data"]["dataset"])),
        ("optimizer", labels("optimizer", list(grid))),
        ("lr", _first_positions(lr for lrs in grid.values() for lr in lrs)),
        ("init", labels("init", init["names"])),
        ("alpha", _first_positions(init["alpha"])),
        ("pivot", _first_positions(init["pivot"])),
        ("head", _first_positions(init["head"])),
        ("base", _first_positions(init["base"])),
        ("order", _first_positions(init["order"])),
        ("units", _first_positions(init["units"])),
        ("seed", _first_positions(cfg["train"]["seeds"])),
    ]
    patterns = [_template_pattern(t) for t in cfg["model"]["spec"]]
    models: dict[Any, tuple[int, str]] = {}

    def model_key(spec: Any) -> tuple[int, str]:
        if spec not in models:
            text = str(spec)
            hit = next((i for i, p in enumerate(patterns) if p.fullmatch(text)), len(patterns))
            models[spec] = (hit, text)
        return models[spec]

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        out: list[tuple[int, str]] = []
        for name, where in axes:
            value = row.get(name)
            if name in ADDED_INIT_DEFAULTS and value in (None, ""):
                value = ADDED_INIT_DEFAULTS[name]  # results.csv leaves the defaults empty
            if value is None or value == "":
                out.append((-1, ""))
            else:
                at = where.get(value)
                out.append((at, "") if at is not None else (len(where), str(value)))
            if name == "dataset":
                out.append(model_key(row.get("model")))
        return tuple(out)

    return sorted(rows, key=key)


def _may_change(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a study directory may take a config that differs from its own in ``key``: the
    analysis (``stats.*``), the description, and more seeds (never fewer, so no finished run
    drops out of a report unannounced). Every other key changes what the runs compute."""
    if key.startswith("stats.") or key == "study.description":
        return True
    if key == "train.seeds":
        return set(old["train"]["seeds"]) <= set(new["train"]["seeds"])
    return False


class StudyDirError(ConfigError):
    """The study directory cannot be used (a file, not writable, another study's)."""


def _unwritable(path: Path, exc: OSError) -> StudyDirError:
    why = exc.strerror or type(exc).__name__
    return StudyDirError(
        f"--out: cannot write the study directory {path} ({why}); choose a directory you can "
        "write to"
    )


class StudyDir:
    """The study directory: resolved config, environment, results and per-run folders."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config_path = path / "config.toml"
        self.results_path = path / "results.csv"

    def run_dir(self, rid: str) -> Path:
        return self.path / "runs" / rid

    def load_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.path} is not a study directory (no config.toml)")
        return cfgmod.resolve(cfgmod.load_file(self.config_path))

    def environment(self) -> dict[str, Any]:
        """``environment.json`` (empty when missing or unreadable)."""
        try:
            loaded = json.loads((self.path / "environment.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def results(self, cfg: dict[str, Any], *, live: bool | None = None) -> Results:
        """``results.csv`` through the store's validated load (damaged lines and repeated run
        ids named in a :class:`~.store.ResultsWarning`, never counted twice), its rows in the
        study's run order (:func:`order_rows`). ``live``: whether a driver may be appending
        (``None``: whether one holds the study lock now); see :func:`.store.read_results`."""
        if live is None:
            live = self.driving()
        loaded = read_results(self.results_path, columns(cfg), live=live)
        ordered = order_rows(loaded.rows, cfg, self.environment().get("plugins"))
        return dataclasses.replace(loaded, rows=ordered)

    def driving(self) -> bool:
        """Whether a driver holds the study lock right now (``True`` when it cannot be told)."""
        if not (self.path / ".lock").is_file():
            return False
        try:
            with exclusive(self.path / ".lock", wait=False) as mine:
                return not mine
        except OSError:
            return True

    def claim(self, cfg: dict[str, Any]) -> None:
        """Write ``cfg`` here, or check it equals the config already here (resume). Raises
        :class:`StudyDirError` for a path that is a file, is another directory, or cannot be
        written."""
        if self.path.exists() and not self.path.is_dir():
            raise StudyDirError(
                f"--out: {self.path} is a file, not a directory; choose another --out"
            )
        if self.config_path.is_file():
            # Resolved again, so keys added to the schema since it was written take their
            # defaults instead of counting as differences.
            old = cfgmod.resolve(cfgmod.load_file(self.config_path))
            differ = cfgmod.diff_keys(old, cfg)
            fixed = [key for key in differ if not _may_change(key, old, cfg)]
            if fixed:
                raise StudyDirError(
                    f"{self.path} holds a study with a different config (keys that differ: "
                    f"{', '.join(fixed)}); choose another --out or run the same config to "
                    "resume (a study may only gain seeds and change its [stats] table, "
                    "docs/bench.md#growing-a-study)"
                )
            if differ:
                self._rewrite_config(cfg, differ, old)
            return
        try:
            if self.path.exists() and any(self.path.iterdir()):
                raise StudyDirError(
                    f"{self.path} exists and is not a study directory; choose another --out"
                )
            import tomli_w

            atomic_write_text(self.config_path, tomli_w.dumps(cfg))
        except OSError as exc:
            raise _unwritable(self.path, exc) from None

    def _rewrite_config(self, cfg: dict[str, Any], differ: list[str], old: dict[str, Any]) -> None:
        import tomli_w

        try:
            atomic_write_text(self.config_path, tomli_w.dumps(cfg))
        except OSError as exc:
            raise _unwritable(self.path, exc) from None
        added = [s for s in cfg["train"]["seeds"] if s not in old["train"]["seeds"]]
        grown = f"{len(added)} seed(s) added" if added else "no run added"
        log.warning("study %s grows: %s; changed: %s", self.path, grown, ", ".join(differ))

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Held by the one process that drives this study (it alone writes results.csv).
        Yields whether this process got it; :class:`StudyDirError` when it cannot be taken
        (a directory that is not writable)."""
        with contextlib.ExitStack() as stack:
            try:
                mine = stack.enter_context(exclusive(self.path / ".lock", wait=False))
            except OSError as exc:
                raise _unwritable(self.path, exc) from None
            yield mine
