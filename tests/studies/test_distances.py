"""--metric through the studies (issue 27): declared once for search, similar, retrieval and cluster, recorded in the
config and the store's variant, the numbers equal to numpy on the embeddings, and one error line for a k-means dot."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.registry import studies
from cliplab.tasks.ranking import pairwise_scores

KW = dict(backend="torch", quiet=True, device="cpu")


def test_metric_is_one_declaration_shared_by_the_studies_that_rank():
    from cliplab.inputs import METRIC_P

    have = {s.name: p for s in studies() for p in s.inputs if p.name == "metric"}
    assert set(have) == {"search", "similar", "retrieval", "cluster"}
    for name in ("search", "similar", "retrieval"):
        assert have[name] is METRIC_P
    assert have["cluster"].choices == ("cosine", "euclidean") and "No dot" in have["cluster"].help


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_search_by_metric_is_keyed_and_equals_numpy(metric, trained_cache):
    res = cliplab.search("tiny-shapes", "shapes:color", ["a red circle"], limit=60, k=5, metric=metric,
                         cache_dir=trained_cache, **KW)
    h = res.hits[0]
    from cliplab.embed import embed_texts

    q = embed_texts(h.model, ["a red circle"], trained_cache)
    want = pairwise_scores(q, h.images.embeddings, metric)[0]
    order = np.argsort(want if metric == "euclidean" else -want, kind="stable")[:5]
    np.testing.assert_array_equal(h.positions[0], order)
    np.testing.assert_allclose(h.scores[0], want[order], rtol=1e-4)
    assert res.config["metric"] == metric
    rows = res.metric_rows()
    assert set(rows.variant) == {f"a red circle metric={metric}"}
    assert any("trained for cosine" in n for n in res.notes)
    assert set(res.hits_frame()["metric"]) == {metric}  # the hits file says which score it holds
    flat = cliplab.search("tiny-shapes", "shapes:color", ["a red circle"], limit=60, k=5, metric=metric,
                          index_type="flat", cache_dir=trained_cache, **KW)
    np.testing.assert_array_equal(flat.hits[0].positions, h.positions)


def test_cosine_stays_as_it_was(trained_cache):
    res = cliplab.search("tiny-shapes", "shapes:color", ["a red circle"], limit=40, k=3, cache_dir=trained_cache,
                         **KW)
    assert res.config["metric"] == "cosine" and not res.notes
    assert set(res.metric_rows().variant) == {"a red circle"}


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_similar_by_metric_ranks_the_raw_embeddings(metric, trained_cache):
    from cliplab.tasks.image_retrieval import labelled_retrieval_metrics

    res = cliplab.similar("tiny-shapes", "shapes:color", limit=80, metric=metric, cache_dir=trained_cache, **KW)
    from cliplab.embed import embed_images

    raw = embed_images(res.model, res.gallery, trained_cache).embeddings
    np.testing.assert_allclose(res.descriptors, raw, rtol=1e-6)  # global, no PCA: the raw embeddings
    labels = res.gallery.labels[res.indices]
    want = labelled_retrieval_metrics(raw, labels, 10, metric=metric)
    assert res.scores["mAP"] == pytest.approx(want["mAP"])
    assert res.variant == f"global metric={metric}"
    assert res.record()["metric"] == metric


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_retrieval_by_metric_keys_its_rows_and_clip_benchmark_records(metric, trained_cache):
    from cliplab.studies.caption_retrieval import clip_benchmark_records

    res = cliplab.retrieval("tiny-shapes", "shapes", limit=60, metric=metric, cache_dir=trained_cache, **KW)
    rows = res.metric_rows()
    assert set(rows.variant) <= {f"text_to_image metric={metric}", f"image_to_text metric={metric}",
                                 f"text_to_image failures metric={metric}"}
    rows["run_id"], rows["pretrained"] = "r", None
    rec = clip_benchmark_records(rows)[0]["metrics"]
    m = res.result.metrics
    assert rec["image_retrieval_recall@1"] == m["text_to_image_recall@1"]
    assert rec["text_retrieval_recall@1"] == m["image_to_text_recall@1"]
    # the per-caption table ranks the images by the same metric
    frame = res.caption_frame(k=3)
    s = pairwise_scores(res.text_emb[:5], res.images.embeddings, metric)
    best = s.argmin(1) if metric == "euclidean" else s.argmax(1)
    ids = [res.data.source.id(int(i)) for i in res.images.indices]
    assert frame.top1_image[:5].tolist() == [ids[j] for j in best]


def test_cluster_euclidean_and_no_dot(trained_cache):
    res = cliplab.cluster("tiny-shapes", "shapes:color", k=[3], limit=60, metric="euclidean",
                          cache_dir=trained_cache, **KW)
    from cliplab.embed import embed_images

    np.testing.assert_array_equal(res.X, embed_images(res.model, res.data, trained_cache).embeddings.astype(np.float32))
    assert res.variant == "kmeans-sklearn metric=euclidean"
    out = CliRunner().invoke(app, ["cluster", "--dataset", "shapes:color", "--metric", "dot", "--cache-dir",
                                   str(trained_cache), "--backend", "torch"])
    assert out.exit_code == 2
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --metric 'dot'") and "not a" not in lines[0][:20]
    assert "k-means needs a distance" in lines[0]
    with pytest.raises(cliplab.ParameterError,
                       match="choose one of cosine, euclidean"):
        cliplab.cluster("tiny-shapes", "shapes:color", metric="dot", cache_dir=trained_cache, **KW)


def test_the_report_score_figure_names_the_metric_the_scores_are_in(trained_cache):
    """Regression: the search section's score figure labelled its axis 'cosine similarity' for dot and Euclidean runs
    (and put ' metric=dot' into every query's label); one figure per metric, each axis named for it."""
    from cliplab.results.store import RunRecorder
    from cliplab.studies.search import score_distribution_figure

    run = RunRecorder("search")
    for metric in ("cosine", "dot", "euclidean"):
        run.add_result(cliplab.search("tiny-shapes", "shapes:color", ["a red circle", "a blue square"], limit=60, k=3,
                                      metric=metric, cache_dir=trained_cache, **KW))
    figs = score_distribution_figure(run.frame())
    axes = {f.figure.axes[0].get_xlabel(): [t.get_text() for t in f.figure.axes[0].get_yticklabels()] for f in figs}
    assert set(axes) == {"cosine similarity", "dot product (raw embeddings)", "Euclidean distance (lower is closer)"}
    for labels in axes.values():
        assert sorted(labels) == ["a blue square", "a red circle"]
