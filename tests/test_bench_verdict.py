"""Verdicts against hand-computed values, statsmodels' TOST and power, and simulation.

Hand values use Student t with 2 degrees of freedom, whose CDF and quantile have closed forms:
``F(t) = 1/2 + t / (2 sqrt(t^2 + 2))`` and ``t_u = (2u - 1) / sqrt(2u(1 - u))``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

from emergeinit.bench import answer, verdict
from emergeinit.bench.answer import AnswerEntry, answer_markdown, answer_sentences, answer_table
from emergeinit.bench.verdict import PairedSample, Verdict, judge, judge_family
from emergeinit.errors import ConfigError


def t2_quantile(u: float) -> float:
    return (2 * u - 1) / math.sqrt(2 * u * (1 - u))


def t2_sf(t: float) -> float:
    return 0.5 - t / (2 * math.sqrt(t * t + 2))


def no_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(no_nan(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(no_nan(v) for v in value)
    return True


# --- hand-computed ----------------------------------------------------------------------------


def test_three_seeds_by_hand_equivalent_within_a_wide_margin() -> None:
    # diffs 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3), dof 2.
    v = judge([11.0, 12.0, 13.0], [10.0, 10.0, 10.0], metric="bleu", margin=5.0)
    se = 1 / math.sqrt(3)
    assert (v.n, v.n_missing, v.mean_diff, v.sd) == (3, 0, 2.0, 1.0)
    half = t2_quantile(0.975) * se
    assert v.ci == pytest.approx((2 - half, 2 + half), rel=1e-12)
    assert v.p == pytest.approx(1 - math.sqrt(6 / 7), rel=1e-10)  # 2 * t2_sf(2 sqrt 3)
    assert v.p_holm == v.p  # a family of one
    half90 = t2_quantile(0.95) * se
    assert v.tost_ci == pytest.approx((2 - half90, 2 + half90), rel=1e-12)
    # The binding one-sided test is the upper one: t = (2 - 5) / se = -3 sqrt(3).
    assert v.p_tost == pytest.approx(0.5 * (1 - math.sqrt(27 / 29)), rel=1e-10)
    # 95% interval [-0.48, 4.48] covers 0; 90% interval [0.31, 3.69] is inside +-5.
    assert v.word == "equivalent"
    assert v.reason == "equivalent: 90% interval inside ±5 points"
    assert v.seeds_needed is None and v.resolves_to is None  # decided


def test_three_seeds_by_hand_inconclusive_within_a_tight_margin() -> None:
    v = judge([11.0, 12.0, 13.0], [10.0, 10.0, 10.0], metric="bleu", margin=3.0)
    # upper test: t = (2 - 3) sqrt(3) = -sqrt(3): p = t2_sf(sqrt 3) = (1 - sqrt(3/5)) / 2
    assert v.p_tost == pytest.approx(0.5 * (1 - math.sqrt(3 / 5)), rel=1e-10)
    assert v.word == "inconclusive"
    assert v.reason == ("inconclusive: 95% interval covers 0, 90% interval not inside ±3 points")
    assert v.seeds_needed is not None and v.seeds_needed > 3


def test_better_and_worse_follow_the_metric_direction() -> None:
    # diffs 1, 2, 2: mean 5/3, sd sqrt(1/3), se 1/3, t = 5: p = 1 - 5/sqrt(27) = 0.0377.
    cand, base = [1.0, 2.0, 2.0], [0.0, 0.0, 0.0]
    up = judge(cand, base, metric="bleu")
    assert up.p == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-10)
    half = t2_quantile(0.975) / 3
    assert up.ci == pytest.approx((5 / 3 - half, 5 / 3 + half), rel=1e-12)
    assert up.word == "better" and up.higher_is_better
    assert up.reason == "better: 95% interval excludes 0, Holm p = 0.038"
    down = judge(cand, base, metric="test_loss", margin=0.1)
    assert down.word == "worse" and not down.higher_is_better
    explicit = judge(cand, base, metric="log10_e_final", margin=0.1, higher_is_better=False)
    assert explicit.word == "worse"


def test_a_holm_p_at_or_above_alpha_keeps_it_inconclusive() -> None:
    v = judge([1.0, 2.0, 2.0], [0.0, 0.0, 0.0], metric="bleu", p_holm=0.2)
    assert v.ci is not None and v.ci[0] > 0  # the interval alone would say better
    assert v.word == "inconclusive" and v.p_holm == 0.2
    assert v.reason == "inconclusive: Holm p = 0.2 is not below 0.05"
    assert v.resolves_to == "better" and v.seeds_needed is not None


def test_holm_by_hand_and_against_statsmodels() -> None:
    assert verdict.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert verdict.holm([]) == []
    assert verdict.holm([0.02, 0.9]) == [0.04, 0.9]
    assert verdict.holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, then kept monotone
    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 20):
        ps = rng.uniform(0, 0.2, m).tolist()
        ours = verdict.holm(ps)
        theirs = multipletests(ps, method="holm")[1]
        assert ours == pytest.approx(theirs.tolist(), rel=1e-12, abs=1e-15)


def test_the_family_is_holm_corrected_and_excludes_untestable_comparisons() -> None:
    # Five copies of a comparison with raw p = 0.0377: each alone is better, five together
    # have Holm p = 5 * 0.0377 > 0.05. A 2-seed comparison is not part of the family.
    one = PairedSample("bleu", [1.0, 2.0, 2.0], [0.0, 0.0, 0.0])
    alone = judge_family([one, PairedSample("bleu", [1.0, 2.0], [0.0, 0.0])])
    assert [v.word for v in alone] == ["better", "inconclusive"]
    assert alone[0].p_holm == pytest.approx(alone[0].p) and alone[1].p_holm is None
    five = judge_family([one] * 5)
    assert {v.word for v in five} == {"inconclusive"}
    assert five[0].p_holm == pytest.approx(min(1.0, 5 * (1 - 5 / math.sqrt(27))))


# --- cross-checks against statsmodels ---------------------------------------------------------

# (n, mean of the differences, their sd, margin): random draws and designed edge cases.
DESIGNS = [
    (3, 0.0, 0.004, 0.005),
    (4, 0.004, 0.002, 0.005),  # mean close to the margin
    (5, 0.0049, 0.0005, 0.005),
    (6, -0.006, 0.003, 0.005),  # outside the margin
    (8, 0.02, 0.004, 0.005),
    (10, -0.001, 0.01, 0.005),
    (12, 0.0, 0.001, 0.005),
    (20, 0.3, 1.0, 0.5),  # BLEU-like scale
    (40, -0.2, 0.6, 0.5),
]


@pytest.mark.parametrize(("seed", "design"), list(enumerate(DESIGNS)))
def test_intervals_and_tost_match_statsmodels(seed: int, design: tuple) -> None:
    n, mean, sd, margin = design
    rng = np.random.default_rng(seed)
    base = 0.9 + rng.normal(0, 0.01, n)
    cand = base + rng.normal(mean, sd, n)
    v = judge(cand.tolist(), base.tolist(), metric="x_acc_y", margin=margin)
    d = cand - base
    stats = DescrStatsW(d)
    assert v.mean_diff == pytest.approx(float(d.mean()), rel=1e-12)
    assert v.ci == pytest.approx(stats.tconfint_mean(0.05), rel=1e-9)
    assert v.tost_ci == pytest.approx(stats.tconfint_mean(0.10), rel=1e-9)
    assert v.p == pytest.approx(stats.ttest_mean(0.0)[1], rel=1e-9)
    p_tost = float(ttost_paired(cand, base, -margin, margin)[0])
    assert v.p_tost == pytest.approx(p_tost, rel=1e-9, abs=1e-300)
    # The interval form and the p-value form of TOST agree; precedence better/worse first.
    assert v.tost_ci is not None and v.ci is not None and v.p is not None
    inside = -margin < v.tost_ci[0] and v.tost_ci[1] < margin
    assert inside == (p_tost < 0.05)
    decided = v.ci[0] > 0 or v.ci[1] < 0
    expected = (
        ("better" if v.mean_diff > 0 else "worse")
        if decided
        else ("equivalent" if inside else "inconclusive")
    )
    assert v.word == expected


@pytest.mark.parametrize("n", [3, 5, 10, 30])
@pytest.mark.parametrize("power", [0.5, 0.8, 0.95])
def test_mde_matches_statsmodels_ttestpower(n: int, power: float) -> None:
    sd = 0.013
    effect = TTestPower().solve_power(nobs=n, alpha=0.05, power=power)
    mde = verdict.minimum_detectable_effect(sd, n, 0.95, power)
    assert mde == pytest.approx(effect * sd, rel=1e-5)  # statsmodels' root finder tolerance
    # and the power at the MDE is the requested one, by statsmodels' own power function
    assert TTestPower().power(mde / sd, n, 0.05) == pytest.approx(power, abs=1e-8)


@pytest.mark.parametrize("power", [0.5, 0.8, 0.95])
def test_mde_with_two_seeds_against_simulation(power: float) -> None:
    # With 1 degree of freedom statsmodels' power is nan (scipy's nct.cdf fails in the far
    # lower tail), so check the power at the MDE by simulating paired t-tests instead.
    mde = verdict.minimum_detectable_effect(1.0, 2, 0.95, power)
    reps = 200_000
    x = np.random.default_rng(7).normal(mde, 1.0, size=(reps, 2))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(2))
    rejected = float(np.mean(np.abs(t) > sps.t.ppf(0.975, 1)))
    assert abs(rejected - power) < 5 * math.sqrt(power * (1 - power) / reps)


def test_t_power_matches_statsmodels_and_a_table_value() -> None:
    # G*Power: d = 1, n = 10 pairs, two-sided alpha 0.05 -> power 0.8031.
    assert verdict.t_power(1.0, 10, 0.05) == pytest.approx(0.8031, abs=1e-4)
    for d, n, alpha in [(0.2, 50, 0.05), (0.5, 8, 0.1), (2.0, 3, 0.05), (0.0, 6, 0.05)]:
        assert verdict.t_power(d, n, alpha) == pytest.approx(
            TTestPower().power(d, n, alpha), rel=1e-10
        )


@pytest.mark.parametrize(("mean", "sd"), [(0.01, 0.01), (-0.007, 0.012), (0.006, 0.02)])
def test_seeds_needed_to_detect_match_statsmodels(mean: float, sd: float) -> None:
    # |mean| >= margin: only a detection can resolve it.
    got = verdict.seeds_needed(mean, sd, 3, margin=0.005, higher_is_better=True)
    assert got.resolves_to == ("better" if mean > 0 else "worse")
    effect = abs(mean) / sd
    n = got.n
    assert n is not None
    assert TTestPower().power(effect, n, 0.05) >= 0.8 > TTestPower().power(effect, n - 1, 0.05)
    assert n == math.ceil(TTestPower().solve_power(effect, alpha=0.05, power=0.8))


def simulated_tost_power(delta: float, sd: float, n: int, margin: float, reps: int) -> float:
    """Share of simulated studies whose 90% interval lies inside the margin."""
    rng = np.random.default_rng(12345 + n)
    x = rng.normal(delta, sd, size=(reps, n))
    mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)
    t = sps.t.ppf(0.95, n - 1)
    return float(np.mean((mean - t * se > -margin) & (mean + t * se < margin)))


@pytest.mark.parametrize(
    ("delta", "sd", "n", "margin"),
    [(0.0, 1.0, 20, 0.8), (0.3, 1.0, 30, 0.8), (0.004, 0.002, 4, 0.005), (0.0, 0.01, 36, 0.005)],
)
def test_tost_power_against_simulation_and_one_sided_bounds(
    delta: float, sd: float, n: int, margin: float
) -> None:
    exact = verdict.tost_power(delta, sd, n, 0.05, margin)
    reps = 40_000
    sim = simulated_tost_power(delta, sd, n, margin, reps)
    # 5 binomial standard errors: a fixed-seed draw, so this is a check, not a coin flip.
    assert abs(exact - sim) < 5 * math.sqrt(0.25 / reps)
    # TOST rejects both one-sided nulls: its power is at most either one-sided power and at
    # least their sum minus 1 (statsmodels computes the one-sided powers).
    lower = TTestPower().power((delta + margin) / sd, n, 0.05, alternative="larger")
    upper = TTestPower().power((delta - margin) / sd, n, 0.05, alternative="smaller")
    assert lower + upper - 1 - 1e-9 <= exact <= min(lower, upper) + 1e-9


def test_seeds_needed_for_equivalence_is_the_first_n_with_enough_power() -> None:
    got = verdict.seeds_needed(0.001, 0.008, 5, margin=0.005, higher_is_better=True)
    assert got.resolves_to == "equivalent" and got.n is not None
    n = got.n
    assert verdict.tost_power(0.001, 0.008, n, 0.05, 0.005) >= 0.8
    assert verdict.tost_power(0.001, 0.008, n - 1, 0.05, 0.005) < 0.8
    # and detecting a 0.001 difference with that spread would take far longer
    assert verdict.t_power(0.001 / 0.008, n, 0.05) < 0.8
    # the simulated power at that n agrees
    assert simulated_tost_power(0.001, 0.008, n, 0.005, 20_000) > 0.8 - 5 * math.sqrt(0.25 / 20_000)


def test_seeds_needed_takes_whichever_verdict_comes_first() -> None:
    # A difference just inside the margin: equivalence would need very many seeds, detecting
    # the difference itself far fewer, so that is the estimate.
    got = verdict.seeds_needed(0.0049, 0.004, 4, margin=0.005, higher_is_better=False)
    assert got.resolves_to == "worse"
    assert got.n == math.ceil(TTestPower().solve_power(0.0049 / 0.004, alpha=0.05, power=0.8))


def test_seeds_needed_edges() -> None:
    far = verdict.seeds_needed(0.0, 1.0, 5, margin=0.01, higher_is_better=True)
    assert far.n is None and far.note == "more than 1000 seeds"
    capped = verdict.seeds_needed(0.0, 0.01, 5, margin=0.005, higher_is_better=True, max_seeds=20)
    assert capped.n is None and capped.note == "more than 20 seeds"
    # counted from n + 1: the current n did not resolve it
    lucky = verdict.seeds_needed(0.0, 0.001, 6, margin=0.005, higher_is_better=True)
    assert lucky.n == 7 and "6 seeds should have sufficed" in lucky.note
    assert verdict.seeds_needed(0.0, 0.001, 1, margin=0.005, higher_is_better=True).n == 3


# --- degenerate cases -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cand", "base", "reason", "n"),
    [
        ([], [], "inconclusive: no seeds", 0),
        ([0.9], [0.8], "inconclusive: 1 seed", 1),
        ([0.9, 0.91], [0.8, 0.82], "inconclusive: 2 seeds", 2),
        ([0.9, None, 0.9, 0.9, 0.9], [0.8] * 5, "inconclusive: 1 of 5 seeds has no value", 4),
        ([0.9, 0.9, math.nan], [0.8, math.inf, 0.8], "inconclusive: 2 of 3 seeds have no value", 1),
        ([None, None], [None, None], "inconclusive: 2 of 2 seeds have no value", 0),
    ],
)
def test_too_few_or_missing_values_are_inconclusive_with_a_reason(
    cand: list, base: list, reason: str, n: int
) -> None:
    v = judge(cand, base, metric="test_acc_final")
    assert v.word == "inconclusive" and v.reason == reason and v.n == n and v.degenerate
    assert v.p_holm is None  # not part of a family
    d = v.to_dict()
    assert no_nan(d)
    json.dumps(d, allow_nan=False)


def test_degenerate_numbers_where_defined() -> None:
    two = judge([0.9, 0.91], [0.8, 0.8], metric="test_acc_final")
    assert two.mean_diff == pytest.approx(0.105) and two.mde is not None and two.mde > 0
    assert two.seeds_needed is not None and two.seeds_needed >= 3
    one = judge([0.9], [0.8], metric="test_acc_final")
    assert one.sd is None and one.ci is None and one.mde is None and one.seeds_needed is None
    assert one.seeds_note == "the spread needs at least 2 seeds"
    missing = judge([0.9, None, 0.9, 0.95], [0.8] * 4, metric="test_acc_final")
    assert missing.seeds_needed is None and missing.seeds_note.startswith("a seed has no value")


def test_zero_spread_decides_by_the_limit_of_the_tests() -> None:
    same = [0.91, 0.93, 0.90, 0.92]
    equal = judge(same, same, metric="test_acc_final")
    assert equal.word == "equivalent" and equal.reason == "equivalent: all 4 differences are 0"
    assert (equal.p, equal.p_tost, equal.mde, equal.ci) == (1.0, 0.0, 0.0, (0.0, 0.0))
    # A constant non-zero difference: t is infinite, p = 0, so better/worse, also when the
    # difference is smaller than the margin (better/worse is checked first).
    base = [0.5, 0.25, 0.75]  # binary fractions, so base + 0.125 - base is exactly 0.125
    big = judge([b + 0.125 for b in base], base, metric="test_acc_final")
    assert big.word == "better" and big.reason == "better: all 3 differences are +12.50 points"
    assert big.p == 0.0 and big.p_tost == 1.0
    small = judge([b + 2**-10 for b in base], base, metric="test_acc_final")
    assert verdict.ACCURACY_MARGIN > 2**-10 and small.word == "better"
    loss = judge([b + 2**-10 for b in base], base, metric="test_loss", margin=0.1)
    assert loss.word == "worse" and loss.reason == "worse: all 3 differences are +0.000977"
    for v in (equal, big, small, loss):
        assert no_nan(v.to_dict()) and v.degenerate


def test_all_equal_results_everywhere() -> None:
    v = judge([0.8] * 5, [0.8] * 5, metric="val_acc_final")
    assert v.word == "equivalent" and v.sd == 0.0 and v.p == 1.0


def test_bad_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="differ in length"):
        judge([0.9, 0.9], [0.9], metric="test_acc_final")
    with pytest.raises(ConfigError, match="confidence"):
        judge([0.9], [0.9], metric="test_acc_final", confidence=1.0)
    with pytest.raises(ConfigError, match="power"):
        judge([0.9], [0.9], metric="test_acc_final", power=0.0)
    with pytest.raises(ConfigError, match="margin"):
        judge([0.9], [0.9], metric="test_acc_final", margin=-0.01)
    with pytest.raises(ConfigError, match="margin"):
        judge([0.9], [0.9], metric="test_acc_final", margin=math.nan)
    with pytest.raises(ConfigError, match=r"no default equivalence margin.*stats\.margin"):
        judge([0.9], [0.9], metric="test_loss")
    with pytest.raises(ConfigError, match="no known direction"):
        judge([0.9], [0.9], metric="log10_e_init", margin=0.1)
    with pytest.raises(ConfigError, match="p_holm"):
        judge([0.9], [0.9], metric="test_acc_final", p_holm=1.5)
    with pytest.raises(ConfigError, match="no default equivalence margin"):
        judge_family([PairedSample("train_loss_final", [1.0], [1.0])])


# --- margins and metrics ------------------------------------------------------------------------


def test_margins_defaults_user_values_and_errors() -> None:
    assert verdict.default_margin("test_acc_final") == 0.005
    assert verdict.default_margin("val_acc_epoch1") == 0.005
    for m in ("bleu", "bleu_tok", "chrf", "val_bleu"):
        assert verdict.default_margin(m) == 0.5
    assert verdict.default_margin("test_loss") is None
    assert verdict.default_margin("accuracy_like") is None  # "acc" must be a whole part
    got = verdict.resolve_margins(["test_acc_final", "test_loss"], {"test_loss": 0.02})
    assert got == {"test_acc_final": 0.005, "test_loss": 0.02}
    assert verdict.resolve_margins(["test_acc_final"], {"test_acc_final": 0.01}) == {
        "test_acc_final": 0.01
    }
    with pytest.raises(ConfigError, match="finite and > 0"):
        verdict.resolve_margins(["bleu"], {"bleu": 0})
    with pytest.raises(ConfigError, match="must be a number"):
        verdict.resolve_margins(["bleu"], {"bleu": "1"})  # type: ignore[dict-item]
    # the user's margin is what the verdict uses and reports
    v = judge([0.9, 0.9, 0.9], [0.9, 0.9, 0.9], metric="test_acc_final", margin=0.01)
    assert v.margin == 0.01


def test_units_and_formatting() -> None:
    assert verdict.points_scale("test_acc_final") == 100 and verdict.points_scale("bleu") == 1
    assert verdict.format_value(0.0123, "test_acc_final") == "+1.23"
    assert verdict.format_value(-0.5, "chrf") == "-0.50"
    assert verdict.format_value(0.01234, "test_loss") == "+0.0123"
    assert verdict.format_margin(0.005, "test_acc_final") == "±0.5 points"
    assert verdict.format_margin(0.5, "bleu") == "±0.5 points"
    assert verdict.format_margin(0.02, "test_loss") == "±0.02"


# --- planted data -------------------------------------------------------------------------------

BASE = [0.881, 0.874, 0.886, 0.879, 0.883, 0.877]
PLANTED = {
    # setting -> differences planted on top of the baseline, in accuracy fractions
    "gain": [0.031, 0.028, 0.030, 0.033, 0.029, 0.031],
    "loss": [-0.021, -0.024, -0.019, -0.022, -0.020, -0.023],
    "flat": [0.0005, -0.0004, 0.0002, -0.0001, 0.0003, -0.0002],
    "noisy": [0.030, -0.025, 0.012, -0.021, 0.026, -0.012],
}


def planted_verdicts() -> list[AnswerEntry]:
    samples = [
        PairedSample("test_acc_final", [b + d for b, d in zip(BASE, diffs)], BASE)
        for diffs in PLANTED.values()
    ]
    return [
        AnswerEntry(f"mlp {name}", "emergence α=1.2", v)
        for name, v in zip(PLANTED, judge_family(samples), strict=True)
    ]


def test_planted_gain_loss_flat_and_noise() -> None:
    entries = planted_verdicts()
    words = {e.setting: e.verdict.word for e in entries}
    assert words == {
        "mlp gain": "better",
        "mlp loss": "worse",
        "mlp flat": "equivalent",
        "mlp noisy": "inconclusive",
    }
    noisy = entries[3].verdict
    assert noisy.seeds_needed is not None and 6 < noisy.seeds_needed <= verdict.MAX_SEEDS
    assert noisy.resolves_to == "equivalent"  # |mean| = 0.17 points, inside the margin
    assert noisy.mde is not None and noisy.mde > verdict.ACCURACY_MARGIN
    for e in entries:
        assert e.verdict.mde is not None and e.verdict.p_holm is not None
        assert no_nan(e.verdict.to_dict())


# --- rendering ------------------------------------------------------------------------------------


def made(word: str, metric: str = "test_acc_final", **fields: Any) -> Verdict:
    """A verdict with chosen numbers, to check the rendering alone."""
    base = Verdict(
        word=word, reason=f"{word}: x", metric=metric, n=5, n_missing=0, mean_diff=0.0123,
        sd=0.004, ci=(0.0071, 0.0175), tost_ci=(0.008, 0.016), p=0.001, p_holm=0.004,
        p_tost=0.9, margin=0.005, mde=0.0068, seeds_needed=None, resolves_to=None,
        seeds_note="", higher_is_better=True, confidence=0.95, power=0.8,
    )  # fmt: skip
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def test_markdown_table_cells_in_points() -> None:
    entries = [
        AnswerEntry("mlp | bn", "emergence α=1.2", made("better")),
        AnswerEntry("gru", "emergence α=1.2", made(
            "inconclusive", metric="bleu", mean_diff=-0.3, ci=(-1.2, 0.6), margin=0.5, mde=1.1,
            seeds_needed=14, resolves_to="equivalent",
        )),
    ]  # fmt: skip
    text = answer_markdown(entries, "kaiming")
    lines = text.splitlines()
    assert lines[0] == "## Answer"
    assert lines[2] == (
        "| setting | init | metric | difference vs kaiming [95% CI] | verdict | margin | MDE | "
        "seeds needed |"
    )
    assert lines[4] == (
        "| mlp \\| bn | emergence α=1.2 | final test accuracy | +1.23 [+0.71, +1.75] | better | "
        "±0.5 | 0.68 | – |"
    )
    assert lines[5] == (
        "| gru | emergence α=1.2 | BLEU | -0.30 [-1.20, +0.60] | inconclusive | ±0.5 | 1.10 | 14 |"
    )
    assert (
        "Against kaiming, emergence α=1.2 is better on final test accuracy; inconclusive on BLEU."
        in text
    )
    assert "The inconclusive comparison would need about 14 seeds." in text
    assert "accuracies in percentage points and BLEU and chrF in their points" in text
    assert "Holm p (over 2 tested comparisons) is below 0.05" in text
    assert "80% power" in text


def test_sentences_count_the_table() -> None:
    eq = {"word": "equivalent"}
    inc = {"seeds_needed": 9, "resolves_to": "equivalent"}
    entries = [
        AnswerEntry("s1", "α=1.2", made("worse")),
        AnswerEntry("s2", "α=1.2", made("worse")),
        AnswerEntry("s3", "α=1.2", made(**eq)),
        AnswerEntry("s4", "α=1.2", made("inconclusive", seeds_needed=14, resolves_to="worse")),
        AnswerEntry("s1", "α=1.2", made("equivalent", metric="test_acc_epoch1")),
        AnswerEntry("s2", "α=1.2", made("equivalent", metric="test_acc_epoch1")),
        AnswerEntry("s1", "α=1.1", made("inconclusive", **inc)),
        AnswerEntry("s2", "α=1.1", made("inconclusive", seeds_note="more than 1000 seeds")),
    ]
    assert answer_sentences(entries, "kaiming") == [
        "Against kaiming, α=1.2 is worse on final test accuracy in 2 of 4 settings, equivalent "
        "within ±0.5 points in 1 and inconclusive in 1; equivalent within ±0.5 points on "
        "first-epoch test accuracy in both settings.",
        "Against kaiming, α=1.1 is inconclusive on final test accuracy in both settings.",
        "Of the 3 inconclusive comparisons, 2 would need about 9–14 seeds and 1 has no seed "
        "estimate (more than 1000 seeds).",
    ]
    decided = [AnswerEntry("s1", "α=1.2", made("better"))]
    decided += [AnswerEntry(f"s{i}", "α=1.2", made("worse", metric="bleu")) for i in range(3)]
    assert answer_sentences(decided, "xavier") == [
        "Against xavier, α=1.2 is better on final test accuracy; worse on BLEU in all 3 settings.",
        "No comparison is inconclusive.",
    ]
    assert answer_sentences([], "kaiming") == ["There is no comparison against kaiming."]
    assert answer_markdown([], "kaiming") == (
        "## Answer\n\nThere is no comparison against kaiming.\n"
    )


def test_degenerate_rows_show_their_reason() -> None:
    v = judge([0.9, 0.91], [0.8, 0.82], metric="test_acc_final")
    cells = answer.answer_cells([AnswerEntry("s", "i", v)])[0]
    assert cells[4] == "inconclusive (2 seeds)"
    assert cells[7] == str(v.seeds_needed)
    far = made("inconclusive", seeds_note="more than 1000 seeds")
    assert answer.answer_cells([AnswerEntry("s", "i", far)])[0][7] == "> 1000"
    empty = judge([], [], metric="test_acc_final")
    cells = answer.answer_cells([AnswerEntry("s", "i", empty)])[0]
    assert cells[3] == "–" and cells[6] == "n/a" and cells[7] == "n/a"


def test_rich_table_has_the_same_content() -> None:
    entries = planted_verdicts()
    table = answer_table(entries, "kaiming")
    console = Console(record=True, width=240, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "Answer: against kaiming" in text
    for row in answer.answer_cells(entries):
        for cell in row:  # the difference breaks before its interval
            for part in cell.split(" [", 1) if cell.endswith("]") else [cell]:
                assert part in text
    # each verdict in its colour (ANSI SGR: bold green, bold red, cyan, yellow)
    coloured = Console(record=True, width=240, force_terminal=True, color_system="standard")
    coloured.print(table)
    ansi = coloured.export_text(styles=True)
    for code, word in [("1;32", "better"), ("1;31", "worse"), ("36", "equivalent"),
                       ("33", "inconclusive")]:  # fmt: skip
        assert f"\x1b[{code}m{word}\x1b[0m" in ansi
    printed = Console(record=True, width=240, color_system=None)
    answer.print_answer(entries, "kaiming", console=printed)
    out = printed.export_text()
    assert " ".join(answer_sentences(entries, "kaiming")) in " ".join(out.split())


def test_planted_study_answer_in_words() -> None:
    entries = planted_verdicts()
    sentences = answer_sentences(entries, "kaiming")
    noisy = entries[3].verdict
    assert sentences == [
        "Against kaiming, emergence α=1.2 is better on final test accuracy in 1 of 4 settings, "
        "worse in 1, equivalent within ±0.5 points in 1 and inconclusive in 1.",
        f"The inconclusive comparison would need about {noisy.seeds_needed} seeds.",
    ]


@pytest.mark.parametrize("module", [verdict, answer])
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, verbose=False)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0


def test_docs_example_prints_what_it_shows() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "verdicts.md").read_text()
    code, shown = re.search(r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", text, re.S).groups()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/verdicts.md", "exec"), {})
    head = shown.split("...")[0]  # the doc elides the end of the how-to-read line
    assert len(head) > 500 and out.getvalue().startswith(head)
