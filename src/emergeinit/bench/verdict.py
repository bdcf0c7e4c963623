"""Verdicts: what a paired comparison against the baseline can and cannot tell, in one word.

A comparison is one candidate init against the baseline init on one metric, paired by seed
(``d_i = candidate_i - baseline_i``). Its verdict is exactly one of

* ``better`` / ``worse``: the ``confidence`` interval of the mean difference excludes 0 and the
  Holm-corrected p (across the study's family of comparisons) is below ``1 - confidence``;
  the direction follows the metric (higher is better for accuracy, BLEU, chrF; lower for
  losses and seconds);
* ``equivalent``: two one-sided tests (TOST) at level ``alpha = 1 - confidence`` show the mean
  difference inside ``(-margin, +margin)``, i.e. the ``1 - 2 alpha`` interval lies inside it;
* ``inconclusive``: anything else, including every degenerate case (fewer than 3 seeds, a seed
  with no value).

better/worse is checked first. Each verdict also carries the minimum detectable effect (MDE) at
``power`` and, when inconclusive, the number of seeds that would resolve it. The definitions and
formulas are in ``docs/verdicts.md``. Pure functions over plain numbers (scipy only):
:func:`judge` for one comparison, :func:`judge_family` for a study's family with Holm inside.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scipy import integrate, optimize, special
from scipy import stats as sps

from emergeinit.errors import ConfigError

Word = Literal["better", "worse", "equivalent", "inconclusive"]
WORDS: tuple[Word, ...] = ("better", "worse", "equivalent", "inconclusive")

DEFAULT_CONFIDENCE = 0.95
DEFAULT_POWER = 0.8
# Accuracies are stored as fractions: 0.005 is half a percentage point.
ACCURACY_MARGIN = 0.005
# Translation scores are on a 0-100 scale already: half a BLEU / chrF point.
SCORE_MARGIN = 0.5
SCORE_METRICS = ("bleu", "bleu_tok", "chrf", "val_bleu")
# Fewer seeds than this never get a verdict: a 2-seed t interval (t = 12.7 at 95%) is no answer.
MIN_SEEDS = 3
# Seeds needed beyond this count as "not reachable": each seed is a full training run.
MAX_SEEDS = 1000

_ACCURACY = re.compile(r"(^|_)acc(_|$)")


# --- metrics: direction, margin, units --------------------------------------------------------


def is_accuracy(metric: str) -> bool:
    """Whether ``metric`` is an accuracy stored as a fraction (``acc`` as a ``_``-separated part
    of the name: ``test_acc_final``, ``val_acc_epoch1``)."""
    return bool(_ACCURACY.search(metric))


def _is_score(metric: str) -> bool:
    return metric in SCORE_METRICS or "bleu" in metric or "chrf" in metric


def is_higher_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is the better one.

    Accuracies, BLEU and chrF: higher; names ending in ``loss`` or ``_seconds``: lower. Any
    other metric has no known direction: pass ``higher_is_better`` to :func:`judge` instead.

    >>> is_higher_better("test_acc_final"), is_higher_better("test_loss")
    (True, False)
    """
    if is_accuracy(metric) or _is_score(metric):
        return True
    if metric.endswith("loss") or metric.endswith("_seconds"):
        return False
    raise ConfigError(
        f"metric {metric!r} has no known direction (is higher better?); pass higher_is_better"
    )


def has_direction(metric: str) -> bool:
    """Whether :func:`is_higher_better` knows ``metric``'s direction (else a verdict needs
    ``higher_is_better`` passed explicitly; a study's Answer leaves such a metric out).

    >>> has_direction("test_acc_final"), has_direction("log10_e_init")
    (True, False)
    """
    try:
        is_higher_better(metric)
    except ConfigError:
        return False
    return True


