"""Statistics over seeds: summaries with t confidence intervals, paired tests, Holm, selection.

Pure functions over plain numbers and result rows (dicts). The statistics come from
``scipy.stats`` (t quantiles and intervals, the paired t-test and its interval, Spearman's rho,
the percentile bootstrap); only what scipy lacks is written here, a few lines each: Holm's
step-down correction, the Fisher z interval of Spearman's rho, the degenerate cases scipy
answers with NaN. A run that diverged keeps its (low) accuracy: dropping it would flatter the
init that diverges. See ``docs/bench.md#statistics-in-the-report``.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as sps

# The axes that identify a configuration; SETTING is what a baseline is paired on (plus seed).
SETTING = ("dataset", "model", "optimizer", "lr")
INIT_KEYS = ("init", "base", "alpha", "pivot", "head", "order", "units")
CONFIG = SETTING + INIT_KEYS
# An emergence configuration but its alpha: what "the best alpha" is chosen within.
BUT_ALPHA = tuple(k for k in INIT_KEYS if k != "alpha")


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
    """Mean, std and the t-interval of the mean (``scipy.stats.t.interval``); nan where
    ``n`` is too small. The mean is ``math.fsum``'s correctly rounded one."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    if std == 0.0:  # scipy rejects a zero scale; the interval is the point itself
        return Summary(n, mean, 0.0, mean, mean)
    low, high = sps.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(low), float(high))


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """Paired difference ``a - b`` (matched by position): mean, t-interval and t-test
    (``scipy.stats.ttest_rel`` and its ``confidence_interval``).

    With all differences equal the test is degenerate (scipy gives NaN): here p = 1 when they
    are 0, else 0, and the interval is the difference itself.
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
    with warnings.catch_warnings():  # nearly equal differences: scipy warns, the answer stands
        warnings.simplefilter("ignore", RuntimeWarning)
        test = sps.ttest_rel([float(x) for x in a], [float(y) for y in b])
        interval = test.confidence_interval(confidence)
    return Paired(
        s.n, s.mean, s.std, float(interval.low), float(interval.high), float(test.statistic),
        float(test.pvalue),
    )  # fmt: skip


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone); nan stays nan, not counted.

    scipy has no Holm correction (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg).
    """
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


def ratio_interval(
    a: Sequence[float | None], b: Sequence[float | None], confidence: float = 0.95
) -> Summary:
    """Geometric mean of ``a_i / b_i`` over pairs where both reached, with its interval.

    The t-interval of the mean log ratio, exponentiated: a ratio CI that is symmetric in log
    space (``n``, ``mean`` = geometric mean ratio, ``std`` = std of the log ratios, ``low``,
    ``high``). nan bounds for fewer than two pairs.
    """
    logs = [math.log(x / y) for x, y in zip(a, b, strict=True) if x and y]
    s = summarize(logs, confidence)
    return Summary(s.n, math.exp(s.mean), s.std, math.exp(s.low), math.exp(s.high))


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
    baseline_choice: Any = None  # the baseline's own chosen value (select_best_vs_baseline)
    # The held-out values behind vs_baseline, paired by seed: (this group's, the baseline's).
    held_out_pairs: tuple[tuple[float, ...], tuple[float, ...]] | None = None


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
        base_summary = vs = pairs = None
        if baseline_rows is not None:
            base = by_seed(baseline_rows(gkey), report_metric)
            common = [s for s in seeds if s in base]
            if common:
                pairs = (tuple(picked[s] for s in common), tuple(base[s] for s in common))
                base_summary = summarize(pairs[1], confidence)
                vs = paired(pairs[0], pairs[1], confidence)
        out.append(
            Selection(
                gkey, best[1], best[0], held_summary, base_summary, vs, held_out_pairs=pairs
            )
        )
    return out


