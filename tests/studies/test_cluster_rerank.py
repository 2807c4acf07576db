"""Clustering to help retrieval (issue 27): `similar --cluster-rerank K`: k-means on the gallery only, the query's
cluster first (a stable partition), mAP against plain retrieval with a paired CI in the same result."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import cliplab
from cliplab.studies import image_retrieval as study
from cliplab.tasks.image_retrieval import cluster_rerank, nearest_centre
from tests.conftest import make_image

KW = dict(backend="torch", quiet=True, device="cpu")


def test_the_rule_by_hand():
    rankings = np.array([[4, 0, 3, 1, 2], [2, 1, 0, 4, 3]])
    clusters = np.array([0, 1, 0, 1, 1])  # gallery items 0 and 2 in cluster 0; 1, 3, 4 in cluster 1
    out = cluster_rerank(rankings, clusters, np.array([0, 1]))
    # query 0 (cluster 0): 0 and 2 first, in their plain order (0 before 2), then 4 3 1 in theirs
    assert out.tolist() == [[0, 2, 4, 3, 1], [1, 4, 3, 2, 0]]
    centres = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert nearest_centre(np.array([[0.9, 5], [1.1, -3], [1.0, 0]]), centres).tolist() == [0, 1, 0]  # tie -> 0


@pytest.fixture
def gallery(tmp_path):
    colours = {"r1": (200, 30, 30), "r2": (210, 40, 30), "r3": (190, 30, 50), "b1": (30, 40, 200),
               "b2": (40, 30, 210), "b3": (30, 60, 190), "g1": (30, 200, 40), "g2": (40, 210, 30)}
    for name, colour in colours.items():
        make_image(tmp_path / "gallery" / f"{name}.png", color=colour)
    return tmp_path / "gallery"


def _gt(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_kmeans_is_fitted_on_the_gallery_only(gallery, tmp_path, trained_cache):
    seen = []
    real = study.kmeans

    def spy(X, k, **kw):
        seen.append(np.array(X))
        return real(X, k, **kw)

    gt_a = _gt(tmp_path, "a.csv", "query,relevant\nr1,r2;r3\nb1,b2;b3\n")
    gt_b = _gt(tmp_path, "b.csv", "query,relevant\ng1,g2\n")
    with mock.patch.object(study, "kmeans", spy):
        a = cliplab.similar("tiny-shapes", str(gallery), gt=gt_a, cluster_rerank=3, cache_dir=trained_cache, **KW)
        b = cliplab.similar("tiny-shapes", str(gallery), gt=gt_b, cluster_rerank=3, cache_dir=trained_cache, **KW)
    assert len(seen) == 2
    # what k-means saw is exactly the gallery's descriptors, whatever the queries
    np.testing.assert_array_equal(seen[0], a.descriptors)
    np.testing.assert_array_equal(seen[1], b.descriptors)
    np.testing.assert_array_equal(seen[0], seen[1])
    assert len(seen[0]) == 8


def test_rerank_is_reported_against_plain_with_a_paired_ci(gallery, tmp_path, trained_cache):
    gt = _gt(tmp_path, "gt.csv", "query,relevant\nr1,r2;r3\nb1,b2;b3\ng1,g2\n")
    plain = cliplab.similar("tiny-shapes", str(gallery), gt=gt, cache_dir=trained_cache, **KW)
    res = cliplab.similar("tiny-shapes", str(gallery), gt=gt, cluster_rerank=3, seed=1, cache_dir=trained_cache, **KW)
    assert res.scores["mAP"] == pytest.approx(plain.scores["mAP"])  # the plain numbers are unchanged
    # by hand from the same k-means: the re-ranked rankings scored with the same mAP
    from cliplab.tasks.clustering import kmeans

    fit = kmeans(res.descriptors, 3, seed=1)
    d = res.descriptors
    ids = [Path(res.gallery.source.id(int(i))).stem for i in res.indices]
    pos = {s: i for i, s in enumerate(ids)}
    q = np.stack([d[pos[n]] for n in ("r1", "b1", "g1")])
    rank = np.argsort(-(q @ d.T), axis=1, kind="stable")
    from cliplab.data.oxford import read_table_gt

    want, _ = study.gt_metrics(read_table_gt(gt), cluster_rerank(rank, fit.assignments, nearest_centre(q, fit.centers)),
                               pos)
    assert res.rerank_scores["mAP"] == pytest.approx(want["mAP"], abs=1e-6)
    diff, lo, hi, n = res.rerank_diff["mAP"]
    assert diff == pytest.approx(res.rerank_scores["mAP"] - res.scores["mAP"]) and n == 3 and lo <= diff <= hi
    rows = res.metric_rows()
    rr = rows[rows.variant == "global rerank=k3"]
    assert set(rr.metric) >= {"mAP", "mAP_diff"}
    assert rr[rr.metric == "mAP_diff"].ci_low.notna().all()
    assert set(rows[rows.variant == "global"].metric) == set(plain.metric_rows().metric)
    assert res.record()["cluster_rerank"]["k"] == 3


def test_labelled_rerank_and_too_many_clusters(gallery, trained_cache):
    res = cliplab.similar("tiny-shapes", "shapes:color", limit=60, cluster_rerank=6, cache_dir=trained_cache, **KW)
    plain = cliplab.similar("tiny-shapes", "shapes:color", limit=60, cache_dir=trained_cache, **KW)
    assert res.scores["mAP"] == pytest.approx(plain.scores["mAP"])
    assert "mAP" in res.rerank_diff and res.rerank_diff["mAP"][3] == 60
    with pytest.raises(cliplab.ParameterError, match="more clusters than gallery images"):
        cliplab.similar("tiny-shapes", str(gallery), cluster_rerank=9, cache_dir=trained_cache, **KW)
