"""Config-time rules of the translation task: its config keys, cross-key checks, the ``data``
table of a run, and the preflight that reads users' files before a study starts.

Kept free of torch so validating a config stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ....errors import ConfigError
from ...schema import Field
from .parallel import has_bpe, load_parallel

DATASETS = ("numbers", "dates", "parallel")
INITS = ("default", "xavier", "kaiming", "emergence", "emergence-lr")
SCHEDULES = ("inverse_sqrt", "none")
#: Result columns a translation study can declare primary or select on (higher is better).
METRICS = ("bleu", "bleu_tok", "chrf", "val_bleu")
#: Keys of the ``data`` table a translation run carries.
DATA_KEYS = ("train_size", "val_size", "test_size", "seed", "dir", "src_lang", "tgt_lang",
             "tokenized", "max_len", "max_number", "max_terms")
#: Corpus sizes used where ``data.*_size`` is 0 ("all" for users' files).
CORPUS_DEFAULTS = {"train_size": 20000, "test_size": 1000}

#: The translation task's config keys (docs/translation.md): data keys and its own table.
SCHEMA: dict[str, Any] = {
    "data": {
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
    # Tokenizer, batching, loss and decoding.
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
}


def check_config(cfg: dict[str, Any]) -> None:
    """Cross-key rules of a translation study; raise :class:`ConfigError` naming the key.

    (Datasets, inits, schedules and metrics are checked against the task's lists by the
    generic config layer.)
    """
    if cfg["data"]["fallback"]:
        raise ConfigError("data.fallback: translation studies have no fallback dataset")
    if cfg["train"]["optimizer"] != "adam":
        raise ConfigError("train.optimizer: translation trains with 'adam' (betas 0.9, 0.98)")
    if cfg["train"]["targets"]:
        raise ConfigError("train.targets: accuracy targets do not apply to translation")
    if cfg["train"]["autocast"] != "none":
        raise ConfigError('train.autocast: translation runs support only "none" so far')
    from ....models import parse_model_spec

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
    if cfg["stats"]["select_metric"] == "val_bleu" and not cfg["translation"]["valid_bleu"]:
        raise ConfigError("stats.select_metric: 'val_bleu' needs translation.valid_bleu = true")


def data_table(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ``data`` table of one translation run (what its results depend on)."""
    return {"dataset": dataset, **{k: cfg["data"][k] for k in DATA_KEYS}}


def preflight(cfg: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    """Read users' parallel files once before the study starts (clear errors, early) and
    return ``cfg`` with ``data.dir`` made absolute (``--data-dir`` when ``data.dir`` is empty)."""
    if "parallel" not in cfg["data"]["dataset"]:
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