def default_margin(metric: str) -> float | None:
    """The default equivalence margin of ``metric`` in its own units, or None when it has none.

    0.005 (half a percentage point) for accuracies, 0.5 for BLEU, tokenized BLEU, chrF and
    validation BLEU. Losses and other metrics have no natural scale, hence no default.

    >>> default_margin("test_acc_final"), default_margin("bleu"), default_margin("test_loss")
    (0.005, 0.5, None)
    """
    if is_accuracy(metric):
        return ACCURACY_MARGIN
    if metric in SCORE_METRICS:
        return SCORE_MARGIN
    return None


def _check_margin(metric: str, margin: Any) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise ConfigError(f"margin for {metric!r} must be a number, got {margin!r}")
    if not math.isfinite(margin) or margin <= 0:
        raise ConfigError(f"margin for {metric!r} must be finite and > 0, got {margin!r}")
    return float(margin)


def resolve_margins(
    metrics: Sequence[str], user: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The equivalence margin of every metric: the user's where given, else the default.

    ``user`` maps a metric to its margin in the metric's own units (accuracies as fractions:
    0.01 is one percentage point). A metric with neither a user margin nor a default (a loss,
    say) is an error rather than a silent guess, because the margin is the claim an
    "equivalent" verdict makes. Keys of ``user`` that are not in ``metrics`` are checked and
    ignored.

    >>> resolve_margins(["test_acc_final", "bleu"], {"bleu": 1.0})
    {'test_acc_final': 0.005, 'bleu': 1.0}
    """
    user = dict(user or {})
    for metric, margin in user.items():
        _check_margin(metric, margin)
    out: dict[str, float] = {}
    for metric in metrics:
        if metric in user:
            out[metric] = float(user[metric])
            continue
        default = default_margin(metric)
        if default is None:
            raise ConfigError(
                f"metric {metric!r} has no default equivalence margin; set one in its own "
                f"units, e.g. stats.margin = {{{metric} = 0.01}}"
            )
        out[metric] = default
    return out


def points_scale(metric: str) -> float:
    """Factor from the metric's stored units to the units it is reported in: 100 for accuracy
    fractions (percentage points), 1 otherwise (BLEU and chrF are points already)."""
    return 100.0 if is_accuracy(metric) else 1.0


def unit(metric: str) -> str:
    """``"points"`` for accuracies, BLEU and chrF; empty for anything else."""
    return "points" if is_accuracy(metric) or _is_score(metric) else ""


def format_value(value: float, metric: str, *, signed: bool = True) -> str:
    """A value in reported units: ``+1.23`` for points, three significant digits otherwise."""
    x = value * points_scale(metric)
    if unit(metric):
        return f"{x:+.2f}" if signed else f"{x:.2f}"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def format_margin(margin: float, metric: str, *, with_unit: bool = True) -> str:
    """``±0.5 points`` (accuracy margin 0.005), ``±0.5 points`` (BLEU), ``±0.01`` (a loss);
    without ``with_unit``, ``±0.5`` for all three."""
    text = f"±{margin * points_scale(metric):.3g}"
    return f"{text} {unit(metric)}" if with_unit and unit(metric) else text


# --- power ---------------------------------------------------------------------------------------


def _check_level(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ConfigError(f"{name} must be a number in ({low}, {high}), got {value!r}")
    return float(value)


def t_power(effect_size: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample (paired) t-test at level ``alpha`` with ``n`` pairs
    when the true mean difference is ``effect_size`` standard deviations.

    ``P(T > t_c) + P(T < -t_c)`` with ``T`` noncentral t (``n - 1`` dof, noncentrality
    ``effect_size * sqrt(n)``) and ``t_c`` the ``1 - alpha/2`` quantile of Student t: the same
    quantity as ``statsmodels.stats.power.TTestPower().power``.

    >>> round(t_power(1.0, 10, 0.05), 4)
    0.8031
    """
    df, nc = n - 1, effect_size * math.sqrt(n)
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    # P(T < -c | nc) = P(T > c | -nc): scipy's nct.cdf returns nan deep in the lower tail
    # (df = 1, nc = 8), its sf does not.
    return float(sps.nct.sf(crit, df, nc) + sps.nct.sf(crit, df, -nc))


