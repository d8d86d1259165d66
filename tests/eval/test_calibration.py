"""The gate's intervals hold their level at the numbers of held-out users the project runs, by simulation.

Seeded, so each run draws the same data; a failure means the statistics changed, not bad luck. Data are drawn the
way eval sets come: users with unequal numbers of items (3 to 30), a user effect (skewed for the paired mean),
item noise around it, and ties among the pairs. 2,000 replications give a Monte Carlo standard error of 0.5 points
on a 95 % coverage, so the 93-97 % band is four standard errors wide on each side.
"""

from __future__ import annotations

import numpy as np
import pytest

from eval import checks, stats
from eval.config import load_config

REPS = 2000


def _users(rng: np.random.Generator, g: int) -> np.ndarray:
    sizes = rng.integers(3, 31, size=g)
    return np.repeat(np.arange(g), sizes)


@pytest.mark.parametrize("g", [8, 15, 30])
def test_paired_mean_interval_covers_95_percent(g):
    rng = np.random.default_rng(100 + g)
    true_mean = -0.1
    covered = 0
    for _ in range(REPS):
        users = _users(rng, g)
        # Skewed user effects (centred gamma, skewness 1) plus item noise: edit-cost changes look like this.
        effect = true_mean + 0.2 * (rng.gamma(4.0, 0.5, size=g) - 2.0)
        diffs = effect[users] + rng.normal(0, 0.3, size=users.size)
        p = stats.paired_difference(np.zeros(users.size), diffs, users)
        covered += p.interval[0] <= true_mean <= p.interval[1]
    assert 0.93 <= covered / REPS <= 0.97, covered / REPS


def _share_data(rng: np.random.Generator, g: int, mean_p: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Margin differences of users whose chance of moving a pair toward is Beta-distributed around `mean_p`,
    with 10 % ties; returns (diffs, users, the true mean share)."""
    users = _users(rng, g)
    p_user = rng.beta(8 * mean_p, 8 * (1 - mean_p), size=g)
    u = rng.random(users.size)
    tie = rng.random(users.size) < 0.1
    diffs = np.where(tie, 0.0, np.where(u < p_user[users], 1.0, -1.0))
    return diffs, users, 0.1 * 0.5 + 0.9 * mean_p


@pytest.mark.parametrize("g", [8, 15, 30])
def test_share_interval_covers_95_percent(g):
    rng = np.random.default_rng(200 + g)
    covered = 0
    for _ in range(REPS):
        diffs, users, truth = _share_data(rng, g, 0.65)
        lo, hi = stats.movement(diffs, users).interval
        covered += lo <= truth <= hi
    assert 0.93 <= covered / REPS <= 0.97, covered / REPS


@pytest.mark.parametrize("g", [8, 15])
def test_movement_check_passes_a_true_share_of_one_half_at_most_2_5_percent_of_the_time(g):
    cfg = load_config(None)
    rng = np.random.default_rng(300 + g)
    passed = 0
    for _ in range(REPS):
        diffs, users, _ = _share_data(rng, g, 0.5)
        passed += stats.movement(diffs, users, cfg["alpha"]).interval[0] > cfg["checks"]["preference"]["min_share"]
    # 2.5 % plus two Monte Carlo standard errors (0.35 points each).
    assert passed / REPS <= 0.032, passed / REPS


def _null_slices_data(rng: np.random.Generator, n_users: int = 15) -> tuple[list[dict], list[dict]]:
    """An eval set where the adapter changed nothing: 3 signals, 3 tenants, 8 tags; about 22 slices of each kind."""
    pairs, answers = [], []
    for u in range(n_users):
        tenant = f"t{u % 3}"
        share_u = rng.beta(4, 4)  # users differ, but the average user is at 1/2
        nll_u, edit_u = rng.normal(0, 0.05), rng.normal(0, 0.05)
        for i in range(int(rng.integers(6, 20))):
            common = {"id": f"{u}-{i}", "user_id": f"u{u}", "tenant": tenant,
                      "signal": ["edit", "regenerate", "rate"][int(rng.integers(3))],
                      "tags": [f"tag{int(rng.integers(8))}"]}
            pairs.append(dict(common, margin_diff=1.0 if rng.random() < share_u else -1.0))
            base_edit = rng.random()
            answers.append(dict(common, base_nll=1.0, adapter_nll=1.0 + nll_u + rng.normal(0, 0.1),
                                base_edit_cost=base_edit, adapter_edit_cost=base_edit + edit_u + rng.normal(0, 0.1)))
    return pairs, answers


def test_slices_fail_at_most_5_percent_of_the_time_when_nothing_changed():
    cfg = load_config(None)
    rng = np.random.default_rng(400)
    reps, failed, tested = 300, 0, []
    for _ in range(reps):
        pairs, answers = _null_slices_data(rng)
        check = checks.check_slices(pairs, answers, cfg)
        failed += not check["passed"]
        tested.append(check["n"])
    assert np.mean(tested) > 40  # many slice tests per replication: the multiplicity the correction is for
    # 5 % plus two Monte Carlo standard errors (1.26 points each).
    assert failed / reps <= 0.075, failed / reps
