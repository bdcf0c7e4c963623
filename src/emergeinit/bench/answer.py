"""The Answer: a study's verdicts as one table and a few sentences, in markdown or on a terminal.

Input is a list of :class:`AnswerEntry` (setting label, init label, :class:`Verdict`), the
verdicts of every candidate against one baseline. Differences are shown in points (accuracy
fractions times 100; BLEU and chrF as they are). The sentences are counted from the entries,
so they say only what the table says. Definitions: ``docs/verdicts.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from emergeinit.bench.verdict import (
    WORDS,
    Verdict,
    Word,
    format_margin,
    format_value,
    points_scale,
    unit,
)

METRIC_LABELS = {
    "test_acc_final": "final test accuracy",
    "test_acc_epoch1": "first-epoch test accuracy",
    "val_acc_final": "final validation accuracy",
    "val_acc_epoch1": "first-epoch validation accuracy",
    "test_loss": "test loss",
    "train_loss_final": "final training loss",
    "bleu": "BLEU",
    "bleu_tok": "tokenized BLEU",
    "chrf": "chrF",
    "val_bleu": "validation BLEU",
}
STYLES: dict[Word, str] = {
    "better": "bold green",
    "worse": "bold red",
    "equivalent": "cyan",
    "inconclusive": "yellow",
}
NOT_APPLICABLE = "–"


class AnswerEntry(NamedTuple):
    setting: str  # e.g. "fashion-mnist mlp adam lr=0.001"
    init: str  # e.g. "emergence α=1.2"
    verdict: Verdict


def metric_label(metric: str) -> str:
    """Words for a metric in the table and sentences; unknown metrics keep their name.

    >>> metric_label("test_acc_epoch1"), metric_label("chrf"), metric_label("my_metric")
    ('first-epoch test accuracy', 'chrF', 'my_metric')
    """
    return METRIC_LABELS.get(metric, metric)


def _columns(baseline: str, confidence: float | None) -> list[str]:
    level = f"{confidence:.0%} " if confidence is not None else ""
    return [
        "setting", "init", "metric", f"difference vs {baseline} [{level}CI]", "verdict",
        "margin", "MDE", "seeds needed",
    ]  # fmt: skip


def _confidence(entries: Sequence[AnswerEntry]) -> float | None:
    levels = {e.verdict.confidence for e in entries}
    return levels.pop() if len(levels) == 1 else None


def _power(entries: Sequence[AnswerEntry]) -> float | None:
    levels = {e.verdict.power for e in entries}
    return levels.pop() if len(levels) == 1 else None


def _difference(v: Verdict) -> str:
    if v.mean_diff is None:
        return NOT_APPLICABLE
    text = format_value(v.mean_diff, v.metric)
    if v.ci is not None:
        low, high = (format_value(x, v.metric) for x in v.ci)
        text += f" [{low}, {high}]"
    return text


def _verdict_cell(v: Verdict) -> str:
    return f"{v.word} ({v.detail})" if v.degenerate else v.word


def _seeds_cell(v: Verdict) -> str:
    if v.word != "inconclusive":
        return NOT_APPLICABLE
    if v.seeds_needed is not None:
        return str(v.seeds_needed)
    if v.seeds_note.startswith("more than "):
        return "> " + v.seeds_note.removeprefix("more than ").split()[0]
    return "n/a"


def answer_cells(entries: Sequence[AnswerEntry]) -> list[list[str]]:
    """The table's cells, one list per entry (shared by the markdown and the rich table)."""
    rows = []
    for setting, init, v in entries:
        margin = format_margin(v.margin, v.metric).removesuffix(" points")
        mde = format_value(v.mde, v.metric, signed=False) if v.mde is not None else "n/a"
        rows.append([
            setting, init, metric_label(v.metric), _difference(v), _verdict_cell(v), margin,
            mde, _seeds_cell(v),
        ])  # fmt: skip
    return rows


# --- sentences ---------------------------------------------------------------------------------


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _word_phrase(word: Word, verdicts: Sequence[Verdict]) -> str:
    if word != "equivalent":
        return word
    margins = {format_margin(v.margin, v.metric) for v in verdicts if v.word == word}
    return f"equivalent within {margins.pop()}" if len(margins) == 1 else "equivalent"


def _clause(metric: str, verdicts: Sequence[Verdict]) -> str:
    """``worse on final test accuracy in 2 of 4 settings, equivalent within ±0.5 points in 1
    and inconclusive in 1``."""
    label, total = metric_label(metric), len(verdicts)
    counts = Counter(v.word for v in verdicts)
    words = [w for w in WORDS if counts[w]]
    if total == 1:
        return f"{_word_phrase(words[0], verdicts)} on {label}"
    if len(words) == 1:
        every = "both settings" if total == 2 else f"all {total} settings"
        return f"{_word_phrase(words[0], verdicts)} on {label} in {every}"
    first, rest = words[0], words[1:]
    parts = [f"{_word_phrase(first, verdicts)} on {label} in {counts[first]} of {total} settings"]
    parts += [f"{_word_phrase(w, verdicts)} in {counts[w]}" for w in rest]
    return _join(parts)


