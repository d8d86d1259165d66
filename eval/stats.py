"""The gate's statistics: pure functions on numbers, no models, no files.

The unit of evidence is the user, not the item: thirty pairs of one user are not thirty independent pieces of
evidence, and held-out sets hold few users (8 to 30). So every statistic is first reduced to one number per user
(that user's mean difference, that user's share of pairs moved), and inference is on those G numbers:

- intervals are Student t intervals on the per-user values with G - 1 degrees of freedom (a cluster-level
  analysis, Donner & Klar 2000, ch. 6); they hold their level at 8 clusters where a percentile bootstrap over users
  covers about 88 % (tests/eval/test_calibration.py simulates both);
- the movement's sign test counts users (more pairs moved toward than away, or the reverse), not pairs;
- power: the smallest effect a G-user eval set detects at 80 % power is solved by statsmodels' TTestPower.

Checked against scipy and statsmodels in tests/eval/test_stats.py.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.stats import binom, binomtest, t as student_t

# Differences smaller than this (in nats) are ties: a zero adapter reproduces the base's log-probs up to float noise.
TIE_TOLERANCE = 1e-5
POWER = 0.8  # the power at which a minimum detectable effect is stated


def sign_test(successes: int, trials: int, alternative: str = "greater") -> float:
    """Exact binomial test of H0: P(success) = 1/2. Same p-value as `scipy.stats.binomtest(k, n, 0.5, alternative)`."""
    if trials == 0:
        return 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} outside 0..{trials}")
    if alternative == "greater":
        return float(min(1.0, binom.sf(successes - 1, trials, 0.5)))
    if alternative == "less":
        return float(min(1.0, binom.cdf(successes, trials, 0.5)))
    if alternative == "two-sided":
        # p = 1/2 is symmetric, so the two-sided p-value is twice the smaller tail.
        tail = min(binom.cdf(successes, trials, 0.5), binom.sf(successes - 1, trials, 0.5))
        return float(min(1.0, 2.0 * tail))
    raise ValueError(f"alternative must be greater, less or two-sided, not {alternative!r}")


def cluster_means(values: Sequence[float], clusters: Sequence[object] | None = None) -> np.ndarray:
    """One mean per cluster (in sorted label order); with `clusters=None` every value is its own cluster."""
    x = np.asarray(values, dtype=np.float64)
    if clusters is None:
        return x
    if len(clusters) != x.size:
        raise ValueError(f"{len(clusters)} cluster labels for {x.size} values")
    if x.size == 0:
        return x
    _, inverse = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    return np.bincount(inverse, weights=x) / np.bincount(inverse)


def t_interval(means: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided 1 - alpha Student t interval for the mean of `means` (G - 1 df); (-inf, inf) below 2 values.

    Equals `statsmodels.stats.weightstats.DescrStatsW(means).tconfint_mean(alpha)`. With fewer than two clusters
    nothing is known about the spread, so the interval is unbounded rather than of zero width.
    """
    g = means.size
    if g == 0:
        return (math.nan, math.nan)
    if g < 2:
        return (-math.inf, math.inf)
    centre = float(means.mean())
    half = float(student_t.ppf(1 - alpha / 2, g - 1) * means.std(ddof=1) / math.sqrt(g))
    return (centre - half, centre + half)


def t_pvalue(means: np.ndarray, null: float, alternative: str) -> float:
    """One-sample t test of mean(means) against `null` ('greater': H1 mean > null; 'less'; 'two-sided').

    Equals `scipy.stats.ttest_1samp(means, null, alternative=...)`; with zero spread it is 0 or 1 by the sign of
    the difference (scipy gives nan there), and 1 below two clusters.
    """
    g = means.size
    if g < 2:
        return 1.0
    diff = float(means.mean()) - null
    sd = float(means.std(ddof=1))
    if sd == 0.0:
        beyond = {"greater": diff > 0, "less": diff < 0, "two-sided": diff != 0}[alternative]
        return 0.0 if beyond else 1.0
    tstat = diff / (sd / math.sqrt(g))
    if alternative == "greater":
        return float(student_t.sf(tstat, g - 1))
    if alternative == "less":
        return float(student_t.cdf(tstat, g - 1))
    return float(min(1.0, 2 * student_t.sf(abs(tstat), g - 1)))