def select_best_vs_baseline(
    rows: Sequence[Row],
    group_keys: Sequence[str],
    choice_key: str,
    baseline: str,
    *,
    pair_keys: Sequence[str],
    select_metric: str,
    report_metric: str,
    selection_seeds: Sequence[int],
    held_out_seeds: Sequence[int],
    confidence: float = 0.95,
) -> list[Selection]:
    """Every group at its own best ``choice_key`` value, paired with the *baseline* init at the
    baseline's own best value: the fair comparison when the choice is a learning rate.

    Each group (``group_keys``, which must include ``init`` and ``pair_keys``) picks its value
    on the selection seeds as :func:`select_best` does; so does the baseline init within the
    same ``pair_keys`` (e.g. dataset, model, optimizer). The held-out seeds of the group's pick
    are paired by seed with the held-out seeds of the baseline's pick.
    """
    index = {k: i for i, k in enumerate(group_keys)}
    missing = [k for k in (*pair_keys, "init") if k not in index]
    if missing:
        raise ValueError(f"group_keys lack {missing}")

    def pick(
        members: Sequence[Row],
        baseline_rows: Callable[[tuple[Any, ...]], Sequence[Row]] | None = None,
    ) -> list[Selection]:
        return select_best(
            members, group_keys, choice_key, select_metric=select_metric,
            report_metric=report_metric, selection_seeds=selection_seeds,
            held_out_seeds=held_out_seeds, baseline_rows=baseline_rows, confidence=confidence,
        )  # fmt: skip

    base_rows = [r for r in rows if r["init"] == baseline]
    best_base = {
        tuple(sel.group[index[k]] for k in pair_keys): sel.choice for sel in pick(base_rows)
    }
    base_groups = group(base_rows, pair_keys)

    def pair_key(gkey: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(gkey[index[k]] for k in pair_keys)

    def baseline_rows(gkey: tuple[Any, ...]) -> list[Row]:
        key = pair_key(gkey)
        if key not in best_base:
            return []
        return [r for r in base_groups.get(key, []) if r[choice_key] == best_base[key]]

    out = []
    for sel in pick(rows, baseline_rows):
        mine = sel.group[index["init"]] == baseline  # the baseline is not paired with itself
        out.append(
            replace(
                sel,
                baseline=None if mine else sel.baseline,
                vs_baseline=None if mine else sel.vs_baseline,
                held_out_pairs=None if mine else sel.held_out_pairs,
                baseline_choice=best_base.get(pair_key(sel.group)),
            )
        )
    return out


# --- rank correlation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Correlation:
    n: int
    rho: float  # Spearman's rank correlation (average ranks for ties)
    p: float  # two-sided, scipy's t approximation
    fisher_low: float  # Fisher z interval, se = sqrt(1.06 / (n - 3)) (Fieller et al. 1957)
    fisher_high: float
    boot_low: float  # percentile bootstrap over (x, y) pairs
    boot_high: float


def _rank_correlation(x: Any, y: Any, axis: int = -1) -> Any:
    """Spearman's rho along ``axis`` (Pearson's r of average ranks); nan where a side is
    constant. Vectorized, as ``scipy.stats.bootstrap`` calls it on a batch of resamples."""
    rx = sps.rankdata(x, axis=axis)
    ry = sps.rankdata(y, axis=axis)
    with warnings.catch_warnings():  # a constant resample has no rank correlation: nan
        warnings.simplefilter("ignore")
        return sps.pearsonr(rx, ry, axis=axis).statistic


def spearman(
    x: Sequence[float],
    y: Sequence[float],
    confidence: float = 0.95,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> Correlation:
    """Spearman's rho of paired values with two intervals: Fisher z and a bootstrap.

    Pairs with a missing or nan value are dropped. rho and p are ``scipy.stats.spearmanr``'s.
    The Fisher interval is ``tanh(atanh(rho) +- z_q * sqrt(1.06 / (n - 3)))`` (the
    Fieller-Hartley-Pearson variance of Spearman's z; scipy has none for Spearman), needs
    n >= 4. The bootstrap is ``scipy.stats.bootstrap`` over the pairs (``resamples`` paired
    resamples from a generator seeded with ``seed``, so the interval is reproducible); its
    percentile interval is taken over the resamples that have a rank correlation (a resample
    where either side is constant has none and is left out). Both intervals treat pairs as
    independent, which runs sharing a seed are not quite.
    """
    pairs = [
        (float(a), float(b))
        for a, b in zip(x, y, strict=True)
        if a is not None and b is not None and not math.isnan(a) and not math.isnan(b)
    ]
    n = len(pairs)
    nan = math.nan
    if n < 3:
        return Correlation(n, nan, nan, nan, nan, nan, nan)
    xs = np.array([a for a, _ in pairs])
    ys = np.array([b for _, b in pairs])
    if np.all(xs == xs[0]) or np.all(ys == ys[0]):
        return Correlation(n, nan, nan, nan, nan, nan, nan)
    result = sps.spearmanr(xs, ys)
    rho, p = float(result.statistic), float(result.pvalue)
    fisher_low = fisher_high = nan
    q = float(sps.norm.ppf(0.5 + confidence / 2))
    if n >= 4:
        if abs(rho) >= 1.0:
            fisher_low = fisher_high = rho
        else:
            z, se = math.atanh(rho), math.sqrt(1.06 / (n - 3))
            fisher_low, fisher_high = math.tanh(z - q * se), math.tanh(z + q * se)
    with warnings.catch_warnings():  # NaN resamples make scipy warn; they are left out below
        warnings.simplefilter("ignore")
        res = sps.bootstrap(
            (xs, ys), _rank_correlation, paired=True, vectorized=True, n_resamples=resamples,
            method="percentile", confidence_level=confidence, rng=np.random.default_rng(seed),
        )  # fmt: skip
    boot = res.bootstrap_distribution
    if np.all(np.isfinite(boot)):
        interval = res.confidence_interval
        boot_low, boot_high = float(interval.low), float(interval.high)
    elif np.any(np.isfinite(boot)):
        tail = (1 - confidence) / 2 * 100
        boot_low, boot_high = (float(v) for v in np.nanpercentile(boot, [tail, 100 - tail]))
    else:
        boot_low = boot_high = nan
    return Correlation(n, rho, p, fisher_low, fisher_high, boot_low, boot_high)
