"""The translation task: an encoder-decoder transformer trained on parallel text and scored
with sacreBLEU, tokenized BLEU and chrF (see docs/translation.md).

:class:`TranslationTask` is what the registry (:mod:`emergeinit.bench.tasks`) holds for
``study.task = "translation"``; the config-time rules live in :mod:`.schema`, the training loop
in :mod:`.train`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ....errors import ConfigError
from ...runtime import derive_seed
from ..base import Prepared, RunContext, Task
from . import schema
from .schema import CORPUS_DEFAULTS, tokenizer_args

Row = dict[str, Any]


def data_settings(data: dict[str, Any]) -> Any:
    """The :class:`~.data.DataSettings` of a run's ``data`` table."""
    from .data import DataSettings

    return DataSettings(
        source=data["dataset"], dir=data["dir"], src_lang=data["src_lang"],
        tgt_lang=data["tgt_lang"], tokenized=data["tokenized"], max_len=data["max_len"],
        max_train=data["train_size"],
        train_size=data["train_size"] or CORPUS_DEFAULTS["train_size"],
        valid_size=data["val_size"],
        test_size=data["test_size"] or CORPUS_DEFAULTS["test_size"],
        max_number=data["max_number"], max_terms=data["max_terms"], seed=data["seed"],
    )  # fmt: skip


def train_settings(run: dict[str, Any], device: str) -> Any:
    """The :class:`~.train.TrainSettings` of a run."""
    from .train import TrainSettings

    train, t = run["train"], run["translation"]
    return TrainSettings(
        epochs=train["epochs"], lr=train["lr"], warmup=max(1, train["warmup_steps"]),
        constant=train["schedule"] == "none", weight_decay=train["weight_decay"],
        label_smoothing=t["label_smoothing"], max_tokens=t["max_tokens"],
        clip_norm=t["clip_norm"], log_every=train["log_every"], beam=t["beam"],
        length_penalty=t["length_penalty"], max_len_a=t["max_len_a"], max_len_b=t["max_len_b"],
        valid_bleu=t["valid_bleu"], device=device,
    )  # fmt: skip


def _no_sampler(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    raise ConfigError("data-dependent inits (lsuv, gradinit) are not available for translation")


class TranslationTask(Task):
    """English-German (or users' parallel text) translation with a seq2seq transformer."""

    name = "translation"
    datasets = schema.DATASETS
    inits = schema.INITS
    optimizers = ("adam",)
    schedules = schema.SCHEDULES
    metrics = schema.METRICS
    report_metrics = ("val_bleu", "test_loss")
    plot_metric = "bleu"
    diverged_rule = (
        "diverged runs score 0 (BLEU and chrF: the model translates nothing) so they weigh "
        "in every mean."
    )

    def schema(self) -> dict[str, Any]:
        return schema.SCHEMA

    def check_config(self, cfg: dict[str, Any]) -> None:
        schema.check_config(cfg)

    def preflight(
        self, cfg: dict[str, Any], data_dir: Path | None
    ) -> tuple[dict[str, Any], list[str]]:
        return schema.preflight(cfg, data_dir), []

    def data_table(self, cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
        # Vocabulary sizes come from the tokenizers, at run time, so the spec stays a template.
        return schema.data_table(cfg, dataset)

    def run_tables(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {"translation": dict(cfg["translation"])}

    def prepare(
        self,
        run: dict[str, Any],
        device: torch.device,
        data_dir: Path | None,
        run_dir: Path | None,
    ) -> Prepared:
        from .data import prepare_data
        from .tokenizer import TokenizerSettings

        table = run["data"]
        # The preflight already fills data.dir from --data-dir; this covers runs started
        # without it (DataSettings rejects a parallel source without a dir).
        if table["dataset"] == "parallel" and not table["dir"] and data_dir is not None:
            table = {**table, "dir": str(data_dir)}
        settings = data_settings(table)
        # Tokenizers live in the study directory (runs/<id>/ is two levels below it).
        cache = run_dir.parent.parent / "tokenizers" if run_dir else Path("tokenizers")
        tokenizers = TokenizerSettings(**tokenizer_args(run["translation"]))
        data = prepare_data(settings, tokenizers, cache)
        spec = f"{run['model']},src_vocab={data.src_vocab},tgt_vocab={data.tgt_vocab}"
        return Prepared(
            spec=spec,
            example=lambda: tuple(t.to(device) for t in data.example_batch()),
            sample=_no_sampler,
            notes=list(data.notes),
            data=data,
        )

    def train(
        self,
        model: nn.Module,
        param_groups: list[dict[str, Any]] | None,
        prepared: Prepared,
        ctx: RunContext,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from .train import train_translation

        result = train_translation(
            model,  # type: ignore[arg-type]  # build_model returns the Seq2SeqTransformer
            prepared.data, train_settings(ctx.run, ctx.device.type),
            seed=derive_seed(ctx.seed, "data-order"), emit=ctx.emit, out_dir=ctx.run_dir,
            param_groups=param_groups, on_progress=ctx.on_progress, resume=ctx.resume,
            checkpoint_every=ctx.run["train"]["checkpoint_every"], on_checkpoint=ctx.save,
        )  # fmt: skip
        return result.row(), result.end_state

    def batch_text(self, cfg: dict[str, Any]) -> str:
        return f"{cfg['translation']['max_tokens']} tokens"

    def report_section(
        self, cfg: dict[str, Any], rows: list[Row], run_dir: Callable[[str], Path]
    ) -> list[str]:
        from .report import translation_section

        return translation_section(rows, run_dir)

    def plots(
        self, rows: list[Row], run_dir: Callable[[str], Path], folder: Path
    ) -> list[Path]:
        from .plots import loss_curves

        return loss_curves(rows, run_dir, folder)


__all__ = ["TranslationTask", "data_settings", "train_settings"]
