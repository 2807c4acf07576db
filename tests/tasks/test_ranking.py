"""Ranking metrics: hand-computed cases, scikit-learn where it defines the same quantity (and where it does not),
the chunked evaluator against per-query metrics of full rankings, and property-based checks (Hypothesis)."""
from math import log2
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, ndcg_score

from cliplab.errors import ParameterError
from cliplab.tasks import caption_retrieval, ranking
from cliplab.tasks.image_retrieval import average_precision as oxford_ap
from cliplab.tasks.image_retrieval import labelled_retrieval_metrics
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.ranking import (average_precision, chunked_topk, evaluate_rankings, metrics_from_ranks,
                                   overlap_at_k, query_metrics, rank_biased_overlap, relevant_ranks)

FORMS = ("step", "trapezoid")


# ---- per-query metrics by hand ---------------------------------------------------------------------------------
RANKING = [10, 11, 12, 13, 14, 15]
RELEVANT = [15, 10, 13]  # ranks 1, 4, 6 (order of the set does not matter); R = 3


def test_relevant_ranks_junk_and_misses():
    assert relevant_ranks(RANKING, RELEVANT).tolist() == [1, 4, 6]
    # junk 11 and 14 taken out: 10 12 13 15 -> ranks 1, 3, 4; 99 is never ranked
    assert relevant_ranks(RANKING, RELEVANT + [99], junk=[11, 14]).tolist() == [1, 3, 4]
    # an id listed as relevant and as junk counts as relevant (kept in the ranking)
    assert relevant_ranks(RANKING, [13], junk=[13, 10]).tolist() == [3]
    with pytest.raises(ParameterError, match="twice") as err:
        relevant_ranks([1, 2, 1], [1])
    assert err.value.param == "ranking"


def test_average_precision_both_forms_by_hand():
    # step: mean precision at the relevant ranks 1, 4, 6: (1/1 + 2/4 + 3/6) / 3 = 2/3
    assert average_precision(RANKING, RELEVANT) == pytest.approx(2 / 3)
    # trapezoid: rank 1: (1 + 1)/2 = 1; rank 4: (1/3 + 2/4)/2 = 5/12; rank 6: (2/5 + 3/6)/2 = 9/20
    #   (1 + 5/12 + 9/20) / 3 = (60 + 25 + 27) / 60 / 3 = 28/45
    assert average_precision(RANKING, RELEVANT, form="trapezoid") == pytest.approx(28 / 45)
    # Oxford's example (tests/tasks/test_image_retrieval.py): 10(pos) 11(junk) 12 13(pos) -> ranks 1, 3
    #   step: (1 + 2/3)/2 = 5/6 ; trapezoid: (1 + (1/2 + 2/3)/2)/2 = 19/24
    assert average_precision([10, 11, 12, 13], [10, 13], [11]) == pytest.approx(5 / 6)
    assert average_precision([10, 11, 12, 13], [10, 13], [11], form="trapezoid") == pytest.approx(19 / 24)
    # a relevant id missing from the ranking: a miss (R = 3): (1 + 2/3)/3 = 5/9 ; ignored (R = 2): 5/6
    assert average_precision([10, 11, 12, 13], [10, 13, 99], [11]) == pytest.approx(5 / 9)
    assert average_precision([10, 11, 12, 13], [10, 13, 99], [11], missing="ignore") == pytest.approx(5 / 6)
    assert np.isnan(average_precision(RANKING, []))
    assert average_precision(RANKING, [99]) == 0.0  # one relevant item, never ranked