def tost_power(delta: float, sd: float, n: int, alpha: float, margin: float) -> float:
    """Exact power of the paired TOST for ``(-margin, +margin)`` at level ``alpha`` with ``n``
    pairs, when the differences are normal with mean ``delta`` and standard deviation ``sd``.

    TOST concludes when ``mean -+ t_c * s / sqrt(n)`` both lie inside the margin (``t_c`` the
    ``1 - alpha`` quantile, ``n - 1`` dof). The sample mean and ``s`` are independent, so with
    ``U = (n - 1) s^2 / sd^2`` (chi-square, ``n - 1`` dof) the power is
    ``E_U[max(0, Phi((m - delta) sqrt(n) / sd - t_c sqrt(U/(n-1)))
    - Phi((-m - delta) sqrt(n) / sd + t_c sqrt(U/(n-1))))]``, integrated numerically over the
    chi-square quantile (Owen 1965).

    >>> round(tost_power(0.0, 1.0, 20, 0.05, 0.8), 2)
    0.93
    """
    df = n - 1
    crit = float(sps.t.ppf(1 - alpha, df))
    a, b = (margin - delta) * math.sqrt(n) / sd, (-margin - delta) * math.sqrt(n) / sd
    # Past u_max the two bounds cross (the interval is wider than the margin): no power there.
    # Integrate over y = P(U > u) in (P(U > u_max), 1], where u = chdtri(df, y); scipy.special
    # rather than scipy.stats because this runs inside quad, once per point.
    u_max = df * (margin * math.sqrt(n) / (sd * crit)) ** 2
    y_min = float(special.chdtrc(df, u_max))
    if y_min >= 1.0:
        return 0.0

    def inside(y: float) -> float:
        r = crit * math.sqrt(float(special.chdtri(df, y)) / df)
        return max(0.0, float(special.ndtr(a - r) - special.ndtr(b + r)))

    with warnings.catch_warnings():
        # The kink of max(0, .) can stop quad short of epsabs = 1e-10 with a roundoff warning;
        # its error estimate is then still ~1e-9, far below anything a power threshold sees.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, _ = integrate.quad(inside, y_min, 1.0, limit=200, epsabs=1e-10, epsrel=1e-8)
    return min(1.0, max(0.0, value))


def minimum_detectable_effect(sd: float, n: int, confidence: float, power: float) -> float:
    """The smallest true mean difference (in the metric's units) that the two-sided paired
    t-test at ``alpha = 1 - confidence`` detects with probability ``power`` given ``n`` pairs
    whose differences have standard deviation ``sd``: ``sd * d*`` where ``t_power(d*, n,
    alpha) = power``. 0 when ``sd`` is 0 (any difference is then seen exactly).

    >>> round(minimum_detectable_effect(0.01, 10, 0.95, 0.8), 5)
    0.00996
    """
    if n < 2:
        raise ConfigError(f"the minimum detectable effect needs n >= 2 pairs, got {n}")
    if sd == 0.0:
        return 0.0
    alpha = 1 - confidence
    if t_power(0.0, n, alpha) >= power:
        return 0.0
    high = 1.0
    while t_power(high, n, alpha) < power:
        high *= 2  # power -> 1 as the effect grows, so this ends (n >= 2, power < 1)
    d = optimize.brentq(lambda e: t_power(e, n, alpha) - power, 0.0, high, xtol=1e-12)
    return float(d) * sd


def _smallest_n(reaches: Any, start: int, cap: int) -> int | None:
    """Smallest n in [start, cap] with ``reaches(n)``, for ``reaches`` monotone in n."""
    if reaches(start):
        return start
    low, high = start, start
    while not reaches(high):
        if high >= cap:
            return None
        low, high = high, min(cap, 2 * high)
    while high - low > 1:  # reaches(high), not reaches(low)
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


