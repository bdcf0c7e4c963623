"""The report's statistics come from scipy.stats; these cross-check them against independent
computations (numpy formulas, a bootstrap redrawn by hand from the same random stream)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from emergeinit.bench import stats

SAMPLES = [
    [0.81, 0.84, 0.79, 0.86, 0.83],
    [1.0, 2.0, 4.0, 8.0],
    [0.5, 0.5, 0.5, 0.7],
]


@pytest.mark.parametrize("values", SAMPLES)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_t_interval_is_mean_plus_minus_quantile_times_standard_error(
    values: list[float], confidence: float
) -> None:
    s = stats.summarize(values, confidence)
    x = np.array(values)
    n = len(x)
    half = sps.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    assert s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.std == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert (s.low, s.high) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-12)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_paired_test_is_the_one_sample_test_of_the_differences(confidence: float) -> None:
    a = [0.71, 0.74, 0.69, 0.77, 0.70]
    b = [0.70, 0.71, 0.70, 0.73, 0.66]
    p = stats.paired(a, b, confidence)
    d = np.array(a) - np.array(b)
    one = sps.ttest_1samp(d, 0.0)
    assert p.t == pytest.approx(float(one.statistic), rel=1e-9)
    assert p.p == pytest.approx(float(one.pvalue), rel=1e-9)
    half = sps.t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert (p.low, p.high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)


def _hand_bootstrap(x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Spearman's rho of each paired resample, drawn as scipy.stats.bootstrap draws them
    (indices ``integers(0, n, (resamples, n))`` from the generator), NaN where a side is
    constant."""
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    out = []
    for row in idx:
        xs, ys = x[row], y[row]
        if np.all(xs == xs[0]) or np.all(ys == ys[0]):
            out.append(math.nan)
        else:
            out.append(float(np.corrcoef(sps.rankdata(xs), sps.rankdata(ys))[0, 1]))
    return np.array(out)


def test_bootstrap_interval_is_scipys_percentile_interval() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0, 8.0])
    c = stats.spearman(x.tolist(), y.tolist(), resamples=500, seed=3)
    hand = _hand_bootstrap(x, y, 500, 3)
    assert np.isfinite(hand).all()  # no constant resample here: scipy's own interval
    assert (c.boot_low, c.boot_high) == pytest.approx(
        tuple(np.percentile(hand, [2.5, 97.5])), abs=1e-12
    )
    ref = sps.bootstrap((x, y), lambda a, b: sps.spearmanr(a, b).statistic, paired=True,
                        vectorized=False, n_resamples=500, method="percentile",
                        rng=np.random.default_rng(3))  # fmt: skip
    assert c.boot_low == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert c.boot_high == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_bootstrap_leaves_out_resamples_without_a_rank_correlation() -> None:
    x = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # many resamples hold only zeros
    y = np.array([0.1, 0.4, 0.2, 0.3, 0.9, 0.8])
    c = stats.spearman(x.tolist(), y.tolist(), resamples=400, seed=0)
    hand = _hand_bootstrap(x, y, 400, 0)
    assert np.isnan(hand).sum() > 10  # the case this test is about
    assert (c.boot_low, c.boot_high) == pytest.approx(
        tuple(np.nanpercentile(hand, [2.5, 97.5])), abs=1e-12
    )
    assert c.rho == pytest.approx(float(sps.spearmanr(x, y).statistic))


def test_holm_matches_its_definition_on_random_p_values() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 0.2, size=9).tolist()
    adjusted = stats.holm(p)
    order = np.argsort(p)
    m = len(p)
    running = 0.0
    for rank, i in enumerate(order):  # max over j <= rank of (m - j) * p_(j), capped at 1
        running = max(running, min(1.0, (m - rank) * p[i]))
        assert adjusted[i] == pytest.approx(running, rel=1e-12)