def test_query_metrics_by_hand():
    m = query_metrics(RANKING, RELEVANT, ks=(1, 3, 5, 10))
    # P@k = hits in the first k / k; k = 10 > 6 items: the 4 missing positions are non-relevant
    assert [m[f"P@{k}"] for k in (1, 3, 5, 10)] == pytest.approx([1, 1 / 3, 2 / 5, 3 / 10])
    assert [m[f"R@{k}"] for k in (1, 3, 5, 10)] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1])
    assert m["R-precision"] == pytest.approx(1 / 3)  # 1 of the first R = 3 is relevant
    # nDCG: gains 1/log2(r + 1) at r = 1, 4, 6; ideal = 1 + 1/log2(3) + 1/log2(4) (3 relevant, k >= 3)
    ideal3 = 1 + 1 / log2(3) + 1 / 2
    assert m["nDCG@1"] == 1.0
    assert m["nDCG@3"] == pytest.approx(1 / ideal3)
    assert m["nDCG@5"] == pytest.approx((1 + 1 / log2(5)) / ideal3)
    assert m["nDCG@10"] == pytest.approx((1 + 1 / log2(5) + 1 / log2(7)) / ideal3)
    assert (m["relevant"], m["found"]) == (3, 3)
    # a missed relevant item (99) enlarges R and the ideal DCG: ideal@10 = ideal3 + 1/log2(5)
    m2 = query_metrics(RANKING, RELEVANT + [99], ks=(10,))
    assert m2["R@10"] == pytest.approx(3 / 4) and m2["R-precision"] == pytest.approx(2 / 4)  # ranks 1, 4 <= 4
    assert m2["nDCG@10"] == pytest.approx((1 + 1 / log2(5) + 1 / log2(7)) / (ideal3 + 1 / log2(5)))
    assert (m2["relevant"], m2["found"]) == (4, 3)


def test_no_relevant_items():
    m = query_metrics(RANKING, [], ks=(2,))
    assert m["P@2"] == 0.0 and all(np.isnan(m[k]) for k in ("AP", "R@2", "R-precision", "nDCG@2"))
    means = metrics_from_ranks([1, 3], [0, 2], ks=(2,), query=[1, 1]).means()
    # query 0 has no relevant item: left out of the means; query 1: ranks 1, 3 of R = 2 -> AP (1 + 2/3)/2 = 5/6
    assert means["mAP"] == pytest.approx(5 / 6) and means["P@2"] == 0.5 and means["queries_without_relevant"] == 1


def test_metrics_from_ranks_batches_equal_single_queries():
    rng = np.random.default_rng(3)
    ranks, query, n_rel = [], [], []
    for i in range(20):
        found = rng.choice(np.arange(1, 40), size=rng.integers(0, 8), replace=False)
        ranks += list(found)
        query += [i] * len(found)
        n_rel.append(len(found) + int(rng.integers(0, 3)))
    order = rng.permutation(len(ranks))  # any order of the hits
    for form in FORMS:
        batch = metrics_from_ranks(np.array(ranks)[order], n_rel, (1, 5, 50), form=form,
                                   query=np.array(query)[order])
        for i in range(20):
            single = metrics_from_ranks([r for r, q in zip(ranks, query) if q == i], n_rel[i], (1, 5, 50), form=form)
            assert batch.row(i) == pytest.approx(single.row(0), nan_ok=True)


def test_bad_arguments_name_their_parameter():
    cases = [(lambda: average_precision(RANKING, RELEVANT, form="interpolated"), "form"),
             (lambda: query_metrics(RANKING, RELEVANT, missing="drop"), "missing"),
             (lambda: query_metrics(RANKING, RELEVANT, ks=(0,)), "ks"),
             (lambda: metrics_from_ranks([1, 2, 3], 2), "n_relevant"),
             (lambda: metrics_from_ranks([2, 2], 3), "ranks"),
             (lambda: metrics_from_ranks([0], 3), "ranks"),
             (lambda: metrics_from_ranks([1], [1], query=[1]), "query"),
             (lambda: overlap_at_k([1, 2], [1, 2, 3], 3), "k"),
             (lambda: rank_biased_overlap([1, 2], [1, 2], p=1.0), "p"),
             (lambda: rank_biased_overlap([1, 1], [1, 2]), "a"),
             (lambda: rank_biased_overlap([1], []), "b")]
    for call, param in cases:
        with pytest.raises(ParameterError) as err:
            call()
        assert err.value.param == param


