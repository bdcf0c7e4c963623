"""Statistics over seeds: summaries with t confidence intervals, paired tests, Holm, selection.

Pure functions over plain numbers and result rows (dicts), so each is testable against values
computed by hand. A run that diverged keeps its (low) accuracy: dropping it would flatter the
init that diverges.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as sps

# The axes that identify a configuration; SETTING is what a baseline is paired on (plus seed).
SETTING = ("dataset", "model", "optimizer", "lr")
INIT_KEYS = ("init", "base", "alpha", "pivot", "head")
CONFIG = SETTING + INIT_KEYS


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof = 1); nan for n < 2
    low: float  # confidence interval of the mean, Student t with n - 1 dof
    high: float


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float  # mean of (a - b) over matched seeds
    std: float
    low: float
    high: float
    t: float
    p: float  # two-sided paired t-test


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, std and the t-interval of the mean; nan where ``n`` is too small."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """Paired difference ``a - b`` (matched by position): mean, t-interval and t-test.

    With all differences equal the test is degenerate: p = 1 when they are 0, else 0.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    s = summarize(diffs, confidence)
    if s.n < 2:
        return Paired(s.n, s.mean, s.std, s.low, s.high, math.nan, math.nan)
    if s.std == 0.0:
        t = 0.0 if s.mean == 0.0 else math.copysign(math.inf, s.mean)
        return Paired(s.n, s.mean, 0.0, s.mean, s.mean, t, 1.0 if s.mean == 0.0 else 0.0)
    t = s.mean / (s.std / math.sqrt(s.n))
    p = float(2.0 * sps.t.sf(abs(t), s.n - 1))
    return Paired(s.n, s.mean, s.std, s.low, s.high, t, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone); nan stays nan, not counted."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def geometric_mean_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[float, int]:
    """Geometric mean of ``a_i / b_i`` over pairs where both reached (not None); and that count."""
    logs = [math.log(x / y) for x, y in zip(a, b, strict=True) if x and y]
    if not logs:
        return math.nan, 0
    return math.exp(math.fsum(logs) / len(logs)), len(logs)


# --- grouping result rows ---------------------------------------------------------------------

Row = dict[str, Any]


def key_of(row: Row, keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in keys)


def group(rows: Iterable[Row], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Row]]:
    """Rows grouped by ``keys``, groups in first-seen order."""
    out: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        out[key_of(row, keys)].append(row)
    return dict(out)


def by_seed(rows: Iterable[Row], metric: str) -> dict[int, float]:
    return {r["seed"]: r[metric] for r in rows if r.get(metric) is not None}


@dataclass(frozen=True)
class Comparison:
    config: tuple[Any, ...]  # CONFIG values of the compared init
    metric: str
    result: Paired
    p_holm: float = math.nan


def compare_to_baseline(
    rows: Sequence[Row], baseline: str, metrics: Sequence[str], confidence: float = 0.95
) -> list[Comparison]:
    """Paired differences of every non-baseline configuration against the baseline init in the
    same setting, over the seeds both have; Holm-corrected across the whole family."""
    baselines = group([r for r in rows if r["init"] == baseline], SETTING)
    comparisons: list[Comparison] = []
    for config, members in group(rows, CONFIG).items():
        if members[0]["init"] == baseline:
            continue
        base = baselines.get(key_of(members[0], SETTING))
        if not base:
            continue
        for metric in metrics:
            mine, theirs = by_seed(members, metric), by_seed(base, metric)
            seeds = sorted(set(mine) & set(theirs))
            result = paired([mine[s] for s in seeds], [theirs[s] for s in seeds], confidence)
            comparisons.append(Comparison(config, metric, result))
    adjusted = holm([c.result.p for c in comparisons])
    return [
        Comparison(c.config, c.metric, c.result, p)
        for c, p in zip(comparisons, adjusted, strict=True)
    ]


@dataclass(frozen=True)
class Selection:
    """A hyperparameter chosen on validation seeds, then measured on held-out seeds."""

    group: tuple[Any, ...]
    choice: Any  # the chosen value of the choice key
    select_score: float  # mean select metric over the selection seeds
    held_out: Summary  # the report metric on the held-out seeds
    baseline: Summary | None  # the baseline on the same held-out seeds, if any
    vs_baseline: Paired | None


def split_seeds(seeds: Iterable[int], select_seeds: int) -> tuple[list[int], list[int]]:
    """The first ``select_seeds`` seeds (default half, at least one) choose; the rest report."""
    ordered = sorted(set(seeds))
    k = select_seeds or max(1, len(ordered) // 2)
    return ordered[:k], ordered[k:]


def select_best(
    rows: Sequence[Row],
    group_keys: Sequence[str],
    choice_key: str,
    *,
    select_metric: str,
    report_metric: str,
    selection_seeds: Sequence[int],
    held_out_seeds: Sequence[int],
    baseline_rows: Callable[[tuple[Any, ...]], Sequence[Row]] | None = None,
    confidence: float = 0.95,
) -> list[Selection]:
    """For each group, the ``choice_key`` value with the best mean ``select_metric`` on the
    selection seeds, reported by ``report_metric`` on the held-out seeds only.

    Ties go to the first value in row order. ``baseline_rows(group)`` gives the rows to pair
    the held-out result with.
    """
    chosen_seeds, held = set(selection_seeds), list(held_out_seeds)
    out = []
    for gkey, members in group(rows, group_keys).items():
        best: tuple[float, Any] | None = None
        for value, options in group(members, (choice_key,)).items():
            scores = [
                r[select_metric]
                for r in options
                if r["seed"] in chosen_seeds and r.get(select_metric) is not None
            ]
            if not scores:
                continue
            score = math.fsum(scores) / len(scores)
            if best is None or score > best[0]:
                best = (score, value[0])
        if best is None:
            continue
        picked = by_seed([r for r in members if r[choice_key] == best[1]], report_metric)
        seeds = [s for s in held if s in picked]
        held_summary = summarize([picked[s] for s in seeds], confidence)
        base_summary = vs = None
        if baseline_rows is not None:
            base = by_seed(baseline_rows(gkey), report_metric)
            common = [s for s in seeds if s in base]
            if common:
                base_summary = summarize([base[s] for s in common], confidence)
                vs = paired([picked[s] for s in common], [base[s] for s in common], confidence)
        out.append(Selection(gkey, best[1], best[0], held_summary, base_summary, vs))
    return out
