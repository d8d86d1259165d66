"""Coverage of the gate's 95 % interval for a paired mean against a percentile bootstrap over users.

    python scripts/gate_coverage.py [--reps 2000]

Data as in tests/eval/test_calibration.py (users with 3-30 items, skewed user effects, item noise); both
intervals are computed on the same per-user means. Prints the share of replications whose interval holds the true
mean, at 8, 15 and 30 users.
"""

from __future__ import annotations

import argparse

import numpy as np

from eval import stats


def coverage(g: int, reps: int, n_boot: int = 1000, truth: float = -0.1) -> tuple[float, float]:
    rng = np.random.default_rng(100 + g)
    covered_t = covered_boot = 0
    for _ in range(reps):
        users = np.repeat(np.arange(g), rng.integers(3, 31, size=g))
        effect = truth + 0.2 * (rng.gamma(4.0, 0.5, size=g) - 2.0)
        means = stats.cluster_means(effect[users] + rng.normal(0, 0.3, size=users.size), users)
        lo, hi = stats.t_interval(means)
        covered_t += lo <= truth <= hi
        boot = means[rng.integers(0, g, size=(n_boot, g))].mean(axis=1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        covered_boot += lo <= truth <= hi
    return covered_t / reps, covered_boot / reps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    print("| users | t interval (G-1 df) | percentile bootstrap over users |\n|---:|---:|---:|")
    for g in (8, 15, 30):
        t_cov, boot_cov = coverage(g, args.reps)
        print(f"| {g} | {t_cov:.3f} | {boot_cov:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
