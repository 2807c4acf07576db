"""Linear and k-shot probes: agreement with scikit-learn, convergence, grid edges, no test leakage, k-shot
sampling, results store."""
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from cliplab.tasks import probe
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.probe import (ProbeWarning, fit_logreg, kshot_probes, linear_probe, sample_kshot,
                                 stratified_split, sweep_weight_decay)


def blobs(n_per=120, classes=4, d=16, spread=1.6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    X = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per)
    p = rng.permutation(len(y))
    return X[p], y[p]


def teacher(n=900, d=32, classes=5, noise=0.0, cond=100.0, seed=0):
    """Labels from a linear teacher on anisotropic features (condition number ``cond``): nearly separable and
    ill-conditioned, so small weight decays win and L-BFGS needs many iterations from a zero start."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(0, -np.log10(cond), d)
    X = rng.normal(size=(n, d)) * scales
    W = rng.normal(size=(classes, d)) / scales
    y = (X @ W.T + noise * rng.gumbel(size=(n, classes))).argmax(1)
    return X.astype(np.float32), y


def objective_gradient(W, b, X, y, wd, anchor=None):
    """Gradient of mean CE + wd/2 ||W - anchor||^2 (+ wd/2 ||b||^2 when anchored) in float64, independently of
    the solvers."""
    N = l2_normalize(X).astype(np.float64)
    Z = N @ W.astype(np.float64).T + b.astype(np.float64)
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    P[np.arange(len(y)), y] -= 1
    if anchor is None:
        return P.T @ N / len(y) + wd * W, P.mean(0)
    return P.T @ N / len(y) + wd * (W - anchor), P.mean(0) + wd * b


def objective(W, b, X, y, wd, anchor=None):
    """The probe objective in float64: mean CE + wd/2 ||W - anchor||^2, + wd/2 ||b||^2 when anchored."""
    N = l2_normalize(X).astype(np.float64)
    Z = N @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
    top = Z.max(1)
    ce = np.mean(np.log(np.exp(Z - top[:, None]).sum(1)) + top - Z[np.arange(len(y)), y])
    if anchor is None:
        return ce + wd / 2 * float((np.asarray(W) ** 2).sum())
    return ce + wd / 2 * float(((W - anchor) ** 2).sum() + (np.asarray(b) ** 2).sum())


def grad_max(m, X, y, anchor=None) -> float:
    gW, gb = objective_gradient(m.W, m.b, X, y, m.wd, anchor)
    return max(np.abs(gW).max(), np.abs(gb).max())


def scipy_anchored(X, y, classes, wd, anchor):
    """The reference for the anchored objective: scipy's L-BFGS-B in the full (W, b) space from the anchor."""
    N = l2_normalize(X).astype(np.float64)
    d = N.shape[1]

    def fun(v):
        W, b = v[:classes * d].reshape(classes, d), v[classes * d:]
        gW, gb = objective_gradient(W, b, X, y, wd, anchor)
        return objective(W, b, X, y, wd, anchor), np.concatenate([gW.ravel(), gb])

    v0 = np.concatenate([anchor.ravel(), np.zeros(classes)])
    res = minimize(fun, v0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 100000, "maxcor": 50, "gtol": 1e-11, "ftol": 0.0})
    return res.x[:classes * d].reshape(classes, d), res.x[classes * d:]


def sklearn_protocol(Xtr, ytr, Xte, yte, grid, val_fraction=0.2, seed=0, strict=True):
    """The reference: same seeded validation part, same grid of C = 1/(wd n), ties to the larger wd, refit on
    all of train, lbfgs with tol 1e-8 (``strict``: a ConvergenceWarning fails the test)."""
    from sklearn.exceptions import ConvergenceWarning

    tr, va = stratified_split(ytr, val_fraction, seed)
    N, Nte = l2_normalize(Xtr).astype(np.float64), l2_normalize(Xte).astype(np.float64)

    def fit(idx, wd):
        with warnings.catch_warnings():
            warnings.simplefilter("error" if strict else "ignore", ConvergenceWarning)
            return LogisticRegression(C=1 / (wd * len(idx)), solver="lbfgs", max_iter=10000, tol=1e-8).fit(
                N[idx], ytr[idx])

    val = {wd: fit(tr, wd).score(N[va], ytr[va]) for wd in grid}
    best = max(val, key=lambda w: (val[w], w))
    return best, val, fit(np.arange(len(ytr)), best).score(Nte, yte)