# ---- scikit-learn: where it defines the same quantity, and where it does not ------------------------------------
def test_step_ap_and_ndcg_equal_sklearn_without_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 60))  # sklearn's nDCG needs two documents
        scores = rng.permutation(n).astype(float)  # distinct scores: no ties
        y = rng.random(n) < rng.uniform(0.05, 0.6)
        if not y.any():
            y[rng.integers(n)] = True
        ranking = np.argsort(-scores)
        k = int(rng.integers(1, n + 10))  # k past the end of the list too
        m = query_metrics(ranking, np.flatnonzero(y), ks=(k,))
        assert m["AP"] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
        assert m[f"nDCG@{k}"] == pytest.approx(ndcg_score(y[None].astype(float), scores[None], k=k), abs=1e-12)


def test_ties_are_broken_by_index_where_sklearn_pools_them():
    # gallery items 0 and 1 are the same vector, so the query scores them equally; item 0 is the relevant one.
    gallery = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    query = np.array([[1, 0]], np.float32)
    scores = (query @ gallery.T)[0]  # [1, 1, 0]
    y = np.array([True, False, False])
    m = evaluate_rankings(query, gallery, ["a"], ["a", "b", "b"], ks=(2,))
    # here: ties by index -> the relevant item 0 ranks first: AP = 1, nDCG@2 = 1
    assert m.ap[0] == 1.0 and m.ndcg[2][0] == 1.0
    # sklearn pools the tie: one threshold with precision 1/2 at recall 1 -> AP = 1/2; nDCG gives both tied items
    # the mean gain 1/2: (1/2)(1/log2 2 + 1/log2 3) / 1 = 0.8155
    assert average_precision_score(y, scores) == pytest.approx(0.5)
    assert ndcg_score(y[None].astype(float), scores[None], k=2) == pytest.approx(0.5 * (1 + 1 / log2(3)))
    # swap the tied items: the relevant one is now index 1, second by the index rule -> AP = 1/2 (here equal to
    # sklearn's by coincidence), nDCG@2 = 1/log2(3)
    m = evaluate_rankings(query, gallery, ["a"], ["b", "a", "b"], ks=(2,))
    assert m.ap[0] == pytest.approx(0.5) and m.ndcg[2][0] == pytest.approx(1 / log2(3))
    # a query without relevant items: sklearn returns 0 (with a warning for AP), here NaN
    assert ndcg_score([[0.0, 0.0]], [[0.3, 0.1]]) == 0.0
    assert np.isnan(query_metrics([0, 1], [], ks=(2,))["nDCG@2"])


# ---- the evaluator ---------------------------------------------------------------------------------------------
def _labelled(seed, nq=40, n=300, d=16, labels=6):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(nq, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32),
            rng.integers(0, labels, nq), rng.integers(0, labels, n))


@pytest.mark.parametrize("form", FORMS)
def test_evaluator_equals_per_query_metrics_of_full_rankings(form):
    q, g, ql, gl = _labelled(1)
    ks = (1, 5, 20, 500)
    m = evaluate_rankings(q, g, ql, gl, ks, form=form, chunk=7)
    _, full = chunked_topk(q, g, len(g))  # the library's own full ranking (same tie rule)
    for i in range(len(q)):
        ref = query_metrics(full[i], np.flatnonzero(gl == ql[i]), ks=ks, form=form)
        assert m.row(i) == pytest.approx(ref, abs=1e-12)
    # sklearn on the same cosine scores (no ties among 300 random float32 scores of this seed)
    if form == "step":
        s = l2_normalize(q) @ l2_normalize(g).T
        sk = [average_precision_score(gl == ql[i], s[i]) for i in range(len(q))]
        np.testing.assert_allclose(m.ap, sk, atol=1e-12)