def min_detectable_effect(means: np.ndarray, alpha: float = 0.05, power: float = POWER) -> float | None:
    """Smallest true mean shift that a one-sided level-alpha/2 t test on these G clusters detects with `power`.

    alpha/2 one-sided is what "the two-sided 1 - alpha interval lies wholly beyond the threshold" tests. The
    effect is solved in standard deviations by statsmodels' TTestPower and scaled by the clusters' observed
    standard deviation; None below 3 clusters or with zero spread (no basis for a power statement).
    """
    g = means.size
    sd = float(means.std(ddof=1)) if g >= 2 else 0.0
    if g < 3 or sd == 0.0:
        return None
    return _detectable_d(g, alpha, power) * sd


@functools.lru_cache(maxsize=256)
def _detectable_d(g: int, alpha: float, power: float) -> float:
    """The detectable effect in standard deviations depends on G only; solving it is a root search, so cached."""
    from statsmodels.stats.power import TTestPower

    d = TTestPower().solve_power(effect_size=None, nobs=g, alpha=alpha / 2, power=power, alternative="larger")
    return float(d)


def users_needed(effect_size: float, alpha: float = 0.05, power: float = POWER) -> int:
    """Clusters a one-sided level-alpha/2 t test needs to detect `effect_size` standard deviations with `power`."""
    from statsmodels.stats.power import TTestPower

    n = TTestPower().solve_power(effect_size=effect_size, nobs=None, alpha=alpha / 2, power=power,
                                 alternative="larger")
    return int(math.ceil(n))


@dataclass(frozen=True)
class Paired:
    """Summary of paired per-item measurements of base and adapter, averaged per user then over users."""

    n: int
    n_clusters: int
    base: float
    adapter: float
    diff: float
    interval: tuple[float, float]
    mde: float | None  # smallest |diff| detectable at 80 % power (same units as diff)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d