@dataclass(frozen=True)
class SeedsNeeded:
    """How many seeds (in total, both inits run on each) would resolve a comparison."""

    n: int | None  # None: not reachable or not defined (see note)
    resolves_to: Word | None  # the verdict the n is powered to reach
    note: str  # why n is None, or a caveat; empty otherwise


def seeds_needed(
    mean: float,
    sd: float,
    n_now: int,
    *,
    margin: float,
    higher_is_better: bool,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = DEFAULT_POWER,
    max_seeds: int = MAX_SEEDS,
) -> SeedsNeeded:
    """The number of seeds at which a comparison with true mean difference ``mean`` and spread
    ``sd`` (the observed ones, taken at face value) reaches a verdict with probability ``power``.

    That is ``min(n_detect, n_equivalent)`` over ``n > n_now`` (the current ``n`` did not
    settle it) and ``n >= 3``, where ``n_detect`` is the smallest ``n`` at which the two-sided
    paired t-test at ``alpha = 1 - confidence`` has power ``power`` (:func:`t_power`; defined
    when ``mean != 0``) and ``n_equivalent`` the smallest at which TOST within ``±margin`` has
    it (:func:`tost_power`; defined when ``|mean| < margin``). Both powers grow with ``n``, so
    the first ``n`` where either reaches ``power`` is the first where a verdict is that likely.
    The t-test uses the per-comparison ``alpha``, not the Holm-corrected one, so in a large
    family the count is a lower bound. None when it exceeds ``max_seeds`` (a difference almost
    exactly 0 relative to its spread with a tight margin, say).

    >>> seeds_needed(0.0, 0.01, 5, margin=0.005, higher_is_better=True).n
    36
    """
    alpha = 1 - confidence
    start = max(MIN_SEEDS, n_now + 1)
    if sd == 0.0:  # spread 0: any n >= 3 is decided at once (see judge)
        word: Word = _direction(mean, higher_is_better) if mean != 0 else "equivalent"
        return SeedsNeeded(start, word, "")
    candidates: list[tuple[int, Word]] = []
    if mean != 0.0:
        effect = abs(mean) / sd
        found = _smallest_n(lambda k: t_power(effect, k, alpha) >= power, start, max_seeds)
        if found is not None:
            candidates.append((found, _direction(mean, higher_is_better)))
    if abs(mean) < margin:
        found = _smallest_n(
            lambda k: tost_power(mean, sd, k, alpha, margin) >= power, start, max_seeds
        )
        if found is not None:
            candidates.append((found, "equivalent"))
    if not candidates:
        return SeedsNeeded(None, None, f"more than {max_seeds} seeds")
    n, word = min(candidates, key=lambda c: c[0])  # a tie goes to better/worse, listed first
    note = ""
    if n == start and n_now >= MIN_SEEDS:
        note = f"the observed spread says {n_now} seeds should have sufficed; add seeds"
    return SeedsNeeded(n, word, note)


# --- the verdict -------------------------------------------------------------------------------


def _direction(mean: float, higher_is_better: bool) -> Word:
    return "better" if (mean > 0) == higher_is_better else "worse"


