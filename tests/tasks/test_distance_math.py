"""Distances other than cosine (issue 27): cosine, dot product and Euclidean distance on raw embeddings. A hand-computed
case where the three rank differently, numpy brute force (Hypothesis), the FAISS index against the numpy path per
metric, caption-retrieval ranks and k-means geometry."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cliplab.errors import ParameterError
from cliplab.index import VectorIndex
from cliplab.inputs import METRIC_P
from cliplab.tasks.caption_retrieval import image_to_text_ranks, text_to_image_ranks
from cliplab.tasks.clustering import CLUSTER_METRICS, prepare
from cliplab.tasks.image_retrieval import average_query_expansion, labelled_retrieval_metrics
from cliplab.tasks.ranking import METRICS, chunked_topk, inner_product_space, metric_note, pairwise_scores

# one query and four keys on which the three metrics give three different rankings, by hand:
#            cosine        dot    L2 distance
#   A (10,10)  1/sqrt2 .707   10     sqrt(81 + 100) = 13.45
#   B (2, 0)   1              2      1
#   C (1, 2)   1/sqrt5 .447   1      sqrt(0 + 4) = 2
#   D (0, 1)   0              0      sqrt(1 + 1) = 1.414
Q = np.array([[1.0, 0.0]], np.float32)
KEYS = np.array([[10, 10], [2, 0], [1, 2], [0, 1]], np.float32)
BY_HAND = {"cosine": ([1, 0, 2, 3], [1.0, 2 ** -0.5, 5 ** -0.5, 0.0]),
           "dot": ([0, 1, 2, 3], [10.0, 2.0, 1.0, 0.0]),
           "euclidean": ([1, 3, 2, 0], [1.0, 2 ** 0.5, 2.0, 181 ** 0.5])}


def test_the_declared_choices_are_the_task_metrics():
    assert METRIC_P.choices == METRICS == ("cosine", "dot", "euclidean")
    assert METRIC_P.default == "cosine"
    assert metric_note("cosine") is None
    assert "trained for cosine" in metric_note("dot") and "trained for cosine" in metric_note("euclidean")


@pytest.mark.parametrize("metric", METRICS)
def test_hand_computed_rankings_differ_per_metric(metric):
    order, scores = BY_HAND[metric]
    s, idx = chunked_topk(Q, KEYS, 4, metric=metric)
    assert idx[0].tolist() == order
    np.testing.assert_allclose(s[0], scores, rtol=1e-6)
    np.testing.assert_allclose(pairwise_scores(Q, KEYS, metric)[0][order], scores, rtol=1e-12)


@pytest.mark.parametrize("kind", ["exact", "flat"])
@pytest.mark.parametrize("metric", METRICS)
def test_the_index_ranks_the_hand_case_per_metric(metric, kind):
    order, scores = BY_HAND[metric]
    index = VectorIndex.build(KEYS, list("ABCD"), kind, metric=metric)
    s, pos = index.search(Q, 4)
    assert pos[0].tolist() == order
    np.testing.assert_allclose(s[0], scores, rtol=1e-5)


def test_euclidean_is_an_inner_product_in_a_larger_space():
    q, k = inner_product_space(Q, KEYS, "euclidean")
    # q.k = |x|^2 - |x - y|^2
    np.testing.assert_allclose((q @ k.T)[0], 1 - np.array([181, 1, 4, 2]), rtol=0)
    with pytest.raises(ParameterError, match="choose one of cosine, dot, euclidean"):
        inner_product_space(Q, KEYS, "manhattan")


def _brute_force(queries, keys, metric):
    """Full rankings by numpy in float64: score descending (distance ascending), then key index ascending."""
    s = pairwise_scores(queries, keys, metric)
    s = -s if metric == "euclidean" else s
    return np.array([np.lexsort((np.arange(len(row)), -row)) for row in s])


SMALL_INTS = st.integers(-4, 4)


@st.composite
def integer_vectors(draw):
    d = draw(st.integers(1, 5))
    n = draw(st.integers(1, 12))
    nq = draw(st.integers(1, 4))
    cell = lambda m: draw(st.lists(st.lists(SMALL_INTS, min_size=d, max_size=d), min_size=m, max_size=m))  # noqa
    return np.array(cell(nq), np.float32), np.array(cell(n), np.float32)


@settings(max_examples=60, deadline=None)
@given(integer_vectors(), st.sampled_from(["dot", "euclidean"]), st.integers(1, 5))
def test_dot_and_euclidean_equal_numpy_brute_force_ties_included(data, metric, col_chunk):
    # small integers: every score is exact in float32, so ties are real ties and must go to the lower index
    queries, keys = data
    s, idx = chunked_topk(queries, keys, len(keys), metric=metric, col_chunk=col_chunk, row_chunk=2)
    np.testing.assert_array_equal(idx, _brute_force(queries, keys, metric))
    want = pairwise_scores(queries, keys, metric)
    np.testing.assert_allclose(s, np.take_along_axis(want, idx, 1), rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from(METRICS), st.integers(1, 7))
def test_every_metric_equals_numpy_on_continuous_vectors(seed, metric, k):
    rng = np.random.default_rng(seed)
    queries, keys = rng.normal(size=(3, 6)) * 3, rng.normal(size=(20, 6)) * rng.uniform(0.2, 5, (20, 1))
    s, idx = chunked_topk(queries, keys, k, metric=metric, col_chunk=6)
    np.testing.assert_array_equal(idx, _brute_force(queries, keys, metric)[:, :k])
    np.testing.assert_allclose(s, np.take_along_axis(pairwise_scores(queries, keys, metric), idx, 1), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_faiss_flat_index_equals_the_numpy_path(metric):
    rng = np.random.default_rng(7)
    keys = (rng.normal(size=(300, 16)) * rng.uniform(0.3, 4, (300, 1))).astype(np.float32)
    queries = rng.normal(size=(25, 16)).astype(np.float32) * 2
    faiss_s, faiss_i = VectorIndex.build(keys, [str(i) for i in range(300)], "flat", metric=metric).search(queries, 10)
    exact_s, exact_i = VectorIndex.build(keys, [str(i) for i in range(300)], "exact", metric=metric).search(queries, 10)
    brute = _brute_force(queries, keys, metric)[:, :10]
    np.testing.assert_array_equal(faiss_i, brute)
    np.testing.assert_array_equal(exact_i, brute)
    want = np.take_along_axis(pairwise_scores(queries, keys, metric), brute, 1)
    np.testing.assert_allclose(faiss_s, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(exact_s, want, rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(integer_vectors(), st.sampled_from(["dot", "euclidean"]))
def test_faiss_flat_index_on_ties_returns_the_brute_force_scores(data, metric):
    """On exact ties FAISS may order tied keys either way: each key it returns has the score brute force gives it,
    and the scores are the brute-force top-k's."""
    queries, keys = data
    k = len(keys)
    s, pos = VectorIndex.build(keys, [str(i) for i in range(len(keys))], "flat", metric=metric).search(queries, k)
    want = pairwise_scores(queries, keys, metric)
    np.testing.assert_allclose(s, np.take_along_axis(want, pos, 1), rtol=1e-5, atol=1e-4)
    best = np.sort(want, 1) if metric == "euclidean" else -np.sort(-want, 1)
    np.testing.assert_allclose(s, best, rtol=1e-5, atol=1e-4)


