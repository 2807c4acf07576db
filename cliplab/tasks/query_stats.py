"""Confidence intervals for retrieval metrics by resampling the gallery's images (not the queries).

With few classes a bootstrap over queries means little and an exact test over queries cannot reach small p-values
(five paired queries: a sign test's p is at least 1/16 = 0.0625), so uncertainty is estimated the other way: the
gallery is resampled with replacement (the same resample for every query, template and model, so comparisons are
paired), and each query's AP is recomputed on the resampled gallery.

AP of a resampled gallery: an image drawn w times is w copies with its score; ties between copies are broken by
treating a block of copies as reaching the precision at the block's end (weighted AP:
``sum_j w_j rel_j P_j / sum_j w_j rel_j`` with ``P_j`` the weighted precision at item j in score order). With all
weights 1 it is the step AP of :mod:`cliplab.tasks.ranking` (a test checks).
"""
from __future__ import annotations

import numpy as np


def random_ap(n_relevant, n_items):
    """The expected step AP of a random ranking of ``n_items`` holding ``n_relevant`` relevant ones:
    ``(H_N + (R - 1)(N - H_N) / (N - 1)) / N`` (H_N the N-th harmonic number). It is above the share of relevant
    items R / N when R is small (one relevant item among N: H_N / N), so AP's lift over chance is measured against
    it; P@k's chance level is R / N exactly."""
    R = np.asarray(n_relevant, dtype=np.float64)
    N = np.asarray(n_items, dtype=np.float64)
    H = np.log(N) + np.euler_gamma + 1 / (2 * N) - 1 / (12 * N ** 2)  # harmonic number (exact to ~1e-10 for N >= 10)
    small = N < 10
    if np.any(small):
        H = np.where(small, np.vectorize(lambda n: sum(1 / i for i in range(1, int(n) + 1)))(np.maximum(N, 1)), H)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(R > 0, (H + (R - 1) * (N - H) / np.maximum(N - 1, 1)) / N, np.nan)


def resample_weights(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) multiplicities: each row draws n images with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float32)


def weighted_ap(relevant_in_order: np.ndarray, weights_in_order: np.ndarray) -> np.ndarray:
    """Weighted step AP of one ranking under each row of ``weights_in_order`` (B, N), items in score order;
    NaN for a resample without a relevant image."""
    rel = np.asarray(relevant_in_order, dtype=np.float32)
    w = np.atleast_2d(weights_in_order).astype(np.float64)
    hits = w * rel
    cum_hits = np.cumsum(hits, axis=1)
    cum_all = np.cumsum(w, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cum_all > 0, cum_hits / np.maximum(cum_all, 1e-12), 0.0)
        total = hits.sum(axis=1)
        return np.where(total > 0, (hits * precision).sum(axis=1) / np.maximum(total, 1e-12), np.nan)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap samples (NaNs left out; NaN when none remain)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if not len(s):
        return float("nan"), float("nan")
    lo, hi = np.quantile(s, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a paired difference being 0: twice the smaller share of resamples on either
    side of 0 (at least 1 / (B + 1))."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d)]
    if not len(d):
        return float("nan")
    side = min((d <= 0).sum(), (d >= 0).sum())
    return float(min(1.0, max(2 * side / len(d), 1.0 / (len(d) + 1))))


def bootstrap_mean(values: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values`` (e.g. over chains)."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    return np.nanmean(v[idx], axis=1)


__all__ = ["resample_weights", "weighted_ap", "percentile_ci", "bootstrap_p", "bootstrap_mean"]