@dataclass(frozen=True)
class Verdict:
    """The verdict of one comparison (candidate minus baseline, paired by seed) on one metric.

    Every number is in the metric's stored units (accuracy as a fraction); None where it is
    not defined (too few seeds), never nan.
    """

    word: Word
    reason: str  # short text that starts with the word, e.g. "inconclusive: 2 seeds"
    metric: str
    n: int  # seeds with a value on both sides
    n_missing: int  # seeds where either side has no value
    mean_diff: float | None  # mean of candidate - baseline over the n seeds
    sd: float | None  # standard deviation of the differences (ddof = 1)
    ci: tuple[float, float] | None  # confidence interval of mean_diff (Student t)
    tost_ci: tuple[float, float] | None  # the 1 - 2 (1 - confidence) interval TOST uses
    p: float | None  # two-sided paired t-test
    p_holm: float | None  # Holm-adjusted across the family; None when not part of it
    p_tost: float | None  # TOST p: max of the two one-sided p-values
    margin: float
    mde: float | None  # minimum detectable effect at `power`
    seeds_needed: int | None  # inconclusive only: seeds that would resolve it (SeedsNeeded.n)
    resolves_to: Word | None  # the verdict those seeds are powered to reach
    seeds_note: str  # why seeds_needed is None, or a caveat
    higher_is_better: bool
    confidence: float
    power: float
    degenerate: bool = False  # decided by a degenerate-case rule, not the tests

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (intervals as two-item lists)."""
        out = asdict(self)
        for key in ("ci", "tost_ci"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @property
    def detail(self) -> str:
        """The reason without the leading ``word: ``."""
        return self.reason.split(": ", 1)[1] if ": " in self.reason else self.reason


@dataclass(frozen=True)
class _Paired:
    n: int
    n_missing: int
    mean: float | None
    sd: float | None
    ci: tuple[float, float] | None
    tost_ci: tuple[float, float] | None
    p: float | None
    p_tost: float | None
    constant: bool  # every difference equal (n >= 2)


def _value(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _paired(
    candidate: Sequence[float | None],
    baseline: Sequence[float | None],
    confidence: float,
    margin: float,
) -> _Paired:
    if len(candidate) != len(baseline):
        raise ConfigError(
            f"paired samples differ in length: {len(candidate)} vs {len(baseline)} "
            "(pair them by seed; use None for a seed with no value)"
        )
    pairs = [(_value(a), _value(b)) for a, b in zip(candidate, baseline, strict=True)]
    diffs = [a - b for a, b in pairs if a is not None and b is not None]
    n, missing = len(diffs), len(pairs) - len(diffs)
    if n == 0:
        return _Paired(0, missing, None, None, None, None, None, None, False)
    if n == 1:
        return _Paired(1, missing, diffs[0], None, None, None, None, None, False)
    alpha, df = 1 - confidence, n - 1
    if all(d == diffs[0] for d in diffs):
        # No spread: the limits of the tests as the spread goes to 0. The t statistic is
        # +-inf (p = 0) for a non-zero difference; 0/0 for a zero one, taken as p = 1.
        c = diffs[0]
        p = 1.0 if c == 0.0 else 0.0
        p_tost = 0.0 if abs(c) < margin else 1.0
        return _Paired(n, missing, c, 0.0, (c, c), (c, c), p, p_tost, True)
    # fsum: correctly rounded sums, so the numbers do not depend on summation order or SIMD
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / df)
    se = sd / math.sqrt(n)
    half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    half_tost = float(sps.t.ppf(1 - alpha, df)) * se
    p = float(2 * sps.t.sf(abs(mean) / se, df))
    p_low = float(sps.t.sf((mean + margin) / se, df))  # H0: mean <= -margin
    p_high = float(sps.t.cdf((mean - margin) / se, df))  # H0: mean >= +margin
    return _Paired(
        n, missing, mean, sd, (mean - half, mean + half),
        (mean - half_tost, mean + half_tost), p, max(p_low, p_high), False,
    )  # fmt: skip


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def _decide(
    s: _Paired, p_holm: float | None, *, metric: str, margin: float, higher: bool,
    confidence: float,
) -> tuple[Word, str, bool]:  # fmt: skip
    """(word, reason, degenerate) from the paired statistics."""
    alpha = 1 - confidence
    level, tost_level = f"{confidence:.0%}", f"{1 - 2 * alpha:.0%}"
    total = s.n + s.n_missing
    if total == 0:
        return "inconclusive", "inconclusive: no seeds", True
    if s.n_missing:
        has = "has" if s.n_missing == 1 else "have"
        return "inconclusive", f"inconclusive: {s.n_missing} of {total} seeds {has} no value", True
    if s.n < MIN_SEEDS:
        return "inconclusive", f"inconclusive: {_plural(s.n, 'seed')}", True
    assert s.mean is not None and s.ci is not None and s.tost_ci is not None
    band = format_margin(margin, metric)
    if s.constant:
        if s.mean == 0.0:
            return "equivalent", f"equivalent: all {s.n} differences are 0", True
        word = _direction(s.mean, higher)
        value = format_value(s.mean, metric)
        return word, f"{word}: all {s.n} differences are {value} {unit(metric)}".rstrip(), True
    excludes_zero = s.ci[0] > 0 or s.ci[1] < 0
    p_adj = p_holm if p_holm is not None else s.p
    assert p_adj is not None
    if excludes_zero and p_adj < alpha:
        word = _direction(s.mean, higher)
        return word, f"{word}: {level} interval excludes 0, Holm p = {p_adj:.2g}", False
    if -margin < s.tost_ci[0] and s.tost_ci[1] < margin:
        return "equivalent", f"equivalent: {tost_level} interval inside {band}", False
    if excludes_zero:
        why = f"Holm p = {p_adj:.2g} is not below {alpha:.2g}"
    else:
        why = f"{level} interval covers 0, {tost_level} interval not inside {band}"
    return "inconclusive", f"inconclusive: {why}", False


def judge(
    candidate: Sequence[float | None],
    baseline: Sequence[float | None],
    *,
    metric: str,
    margin: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = DEFAULT_POWER,
    p_holm: float | None = None,
    higher_is_better: bool | None = None,
    max_seeds: int = MAX_SEEDS,
) -> Verdict:
    """The verdict of ``candidate`` against ``baseline`` on ``metric``, paired by position.

    ``candidate[i]`` and ``baseline[i]`` come from the same seed; None, nan or inf marks a seed
    with no value (which makes the verdict inconclusive: dropping the seed could flatter an
    init whose runs fail). ``margin`` defaults to :func:`default_margin`; ``higher_is_better``
    to :func:`is_higher_better`. ``p_holm`` is this comparison's Holm-adjusted p from its
    family (see :func:`holm`, or use :func:`judge_family`); None treats the comparison as a
    family of one (``p_holm = p``).

    Degenerate cases, in this order: no seeds, a seed with no value, fewer than 3 seeds:
    inconclusive; every difference equal (no spread): equivalent when all are 0, else
    better/worse by the sign, as the tests give in the limit of zero spread (t = +-inf).

    >>> v = judge([0.91, 0.92, 0.93, 0.94], [0.90, 0.905, 0.91, 0.92], metric="test_acc_final")
    >>> v.word, v.reason
    ('better', 'better: 95% interval excludes 0, Holm p = 0.0065')
    """
    confidence = _check_level("confidence", confidence, 0.5, 1.0)
    power = _check_level("power", power, 0.0, 1.0)
    if p_holm is not None:
        p_holm = _check_level("p_holm", p_holm, -1e-12, 1.0 + 1e-12)
    margin = resolve_margins([metric], None if margin is None else {metric: margin})[metric]
    higher = is_higher_better(metric) if higher_is_better is None else bool(higher_is_better)
    s = _paired(candidate, baseline, confidence, margin)
    return _verdict(s, p_holm, metric, margin, higher, confidence, power, max_seeds)


def _verdict(
    s: _Paired, p_holm: float | None, metric: str, margin: float, higher: bool,
    confidence: float, power: float, max_seeds: int,
) -> Verdict:  # fmt: skip
    word, reason, degenerate = _decide(
        s, p_holm, metric=metric, margin=margin, higher=higher, confidence=confidence
    )
    if p_holm is None and s.n >= MIN_SEEDS and not s.n_missing:
        p_holm = s.p
    mde = None
    if s.sd is not None:
        mde = minimum_detectable_effect(s.sd, s.n, confidence, power)
    needed = SeedsNeeded(None, None, "")
    if word == "inconclusive":
        if s.n_missing:
            needed = SeedsNeeded(None, None, "a seed has no value; more seeds will not fix it")
        elif s.sd is None or s.mean is None:
            needed = SeedsNeeded(None, None, "the spread needs at least 2 seeds")
        else:
            needed = seeds_needed(
                s.mean, s.sd, s.n, margin=margin, higher_is_better=higher,
                confidence=confidence, power=power, max_seeds=max_seeds,
            )  # fmt: skip
    return Verdict(
        word=word, reason=reason, metric=metric, n=s.n, n_missing=s.n_missing,
        mean_diff=s.mean, sd=s.sd, ci=s.ci, tost_ci=s.tost_ci, p=s.p, p_holm=p_holm,
        p_tost=s.p_tost, margin=margin, mde=mde, seeds_needed=needed.n,
        resolves_to=needed.resolves_to, seeds_note=needed.note, higher_is_better=higher,
        confidence=confidence, power=power, degenerate=degenerate,
    )  # fmt: skip


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values; None (or nan) stays None and is not counted in the
    family. ``p_(k)`` (k-th smallest of m) becomes ``max_{j <= k} min(1, (m - j + 1) p_(j))``.

    >>> holm([0.01, 0.04, None, 0.03])
    [0.03, 0.06, None, 0.06]
    """
    finite = sorted((p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p))
    m = len(finite)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class PairedSample:
    """One comparison's data: the candidate's and the baseline's values by seed."""

    metric: str
    candidate: Sequence[float | None]
    baseline: Sequence[float | None]
    higher_is_better: bool | None = None  # None: from the metric name