def test_the_saved_index_is_keyed_by_metric(tmp_path):
    rng = np.random.default_rng(0)
    emb, ids = rng.normal(size=(30, 8)).astype(np.float32), [str(i) for i in range(30)]
    path = tmp_path / "g.faiss"
    first, reused = VectorIndex.load_or_build(path, emb, ids, "flat", metric="cosine")
    assert not reused and VectorIndex.load(path).metric == "cosine"
    again, reused = VectorIndex.load_or_build(path, emb, ids, "flat", metric="cosine")
    assert reused
    dot, reused = VectorIndex.load_or_build(path, emb, ids, "flat", metric="dot")
    assert not reused and VectorIndex.load(path).metric == "dot"
    l2, reused = VectorIndex.load_or_build(path, emb, ids, "flat", metric="euclidean")
    assert not reused and type(l2.index).__name__ == "IndexFlatL2"
    assert type(dot.index).__name__ == "IndexFlatIP"


def test_an_index_saved_before_metrics_counts_as_cosine(tmp_path):
    import json

    emb, ids = np.eye(4, dtype=np.float32), list("abcd")
    path = tmp_path / "old.faiss"
    VectorIndex.build(emb, ids, "flat").save(path)
    side = path.with_name(path.name + ".json")
    meta = json.loads(side.read_text())
    del meta["metric"]
    side.write_text(json.dumps(meta))
    assert VectorIndex.load_or_build(path, emb, ids, "flat", metric="cosine")[1]
    assert not VectorIndex.load_or_build(path, emb, ids, "flat", metric="dot")[1]