@pytest.mark.parametrize("wd", [1e-4, 1e-2])
def test_same_objective_as_sklearn(wd):
    X, y = blobs()
    m = fit_logreg(X, y, 4, wd, device="cpu", tol=1e-7)
    sk = LogisticRegression(C=1.0 / (wd * len(y)), max_iter=10000, tol=1e-10).fit(l2_normalize(X), y)
    assert m.converged and m.grad_max <= 1e-7
    np.testing.assert_allclose(m.W, sk.coef_, atol=1e-3 * np.abs(sk.coef_).max())
    assert np.mean(m.scores(X).argmax(1) == sk.predict(l2_normalize(X))) > 0.99


def test_fit_runs_to_the_gradient_tolerance_from_a_zero_start():
    """Regression (issue 13): the fit stopped silently after 500 iterations from a zero start, far from the
    optimum of an ill-conditioned problem (max |gradient| 1.4e-5 after 425 iterations); it must run to max |gradient| <= tol."""
    X, y = teacher(noise=0.05, cond=30)
    Xtr, ytr, Xte = X[:600], y[:600], X[600:]
    m = fit_logreg(Xtr, ytr, 5, 1e-7, device="cpu")
    gW, gb = objective_gradient(m.W, m.b, Xtr, ytr, 1e-7)
    assert max(np.abs(gW).max(), np.abs(gb).max()) <= 2e-6  # tol 1e-6, checked independently in float64
    assert m.converged and m.iterations > 0
    sk = LogisticRegression(C=1 / (1e-7 * 600), max_iter=10000, tol=1e-8).fit(l2_normalize(Xtr).astype(float), ytr)
    assert np.mean(m.scores(Xte).argmax(1) == sk.predict(l2_normalize(Xte))) >= 0.99


def test_unconverged_fit_warns_with_the_iteration_count():
    X, y = teacher(noise=0.05, cond=30, n=300)
    with pytest.warns(ProbeWarning, match=r"wd=1\.0e-07: stopped after 7 iterations \(hit max_iter=7\)"):
        m = fit_logreg(X, y, 5, 1e-7, device="cpu", max_iter=7)
    assert not m.converged and m.iterations == 7 and m.grad_max > 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeWarning)
        fit_logreg(X, y, 5, 1e-7, device="cpu", max_iter=7, warn=False)  # silenced on request only
    sw = sweep_weight_decay(X[:200], y[:200], X[200:], y[200:], 5, grid=(1e-7, 1e-3), max_iter=7, extend=0,
                            warn=False)
    assert [p.converged for p in sw.points] == [False, False] and "2 of 2 weight-decay fits stopped" in \
        sw.messages()[0]


def test_linear_probe_matches_the_sklearn_protocol():
    """Agreement on a small problem: every grid point's validation accuracy, the choice and test accuracy."""
    X, y = teacher(noise=0.05, cond=30, seed=1)
    Xtr, ytr, Xte, yte = X[:600], y[:600], X[600:], y[600:]
    res = linear_probe(Xtr, ytr, Xte, yte, 5, device="cpu")
    grid = [p.wd for p in res.sweep.points]
    best, val, sk_test = sklearn_protocol(Xtr, ytr, Xte, yte, grid)
    assert res.converged and res.sweep.edge is None and res.sweep.n_val == 120
    n_val_diff = [abs(p.val_acc - val[p.wd]) * res.sweep.n_val for p in res.sweep.points]
    assert max(n_val_diff) <= 1.001  # at most one validation image apart at any grid point
    assert res.wd == best
    assert abs(res.test_metrics["acc1"] - sk_test) <= 0.005


def test_sweep_reports_progress_and_every_grid_point():
    X, y = blobs(n_per=60)
    calls = []
    res = linear_probe(X[:200], y[:200], X[200:], y[200:], 4, grid=(1e-1, 1e-3, 1e-5),
                       on_fit=lambda done, total: calls.append((done, total)))
    n = len(res.sweep.points)
    assert [d for d, _ in calls] == list(range(1, n + 1)) and calls[-1][1] == n >= 3
    assert all(0 <= p.train_acc <= 1 and 0 <= p.val_acc <= 1 and p.iterations > 0 for p in res.sweep.points)
    assert res.sweep.n_train + res.sweep.n_val == 200 and res.wd in [p.wd for p in res.sweep.points]