def _seeds_sentence(inconclusive: Sequence[Verdict]) -> str:
    k = len(inconclusive)
    if k == 0:
        return "No comparison is inconclusive."
    needs = sorted(v.seeds_needed for v in inconclusive if v.seeds_needed is not None)
    unknown = [v for v in inconclusive if v.seeds_needed is None]
    span = ""
    if needs:
        span = str(needs[0]) if needs[0] == needs[-1] else f"{needs[0]}–{needs[-1]}"
    why = "; ".join(sorted({_unknown_reason(v) for v in unknown}))
    if not unknown:
        subject = "The inconclusive comparison" if k == 1 else f"The {k} inconclusive comparisons"
        return f"{subject} would need about {span} seeds."
    if not needs:
        if k == 1:
            return f"The inconclusive comparison has no seed estimate ({why})."
        return f"The {k} inconclusive comparisons have no seed estimate ({why})."
    has = "has" if len(unknown) == 1 else "have"
    return (
        f"Of the {k} inconclusive comparisons, {len(needs)} would need about {span} seeds and "
        f"{len(unknown)} {has} no seed estimate ({why})."
    )


def _unknown_reason(v: Verdict) -> str:
    if v.seeds_note:
        return v.seeds_note.split(";")[0]
    return v.detail


def answer_sentences(entries: Sequence[AnswerEntry], baseline: str) -> list[str]:
    """Plain sentences counted from the entries: one per candidate init (its verdicts per
    metric across settings), then one on the inconclusive comparisons and the seeds they need.

    The number of seeds is the total per init (see ``docs/verdicts.md``), the range over the
    inconclusive comparisons that have an estimate.
    """
    if not entries:
        return [f"There is no comparison against {baseline}."]
    by_init: dict[str, dict[str, list[Verdict]]] = {}
    for _, init, v in entries:
        by_init.setdefault(init, {}).setdefault(v.metric, []).append(v)
    sentences = []
    for init, metrics in by_init.items():
        clauses = [_clause(metric, verdicts) for metric, verdicts in metrics.items()]
        sentences.append(f"Against {baseline}, {init} is {'; '.join(clauses)}.")
    sentences.append(
        _seeds_sentence([e.verdict for e in entries if e.verdict.word == "inconclusive"])
    )
    return sentences


def _how_to_read(entries: Sequence[AnswerEntry]) -> str:
    confidence, power = _confidence(entries), _power(entries)
    tested = sum(1 for e in entries if e.verdict.p_holm is not None)
    level = f"{confidence:.0%}" if confidence is not None else "the study's"
    alpha = f"{1 - confidence:.2g}" if confidence is not None else "1 - confidence"
    strength = f"{power:.0%}" if power is not None else "the study's"
    units = []
    if any(points_scale(e.verdict.metric) != 1.0 for e in entries):
        units.append("accuracies in percentage points")
    if any(unit(e.verdict.metric) and points_scale(e.verdict.metric) == 1.0 for e in entries):
        units.append("BLEU and chrF in their points")
    shown = f"Differences, margins and MDE: {' and '.join(units)}. " if units else ""
    return (
        f"{shown}*better*/*worse*: the {level} interval excludes 0 and the Holm p (over "
        f"{_count(tested, 'tested comparison')}) is below {alpha}; *equivalent*: two one-sided "
        f"tests put the difference inside ±margin; MDE: the smallest difference these seeds "
        f"detect with {strength} power; seeds needed: the total seeds per init at which an "
        f"inconclusive comparison would be decided with that power. Definitions: "
        f"docs/verdicts.md."
    )


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def answer_markdown(entries: Sequence[AnswerEntry], baseline: str) -> str:
    """The ``## Answer`` section of a report: the table, the sentences, a line on how to read it.

    Ends with a newline; an empty ``entries`` gives the heading and one sentence saying so.
    """
    lines = ["## Answer", ""]
    if entries:
        header = _columns(baseline, _confidence(entries))
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        for row in answer_cells(entries):
            lines.append("| " + " | ".join(_escape(c) for c in row) + " |")
        lines.append("")
    lines += [" ".join(answer_sentences(entries, baseline)), ""]
    if entries:
        lines += [_how_to_read(entries), ""]
    return "\n".join(lines)


def answer_table(entries: Sequence[AnswerEntry], baseline: str) -> Table:
    """The same table as :func:`answer_markdown`, as a ``rich`` table with coloured verdicts."""
    table = Table(title=f"Answer: against {baseline}", title_justify="left")
    numbers = (3, 5, 6, 7)  # difference, margin, MDE, seeds needed: right-aligned
    for i, name in enumerate(_columns(baseline, _confidence(entries))):
        table.add_column(name, justify="right" if i in numbers else "left", overflow="fold")
    for (_, _, v), row in zip(entries, answer_cells(entries), strict=True):
        cells = [escape(c) for c in row]
        cells[4] = f"[{STYLES[v.word]}]{cells[4]}[/]"
        table.add_row(*cells)
    return table


def print_answer(
    entries: Sequence[AnswerEntry], baseline: str, console: Console | None = None
) -> None:
    """Print the Answer table and its sentences (what ``emergeinit bench`` shows at the end)."""
    console = console or Console()
    if entries:
        console.print(answer_table(entries, baseline))
    console.print(" ".join(answer_sentences(entries, baseline)), highlight=False)


__all__ = [
    "METRIC_LABELS",
    "AnswerEntry",
    "answer_cells",
    "answer_markdown",
    "answer_sentences",
    "answer_table",
    "metric_label",
    "print_answer",
]
