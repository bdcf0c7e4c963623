"""Statistics against values computed by hand (t quantiles from tables)."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from emergeinit.bench import stats


def test_summary_mean_std_and_t_interval() -> None:
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    # std = sqrt(5/3); t_{0.975, 3} = 3.182446; half-width = 3.182446 * std / 2.
    assert s.n == 4 and s.mean == 2.5
    assert s.std == pytest.approx(1.2909944)
    assert s.low == pytest.approx(2.5 - 2.0542603, abs=1e-6)
    assert s.high == pytest.approx(2.5 + 2.0542603, abs=1e-6)


def test_summary_small_samples_have_no_interval() -> None:
    one = stats.summarize([0.7])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.low)
    assert stats.summarize([]).n == 0
    assert stats.summarize([1.0, None, math.nan, 3.0]).n == 2  # type: ignore[list-item]


def test_paired_difference_and_t_test() -> None:
    # diffs 1, 2, 2: mean 5/3, sd = sqrt(1/3), se = 1/3, t = 5, dof 2.
    p = stats.paired([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    assert p.n == 3 and p.mean == pytest.approx(5 / 3)
    assert p.t == pytest.approx(5.0)
    assert p.p == pytest.approx(0.0377498, abs=1e-6)  # 2 * (1 - T_2(5))
    assert p.low == pytest.approx(5 / 3 - 4.3026527 / 3, abs=1e-6)
    assert p.high == pytest.approx(5 / 3 + 4.3026527 / 3, abs=1e-6)
    ref = sps.ttest_rel([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    assert p.p == pytest.approx(ref.pvalue)


def test_paired_degenerate_cases() -> None:
    same = stats.paired([0.5, 0.6], [0.5, 0.6])
    assert same.mean == 0 and same.p == 1.0
    shifted = stats.paired([0.6, 0.7], [0.5, 0.6])
    assert shifted.p == 0.0 and shifted.t == math.inf
    assert math.isnan(stats.paired([1.0], [0.0]).p)
    with pytest.raises(ValueError, match="length"):
        stats.paired([1.0], [1.0, 2.0])


def test_holm_step_down_and_monotone() -> None:
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 -> 4*0.01, 3*0.03, max(0.09, 2*0.04), max(0.09, 0.5)
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    mixed = stats.holm([math.nan, 0.02])
    assert math.isnan(mixed[0]) and mixed[1] == pytest.approx(0.02)


def test_steps_ratio_is_a_geometric_mean_over_pairs_that_reached() -> None:
    ratio, n = stats.geometric_mean_ratio([10, 20, None], [20, 20, 10])
    assert n == 2 and ratio == pytest.approx(math.sqrt(0.5))
    assert math.isnan(stats.geometric_mean_ratio([None], [3])[0])


def _row(init: str, alpha: float | None, seed: int, val: float, test: float) -> dict:
    return {
        "dataset": "d", "model": "m", "optimizer": "sgd", "lr": 0.1, "init": init,
        "base": "kaiming_normal" if alpha else "", "alpha": alpha, "pivot": 0.5 if alpha else None,
        "head": True if alpha else None, "seed": seed, "val_acc_final": val,
        "test_acc_final": test,
    }  # fmt: skip


def test_best_alpha_is_chosen_on_selection_seeds_and_reported_on_held_out() -> None:
    rows = []
    for seed in range(4):
        # alpha 1.5 wins on validation for seeds 0, 1; its held-out test values are 0.70, 0.72.
        rows.append(_row("emergence", 1.1, seed, 0.80, 0.90))
        rows.append(
            _row("emergence", 1.5, seed, 0.85 if seed < 2 else 0.10, 0.70 + 0.02 * (seed - 2))
        )
        rows.append(_row("kaiming", None, seed, 0.8, 0.60 + 0.01 * seed))
    chosen, held = stats.split_seeds([r["seed"] for r in rows], 0)
    assert (chosen, held) == ([0, 1], [2, 3])
    emergence = [r for r in rows if r["init"] == "emergence"]
    base = [r for r in rows if r["init"] == "kaiming"]
    (sel,) = stats.select_best(
        emergence, ("dataset", "model", "optimizer", "lr", "init"), "alpha",
        select_metric="val_acc_final", report_metric="test_acc_final",
        selection_seeds=chosen, held_out_seeds=held, baseline_rows=lambda key: base,
    )  # fmt: skip
    assert sel.choice == 1.5 and sel.select_score == pytest.approx(0.85)
    assert sel.held_out.n == 2 and sel.held_out.mean == pytest.approx(0.71)
    assert sel.baseline is not None and sel.baseline.mean == pytest.approx(0.625)
    assert sel.vs_baseline is not None and sel.vs_baseline.mean == pytest.approx(0.085)


def test_comparisons_pair_by_seed_and_holm_correct_the_family() -> None:
    rows = [_row("kaiming", None, s, 0.8, 0.60 + 0.01 * s) for s in range(3)]
    rows += [_row("emergence", 1.2, s, 0.8, 0.62 + 0.01 * s + 0.001 * (s == 1)) for s in range(3)]
    rows += [_row("emergence", 2.0, s, 0.8, 0.50 + 0.02 * s) for s in range(3)]
    comps = stats.compare_to_baseline(rows, "kaiming", ["test_acc_final"])
    assert len(comps) == 2
    by_alpha = {c.config[stats.CONFIG.index("alpha")]: c for c in comps}
    assert by_alpha[1.2].result.mean == pytest.approx(0.02 + 0.001 / 3)
    raw = [c.result.p for c in comps]
    assert [c.p_holm for c in comps] == pytest.approx(stats.holm(raw))


def test_spearman_rho_and_fisher_interval_by_hand() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0]
    c = stats.spearman(x, y)
    # d = -1, 1, -1, 1, -2, 1, 1: sum d^2 = 10; rho = 1 - 6 * 10 / (7 * 48) = 23/28.
    assert c.n == 7 and c.rho == pytest.approx(23 / 28)
    ref = sps.spearmanr(x, y)
    assert c.rho == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue)
    z, se = math.atanh(23 / 28), math.sqrt(1.06 / 4)
    assert c.fisher_low == pytest.approx(math.tanh(z - 1.959964 * se), abs=1e-6)
    assert c.fisher_high == pytest.approx(math.tanh(z + 1.959964 * se), abs=1e-6)
    assert c.boot_low <= c.rho <= c.boot_high <= 1.0
    assert stats.spearman(x, y) == c  # the bootstrap is seeded


def test_spearman_ties_missing_values_and_degenerate_input() -> None:
    x = [1.0, 1.0, 2.0, 3.0, math.nan, 4.0]
    y = [0.5, 0.7, 0.6, 0.9, 0.1, None]
    c = stats.spearman(x, y)  # type: ignore[arg-type]
    assert c.n == 4
    assert c.rho == pytest.approx(sps.spearmanr([1, 1, 2, 3], [0.5, 0.7, 0.6, 0.9]).statistic)
    assert math.isnan(stats.spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]).rho)
    assert math.isnan(stats.spearman([1.0, 2.0], [1.0, 2.0]).rho)
    perfect = stats.spearman([1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 20.0, 30.0, 40.0, 50.0])
    assert perfect.rho == pytest.approx(1.0) and perfect.fisher_low == pytest.approx(1.0)


def _lr_row(init: str, lr: float, seed: int, val: float, test: float) -> dict:
    return _row(init, None, seed, val, test) | {"lr": lr}


def test_each_init_at_its_best_lr_is_paired_with_the_baseline_at_its_own() -> None:
    rows = []
    for seed in range(4):
        # kaiming is best at lr 0.1 on validation; emergence at lr 0.3.
        rows.append(_lr_row("kaiming", 0.1, seed, 0.8, 0.60 + 0.01 * seed))
        rows.append(_lr_row("kaiming", 0.3, seed, 0.7, 0.10))
        rows.append(_lr_row("emergence", 0.1, seed, 0.7, 0.20))
        rows.append(_lr_row("emergence", 0.3, seed, 0.9, 0.65 + 0.02 * seed))
    keys = ("dataset", "model", "optimizer", *stats.INIT_KEYS)
    sels = stats.select_best_vs_baseline(
        rows, keys, "lr", "kaiming", pair_keys=("dataset", "model", "optimizer"),
        select_metric="val_acc_final", report_metric="test_acc_final",
        selection_seeds=[0, 1], held_out_seeds=[2, 3],
    )  # fmt: skip
    by_init = {s.group[keys.index("init")]: s for s in sels}
    base, em = by_init["kaiming"], by_init["emergence"]
    assert base.choice == 0.1 and base.vs_baseline is None and base.baseline_choice == 0.1
    assert em.choice == 0.3 and em.baseline_choice == 0.1
    assert em.held_out.mean == pytest.approx(0.70)  # seeds 2, 3: 0.69, 0.71
    assert em.baseline is not None and em.baseline.mean == pytest.approx(0.625)
    assert em.vs_baseline is not None and em.vs_baseline.n == 2
    # diffs 0.69 - 0.62, 0.71 - 0.63: mean 0.075
    assert em.vs_baseline.mean == pytest.approx(0.075)
    with pytest.raises(ValueError, match="group_keys"):
        stats.select_best_vs_baseline(
            rows, ("dataset",), "lr", "kaiming", pair_keys=("model",),
            select_metric="val_acc_final", report_metric="test_acc_final",
            selection_seeds=[0], held_out_seeds=[1],
        )  # fmt: skip


def test_ratio_interval_is_the_exponentiated_t_interval_of_log_ratios() -> None:
    r = stats.ratio_interval([10, 20, 40, None], [20, 20, 20, 30])
    # log ratios: -ln 2, 0, ln 2 -> mean 0, sd ln 2, half-width t_{.975,2} * ln 2 / sqrt(3).
    half = 4.3026527 * math.log(2) / math.sqrt(3)
    assert r.n == 3 and r.mean == pytest.approx(1.0)
    assert r.low == pytest.approx(math.exp(-half)) and r.high == pytest.approx(math.exp(half))
    assert math.isnan(stats.ratio_interval([5], [10]).low)