def test_evaluator_by_hand_with_ties_exclusion_and_misses():
    # dot products (normalize=False) of integer vectors, exact: query 0 = (1, 0), label a; query 1 = (0, 1), label b
    gallery = np.array([[2, 0], [1, 1], [1, 0], [0, 2], [1, 1]], np.float32)
    labels = np.array(["a", "b", "a", "b", "a"])
    queries = np.array([[1, 0], [0, 1]], np.float32)
    # query 0 scores 2 1 1 0 1 -> order 0, 1, 2, 4, 3 (the three 1s by index); relevant a = 0, 2, 4 at ranks 1, 3, 4
    #   step AP = (1 + 2/3 + 3/4)/3 = 29/36 ; P@2 = 1/2
    # query 1 scores 0 1 0 2 1 -> order 3, 1, 4, 0, 2; relevant b = 1, 3 at ranks 1, 2: AP = 1
    m = evaluate_rankings(queries, gallery, ["a", "b"], labels, ks=(2,), normalize=False)
    assert m.ap == pytest.approx([29 / 36, 1.0]) and m.precision[2] == pytest.approx([0.5, 1.0])
    # exclude item 0 from query 0 (as the query itself) and nothing (-1) from query 1:
    #   query 0 order 1, 2, 4, 3 -> relevant 2, 4 at ranks 2, 3 of R = 2: AP = (1/2 + 2/3)/2 = 7/12
    m = evaluate_rankings(queries, gallery, ["a", "b"], labels, ks=(2,), normalize=False, exclude=[0, -1])
    assert m.ap == pytest.approx([7 / 12, 1.0]) and m.n_relevant.tolist() == [2, 2]
    # query 1 has a relevant image missing from the gallery (R = 3): AP = (1 + 1)/3 = 2/3
    m = evaluate_rankings(queries, gallery, ["a", "b"], labels, ks=(2,), normalize=False, n_relevant=[3, 3])
    assert m.ap == pytest.approx([(1 + 2 / 3 + 3 / 4) / 3, 2 / 3]) and m.recall[2] == pytest.approx([1 / 3, 2 / 3])


