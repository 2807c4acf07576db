"""Paired comparisons of two classifiers on the same images.

- McNemar's exact test: under H0 the discordant pairs (b: only A right, c: only B right) split 50/50, so the
  two-sided p-value is a binomial test of b successes in b + c trials at p = 0.5 (scipy's ``binomtest``;
  identical to statsmodels' ``mcnemar(exact=True)``).
- Paired bootstrap: resample images with replacement, recompute acc(B) - acc(A), percentile 95 % interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplab.progress import bar_total, progress_bar


@dataclass(frozen=True)
class PairedComparison:
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a
    ci_low: float
    ci_high: float
    p_value: float  # McNemar exact, two-sided
    only_a: int  # images A gets right and B wrong
    only_b: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05 and not (self.ci_low <= 0.0 <= self.ci_high)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, int, int]:
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
    return p, only_a, only_b


def bootstrap_diff_ci(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of mean(correct_b) - mean(correct_a) over paired resamples of the images."""
    d = np.asarray(correct_b, dtype=np.float64) - np.asarray(correct_a, dtype=np.float64)
    n = len(d)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    with progress_bar(bar_total(n_boot, n_boot * n), "bootstrap", unit="resamples") as bar:
        for s in range(0, n_boot, 256):  # chunks keep memory bounded for large n
            k = min(256, n_boot - s)
            means[s:s + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
            bar.advance(k)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def compare_paired(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> PairedComparison:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("both classifiers must be scored on the same images")
    p, only_a, only_b = mcnemar_exact(a, b)
    lo, hi = bootstrap_diff_ci(a, b, n_boot=n_boot, seed=seed)
    return PairedComparison(float(a.mean()), float(b.mean()), float(b.mean() - a.mean()), lo, hi, p, only_a, only_b)
