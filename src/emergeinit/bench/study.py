"""A study on disk: grid expansion, stable run ids, preflight, atomic results and resume.

Layout of a study directory::

    config.toml         the resolved config (every default filled in)
    environment.json    torch/numpy/python versions, threads, CPU, data notices, plug-ins
    results.csv         one row per finished run, rewritten atomically after each run
    runs/<run_id>/      config.json, metrics.jsonl (streamed), checkpoint.pt (see
                        :mod:`.checkpoint`), error.txt for a crashed run
    report.md, plots/   written by :mod:`.report` and :mod:`.plots`

A run id is a hash of the run's own resolved config, so it is stable across machines and
studies; resuming skips every id already in ``results.csv`` with status ok or diverged, and
every other run continues from its last checkpoint.

The generic layer: what depends on the task is asked of it through the registry
(:mod:`.tasks`), never by its name.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import config as cfgmod
from . import optim, plugins, tasks
from .checkpoint import capture_rng, exclusive, fsync_dir, restore_rng, temp_path
from .labels import BUILTIN_INITS, EMERGENCE_INITS

log = logging.getLogger(__name__)

FINISHED = ("ok", "diverged")
#: Result columns every study has, whatever its task (the historic layout of results.csv;
#: the last four are translation's scores).
RESERVED = ("bleu", "bleu_tok", "chrf", "val_bleu")


# --- preflight --------------------------------------------------------------------------------


def preflight(
    cfg: dict[str, Any], data_dir: Path | None
) -> tuple[dict[str, Any], list[str]]:
    """Everything that can fail before the study starts, raised as ``ConfigError`` naming the
    key: plug-in inits and optimizers resolve (and a plug-in optimizer builds), then the task's
    own preflight (data files, plug-in datasets, fallbacks). Returns the config to run and
    notices for the user."""
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


def expand(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the study, as self-contained run configs, in a stable order.

    Emergence-only axes (alpha, pivot, head, base, order, units) multiply only the emergence
    inits; each other init runs once per (dataset, model, optimizer, lr, seed). Each optimizer
    runs with its own learning rates (``train.lr`` as a table keyed by optimizer).
    """
    task = tasks.get(cfg["study"]["task"])
    schedule = cfgmod.learning_rates(cfg)
    runs = []
    for dataset in cfg["data"]["dataset"]:
        data_table = task.data_table(cfg, dataset)
        for template in cfg["model"]["spec"]:
            spec = task.model_spec(cfg, dataset, template)
            for optimizer, lrs in schedule.items():
                train = _train_table(cfg, optimizer)
                for lr in lrs:
                    for init_name in cfg["init"]["names"]:
                        for init in _init_tables(cfg, init_name):
                            for seed in cfg["train"]["seeds"]:
                                run = {
                                    "task": cfg["study"]["task"],
                                    "data": data_table,
                                    "model": spec,
                                    "init": _run_init(init, train),
                                    "train": {**train, "lr": lr},
                                    "measure": dict(cfg["measure"]),
                                    "seed": seed,
                                    **task.run_tables(cfg),
                                }
                                run["run_id"] = run_id(run)
                                runs.append(run)
    return runs


def check_runs(runs: list[dict[str, Any]], data_dir: Path | None) -> None:
    """Problems every run would hit, raised before anything runs: bad model specs (built on
    the meta device), the task's own (e.g. subsets larger than the data), and plug-in inits,
    each tried once on the model of its first run."""
    import torch

    from ..models import build_model

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
    probed: set[str] = set()
    for run in runs:
        name = run["init"]["name"]
        if name in BUILTIN_INITS or name in probed:
            continue
        probed.add(name)
        _probe(run, data_dir)


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
# Keys of a run's tables added after studies were first recorded, left out of the run id while
# at their default (so adding an option never changes the ids, and with them the
# resumability, of existing studies).
ADDED_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {"autocast": "none"},
    "init": {"order": "call", "units": "auto"},
}


