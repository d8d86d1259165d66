"""The gate's statistics: pure functions on numbers, no models, no files.

Every interval here is a percentile bootstrap that resamples *users* (clusters), not items: one prolific user's
thirty pairs are not thirty independent pieces of evidence, and an interval that pretends they are is too narrow.
Tests are exact (binomial sign test, exact McNemar) because eval sets are small and normal approximations lie
there. Checked against scipy and statsmodels in tests/eval/test_stats.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.stats import binom

# Differences smaller than this (in nats) are ties: a zero adapter reproduces the base's log-probs up to float noise.
TIE_TOLERANCE = 1e-5


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


def mcnemar_exact(only_base_right: int, only_adapter_right: int) -> float:
    """Exact two-sided McNemar test on the discordant pairs.

    Equals `statsmodels.stats.contingency_tables.mcnemar([[a, b], [c, d]], exact=True).pvalue` with b and c the two
    discordant counts: under H0 each discordant pair is a fair coin.
    """
    n = only_base_right + only_adapter_right
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(only_base_right, only_adapter_right), n, 0.5)))


def cluster_bootstrap_mean(
    values: Sequence[float],
    clusters: Sequence[object] | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval for the mean of `values`, resampling whole clusters with replacement.

    The statistic of a resample is the item mean over the drawn clusters (sum of their sums over sum of their
    counts), so a cluster with many items weighs as much as it does in the point estimate. With one item per cluster
    (or `clusters=None`) this is the ordinary bootstrap of the mean.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if clusters is None:
        sums, counts = x, np.ones_like(x)
    else:
        if len(clusters) != x.size:
            raise ValueError(f"{len(clusters)} cluster labels for {x.size} values")
        _, inverse = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
        sums = np.bincount(inverse, weights=x)
        counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    n_clusters = sums.size
    # Draw in chunks so memory stays small for large eval sets (n_boot x n_clusters int64 indices).
    stats = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(1, n_clusters))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        stats[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Paired:
    """Summary of paired per-item measurements of base and adapter."""

    n: int
    n_clusters: int
    base: float
    adapter: float
    diff: float
    interval: tuple[float, float]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d


def paired_difference(
    base: Sequence[float],
    adapter: Sequence[float],
    clusters: Sequence[object] | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Paired:
    """Means of base and adapter, the mean of (adapter - base), and its cluster-bootstrap interval."""
    b = np.asarray(base, dtype=np.float64)
    a = np.asarray(adapter, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {b.shape} vs {a.shape}")
    d = a - b
    n_clusters = len(set(map(str, clusters))) if clusters is not None else int(d.size)
    if d.size == 0:
        return Paired(0, 0, math.nan, math.nan, math.nan, (math.nan, math.nan))
    return Paired(
        n=int(d.size),
        n_clusters=n_clusters,
        base=float(b.mean()),
        adapter=float(a.mean()),
        diff=float(d.mean()),
        interval=cluster_bootstrap_mean(d, clusters, n_boot=n_boot, alpha=alpha, seed=seed),
    )


@dataclass(frozen=True)
class Movement:
    """How often the adapter moved a pair's margin toward the user's choice, relative to the base."""

    n: int
    moved_toward: int
    moved_away: int
    ties: int
    share: float  # (toward + ties/2) / n: a tie is half a success, so a zero adapter sits exactly at 1/2
    interval: tuple[float, float]
    pvalue: float  # exact one-sided sign test on the non-tied pairs, H1: toward > away


def movement(
    margin_diffs: Sequence[float],
    clusters: Sequence[object] | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    tie_tolerance: float = TIE_TOLERANCE,
) -> Movement:
    d = np.asarray(margin_diffs, dtype=np.float64)
    toward = d > tie_tolerance
    away = d < -tie_tolerance
    score = np.where(toward, 1.0, np.where(away, 0.0, 0.5))
    k, m = int(toward.sum()), int(away.sum())
    n = int(d.size)
    share = float(score.mean()) if n else math.nan
    return Movement(
        n=n,
        moved_toward=k,
        moved_away=m,
        ties=n - k - m,
        share=share,
        interval=cluster_bootstrap_mean(score, clusters, n_boot=n_boot, alpha=alpha, seed=seed),
        pvalue=sign_test(k, k + m, "greater"),
    )


@dataclass(frozen=True)
class Ranking:
    """Each model's accuracy at ranking chosen over rejected, and the paired comparison."""

    n: int
    base_accuracy: float
    adapter_accuracy: float
    diff: float
    interval: tuple[float, float]
    only_base_right: int
    only_adapter_right: int
    pvalue: float  # exact two-sided McNemar


def ranking(
    base_correct: Sequence[bool],
    adapter_correct: Sequence[bool],
    clusters: Sequence[object] | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Ranking:
    b = np.asarray(base_correct, dtype=bool)
    a = np.asarray(adapter_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {b.shape} vs {a.shape}")
    only_b = int((b & ~a).sum())
    only_a = int((a & ~b).sum())
    n = int(b.size)
    d = a.astype(np.float64) - b.astype(np.float64)
    return Ranking(
        n=n,
        base_accuracy=float(b.mean()) if n else math.nan,
        adapter_accuracy=float(a.mean()) if n else math.nan,
        diff=float(d.mean()) if n else math.nan,
        interval=cluster_bootstrap_mean(d, clusters, n_boot=n_boot, alpha=alpha, seed=seed),
        only_base_right=only_b,
        only_adapter_right=only_a,
        pvalue=mcnemar_exact(only_b, only_a),
    )
