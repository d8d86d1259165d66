"""The gate's statistics against scipy/statsmodels on known data, and the bootstrap's properties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar

from eval import stats


@pytest.mark.parametrize("k,n", [(0, 0), (0, 10), (7, 10), (10, 10), (31, 50), (13, 40), (100, 180)])
@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_sign_test_matches_scipy_binomtest(k, n, alternative):
    expected = binomtest(k, n, 0.5, alternative=alternative).pvalue if n else 1.0
    assert stats.sign_test(k, n, alternative) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("table", [[[10, 3], [9, 8]], [[5, 0], [0, 5]], [[20, 12], [2, 6]], [[0, 25], [17, 0]]])
def test_mcnemar_exact_matches_statsmodels(table):
    expected = mcnemar(np.array(table), exact=True).pvalue
    assert stats.mcnemar_exact(table[0][1], table[1][0]) == pytest.approx(expected, rel=1e-12)


def test_ranking_counts_discordant_pairs_and_uses_mcnemar():
    base = [True, True, False, False, True, False, False, False]
    adapter = [True, False, True, True, True, True, True, False]
    r = stats.ranking(base, adapter)
    assert (r.only_base_right, r.only_adapter_right) == (1, 4)
    assert r.base_accuracy == pytest.approx(3 / 8) and r.adapter_accuracy == pytest.approx(6 / 8)
    assert r.diff == pytest.approx(3 / 8)
    assert r.pvalue == pytest.approx(mcnemar(np.array([[2, 1], [4, 1]]), exact=True).pvalue)


def test_movement_counts_ties_as_half_and_sign_tests_the_rest():
    diffs = [0.3, 0.1, -0.2, 0.0, 1e-9, 0.5, 0.7, -0.05]
    m = stats.movement(diffs)
    assert (m.moved_toward, m.moved_away, m.ties) == (4, 2, 2)
    assert m.share == pytest.approx((4 + 1) / 8)
    assert m.pvalue == pytest.approx(binomtest(4, 6, 0.5, alternative="greater").pvalue)


def test_zero_adapter_movement_sits_at_one_half_with_a_degenerate_interval():
    m = stats.movement(np.zeros(40), clusters=[i % 5 for i in range(40)])
    assert m.share == 0.5 and m.interval == (0.5, 0.5) and m.pvalue == 1.0


def test_bootstrap_without_clusters_agrees_with_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    x = np.random.default_rng(3).normal(0.2, 1.0, size=200)
    lo, hi = stats.cluster_bootstrap_mean(x, n_boot=4000, seed=1)
    ref = bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=2).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)
    assert lo < x.mean() < hi


def test_bootstrap_is_deterministic_given_the_seed_and_constant_data_is_degenerate():
    x = np.random.default_rng(0).normal(size=50)
    assert stats.cluster_bootstrap_mean(x, seed=7) == stats.cluster_bootstrap_mean(x, seed=7)
    assert stats.cluster_bootstrap_mean(np.full(30, 0.25)) == (0.25, 0.25)


def test_clustered_interval_is_wider_when_items_within_a_user_are_correlated():
    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(10), 20)  # 10 users, 20 items each
    user_effect = rng.normal(0, 1.0, size=10)[users]
    x = user_effect + rng.normal(0, 0.1, size=users.size)
    iid = stats.cluster_bootstrap_mean(x, seed=0)
    clustered = stats.cluster_bootstrap_mean(x, users, seed=0)
    assert (clustered[1] - clustered[0]) > 2.5 * (iid[1] - iid[0])


def test_clustered_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    covered = 0
    trials = 150
    for t in range(trials):
        users = np.repeat(np.arange(15), 4)
        x = rng.normal(0, 1, size=15)[users] + rng.normal(0, 0.5, size=users.size) + 1.0
        lo, hi = stats.cluster_bootstrap_mean(x, users, n_boot=500, seed=t)
        covered += lo <= 1.0 <= hi
    # Percentile bootstraps under-cover a little with 15 clusters; far from 95 % would mean resampling items.
    assert 0.85 <= covered / trials <= 0.99


def test_paired_difference_reports_means_and_interval_of_the_difference():
    base = [1.0, 2.0, 3.0, 4.0]
    adapter = [1.5, 2.5, 3.0, 4.5]
    p = stats.paired_difference(base, adapter, clusters=["a", "a", "b", "b"])
    assert (p.n, p.n_clusters) == (4, 2)
    assert p.base == 2.5 and p.adapter == 2.875 and p.diff == pytest.approx(0.375)
    assert p.interval[0] <= p.diff <= p.interval[1]


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        stats.sign_test(11, 10)
    with pytest.raises(ValueError):
        stats.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        stats.cluster_bootstrap_mean([1.0, 2.0], clusters=["a"])
