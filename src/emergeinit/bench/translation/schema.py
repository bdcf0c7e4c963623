"""Config-time rules of the translation task: its datasets, inits and cross-key checks, the
``data`` table of a run, and the preflight that reads users' files before a study starts.

Kept free of torch so validating a config stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ConfigError
from .parallel import has_bpe, load_parallel

DATASETS = ("numbers", "dates", "parallel")
INITS = ("default", "xavier", "kaiming", "emergence", "emergence-lr")
SCHEDULES = ("inverse_sqrt", "none")
#: Result columns a translation study can declare primary or select on (higher is better).
METRICS = ("bleu", "bleu_tok", "chrf", "val_bleu")
#: Keys of the ``data`` table a translation run carries (the rest are classification's).
DATA_KEYS = ("train_size", "val_size", "test_size", "seed", "dir", "src_lang", "tgt_lang",
             "tokenized", "max_len", "max_number", "max_terms")
#: Corpus sizes used where ``data.*_size`` is 0 ("all" for users' files).
CORPUS_DEFAULTS = {"train_size": 20000, "test_size": 1000}


def check_config(cfg: dict[str, Any]) -> None:
    """Cross-key rules of a translation study; raise :class:`ConfigError` naming the key."""
    translation = cfg["study"]["task"] == "translation"
    datasets = cfg["data"]["dataset"]
    mine = [d for d in datasets if d in DATASETS]
    if not translation:
        if mine:
            raise ConfigError(f"data.dataset: {mine[0]!r} is a translation corpus; "
                              "set study.task = \"translation\"")
        if cfg["train"]["schedule"] == "inverse_sqrt":
            raise ConfigError("train.schedule: 'inverse_sqrt' is for study.task = \"translation\"")
        return
    if len(mine) != len(datasets):
        other = next(d for d in datasets if d not in DATASETS)
        raise ConfigError(f"data.dataset: {other!r} is not a translation corpus; "
                          f"choose from {', '.join(DATASETS)}")
    if cfg["data"]["fallback"]:
        raise ConfigError("data.fallback: translation studies have no fallback dataset")
    if cfg["train"]["optimizer"] != "adam":
        raise ConfigError("train.optimizer: translation trains with 'adam' (betas 0.9, 0.98)")
    if cfg["train"]["schedule"] not in SCHEDULES:
        raise ConfigError(f"train.schedule: translation uses one of {', '.join(SCHEDULES)}, "
                          f"got {cfg['train']['schedule']!r}")
    if cfg["train"]["targets"]:
        raise ConfigError("train.targets: accuracy targets do not apply to translation")
    unsupported = [n for n in cfg["init"]["names"] if n not in INITS]
    if unsupported:
        raise ConfigError(f"init.names: {unsupported[0]!r} is not available for translation "
                          f"(available: {', '.join(INITS)})")
    from ...models import parse_model_spec

    for spec in cfg["model"]["spec"]:
        parsed = parse_model_spec(spec)
        if parsed.kind != "transformer":
            raise ConfigError(f"model.spec: translation needs a 'transformer:SIZE' spec, "
                              f"got {spec!r}")
        fixed = sorted({"vocab", "src_vocab", "tgt_vocab"} & set(parsed.options))
        if fixed:
            raise ConfigError(f"model.spec: {fixed[0]} in {spec!r} is set from the trained "
                              "tokenizers; remove it")
    if cfg["measure"]["enabled"] or cfg["measure"]["during_training"]:
        raise ConfigError("measure.enabled: the emergence measure covers MLPs and CNNs, not "
                          "transformers; set measure.enabled = false for translation")
    stats = cfg["stats"]
    for metric in [*stats["primary"], stats["select_metric"]]:
        if metric not in METRICS:
            raise ConfigError(f"stats: {metric!r} is not measured by translation runs; use "
                              f"{', '.join(METRICS)} (e.g. primary = [\"bleu\", \"chrf\"], "
                              "select_metric = \"val_bleu\")")
    if stats["select_metric"] == "val_bleu" and not cfg["translation"]["valid_bleu"]:
        raise ConfigError("stats.select_metric: 'val_bleu' needs translation.valid_bleu = true")


def data_table(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ``data`` table of one translation run (what its results depend on)."""
    return {"dataset": dataset, **{k: cfg["data"][k] for k in DATA_KEYS}}


def preflight(cfg: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    """Read users' parallel files once before the study starts (clear errors, early) and
    return ``cfg`` with ``data.dir`` made absolute (``--data-dir`` when ``data.dir`` is empty)."""
    if cfg["study"]["task"] != "translation" or "parallel" not in cfg["data"]["dataset"]:
        return cfg
    folder = cfg["data"]["dir"] or (str(data_dir) if data_dir else "")
    if not folder:
        raise ConfigError("data.dir: data.dataset = \"parallel\" needs the folder holding "
                          "{train,valid,test}.{src_lang,tgt_lang} (--set data.dir=PATH or "
                          "--data-dir PATH)")
    path = Path(folder).expanduser().resolve()
    texts = load_parallel(path, cfg["data"]["src_lang"], cfg["data"]["tgt_lang"])
    tokenized = cfg["data"]["tokenized"]
    if tokenized == "yes" or (tokenized == "auto" and has_bpe(texts["train"].tgt)):
        from .metrics import moses_detokenizer

        moses_detokenizer(cfg["data"]["tgt_lang"])  # sacremoses must be installed
    out = {**cfg, "data": {**cfg["data"], "dir": str(path)}}
    return out


def tokenizer_args(t: dict[str, Any]) -> dict[str, Any]:
    """:class:`~.tokenizer.TokenizerSettings` keywords from a ``translation`` table."""
    return {"kind": t["tokenizer"], "vocab_size": t["vocab_size"]}


__all__ = ["CORPUS_DEFAULTS", "DATASETS", "DATA_KEYS", "INITS", "METRICS", "SCHEDULES",
           "check_config", "data_table", "preflight", "tokenizer_args"]