def test_evaluator_with_self_exclusion_matches_labelled_image_retrieval():
    _, g, _, gl = _labelled(2, n=120, labels=4)
    m = evaluate_rankings(g, g, gl, gl, (10,), form="trapezoid", exclude=np.arange(len(g)), chunk=32)
    ref = labelled_retrieval_metrics(g, gl, k=10)
    assert m.means()["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert m.means()["P@10"] == pytest.approx(ref["P@10"], abs=1e-12)


def test_evaluator_holds_at_most_chunk_rows_of_scores(monkeypatch):
    q, g, ql, gl = _labelled(4, nq=50, n=200)
    shapes = []
    real = ranking._hit_ranks
    monkeypatch.setattr(ranking, "_hit_ranks", lambda s, a, r, c: (shapes.append(s.shape), real(s, a, r, c))[1])
    evaluate_rankings(q, g, ql, gl, chunk=12)
    assert [s[0] for s in shapes] == [12, 12, 12, 12, 2] and {s[1] for s in shapes} == {200}
    shapes.clear()
    monkeypatch.setattr(ranking, "SCORE_BUDGET", 1000)
    evaluate_rankings(q, g, ql, gl)  # default chunk: SCORE_BUDGET // N = 5 queries
    assert max(s[0] * s[1] for s in shapes) <= 1000 and len(shapes) == 10


def test_evaluator_bad_arguments():
    q, g, ql, gl = _labelled(5, nq=4, n=10)
    cases = [(dict(chunk=0), "chunk"), (dict(exclude=[10, 0, 0, 0]), "exclude"), (dict(n_relevant=[0, 0, 0, 0]),
             "n_relevant"), (dict(n_relevant=[5]), "n_relevant"), (dict(form="x"), "form"), (dict(ks=(1, -1)), "ks")]
    for kwargs, param in cases:
        with pytest.raises(ParameterError) as err:
            evaluate_rankings(q, g, ql, gl, **kwargs)
        assert err.value.param == param
    for args, param in [((q[:, :3], g, ql, gl), "queries"), ((q, g, ql[:2], gl), "query_labels"),
                        ((q, np.full_like(g, np.nan), ql, gl), "gallery")]:
        with pytest.raises(ParameterError) as err:
            evaluate_rankings(*args)
        assert err.value.param == param


def test_chunked_topk_moved_to_ranking_and_still_importable_from_caption_retrieval():
    assert caption_retrieval.chunked_topk is ranking.chunked_topk


def test_oxford_ap_is_the_shared_trapezoid_ap():
    rng = np.random.default_rng(6)
    for _ in range(50):
        ranking_ = rng.permutation(40)
        pos, junk = rng.choice(50, size=6, replace=False), rng.choice(50, size=4, replace=False)
        assert oxford_ap(ranking_, pos, junk) == average_precision(ranking_, pos, junk, form="trapezoid")


# ---- agreement between rankings by hand ------------------------------------------------------------------------
def test_overlap_at_k_by_hand():
    a, b = [1, 2, 3, 4], [3, 1, 5, 6]
    assert overlap_at_k(a, b, 1) == 0.0  # {1} vs {3}
    assert overlap_at_k(a, b, 2) == 0.5  # {1, 2} ∩ {3, 1} = {1}
    assert overlap_at_k(a, b, 3) == pytest.approx(2 / 3)  # {1, 2, 3} ∩ {3, 1, 5} = {1, 3}
    assert overlap_at_k(a, b, 4) == 0.5


def test_rbo_by_hand():
    # equal lengths (eq. 30), p = 1/2: S = a b c, T = b a d: X_1 = 0, X_2 = 2, X_3 = 2
    #   RBO_ext = X_3/3 p^3 + (1-p)/p * (0 p + (2/2) p^2 + (2/3) p^3) = 1/12 + (1/4 + 1/12) = 5/12
    assert rank_biased_overlap(list("abc"), list("bad"), p=0.5) == pytest.approx(5 / 12)
    # uneven (eq. 32), p = 1/2: L = a b c d (l = 4), S = b x (s = 2): X_1 = 0, X_2 = X_3 = X_4 = 1, X_s = 1
    #   seen: sum X_d/d p^d = 0 + (1/2)(1/4) + (1/3)(1/8) + (1/4)(1/16) = 35/192
    #   extrapolated: sum_{d=3,4} X_s (d-s)/(s d) p^d = (1/6)(1/8) + (2/8)(1/16) = 7/192 ; (1-p)/p = 1
    #   tail: ((X_4 - X_2)/4 + X_2/2) p^4 = (1/2)(1/16) = 6/192  ->  (35 + 7 + 6)/192 = 1/4
    assert rank_biased_overlap(list("abcd"), list("bx"), p=0.5) == pytest.approx(1 / 4)
    assert rank_biased_overlap(list("bx"), list("abcd"), p=0.5) == pytest.approx(1 / 4)
    # disjoint lists: 0 ; a list and its prefix: 1 (the prefix's agreement 1 is extrapolated)
    assert rank_biased_overlap([1, 2, 3], [4, 5], p=0.8) == 0.0
    assert rank_biased_overlap([1, 2, 3, 4, 5], [1, 2], p=0.8) == pytest.approx(1.0)
    # p = 0.9, one swap at the top of two 2-item lists: X_1 = 0, X_2 = 2
    #   2/2 * 0.81 + (0.1/0.9)(0 + 1 * 0.81) = 0.81 + 0.09 = 0.9
    assert rank_biased_overlap([1, 2], [2, 1], p=0.9) == pytest.approx(0.9)


# ---- properties (Hypothesis) -----------------------------------------------------------------------------------
@st.composite
def judged_rankings(draw):
    """(ranking, relevant ids, junk ids): relevant / junk may name ids that are not ranked (misses)."""
    n = draw(st.integers(1, 30))
    ranking = draw(st.permutations(list(range(n))))
    ids = st.integers(0, n + 5)
    return ranking, draw(st.lists(ids, max_size=12, unique=True)), draw(st.lists(ids, max_size=6, unique=True))


@settings(deadline=None, max_examples=200)
@given(judged_rankings(), st.sampled_from(FORMS))
def test_ap_in_unit_interval_and_one_iff_relevant_items_first(case, form):
    ranking_, relevant, junk = case
    ap = average_precision(ranking_, relevant, junk, form=form)
    if not relevant:
        assert np.isnan(ap)
        return
    assert 0.0 <= ap <= 1.0 + 1e-12
    ranks = relevant_ranks(ranking_, relevant, junk)
    all_first = len(ranks) == len(set(relevant)) and ranks.tolist() == list(range(1, len(ranks) + 1))
    assert (ap == pytest.approx(1.0)) == all_first


@settings(deadline=None, max_examples=200)
@given(judged_rankings(), st.data())
def test_precision_at_k_monotonic(case, data):
    ranking_, relevant, junk = case
    ks = tuple(range(1, len(ranking_) + 4))
    m = query_metrics(ranking_, relevant, junk, ks=ks)
    hits = [m[f"P@{k}"] * k for k in ks]
    assert all(b >= a - 1e-9 for a, b in zip(hits, hits[1:]))  # k * P@k (hits in the first k) never decreases
    assert all(0 <= m[f"P@{k}"] <= 1 for k in ks)
    if relevant:
        assert all(m[f"R@{b}"] >= m[f"R@{a}"] for a, b in zip(ks, ks[1:]))
        assert all(0 <= m[f"nDCG@{k}"] <= 1 + 1e-12 for k in ks)
    # moving a relevant item up one place (swapping it with a non-relevant item) never lowers P@k or AP
    kept = [x for x in ranking_ if x not in set(junk) - set(relevant)]
    rel = set(relevant)
    swaps = [i for i in range(1, len(kept)) if kept[i] in rel and kept[i - 1] not in rel]
    if swaps:
        i = data.draw(st.sampled_from(swaps))
        better = kept[:i - 1] + [kept[i], kept[i - 1]] + kept[i + 1:]
        mb = query_metrics(better, relevant, ks=ks)
        assert all(mb[f"P@{k}"] >= m[f"P@{k}"] for k in ks) and mb["AP"] > m["AP"]


@settings(deadline=None, max_examples=200)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=25, unique=True),
       st.lists(st.integers(0, 40), min_size=1, max_size=25, unique=True), st.floats(0.05, 0.99))