# ---- caption retrieval ranks ----

def _t2i_brute(text, image, owner, metric):
    s = pairwise_scores(text, image, metric)
    s = -s if metric == "euclidean" else s
    own = s[np.arange(len(text)), owner]
    better = (s > own[:, None])
    better[np.arange(len(text)), owner] = False
    return better.sum(1) + 1


def _i2t_brute(image, text, owner, metric):
    s = pairwise_scores(image, text, metric)
    s = -s if metric == "euclidean" else s
    out = np.zeros(len(image), np.int64)
    for i in range(len(image)):
        mine = owner == i
        if mine.any():
            out[i] = int((s[i][~mine] > s[i][mine].max()).sum()) + 1
    return out


@pytest.mark.parametrize("metric", METRICS)
def test_caption_ranks_per_metric_equal_numpy(metric):
    rng = np.random.default_rng(3)
    image = (rng.normal(size=(12, 5)) * rng.uniform(0.3, 3, (12, 1))).astype(np.float32)
    owner = np.repeat(np.arange(12), 2)
    text = (image[owner] + rng.normal(size=(24, 5))).astype(np.float32)
    np.testing.assert_array_equal(text_to_image_ranks(text, image, owner, metric=metric, col_chunk=5, row_chunk=7),
                                  _t2i_brute(text, image, owner, metric))
    np.testing.assert_array_equal(image_to_text_ranks(image, text, owner, metric=metric, col_chunk=5, row_chunk=7),
                                  _i2t_brute(image, text, owner, metric))


def test_caption_ranks_on_the_hand_case():
    # caption Q belongs to image C (index 2): rank 3 by cosine and by dot, 3 by L2 (B, D nearer)
    owner = np.array([2])
    got = {m: int(text_to_image_ranks(Q, KEYS, owner, metric=m)[0]) for m in METRICS}
    assert got == {"cosine": 3, "dot": 3, "euclidean": 3}
    owner = np.array([3])  # image D: last by cosine and dot, second by L2
    got = {m: int(text_to_image_ranks(Q, KEYS, owner, metric=m)[0]) for m in METRICS}
    assert got == {"cosine": 4, "dot": 4, "euclidean": 2}


# ---- image retrieval and k-means ----

def test_labelled_retrieval_by_metric_on_the_hand_case():
    # 4 images, labels: A and D one class, B and C another; each queries the other three. One positive at rank r has
    # the trapezoid AP (0 + 1/r) / 2 (1 at rank 1).
    labels = np.array([0, 1, 1, 0])
    # query A (10, 10), positive D: dot B 20, C 30, D 10 -> C B D; L2 B 12.81, C 12.04, D 13.45 -> C B D; cosine
    # C .949, B .707, D .707 (an exact tie, to the lower index) -> C B D: rank 3 each, AP 1/6
    # query D (0, 1), positive A: dot A 10, B 0, C 2 -> A first: 1; cosine A .707, B 0, C .894 -> second: 1/4;
    # L2 A 13.45, B 2.24, C 1.41 -> third: 1/6
    for metric, ap_d in (("dot", 1.0), ("cosine", 0.25), ("euclidean", 1 / 6)):
        m = labelled_retrieval_metrics(KEYS, labels, k=1, metric=metric, per_query=True)
        assert m["per_query_ap"][0] == pytest.approx(1 / 6), metric
        assert m["per_query_ap"][3] == pytest.approx(ap_d), metric


def test_query_expansion_without_normalisation_is_the_plain_mean():
    q = np.array([[1.0, 0.0]], np.float32)
    out = average_query_expansion(q, KEYS, 1, metric="dot")  # top-1 by dot: A (10, 10)
    np.testing.assert_allclose(out, [[5.5, 5.0]])
    out = average_query_expansion(q, KEYS, 2, metric="euclidean")  # B (2, 0), D (0, 1)
    np.testing.assert_allclose(out, [[1.0, 1 / 3]], rtol=1e-6)


def test_kmeans_geometry_per_metric():
    x = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
    np.testing.assert_allclose(prepare(x, metric="cosine"), [[0.6, 0.8], [0.0, 1.0]])
    np.testing.assert_array_equal(prepare(x, metric="euclidean"), x)
    assert CLUSTER_METRICS == ("cosine", "euclidean")
    with pytest.raises(ParameterError, match="dot product is not one") as err:
        prepare(x, metric="dot")
    assert err.value.param == "metric"
