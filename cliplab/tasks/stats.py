"""Paired comparisons of two classifiers on the same images.

- McNemar's exact test: under H0 the discordant pairs (b: only A right, c: only B right) split 50/50, so the
  two-sided p-value is a binomial test of b successes in b + c trials at p = 0.5 (scipy's ``binomtest``, summed
  exactly here; identical to statsmodels' ``mcnemar(exact=True)``).
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


EXACT_MAX_N = 10_000  # discordant pairs up to which the binomial tail is summed in integers (<= ~15 ms)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, int, int]:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    return binomial_half_two_sided(only_a, only_a + only_b), only_a, only_b


def binomial_half_two_sided(k: int, n: int) -> float:
    """The two-sided exact binomial p-value of ``k`` successes in ``n`` trials at p = 1/2 (scipy's ``binomtest``):
    the binomial being symmetric, ``min(1, 2 P(X <= min(k, n - k)))``. Summed in exact integers and rounded once for
    ``n`` up to :data:`EXACT_MAX_N` (no SciPy import, a second of a study answered from the cache); scipy's
    ``binomtest`` above."""
    if n == 0:
        return 1.0
    m = min(k, n - k)
    if 2 * m == n:
        return 1.0
    if n > EXACT_MAX_N:
        from scipy.stats import binomtest

        return float(binomtest(k, n, 0.5, alternative="two-sided").pvalue)
    term, total = 1, 1  # C(n, 0)
    for i in range(m):
        term = term * (n - i) // (i + 1)
        total += term
    return min(1.0, (2 * total) / (1 << n))


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
