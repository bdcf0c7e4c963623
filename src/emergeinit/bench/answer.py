"""The Answer: a study's verdicts as one table and a few sentences, in markdown or on a terminal.

Input is a list of :class:`AnswerEntry` (setting label, init label, :class:`Verdict`), the
verdicts of every candidate against one baseline. Differences are shown in points (accuracy
fractions times 100; BLEU and chrF as they are). The sentences are counted from the entries,
so they say only what the table says. Definitions: ``docs/verdicts.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from rich import box
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
    """One row of the Answer: a candidate init in a setting, its verdict on one metric.

    ``config`` (in a study's Answer) holds the compared configuration's axes as its result rows
    name them: ``dataset``, ``model``, ``optimizer``, ``lr``, ``init``, ``base``, ``alpha``,
    ``pivot``, ``head``.
    """

    setting: str  # e.g. "fashion-mnist · mlp:784-256x6-10 · sgd lr=0.05"
    init: str  # e.g. "emergence α=1.2"
    verdict: Verdict
    config: Mapping[str, Any] | None = None

    @property
    def metric(self) -> str:
        return self.verdict.metric

    @property
    def word(self) -> Word:
        return self.verdict.word

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``setting``, ``init``, ``config`` and the verdict's fields
        (:meth:`.verdict.Verdict.to_dict`: ``metric``, ``word``, ``reason``, ``mean_diff``,
        ``ci``, ``margin``, ``mde``, ``seeds_needed``, ...)."""
        head = {"setting": self.setting, "init": self.init, "config": dict(self.config or {})}
        return head | self.verdict.to_dict()


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


def verdict_phrase(v: Verdict, *, margin_unit: bool = True) -> str:
    """A verdict in a few words, with what qualifies it: ``worse``, ``equivalent (±0.5
    points)`` (``(±0.5)`` without ``margin_unit``), ``inconclusive (needs 12 seeds)`` or
    ``inconclusive (2 seeds)``."""
    if v.word == "equivalent":
        return f"equivalent ({format_margin(v.margin, v.metric, with_unit=margin_unit)})"
    if v.word != "inconclusive":
        return v.word
    if v.seeds_needed is not None:
        return f"inconclusive (needs {v.seeds_needed} seeds)"
    return f"inconclusive ({v.seeds_note or v.detail})"


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
    for entry in entries:
        v = entry.verdict
        margin = format_margin(v.margin, v.metric, with_unit=False)
        mde = format_value(v.mde, v.metric, signed=False) if v.mde is not None else "n/a"
        rows.append([
            entry.setting, entry.init, metric_label(v.metric), _difference(v), _verdict_cell(v),
            margin, mde, _seeds_cell(v),
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
    for entry in entries:
        by_init.setdefault(entry.init, {}).setdefault(entry.metric, []).append(entry.verdict)
    sentences = []
    for init, metrics in by_init.items():
        clauses = [_clause(metric, verdicts) for metric, verdicts in metrics.items()]
        sentences.append(f"Against {baseline}, {init} is {'; '.join(clauses)}.")
    sentences.append(
        _seeds_sentence([e.verdict for e in entries if e.verdict.word == "inconclusive"])
    )
    return sentences


def _units(entries: Sequence[AnswerEntry]) -> str:
    """``accuracies in percentage points`` (and/or ``BLEU and chrF in their points``)."""
    units = []
    if any(points_scale(e.verdict.metric) != 1.0 for e in entries):
        units.append("accuracies in percentage points")
    if any(unit(e.verdict.metric) and points_scale(e.verdict.metric) == 1.0 for e in entries):
        units.append("BLEU and chrF in their points")
    return " and ".join(units)


def _how_to_read(entries: Sequence[AnswerEntry]) -> str:
    confidence, power = _confidence(entries), _power(entries)
    tested = sum(1 for e in entries if e.verdict.p_holm is not None)
    level = f"{confidence:.0%}" if confidence is not None else "the study's"
    alpha = f"{1 - confidence:.2g}" if confidence is not None else "1 - confidence"
    strength = f"{power:.0%}" if power is not None else "the study's"
    units = _units(entries)
    shown = f"Differences, margins and MDE: {units}. " if units else ""
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
    """The same table as :func:`answer_markdown`, as a ``rich`` table with coloured verdicts.

    Made for a terminal, 80 columns included: the title names the baseline, and the setting
    when every entry shares one; the caption gives the units, and the margin when every entry
    shares one (instead of columns repeating them); the difference breaks before its interval.
    """
    cells = answer_cells(entries)
    one_setting = len({row[0] for row in cells}) == 1
    one_margin = len({row[5] for row in cells}) == 1
    title = f"Answer: against {baseline}"
    if one_setting:
        title += f" in {cells[0][0]}"
    notes = []
    if one_margin:
        notes.append(f"Margin {cells[0][5]} for every comparison.")
    units = _units(entries)
    if units:
        notes.append(f"{units[0].upper()}{units[1:]}.")
    table = Table(
        title=escape(title), title_justify="left", caption=escape(" ".join(notes)) or None,
        caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )  # fmt: skip
    level = _confidence(entries)
    names = _columns(baseline, level)
    names[3] = f"difference\n[{level:.0%} CI]" if level is not None else "difference\n[CI]"
    names[7] = "seeds\nneeded"
    numbers = (3, 5, 6, 7)  # difference, margin, MDE, seeds needed: right-aligned
    dropped = {0} if one_setting else set()
    dropped |= {5} if one_margin else set()
    keep = [i for i in range(8) if i not in dropped]
    for i in keep:
        table.add_column(
            names[i], justify="right" if i in numbers else "left", overflow="fold",
            no_wrap=i in (3, 5, 6),
        )  # fmt: skip
    for entry, row in zip(entries, cells, strict=True):
        shown = [escape(c) for c in row]
        shown[3] = shown[3].replace(" [", "\n[", 1)
        shown[4] = f"[{STYLES[entry.word]}]{shown[4]}[/]"
        table.add_row(*[shown[i] for i in keep])
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
    "verdict_phrase",
]
