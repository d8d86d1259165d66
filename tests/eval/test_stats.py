"""The gate's statistics against scipy/statsmodels on known data, and their behaviour at the edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, ttest_1samp
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW

from eval import stats


@pytest.mark.parametrize("k,n", [(0, 0), (0, 10), (7, 10), (10, 10), (31, 50), (13, 40), (100, 180)])
@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_sign_test_matches_scipy_binomtest(k, n, alternative):
    expected = binomtest(k, n, 0.5, alternative=alternative).pvalue if n else 1.0
    assert stats.sign_test(k, n, alternative) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_t_interval_and_pvalue_match_statsmodels_and_scipy(seed, alpha):
    x = np.random.default_rng(seed).normal(0.3, 1.0, size=9)
    lo, hi = stats.t_interval(x, alpha)
    ref = DescrStatsW(x).tconfint_mean(alpha)
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)
    for alternative in ("greater", "less", "two-sided"):
        expected = ttest_1samp(x, 0.1, alternative=alternative).pvalue
        assert stats.t_pvalue(x, 0.1, alternative) == pytest.approx(expected, rel=1e-10)


def test_cluster_means_average_each_users_items():
    means = stats.cluster_means([1.0, 3.0, 10.0, 0.0, 2.0], ["b", "b", "a", "c", "c"])
    assert list(means) == [10.0, 2.0, 1.0]  # sorted labels a, b, c
    with pytest.raises(ValueError):
        stats.cluster_means([1.0, 2.0], ["a"])


def test_paired_difference_weighs_every_user_the_same():
    # User a: 4 items improved by 1; user b: 1 item worse by 1. Per user: +1 and -1, mean 0 (an item mean would say
    # +0.6, letting the prolific user outvote the other).
    base = [0.0] * 5
    adapter = [1.0, 1.0, 1.0, 1.0, -1.0]
    p = stats.paired_difference(base, adapter, clusters=["a"] * 4 + ["b"])
    assert (p.n, p.n_clusters) == (5, 2)
    assert p.diff == pytest.approx(0.0) and p.adapter - p.base == pytest.approx(p.diff)
    assert p.interval == pytest.approx(DescrStatsW(np.array([1.0, -1.0])).tconfint_mean(0.05))


def test_one_user_gives_an_unbounded_interval_not_a_zero_width_one():
    p = stats.paired_difference([0.0] * 6, [0.5] * 6, clusters=["u"] * 6)
    assert p.interval == (-math.inf, math.inf) and p.mde is None
    m = stats.movement([1.0] * 6, clusters=["u"] * 6)
    lo, hi = m.interval
    assert lo < 0.1 and hi == 1.0  # one user, all pairs toward: an exact interval over one user


def test_ranking_is_a_paired_comparison_of_users_accuracies():
    base = [True, True, False, False, True, False, False, False]
    adapter = [True, False, True, True, True, True, True, False]
    users = ["a", "a", "b", "b", "c", "c", "d", "d"]
    r = stats.ranking(base, adapter, users)
    assert (r.only_base_right, r.only_adapter_right) == (1, 4)
    per_user = np.array([-0.5, 1.0, 0.5, 0.5])  # a: -1/2, b: +2/2, c: +1/2, d: +1/2
    assert r.diff == pytest.approx(per_user.mean())
    assert r.pvalue == pytest.approx(ttest_1samp(per_user, 0.0).pvalue)
    assert r.n_clusters == 4


def test_movement_counts_ties_as_half_and_sign_tests_users():
    diffs = [0.3, 0.1, -0.2, 0.0, 1e-9, 0.5, 0.7, -0.05]
    m = stats.movement(diffs)
    assert (m.moved_toward, m.moved_away, m.ties) == (4, 2, 2)
    assert m.share == pytest.approx((4 + 1) / 8)
    # Unclustered, every pair is its own user: 4 toward, 2 away (the ties sit at 1/2).
    assert m.pvalue == pytest.approx(binomtest(4, 6, 0.5, alternative="greater").pvalue)
    users = ["a"] * 4 + ["b"] * 4
    clustered = stats.movement(diffs, users)
    assert (clustered.users_toward, clustered.users_away) == (2, 0)
    assert clustered.pvalue == pytest.approx(0.25)  # two users both toward: 1/4, whatever their pair counts


def test_all_users_moving_toward_is_worth_what_the_users_are_worth():
    # 8 users, 20 pairs each, all moved: p = 1/256 (the users), not 1/2**160 (the pairs).
    users = np.repeat(np.arange(8), 20)
    m = stats.movement(np.ones(users.size), users)
    assert m.pvalue == pytest.approx(0.5 ** 8)
    lo, hi = m.interval  # every user at 100 %: the exact interval of 8 of 8 users, never [1, 1]
    assert lo == pytest.approx(binomtest(8, 8).proportion_ci(method="exact").low) and hi == 1.0


def test_zero_adapter_movement_sits_at_one_half():
    m = stats.movement(np.zeros(40), clusters=[i % 5 for i in range(40)])
    assert m.share == 0.5 and m.interval == (0.5, 0.5) and m.pvalue == 1.0


def test_minimum_detectable_effect_is_statsmodels_power_times_the_users_spread():
    x = np.random.default_rng(4).normal(0, 2.0, size=12)
    d = TTestPower().solve_power(nobs=12, alpha=0.025, power=0.8, alternative="larger")
    assert stats.min_detectable_effect(x) == pytest.approx(d * x.std(ddof=1))
    assert stats.min_detectable_effect(x[:2]) is None
    # More users detect smaller effects; the number needed for one standard deviation is about 10.
    assert stats.users_needed(1.0) in range(9, 13)
    assert stats.users_needed(0.5) > stats.users_needed(1.0)


def test_share_pvalue_falls_back_to_the_sign_test_when_every_user_agrees():
    assert stats.share_pvalue_below(np.zeros(4), 0.5) == pytest.approx(1 / 16)
    x = np.array([0.2, 0.4, 0.3, 0.6, 0.1])
    assert stats.share_pvalue_below(x, 0.5) == pytest.approx(ttest_1samp(x, 0.5, alternative="less").pvalue)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        stats.sign_test(11, 10)
    with pytest.raises(ValueError):
        stats.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        stats.ranking([True], [True, False])
