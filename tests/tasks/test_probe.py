"""Linear and k-shot probes: agreement with scikit-learn, convergence, grid edges, no test leakage, k-shot
sampling, results store."""
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

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


def objective_gradient(W, b, X, y, wd):
    """Gradient of mean CE + wd/2 ||W||^2 in float64, computed independently of torch."""
    N = l2_normalize(X).astype(np.float64)
    Z = N @ W.astype(np.float64).T + b.astype(np.float64)
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    P[np.arange(len(y)), y] -= 1
    return P.T @ N / len(y) + wd * W, P.mean(0)


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
