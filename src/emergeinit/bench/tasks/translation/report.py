"""The translation section of ``report.md``: what the scores mean, data notes, examples."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...checkpoint import read_events

Row = dict[str, Any]

EXPLANATION = [
    "## Translation scores",
    "",
    "- **bleu**: sacreBLEU (corpus BLEU, 13a tokenizer) on detokenized text: comparable "
    "across tools and papers.",
    "- **bleu_tok**: BLEU on the data's own tokenization after undoing BPE, split on spaces "
    "only (multi-bleu.perl / fairseq-generate style). The paper's IWSLT'14 numbers (35.13 "
    "emergence vs 34.85 Xavier) are most likely this kind; do not compare them with `bleu`.",
    "- **chrf**: chrF2 on detokenized text (character n-grams: partial credit within a word).",
    "- On the built-in number corpus the text is not tokenized, so `bleu` and `bleu_tok` "
    "nearly agree; German numbers below a million are single words, so BLEU counts whole "
    "numbers right or wrong and chrF shows near misses.",
    "- On this model `default` means: feed-forward and attention output projections "
    "U(±1/sqrt(fan_in)) (weights and biases), attention in-projections Xavier-uniform with "
    "zero bias, embeddings N(0, 1/d_model) (the model's own); every init keeps those "
    "embeddings (they are never re-drawn or scaled).",
    "",
]


def translation_section(rows: list[Row], run_dir: Callable[[str], Path]) -> list[str]:
    """Markdown lines: the score definitions, data notes and the best run's first outputs."""
    out = list(EXPLANATION)
    notes = _notes(rows, run_dir)
    if notes:
        out += ["Data notes:", "", *[f"- {n}" for n in notes], ""]
    scored = [r for r in rows if r.get("bleu") is not None]
    if scored:
        best = max(scored, key=lambda r: r["bleu"])
        path = run_dir(best["run_id"]) / "test.tsv"
        if path.is_file():
            with path.open(encoding="utf-8", newline="") as fh:
                examples = list(csv.reader(fh, delimiter="\t"))[1:6]
            out += [f"First test translations of the best run (`{best['run_id']}`, "
                    f"{best['init']}, seed {best['seed']}, bleu {best['bleu']:.2f}):", ""]
            out += ["| hypothesis | reference |", "|---|---|"]
            out += [f"| {_md(h)} | {_md(r)} |" for h, r in examples]
            out.append("")
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|") or "(empty)"


def _notes(rows: list[Row], run_dir: Callable[[str], Path]) -> list[str]:
    notes: list[str] = []
    for r in rows:
        for event in read_events(run_dir(r["run_id"])):
            if event.get("event") == "note" and event["text"] not in notes:
                notes.append(event["text"])
    return notes


__all__ = ["translation_section"]