def judge_family(
    samples: Sequence[PairedSample],
    *,
    margins: Mapping[str, float] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = DEFAULT_POWER,
    max_seeds: int = MAX_SEEDS,
) -> list[Verdict]:
    """Verdicts for a study's family of comparisons, Holm-corrected across it, in order.

    ``margins`` is the user's ``{metric: margin}`` (see :func:`resolve_margins`). The family is
    every comparison that can be tested: those with at least 3 seeds and no missing value (the
    others are inconclusive anyway and do not dilute the rest).

    >>> a = PairedSample("test_acc_final", [0.91, 0.92, 0.93], [0.90, 0.90, 0.91])
    >>> b = PairedSample("test_acc_final", [0.90, 0.90, 0.91], [0.90, 0.90, 0.91])
    >>> [v.word for v in judge_family([a, b])]
    ['inconclusive', 'equivalent']
    """
    confidence = _check_level("confidence", confidence, 0.5, 1.0)
    power = _check_level("power", power, 0.0, 1.0)
    resolved = resolve_margins(list(dict.fromkeys(s.metric for s in samples)), margins)
    directions = [
        is_higher_better(s.metric) if s.higher_is_better is None else bool(s.higher_is_better)
        for s in samples
    ]
    paired = [_paired(s.candidate, s.baseline, confidence, resolved[s.metric]) for s in samples]
    tested = [s.p if s.n >= MIN_SEEDS and not s.n_missing else None for s in paired]
    adjusted = holm(tested)
    return [
        _verdict(p, adj, s.metric, resolved[s.metric], higher, confidence, power, max_seeds)
        for s, p, adj, higher in zip(samples, paired, adjusted, directions, strict=True)
    ]


__all__ = [
    "ACCURACY_MARGIN",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_POWER",
    "MAX_SEEDS",
    "MIN_SEEDS",
    "SCORE_MARGIN",
    "SCORE_METRICS",
    "WORDS",
    "PairedSample",
    "SeedsNeeded",
    "Verdict",
    "Word",
    "default_margin",
    "format_margin",
    "format_value",
    "has_direction",
    "holm",
    "is_accuracy",
    "is_higher_better",
    "judge",
    "judge_family",
    "minimum_detectable_effect",
    "points_scale",
    "resolve_margins",
    "seeds_needed",
    "t_power",
    "tost_power",
    "unit",
]