def paired_difference(
    base: Sequence[float],
    adapter: Sequence[float],
    clusters: Sequence[object] | None = None,
    alpha: float = 0.05,
) -> Paired:
    """Mean over users of each user's mean (adapter - base), its t interval (G - 1 df) and its MDE.

    Every user weighs the same: the gate asks whether users are better off, and a prolific user's thirty items
    would otherwise outvote seven users. `base` and `adapter` are averaged the same way, so diff = adapter - base.
    """
    b = np.asarray(base, dtype=np.float64)
    a = np.asarray(adapter, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {b.shape} vs {a.shape}")
    if b.size == 0:
        return Paired(0, 0, math.nan, math.nan, math.nan, (math.nan, math.nan), None)
    mb, ma = cluster_means(b, clusters), cluster_means(a, clusters)
    md = ma - mb
    return Paired(
        n=int(b.size),
        n_clusters=int(md.size),
        base=float(mb.mean()),
        adapter=float(ma.mean()),
        diff=float(md.mean()),
        interval=t_interval(md, alpha),
        mde=min_detectable_effect(md, alpha),
    )


@dataclass(frozen=True)
class Movement:
    """How often the adapter moved a pair's margin toward the user's choice, relative to the base."""

    n: int
    n_clusters: int
    moved_toward: int
    moved_away: int
    ties: int
    share: float  # mean over users of each user's (toward + ties/2) / pairs: a zero adapter sits exactly at 1/2
    interval: tuple[float, float]
    users_toward: int  # users with more pairs moved toward than away
    users_away: int
    pvalue: float  # exact one-sided sign test over users (users_toward vs users_away), H1: toward
    mde: float | None  # smallest share above 1/2 detectable at 80 % power, as a difference from 1/2


def share_interval(user_shares: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """t interval of the mean share, clipped to [0, 1]; when every user has the same share (t is degenerate),
    the exact Clopper-Pearson interval of the number of users on that side of 1/2, so it never has zero width
    unless every user sits exactly at 1/2 (a zero adapter, no evidence either way)."""
    lo, hi = t_interval(user_shares, alpha)
    if user_shares.size >= 1 and float(user_shares.std()) == 0.0 and user_shares[0] != 0.5:
        g = user_shares.size
        k = g if user_shares[0] > 0.5 else 0
        ci = binomtest(k, g).proportion_ci(confidence_level=1 - alpha, method="exact")
        return (float(ci.low), float(ci.high))
    return (max(0.0, lo), min(1.0, hi))


def movement_scores(margin_diffs: Sequence[float], tie_tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Per pair: 1 moved toward the user's choice, 0 away, 1/2 a tie (within `tie_tolerance` nats)."""
    d = np.asarray(margin_diffs, dtype=np.float64)
    return np.where(d > tie_tolerance, 1.0, np.where(d < -tie_tolerance, 0.0, 0.5))


def share_pvalue_below(user_shares: np.ndarray, null: float) -> float:
    """One-sided p-value of H1: the mean share is below `null`. The t test over users; when every user has the
    same share (t is degenerate) the exact sign test over users, so 4 users at 0 % give 1/16, not 0."""
    if user_shares.size >= 2 and float(user_shares.std()) == 0.0:
        below = int((user_shares < null).sum())
        return sign_test(below, int((user_shares != null).sum()), "greater")
    return t_pvalue(user_shares, null, "less")


def movement(
    margin_diffs: Sequence[float],
    clusters: Sequence[object] | None = None,
    alpha: float = 0.05,
    tie_tolerance: float = TIE_TOLERANCE,
) -> Movement:
    score = movement_scores(margin_diffs, tie_tolerance)
    k, m = int((score == 1.0).sum()), int((score == 0.0).sum())
    n = int(score.size)
    shares = cluster_means(score, clusters)
    ut, ua = int((shares > 0.5).sum()), int((shares < 0.5).sum())
    return Movement(
        n=n,
        n_clusters=int(shares.size),
        moved_toward=k,
        moved_away=m,
        ties=n - k - m,
        share=float(shares.mean()) if n else math.nan,
        interval=share_interval(shares, alpha) if n else (math.nan, math.nan),
        users_toward=ut,
        users_away=ua,
        pvalue=sign_test(ut, ut + ua, "greater"),
        mde=min_detectable_effect(shares, alpha),
    )


@dataclass(frozen=True)
class Ranking:
    """Each model's accuracy at ranking chosen over rejected, and the paired comparison over users."""

    n: int
    n_clusters: int
    base_accuracy: float
    adapter_accuracy: float
    diff: float
    interval: tuple[float, float]
    only_base_right: int
    only_adapter_right: int
    pvalue: float  # two-sided paired t test on the users' accuracy differences
    mde: float | None


def ranking(
    base_correct: Sequence[bool],
    adapter_correct: Sequence[bool],
    clusters: Sequence[object] | None = None,
    alpha: float = 0.05,
) -> Ranking:
    """Accuracy difference as a paired comparison of per-user accuracies: the cluster-level counterpart of
    McNemar's test, which counts discordant pairs as if they were independent (they are not within a user)."""
    b = np.asarray(base_correct, dtype=bool)
    a = np.asarray(adapter_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {b.shape} vs {a.shape}")
    p = paired_difference(b.astype(np.float64), a.astype(np.float64), clusters, alpha)
    md = cluster_means(a.astype(np.float64) - b.astype(np.float64), clusters)
    return Ranking(
        n=p.n,
        n_clusters=p.n_clusters,
        base_accuracy=p.base,
        adapter_accuracy=p.adapter,
        diff=p.diff,
        interval=(max(-1.0, p.interval[0]), min(1.0, p.interval[1])),  # a difference of two accuracies
        only_base_right=int((b & ~a).sum()),
        only_adapter_right=int((a & ~b).sum()),
        pvalue=t_pvalue(md, 0.0, "two-sided") if p.n else 1.0,
        mde=p.mde,
    )