def test_rbo_symmetric_bounded_and_one_for_identical_lists(a, b, p):
    r = rank_biased_overlap(a, b, p)
    assert r == pytest.approx(rank_biased_overlap(b, a, p), abs=1e-12)
    assert -1e-12 <= r <= 1 + 1e-12
    assert rank_biased_overlap(a, a, p) == pytest.approx(1.0)
    k = min(len(a), len(b))
    o = overlap_at_k(a, b, k)
    assert 0 <= o <= 1 and o == overlap_at_k(b, a, k) and overlap_at_k(a, a, len(a)) == 1.0


def _same(a: dict, b: dict) -> bool:
    """Equal to the last bit, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(1, 50), st.integers(0, 2**32 - 1),
       st.sampled_from(FORMS), st.booleans())
def test_chunked_evaluator_equals_unchunked_for_any_chunk(nq, n, chunk, seed, form, exclude_some):
    # small integer vectors and dot products: exact scores with many ties, so every chunk size (and both ways of
    # resolving ties) must agree exactly, and the tie rule (score descending, then gallery index) can be checked
    # against a numpy stable sort
    rng = np.random.default_rng(seed)
    q, g = rng.integers(-2, 3, (nq, 3)).astype(np.float32), rng.integers(-2, 3, (n, 3)).astype(np.float32)
    ql, gl = rng.integers(0, 3, nq), rng.integers(0, 3, n)
    exclude = rng.integers(-1, n, (nq, 2)) if exclude_some else None
    ks = (1, 3, n + 2)
    full = evaluate_rankings(q, g, ql, gl, ks, form=form, normalize=False, chunk=nq, exclude=exclude)
    with mock.patch.object(ranking, "TIE_SCAN", 0):  # ties resolved by sorting the row instead of scanning it
        part = evaluate_rankings(q, g, ql, gl, ks, form=form, normalize=False, chunk=chunk, exclude=exclude)
    for i in range(nq):
        assert _same(part.row(i), full.row(i))
        order = np.argsort(-(q[i].astype(np.float64) @ g.T.astype(np.float64)), kind="stable")
        gone = set() if exclude is None else set(exclude[i][exclude[i] >= 0].tolist())
        ranking_ = [int(x) for x in order if int(x) not in gone]
        ref = query_metrics(ranking_, [x for x in np.flatnonzero(gl == ql[i]) if int(x) not in gone], ks=ks,
                            form=form)
        assert full.row(i) == pytest.approx(ref, nan_ok=True)


# ---- the CPU path in numpy (issue 23: a warm study imports no torch) -------------------------------------------------
def _tied_vectors(seed: int, n: int, d: int = 8) -> np.ndarray:
    """Small integer vectors: many exactly tied scores, and products exact in float32 whatever the BLAS."""
    return np.random.default_rng(seed).integers(-2, 3, (n, d)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(nq=st.integers(1, 30), n=st.integers(1, 60), k=st.integers(1, 70), row_chunk=st.integers(1, 16),
       col_chunk=st.integers(1, 70), seed=st.integers(0, 10 ** 6))
def test_numpy_topk_equals_the_torch_topk_and_the_full_sort(nq, n, k, row_chunk, col_chunk, seed):
    """The CPU ranks in numpy: the same scores and order (ties by the lower index) as the torch code GPUs run, and
    as sorting the full score matrix, for any chunking."""
    import torch

    q, keys = _tied_vectors(seed, nq), _tied_vectors(seed + 1, n)
    s, idx = chunked_topk(q, keys, k, device="cpu", row_chunk=row_chunk, col_chunk=col_chunk, normalize=False)
    ts, tidx = ranking._topk_torch(q, keys, min(k, n), torch.device("cpu"), row_chunk, col_chunk)
    full = q @ keys.T
    order = np.lexsort((np.broadcast_to(np.arange(n), full.shape), -full), axis=1)[:, :k]
    assert np.array_equal(idx, order) and np.array_equal(idx, tidx)
    assert np.array_equal(s, np.take_along_axis(full, order, 1)) and np.array_equal(s, ts)


def test_cpu_ranking_imports_no_torch():
    """Regression (issue 23): chunked_topk and evaluate_rankings imported torch for a matrix product on the CPU."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from cliplab.tasks.ranking import chunked_topk, evaluate_rankings; "
            "from cliplab.tasks.caption_retrieval import caption_retrieval; "
            "x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32); "
            "chunked_topk(x, x, 3, device='cpu'); evaluate_rankings(x, x, np.arange(20) % 3, np.arange(20) % 3, "
            "device='cpu'); caption_retrieval(x, x, np.arange(20), device='cpu'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_evaluator_and_caption_ranks_equal_the_torch_ones(seed, monkeypatch):
    """evaluate_rankings and the caption ranks on the CPU (numpy) equal the torch code they replaced there, on
    tie-heavy vectors (exact scores) with duplicates, chunked."""
    q, g = _tied_vectors(seed, 40), _tied_vectors(seed + 7, 90)
    g[10] = g[3]  # a duplicate image
    labels_q, labels_g = np.arange(40) % 5, np.arange(90) % 5
    owner = np.random.default_rng(seed).integers(0, 90, 40)
    cpu = evaluate_rankings(q, g, labels_q, labels_g, normalize=False, chunk=7, device="cpu")
    ranks = caption_retrieval.caption_retrieval(g, q, owner, row_chunk=9, col_chunk=13, metric="dot", device="cpu")
    monkeypatch.setattr(ranking, "on_cpu", lambda device: False)  # the torch code, on the CPU
    monkeypatch.setattr(caption_retrieval, "on_cpu", lambda device: False)
    torch_ = evaluate_rankings(q, g, labels_q, labels_g, normalize=False, chunk=7, device="cpu")
    torch_ranks = caption_retrieval.caption_retrieval(g, q, owner, row_chunk=9, col_chunk=13, metric="dot",
                                                      device="cpu")
    for name in ("ap", "r_precision", "n_relevant", "n_found"):
        assert np.array_equal(getattr(cpu, name), getattr(torch_, name), equal_nan=name in ("ap", "r_precision"))
    for k in cpu.ks:
        assert np.array_equal(cpu.ndcg[k], torch_.ndcg[k], equal_nan=True)
    assert np.array_equal(ranks.t2i_ranks, torch_ranks.t2i_ranks)
    assert np.array_equal(ranks.i2t_ranks, torch_ranks.i2t_ranks)
