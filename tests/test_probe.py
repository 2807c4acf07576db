"""Linear and k-shot probes: agreement with scikit-learn, no test leakage, k-shot sampling, results store."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.probe import (fit_logreg, kshot_probes, linear_probe, sample_kshot, stratified_split,
                                 sweep_weight_decay)


def blobs(n_per=120, classes=4, d=16, spread=1.6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    X = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per)
    p = rng.permutation(len(y))
    return X[p], y[p]


@pytest.mark.parametrize("wd", [1e-4, 1e-2])
def test_same_objective_as_sklearn(wd):
    X, y = blobs()
    m = fit_logreg(X, y, 4, wd, device="cpu", max_iter=2000, tol=1e-9)
    sk = LogisticRegression(C=1.0 / (wd * len(y)), max_iter=10000, tol=1e-10).fit(l2_normalize(X), y)
    np.testing.assert_allclose(m.W, sk.coef_, atol=2e-2 * np.abs(sk.coef_).max())
    assert np.mean(m.scores(X).argmax(1) == sk.predict(l2_normalize(X))) > 0.99


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
    assert a.wd == b.wd and a.val_curve == b.val_curve
    assert a.train_metrics["acc1"] >= a.test_metrics["acc1"] - 0.05
    assert a.test_metrics["acc1"] > 0.7 and b.test_metrics["acc1"] < 0.5  # shuffled labels only change the report


def test_sweep_prefers_larger_weight_decay_on_ties():
    X, y = blobs(spread=0.05)  # separable: many weight decays reach 100 %
    best, curve = sweep_weight_decay(X[:300], y[:300], X[300:], y[300:], 4, grid=(1e-6, 1e-4, 1e-2))
    assert all(acc == 1.0 for _, acc in curve) and best == 1e-2


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
    from cliplab.data import load_dataset
    from cliplab.embed import embed_images
    from cliplab.models import load_model

    m = load_model("tiny-shapes", cache_dir=trained_cache)
    tr = load_dataset("shapes:background", split="train", limit=2000, cache_dir=trained_cache)
    te = load_dataset("shapes:background", split="test", cache_dir=trained_cache)
    a, b = embed_images(m, tr, trained_cache, quiet=True), embed_images(m, te, trained_cache, quiet=True)
    Xtr, ytr, Xte, yte = a.embeddings, tr.labels[a.indices], b.embeddings, te.labels[b.indices]
    res = linear_probe(Xtr, ytr, Xte, yte, 5)
    sk = LogisticRegression(C=1.0 / (res.wd * len(ytr)), max_iter=10000).fit(l2_normalize(Xtr), ytr)
    sk_acc = sk.score(l2_normalize(Xte), yte)
    assert abs(res.test_metrics["acc1"] - sk_acc) <= 0.005
    assert res.test_metrics["acc1"] > 0.6  # far above chance (20 %)


def test_results_store_round_trip(tmp_path):
    from types import SimpleNamespace

    from cliplab.report.store import RunRecorder, read_results

    ds = SimpleNamespace(name="toy", split="test", fingerprint="fp")
    model = {"name": "m", "pretrained": None, "fingerprint": "abc"}
    for fmt, v in (("parquet", 0.5), ("jsonl", 0.75)):
        rec = RunRecorder("zeroshot", {"k": 1})
        rec.add(task="zeroshot_classification", model=model, dataset=ds, metric="acc1", value=v, variant="simple")
        rec.add(task="prompt_study", model=model, dataset=ds, metric="diff", value=float("nan"), ci=(-0.1, 0.2),
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

    from cliplab.report.store import RunRecorder

    ds = SimpleNamespace(name="toy", split="test", fingerprint="fp")
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG fake")
    a = RunRecorder("zeroshot")
    a.add(task="t", model={"name": "m", "pretrained": None, "fingerprint": "x"}, dataset=ds, metric="acc1", value=0.5)
    b = RunRecorder("probe")
    b.add(task="t", model={"name": "m", "pretrained": "p", "fingerprint": "x"}, dataset=ds, metric="acc1", value=0.7,
          ci=(0.6, 0.8), seed=1, n=10)
    b.add_artifact(png, task="t", model={"name": "m", "pretrained": "p", "fingerprint": "x"}, dataset=ds, caption="c")
    a.write(tmp_path / "res")
    b.write(tmp_path / "res")
    df = pd.read_parquet(tmp_path / "res")
    assert len(df) == 3 and sorted(df.value.dropna()) == [0.5, 0.7] and df.artifact.notna().sum() == 1
