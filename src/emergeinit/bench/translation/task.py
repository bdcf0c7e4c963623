"""The translation task of a study: a run config in, a results row out.

:func:`run_translation` is what :mod:`emergeinit.bench.runner` calls for ``study.task =
"translation"``. The config-time rules live in :mod:`.schema`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError
from ...models import build_model
from ..checkpoint import CheckpointError, RunJournal
from .data import DataSettings, prepare_data
from .schema import CORPUS_DEFAULTS, tokenizer_args
from .tokenizer import TokenizerSettings
from .train import TrainSettings, train_translation


def data_settings(data: dict[str, Any]) -> DataSettings:
    """The :class:`DataSettings` of a run's ``data`` table."""
    return DataSettings(
        source=data["dataset"], dir=data["dir"], src_lang=data["src_lang"],
        tgt_lang=data["tgt_lang"], tokenized=data["tokenized"], max_len=data["max_len"],
        max_train=data["train_size"],
        train_size=data["train_size"] or CORPUS_DEFAULTS["train_size"],
        valid_size=data["val_size"],
        test_size=data["test_size"] or CORPUS_DEFAULTS["test_size"],
        max_number=data["max_number"], max_terms=data["max_terms"], seed=data["seed"],
    )


def train_settings(run: dict[str, Any], device: str) -> TrainSettings:
    train, t = run["train"], run["translation"]
    return TrainSettings(
        epochs=train["epochs"], lr=train["lr"], warmup=max(1, train["warmup_steps"]),
        constant=train["schedule"] == "none", weight_decay=train["weight_decay"],
        label_smoothing=t["label_smoothing"], max_tokens=t["max_tokens"],
        clip_norm=t["clip_norm"], log_every=train["log_every"], beam=t["beam"],
        length_penalty=t["length_penalty"], max_len_a=t["max_len_a"], max_len_b=t["max_len_b"],
        valid_bleu=t["valid_bleu"], device=device,
    )


def run_translation(
    run: dict[str, Any],
    emit: Callable[[dict[str, Any]], None],
    data_dir: Path | None,
    on_progress: Callable[[int, int], None] | None,
    run_dir: Path | None = None,
    journal: RunJournal | None = None,
) -> dict[str, Any]:
    """One translation run: data -> model -> init -> train -> scores, as result columns.

    With a ``journal`` it checkpoints every ``train.checkpoint_every`` steps and at the end,
    and continues from ``journal.resumed`` when set, as classification runs do: the model is
    rebuilt and initialized again, then every state is overwritten from the checkpoint.
    """
    from ..inits import InitContext, apply_init
    from ..runner import _device, derive_seed, generator

    seed = run["seed"]
    resume = journal.resumed if journal is not None else None
    device = _device(run["train"]["device"])
    table = run["data"]
    # The preflight already fills data.dir from --data-dir; this covers runs started without it
    # (DataSettings rejects a parallel source without a dir, so the fallback must come first).
    if table["dataset"] == "parallel" and not table["dir"] and data_dir is not None:
        table = {**table, "dir": str(data_dir)}
    settings = data_settings(table)
    # Tokenizers live in the study directory (runs/<id>/ is two levels below it).
    cache = run_dir.parent.parent / "tokenizers" if run_dir else Path("tokenizers")
    data = prepare_data(settings, TokenizerSettings(**tokenizer_args(run["translation"])), cache)
    if resume is None:  # a resumed run's notes are in the stream already
        for note in data.notes:
            emit({"event": "note", "text": note})

    torch.manual_seed(derive_seed(seed, "model"))
    spec = f"{run['model']},src_vocab={data.src_vocab},tgt_vocab={data.tgt_vocab}"
    model = build_model(spec).to(device)
    example = tuple(t.to(device) for t in data.example_batch())
    ctx = InitContext(spec=spec, example_input=example, settings=run["init"],
                      train=run["train"], generator=generator(seed, "init"),
                      sample=_no_sampler, seed=seed)
    start = time.perf_counter()
    outcome = apply_init(run["init"]["name"], model, ctx)
    init_seconds = time.perf_counter() - start
    if resume is None:
        emit({"event": "init", "seconds": init_seconds, "log10_e": None, **outcome.info})
    else:  # timed, and streamed, by the attempt that wrote the checkpoint
        try:
            init_seconds = resume["init"]["seconds"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"does not fit this run (no init record: {exc!r})") from exc
    init_state = {"seconds": init_seconds, "log10_e": None}

    def save(state: dict[str, Any]) -> None:
        assert journal is not None
        journal.save({**state, "init": init_state})

    result = train_translation(
        model,  # type: ignore[arg-type]  # build_model returns the Seq2SeqTransformer
        data, train_settings(run, device.type), seed=derive_seed(seed, "data-order"),
        emit=emit, out_dir=run_dir, param_groups=outcome.param_groups, on_progress=on_progress,
        resume=resume, checkpoint_every=run["train"]["checkpoint_every"],
        on_checkpoint=save if journal is not None else None,
    )
    row = result.row()
    row.update(init_seconds=init_seconds, log10_e_init=None)
    if journal is not None:
        journal.save({**result.end_state, "init": init_state}, finished=True, summary=row)
    return row


def _no_sampler(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    raise ConfigError("data-dependent inits (lsuv, gradinit) are not available for translation")


__all__ = ["data_settings", "run_translation", "train_settings"]