def test_stratified_split_and_kshot_sampling():
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    tr, va = stratified_split(y, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    assert sorted(np.bincount(y[va], minlength=3)) == [1, 1, 2]  # every class gives at least one, keeps one
    s = sample_kshot(y, 4, seed=1)
    assert np.bincount(y[s]).tolist() == [4, 4, 2]  # a class with fewer images gives all it has
    assert np.array_equal(s, sample_kshot(y, 4, seed=1)) and not np.array_equal(s, sample_kshot(y, 4, seed=2))


def test_weight_decay_choice_never_reads_test_labels():
    X, y = blobs(n_per=200, seed=1)
    X, y, Xte, yte = X[:400], y[:400], X[400:], y[400:]
    a = linear_probe(X, y, Xte, yte, 4, seed=0)
    b = linear_probe(X, y, Xte, np.random.default_rng(0).permutation(yte), 4, seed=0)
    assert a.wd == b.wd and a.val_curve == b.val_curve and a.val_curve
    assert a.train_metrics["acc1"] >= a.test_metrics["acc1"] - 0.05
    assert a.test_metrics["acc1"] > 0.7 and b.test_metrics["acc1"] < 0.5  # shuffled labels only change the report


def test_sweep_prefers_larger_weight_decay_on_ties_and_extends_at_an_edge():
    X, y = blobs(spread=0.05)  # separable: many weight decays reach 100 %
    with pytest.warns(ProbeWarning, match="at the high end of the grid"):
        sw = sweep_weight_decay(X[:300], y[:300], X[300:], y[300:], 4, grid=(1e-6, 1e-4, 1e-2), extend=0)
    assert all(acc == 1.0 for _, acc in sw.curve) and sw.best == 1e-2 and sw.edge == "high"
    sw = sweep_weight_decay(X[:300], y[:300], X[300:], y[300:], 4, grid=(1e-6, 1e-4, 1e-2))
    assert sw.best > 1e-2 and sw.edge is None  # extended upwards (x100 per step) until accuracy dropped
    assert sw.extended and sw.points[-1].val_acc < 1.0 and sw.points[-1].added


def test_sweep_extends_below_the_grid_when_the_best_is_its_floor():
    """Regression (issue 13): the grid's floor was taken silently while validation accuracy was still rising."""
    X, y = teacher(n=1500, noise=0.0, cond=30, seed=2)
    Xtr, ytr, Xva, yva = X[:1200], y[:1200], X[1200:], y[1200:]
    grid = (1e-3, 1e-4, 1e-5)
    sw = sweep_weight_decay(Xtr, ytr, Xva, yva, 5, grid=grid)
    assert sw.best < min(grid) and sw.extended and min(sw.extended) < min(grid)
    assert [p.wd for p in sw.points] == sorted(p.wd for p in sw.points)
    train = {p.wd: p.train_acc for p in sw.points}
    assert train[sw.best] > train[1e-5]  # smaller weight decay, better fit: the edge was not the optimum


def test_kshot_rows_and_zero_shot_anchor():
    X, y = blobs(n_per=130, seed=3)
    X, y, Xte, yte = X[:320], y[:320], X[320:], y[320:]
    # zero-shot weights = the true class means: a strong prior the anchored probe should keep
    means = l2_normalize(np.stack([l2_normalize(X)[y == c].mean(0) for c in range(4)]))
    rows = kshot_probes(X, y, Xte, yte, 4, ks=(1, 4), seeds=(0, 1), zeroshot_weights=means, logit_scale=50.0)
    assert [(r.k, r.variant) for r in rows] == [(0, "zero-shot"), (1, "probe"), (1, "probe (zero-shot init)"),
                                                (4, "probe"), (4, "probe (zero-shot init)")]
    assert all(len(r.accs) == 2 and r.seeds == [0, 1] for r in rows[1:])
    zs = rows[0].mean
    anchored_1 = rows[2].mean
    assert anchored_1 >= zs - 0.05  # one shot per class cannot undo a good prior
    assert anchored_1 >= rows[1].mean  # and beats a probe from scratch


# The k-shot solver (probe._SpanNewton) against the references, over regimes: n << d (few shots, the data's span
# replaces the feature space), n ~ d and n > d, separable labels with tiny weight decays (the slow case for
# L-BFGS), noisy labels, strong weight decays. (label, n, d, classes, label noise, wd)
REGIMES = [
    ("n<<d separable, wd 1e-7", 10, 128, 5, 0.0, 1e-7),
    ("n<<d separable, wd 1e-3", 10, 128, 5, 0.0, 1e-3),
    ("n<<d one shot, wd 1e-5", 5, 64, 5, 0.0, 1e-5),
    ("n<<d, wd 1", 12, 96, 4, 0.0, 1.0),
    ("n~d near-separable, wd 1e-7", 60, 64, 5, 0.0, 1e-7),
    ("n>d separable, wd 1e-7", 201, 8, 3, 0.0, 1e-7),
    ("n>d noisy, wd 1e-6", 300, 16, 4, 0.3, 1e-6),
    ("n>d noisy, wd 1e-2", 300, 16, 4, 0.3, 1e-2),
]


def regime_data(n, d, classes, noise, seed=1):
    """n training images (n / classes per class) and 100 others per class from one linear teacher."""
    X, y = teacher(n=4000, d=d, classes=classes, noise=noise, cond=10, seed=seed)
    tr = np.concatenate([np.flatnonzero(y == c)[:n // classes] for c in range(classes)])
    other = np.concatenate([np.flatnonzero(y == c)[-100:] for c in range(classes)])
    assert len(tr) == n and not np.intersect1d(tr, other).size
    return X[tr], y[tr], X[other], y[other]


@pytest.mark.parametrize("label,n,d,classes,noise,wd", REGIMES, ids=[r[0] for r in REGIMES])
def test_newton_reaches_the_sklearn_optimum(label, n, d, classes, noise, wd):
    """Same optimum as scikit-learn's (newton-cholesky at tol 1e-10): objective, coefficients, centred intercepts."""
    X, y, Xo, _ = regime_data(n, d, classes, noise)
    C = int(y.max()) + 1
    N, No = l2_normalize(X).astype(float), l2_normalize(Xo).astype(float)
    exact = LogisticRegression(C=1 / (wd * n), solver="newton-cholesky", tol=1e-10, max_iter=1000).fit(N, y)
    m = probe._SpanNewton(X, y, C).fit(wd, tol=1e-9)
    assert m.converged and grad_max(m, X, y) <= 1.01e-9
    f_sk, f = objective(exact.coef_, exact.intercept_, X, y, wd), objective(m.W, m.b, X, y, wd)
    assert abs(f - f_sk) <= 1e-10 * max(1.0, f_sk)
    scale = np.abs(exact.coef_).max()
    np.testing.assert_allclose(m.W, exact.coef_, atol=1e-3 * scale)
    b_sk = exact.intercept_ - exact.intercept_.mean()
    np.testing.assert_allclose(m.b, b_sk, atol=1e-3 * max(1.0, np.abs(b_sk).max()))
    # at the default tol the fit goes on to POLISH_TOL: tol 1e-6 alone leaves directions whose curvature is ~wd
    # loosely determined (with wd 1e-7 and separable shots, held-out predictions of a solver stopped there,
    # scikit-learn's lbfgs included, move by a few per cent); the polished fit predicts as the optimum does
    m6 = probe._SpanNewton(X, y, C).fit(wd)
    assert m6.converged and grad_max(m6, X, y) <= 1.01e-6
    assert objective(m6.W, m6.b, X, y, wd) - f_sk <= 1e-10 * max(1.0, f_sk)
    assert np.mean((N @ m6.W.T + m6.b).argmax(1) == exact.predict(N)) == 1.0
    assert np.mean((No @ m6.W.T + m6.b).argmax(1) == exact.predict(No)) >= 0.998  # one flip in 500 at most


@pytest.mark.parametrize("label,n,d,classes,noise,wd", REGIMES, ids=[r[0] for r in REGIMES])
def test_newton_anchored_reaches_the_scipy_optimum(label, n, d, classes, noise, wd):
    """Anchored objective (W towards the anchor, b towards 0): scipy's L-BFGS-B optimum in the full space."""
    X, y, _, _ = regime_data(n, d, classes, noise, seed=2)
    C = int(y.max()) + 1
    anchor = 20.0 * l2_normalize(np.random.default_rng(3).normal(size=(C, d))).astype(np.float64)
    W_ref, b_ref = scipy_anchored(X, y, C, wd, anchor)
    m = probe._SpanNewton(X, y, C).fit(wd, anchor=anchor, tol=1e-9)
    assert m.converged and grad_max(m, X, y, anchor) <= 1.01e-9
    f_ref, f = objective(W_ref, b_ref, X, y, wd, anchor), objective(m.W, m.b, X, y, wd, anchor)
    assert f <= f_ref + 1e-10 * max(1.0, f_ref)  # at least as low as scipy's (which may stop a little short)
    assert f >= f_ref - 1e-6 * max(1.0, f_ref)
    np.testing.assert_allclose(m.W, W_ref, atol=1e-3 * np.abs(W_ref).max())
    np.testing.assert_allclose(m.b, b_ref, atol=1e-3 * max(1.0, np.abs(b_ref).max()))


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(n_per=st.integers(1, 20), d=st.integers(2, 80), classes=st.integers(2, 8), log_wd=st.integers(-8, 1),
       noise=st.sampled_from([0.0, 0.5]), anchored=st.booleans(), seed=st.integers(0, 2**16))
def test_newton_meets_the_gradient_test_and_beats_references(n_per, d, classes, log_wd, noise, anchored, seed):
    """Any small problem: converged means the gradient test holds, and no reference finds a lower objective."""
    # the gradient is recomputed here; references: scikit-learn's lbfgs (plain), scipy's L-BFGS-B (anchored)
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    y = np.repeat(np.arange(classes), n_per)
    X = (centers[y] + (0.3 + noise) * rng.normal(size=(len(y), d))).astype(np.float32)
    wd = 10.0 ** log_wd
    anchor = 10.0 * l2_normalize(rng.normal(size=(classes, d))).astype(np.float64) if anchored else None
    m = probe._SpanNewton(X, y, classes).fit(wd, anchor=anchor)
    assert m.converged and m.iterations < 100
    assert grad_max(m, X, y, anchor) <= 1.01e-6
    tight = probe._SpanNewton(X, y, classes).fit(wd, anchor=anchor, tol=1e-10)
    assert tight.converged and grad_max(tight, X, y, anchor) <= 1.01e-10
    f = objective(tight.W, tight.b, X, y, wd, anchor)
    if anchored:
        W_ref, b_ref = scipy_anchored(X, y, classes, wd, anchor)
        assert f <= objective(W_ref, b_ref, X, y, wd, anchor) + 1e-12
    else:
        sk = LogisticRegression(C=1 / (wd * len(y)), tol=1e-6, max_iter=100000).fit(
            l2_normalize(X).astype(float), y)
        W, b = sk.coef_, sk.intercept_
        if classes == 2:  # scikit-learn fits one logistic; as softmax weights it is -w/2, +w/2 (a feasible point)
            W, b = np.concatenate([-W / 2, W / 2]), np.concatenate([-b / 2, b / 2])
        assert f <= objective(W, b, X, y, wd) + 1e-12


def test_newton_path_gives_the_fits_of_cold_starts():
    """Each fit of a sweep starts on the path's tangent from the previous one and still lands on the optimum."""
    X, y = teacher(n=60, d=48, classes=5, noise=0.0, cond=10, seed=4)
    Xv, yv = teacher(n=200, d=48, classes=5, noise=0.0, cond=10, seed=5)
    grid = probe._check_grid(probe.KSHOT_WD_GRID)
    for anchor in (None, 15.0 * l2_normalize(np.random.default_rng(0).normal(size=(5, 48))).astype(np.float64)):
        sw = probe._sweep(probe._SpanNewton(X, y, 5), X, y, Xv, yv, grid, anchor=anchor, max_iter=1000, tol=1e-9,
                          extend=0, on_fit=None)
        assert all(p.converged for p in sw.points)
        for p in sw.points:
            cold = probe._SpanNewton(X, y, 5).fit(p.wd, anchor=anchor, tol=1e-9)
            assert cold.converged and p.val_acc == probe._accuracy(cold, Xv, yv)
        best_cold = probe._SpanNewton(X, y, 5).fit(sw.best, anchor=anchor, tol=1e-9)
        f = objective(sw.model.W, sw.model.b, X, y, sw.best, anchor)
        assert abs(f - objective(best_cold.W, best_cold.b, X, y, sw.best, anchor)) <= 1e-10 * max(1.0, f)


def kshot_data():
    X, y = blobs(n_per=130, seed=3, spread=1.2)
    X, y, Xte, yte = X[:320], y[:320], X[320:], y[320:]
    means = l2_normalize(np.stack([l2_normalize(X)[y == c].mean(0) for c in range(4)]))
    return X, y, Xte, yte, means


def test_kshot_rows_equal_the_sklearn_protocol():
    """k-shot rows (wd and test accuracy per seed) equal scikit-learn's exact optimum's under the same protocol."""
    # protocol: shots, validation part, grid, ties to the larger wd; reference: newton-cholesky at tol 1e-10. The
    # Newton solver goes on past tol 1e-6 to POLISH_TOL: tol 1e-6 alone leaves held-out predictions loosely
    # determined at wd 1e-7, for any solver
    X, y, Xte, yte, _ = kshot_data()
    rows = kshot_probes(X, y, Xte, yte, 4, ks=(1, 2, 4, 8), seeds=(0, 1), device="cpu")
    tr, va = stratified_split(y, 0.2, seed=12345)
    N, Nte = l2_normalize(X).astype(float), l2_normalize(Xte).astype(float)
    for row in rows:
        for s, acc, wd in zip(row.seeds, row.accs, row.wds):
            shots = tr[sample_kshot(y[tr], row.k, seed=s)]
            fits = {w: LogisticRegression(C=1 / (w * len(shots)), solver="newton-cholesky", tol=1e-10,
                                          max_iter=1000).fit(N[shots], y[shots]) for w in probe.KSHOT_WD_GRID}
            val = {w: m.score(N[va], y[va]) for w, m in fits.items()}
            best = max(val, key=lambda w: (val[w], w))
            assert (wd, acc) == (best, fits[best].score(Nte, yte)), (row.k, s)


def test_kshot_newton_and_lbfgs_solvers_agree(monkeypatch):
    """The same k-shot rows, plain and anchored, from the Newton solver and from L-BFGS (zero cost budget)."""
    # on a grid where tol 1e-6 determines the optimum's predictions: L-BFGS stopped at tol 1e-6 with wd 1e-7
    # can sit a validation image or two away from the optimum (see the test above)
    X, y, Xte, yte, means = kshot_data()
    kw = dict(ks=(1, 4), seeds=(0, 1), zeroshot_weights=means, logit_scale=30.0, grid=(1e-3, 1e-2, 1e-1, 1.0),
              device="cpu")
    chosen, newton_init = [], probe._SpanNewton.__init__
    monkeypatch.setattr(probe, "_SpanNewton", type("Spy", (probe._SpanNewton,), {
        "__init__": lambda self, *a, **k: (chosen.append(1), newton_init(self, *a, **k))[1]}))
    newton = kshot_probes(X, y, Xte, yte, 4, **kw)
    assert len(chosen) == 8  # 2 k x 2 seeds x 2 variants
    monkeypatch.setattr(probe, "NEWTON_MAX_COST", -1.0)
    lbfgs = kshot_probes(X, y, Xte, yte, 4, **kw)
    assert len(chosen) == 8
    assert [(r.k, r.variant, r.wds, r.accs) for r in newton] == [(r.k, r.variant, r.wds, r.accs) for r in lbfgs]


def test_kshot_newton_results_do_not_depend_on_thread_count(monkeypatch):
    """Newton fits run BLAS on one thread whatever the settings, so k-shot rows are the same bit for bit."""
    from threadpoolctl import threadpool_info, threadpool_limits

    X, y, Xte, yte, means = kshot_data()
    seen, newton = [], probe._SpanNewton.newton

    def spy(self, *a):
        # the pools of numpy's and scipy's own BLAS (what the solver calls); another package's BLAS built with
        # OpenMP (faiss's libopenblaso, once faiss is imported) reports the OpenMP thread count and is not used
        seen.extend((p["num_threads"], p["filepath"]) for p in threadpool_info() if p["user_api"] == "blas"
                    and any(f"{os.sep}{pkg}.libs{os.sep}" in p["filepath"] for pkg in ("numpy", "scipy")))
        return newton(self, *a)

    monkeypatch.setattr(probe._SpanNewton, "newton", spy)
    rows = {}
    for n in (1, 2):
        with threadpool_limits(n):
            rows[n] = kshot_probes(X, y, Xte, yte, 4, ks=(2,), seeds=(0,), zeroshot_weights=means, device="cpu")
    assert seen and {n for n, _ in seen} == {1}, sorted(set(seen))
    assert [(r.accs, r.wds) for r in rows[1]] == [(r.accs, r.wds) for r in rows[2]]


def test_large_kshot_problems_keep_lbfgs():
    rng = np.random.default_rng(0)
    big, small = rng.normal(size=(1600, 512)), rng.normal(size=(160, 64))
    assert isinstance(probe._kshot_problem(big, np.arange(1600) % 100, 100, "cpu"), probe._Problem)
    assert isinstance(probe._kshot_problem(small, np.arange(160) % 10, 10, "cpu"), probe._SpanNewton)
    with pytest.raises(probe.CliplabError, match="labels must lie in"):
        probe._SpanNewton(small, np.arange(160) % 11, 10)


def test_newton_non_convergence_is_never_silent():
    """A stop before the gradient test (max_iter, float64's floor) is reported with max |gradient| of W and b."""
    X, y = teacher(n=60, d=48, classes=5, noise=0.0, cond=10, seed=6)
    for n in (60, 20):  # n > d, and n < d (the fit runs in the span of the 20 images)
        m = probe._SpanNewton(X[:n], y[:n], 5).fit(1e-7, max_iter=1)
        assert not m.converged and m.iterations == 1 and m.grad_max > 1e-6
        assert m.grad_max == pytest.approx(grad_max(m, X[:n], y[:n]), rel=1e-9)
        assert "stopped after 1 iterations (hit max_iter=1)" in probe._unconverged_text(m, 1e-6, 1)
        start = (10 * np.random.default_rng(n).normal(size=(5, 48)), np.zeros(5))
        m = probe._SpanNewton(X[:n], y[:n], 5).fit(1.0, init=start, max_iter=0)  # W's part of the gradient leads
        assert not m.converged and m.iterations == 0
        assert m.grad_max == pytest.approx(grad_max(m, X[:n], y[:n]), rel=1e-9)
    m = probe._SpanNewton(X, y, 5).fit(1e-7, tol=0.0, max_iter=500)  # unreachable: stops at float64's floor
    assert not m.converged and m.iterations < 500 and m.grad_max < 1e-12
    assert "made no further progress" in probe._unconverged_text(m, 0.0, 500)
    Xte, yte = teacher(n=100, d=48, classes=5, noise=0.0, cond=10, seed=7)
    unconverged = r"k-shot probes: \d+ of 18 fits stopped unconverged \(tol 1e-06, max_iter 1\)"
    with pytest.warns(ProbeWarning, match=unconverged):
        kshot_probes(np.concatenate([X, Xte]), np.concatenate([y, yte]), Xte, yte, 5, ks=(2, 4), seeds=(0,),
                     max_iter=1, device="cpu")


@pytest.mark.slow
def test_probe_within_half_a_point_of_sklearn_on_tiny_model(trained_cache):
    from cliplab.data import open_dataset
    from cliplab.embed import embed_images
    from cliplab.models import open_model

    m = open_model("tiny-shapes", cache_dir=trained_cache)
    tr = open_dataset("shapes:background", split="train", limit=2000, cache_dir=trained_cache)
    te = open_dataset("shapes:background", split="test", cache_dir=trained_cache)
    a, b = embed_images(m, tr, trained_cache), embed_images(m, te, trained_cache)
    Xtr, ytr, Xte, yte = a.embeddings, tr.labels[a.indices], b.embeddings, te.labels[b.indices]
    res = linear_probe(Xtr, ytr, Xte, yte, 5)
    # sklearn itself hits max_iter=10000 at the smallest weight decays on these features (not strict)
    best, _, sk_acc = sklearn_protocol(Xtr, ytr, Xte, yte, [p.wd for p in res.sweep.points], strict=False)
    assert res.converged and abs(res.test_metrics["acc1"] - sk_acc) <= 0.005
    assert res.test_metrics["acc1"] > 0.6  # far above chance (20 %)


def test_results_store_round_trip(tmp_path):
    from types import SimpleNamespace

    from cliplab.results.store import RunRecorder, read_results

    ds = SimpleNamespace(name="toy", split="test", fingerprint="fp")
    model = {"name": "m", "pretrained": None, "fingerprint": "abc"}
    for fmt, v in (("parquet", 0.5), ("jsonl", 0.75)):
        rec = RunRecorder("zeroshot", {"k": 1})
        add_row(rec, task="zeroshot_classification", model=model, dataset=ds, metric="acc1", value=v, variant="simple")
        add_row(rec, task="prompt_study", model=model, dataset=ds, metric="diff", value=float("nan"), ci=(-0.1, 0.2),
                seed=3)
        path = rec.write(tmp_path / "res", fmt)
        assert path.suffix == f".{fmt}" and path.exists()
    df = read_results(tmp_path / "res")
    assert len(df) == 4 and sorted(df.loc[df.metric == "acc1", "value"]) == [0.5, 0.75]
    diff = df[df.metric == "diff"].iloc[0]
    assert np.isnan(diff.value) and diff.ci_low == -0.1 and diff.seed == 3
    assert not list((tmp_path / "res").glob("*.tmp*"))


def test_store_folder_reads_as_one_parquet_dataset(tmp_path):
    """Files with all-empty columns and a figures folder must not stop pd.read_parquet(DIR)."""
    from types import SimpleNamespace

    import pandas as pd

    from cliplab.results.store import RunRecorder

    ds = SimpleNamespace(name="toy", split="test", fingerprint="fp")
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG fake")
    a = RunRecorder("zeroshot")
    add_row(a, task="t", model={"name": "m", "pretrained": None, "fingerprint": "x"}, dataset=ds, metric="acc1", value=0.5)
    b = RunRecorder("probe")
    add_row(b, task="t", model={"name": "m", "pretrained": "p", "fingerprint": "x"}, dataset=ds, metric="acc1", value=0.7,
          ci=(0.6, 0.8), seed=1, n=10)
    from cliplab.results.result import ModelInfo

    b.add_figure(png, SimpleNamespace(task="t", models=[ModelInfo("m", "p", "x")], dataset=ds), "c")
    a.write(tmp_path / "res")
    b.write(tmp_path / "res")
    df = pd.read_parquet(tmp_path / "res")
    assert len(df) == 3 and sorted(df.value.dropna()) == [0.5, 0.7] and df.artifact.notna().sum() == 1


def test_sweep_is_reported_in_table_json_and_store(tmp_path):
    from types import SimpleNamespace

    from rich.console import Console

    from cliplab.report.tables import render
    from cliplab.results.store import RunRecorder, read_results
    from cliplab.studies.probe import ProbeResult

    X, y = blobs(n_per=60)
    lp = linear_probe(X[:200], y[:200], X[200:], y[200:], 4, grid=(1e-1, 1e-3, 1e-5))
    ds = SimpleNamespace(name="toy", split="test", fingerprint="fp", classnames=["a", "b", "c", "d"])
    emb = SimpleNamespace(indices=np.arange(40), failures=[])
    study = ProbeResult(model=SimpleNamespace(name="m", pretrained=None, fingerprint="x"), train=ds, test=ds,
                       train_images=SimpleNamespace(indices=np.arange(200), failures=[]), test_images=emb,
                       linear=lp, warnings=["w1"])
    console = Console(width=200, record=True)
    for table in study.tables():
        console.print(render(table))
    text = console.export_text()
    assert "◀ chosen" in text and text.count("yes") >= len(lp.sweep.points) and f"{lp.wd:.1e}" in text
    assert f"{100 * lp.sweep.points[0].val_acc:.2f}" in text and "L-BFGS iterations, converged" in text
    js = study.record()
    pts = js["linear_probe"]["sweep"]["points"]
    assert [p["chosen"] for p in pts].count(True) == 1 and js["linear_probe"]["converged"] is True
    assert {"train_acc1", "val_acc1", "iterations", "converged", "C"} <= set(pts[0]) and js["warnings"] == ["w1"]
    rec = RunRecorder("probe")
    rec.add_result(study)
    rec.write(tmp_path / "res")
    df = read_results(tmp_path / "res")
    sweep = df[df.metric == "sweep_val_acc1"]
    assert len(sweep) == len(pts) and set(df.task) == {"linear_probe"}
    assert sweep.variant.str.endswith("(chosen)").sum() == 1


def test_study_prints_and_keeps_probe_warnings(capsys):
    from types import SimpleNamespace

    from cliplab.studies.probe import _probe_warnings

    study = SimpleNamespace(warnings=[])
    X, y = teacher(noise=0.05, cond=30, n=300)
    with _probe_warnings(study):
        fit_logreg(X, y, 5, 1e-7, device="cpu", max_iter=3)
    assert len(study.warnings) == 1 and "stopped after 3 iterations" in study.warnings[0]
    assert "warning: probe fit unconverged" in capsys.readouterr().err


def add_row(rec, **kw) -> None:
    """One hand-made metric row into a run of the results store."""
    from cliplab.results.result import Rows

    rows = Rows()
    rows.add(**kw)
    rec.add_rows(rows.frame())
