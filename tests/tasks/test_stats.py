"""Statistics against statsmodels/scipy on fixed cases; template selection never reads test labels."""
import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from cliplab.tasks.selection import greedy_template_selection
from cliplab.tasks.stats import bootstrap_diff_ci, compare_paired, mcnemar_exact


def _pairs(both, only_a, only_b, neither):
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, bool)
    return a, b


@pytest.mark.parametrize("both,only_a,only_b,neither", [(50, 10, 2, 38), (10, 3, 3, 4), (0, 0, 7, 0), (80, 25, 9, 6)])
def test_mcnemar_exact_matches_statsmodels(both, only_a, only_b, neither):
    a, b = _pairs(both, only_a, only_b, neither)
    p, na, nb = mcnemar_exact(a, b)
    ref = mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue
    assert (na, nb) == (only_a, only_b)
    assert p == pytest.approx(ref, rel=1e-12)


def test_mcnemar_by_hand():
    # 10 discordant pairs, 9 vs 1: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    a, b = _pairs(5, 9, 1, 5)
    assert mcnemar_exact(a, b)[0] == pytest.approx(22 / 1024)
    assert mcnemar_exact(a, a)[0] == 1.0


def test_bootstrap_ci_covers_difference_and_is_reproducible():
    rng = np.random.default_rng(3)
    a = rng.random(400) < 0.6
    b = rng.random(400) < 0.7
    lo, hi = bootstrap_diff_ci(a, b, n_boot=1000, seed=1)
    d = b.mean() - a.mean()
    assert lo < d < hi and hi - lo < 0.2
    assert (lo, hi) == bootstrap_diff_ci(a, b, n_boot=1000, seed=1)
    # identical classifiers: a degenerate interval at 0, not significant
    same = compare_paired(a, a, n_boot=200)
    assert same.ci_low == same.ci_high == 0.0 and same.p_value == 1.0 and not same.significant


def test_clear_difference_is_significant():
    a, b = _pairs(50, 2, 30, 18)
    cmp = compare_paired(a, b, n_boot=500)
    assert cmp.diff == pytest.approx(0.28) and cmp.significant and cmp.ci_low > 0


def _synthetic_prompt_problem(seed=0, n=300, C=4, T=6, d=16):
    """Images near their class centre; template t's text embeddings are centre + noise of scale noise[t]."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, d))
    labels = rng.integers(0, C, n)
    images = centres[labels] + 0.9 * rng.normal(size=(n, d))
    noise = np.array([3.0, 0.2, 2.5, 0.3, 4.0, 3.5])[:T]
    text = centres[:, None, :] + noise[None, :, None] * rng.normal(size=(C, T, d))
    return images, labels, text


def test_greedy_selection_picks_the_good_templates():
    images, labels, text = _synthetic_prompt_problem()
    sel = greedy_template_selection(images, labels, text)
    assert sel.chosen[0] in (1, 3)  # the two low-noise templates
    assert set(sel.chosen[:2]) <= {1, 3} or len(sel.chosen) == 1
    assert all(b > a for a, b in zip(sel.val_accuracy, sel.val_accuracy[1:]))  # every addition helped


def test_selection_ignores_test_labels():
    """Selection sees only validation data: shuffling test labels cannot change the choice."""
    images, labels, text = _synthetic_prompt_problem(seed=5, n=600)
    val, test = slice(0, 300), slice(300, 600)
    chosen = greedy_template_selection(images[val], labels[val], text).chosen
    shuffled = labels.copy()
    shuffled[test] = np.random.default_rng(9).permutation(shuffled[test])
    assert greedy_template_selection(images[val], shuffled[val], text).chosen == chosen


def test_exact_binomial_p_matches_scipy():
    """McNemar's p is summed in exact integers (no SciPy import on a study answered from the cache): it is
    scipy's binomtest to rounding, for every split of small n and for large n up to where SciPy takes over."""
    from scipy.stats import binomtest

    from cliplab.tasks.stats import EXACT_MAX_N, binomial_half_two_sided

    for n in range(0, 120):
        for k in range(n + 1):
            ref = binomtest(k, n, 0.5).pvalue if n else 1.0
            assert binomial_half_two_sided(k, n) == pytest.approx(ref, rel=1e-12, abs=1e-300), (k, n)
    for n, k in [(1001, 480), (5000, 2400), (EXACT_MAX_N, EXACT_MAX_N // 2 - 30), (EXACT_MAX_N + 7, 4990)]:
        assert binomial_half_two_sided(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)