def _hashed(
    table: dict[str, Any], added: dict[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        k: v for k, v in table.items() if k not in skip and (k not in added or added[k] != v)
    }


def run_id(run: dict[str, Any]) -> str:
    """A stable 12-hex-digit hash of a run's resolved config (``run_id`` itself, execution-only
    keys and later-added keys at their defaults excluded)."""
    body = {k: v for k, v in run.items() if k != "run_id"}
    for name, added in ADDED_DEFAULTS.items():
        if isinstance(body.get(name), dict):
            skip = EXECUTION_ONLY if name == "train" else ()
            body[name] = _hashed(body[name], added, skip)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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
    return "" if value is None or value == ADDED_DEFAULTS["init"][key] else str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync and ``os.replace`` (then fsync the
    folder): readers, and a crash at any instant, see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with tmp.open("x", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_results(path: Path, rows: Iterable[dict[str, Any]], cols: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in cols})
    atomic_write(path, buf.getvalue())


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


STATUSES = (*FINISHED, "failed")


def check_results(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The well-formed rows of ``results.csv`` (first per run id) and what is wrong with it.

    A row is well formed when it has exactly the header's fields, a 12-hex-digit run id and a
    known status. Nothing is raised: a damaged file costs only the runs whose rows it lost.
    """
    if not path.is_file():
        return [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"cannot be read ({type(exc).__name__}: {exc})"]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        raw = list(reader)
    except csv.Error as exc:
        return [], [f"is not valid CSV ({exc})"]
    header = reader.fieldnames or []
    if "run_id" not in header or "status" not in header:
        return [], ["has no run_id/status header"]
    rows: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for line, row in enumerate(raw, start=2):
        rid, status = row.get("run_id") or "", row.get("status") or ""
        if None in row or None in row.values():
            problems.append(
                f"row {line} has {'more' if None in row else 'fewer'} fields than the header"
            )
        elif not re.fullmatch(r"[0-9a-f]{12}", rid) or status not in STATUSES:
            problems.append(f"row {line} has run_id {rid[:20]!r} and status {status[:20]!r}")
        elif rid in rows:
            problems.append(f"row {line} repeats run {rid}")
        else:
            rows[rid] = row
    if not text.endswith("\n") and raw:
        problems.append("its last line is cut off")  # the row may be incomplete: drop it
        rows.pop(raw[-1].get("run_id") or "", None)
    return list(rows.values()), problems


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

    def claim(self, cfg: dict[str, Any]) -> None:
        """Write ``cfg`` here, or check it equals the config already here (resume)."""
        if self.config_path.is_file():
            # Resolved again, so keys added to the schema since it was written take their
            # defaults instead of counting as differences.
            old = cfgmod.resolve(cfgmod.load_file(self.config_path))
            differ = cfgmod.diff_keys(old, cfg)
            if differ:
                raise ConfigError(
                    f"{self.path} holds a study with a different config (keys that differ: "
                    f"{', '.join(differ)}); choose another --out or run the same config to resume"
                )
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise ConfigError(
                f"{self.path} exists and is not a study directory; choose another --out"
            )
        import tomli_w

        atomic_write(self.config_path, tomli_w.dumps(cfg))

    def finished_rows(self) -> dict[str, dict[str, str]]:
        """Rows of runs that finished. A damaged ``results.csv`` is kept aside as
        ``results.csv.corrupt-<time>``, with a message; the runs whose rows it lost run again
        (from their final checkpoint, so without training again)."""
        rows, problems = check_results(self.results_path)
        if problems:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            kept = self.results_path.with_name(f"results.csv.corrupt-{stamp}")
            os.replace(self.results_path, kept)
            shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
            log.error(
                "%s is damaged (%s); kept as %s. %d intact rows are kept; the other runs run "
                "again and resume from their checkpoints",
                self.results_path, shown, kept.name, len(rows),
            )
        return {r["run_id"]: r for r in rows if r["status"] in FINISHED}

    def lock(self) -> contextlib.AbstractContextManager[bool]:
        """Held by the one process that drives this study (it alone writes results.csv)."""
        return exclusive(self.path / ".lock", wait=False)


_INT_COLUMNS = ("seed", "epochs", "steps")
_TEXT_COLUMNS = (
    "run_id",
    "status",
    "task",
    "dataset",
    "model",
    "init",
    "base",
    "order",
    "units",
    "optimizer",
    "error",
)


def typed_rows(path: Path) -> list[dict[str, Any]]:
    """``results.csv`` rows with numbers as numbers and empty cells as ``None``."""
    out = []
    for raw in read_results(path):
        row: dict[str, Any] = {}
        for key, text in raw.items():
            if key in _TEXT_COLUMNS:
                row[key] = text
            elif text == "":
                row[key] = None
            elif key == "head":
                row[key] = text == "true"
            elif key in _INT_COLUMNS:
                row[key] = int(text)
            else:
                row[key] = float(text)
        out.append(row)
    return out
