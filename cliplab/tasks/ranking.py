"""Ranking metrics shared by every retrieval task: chunked top-k, per-query metrics from a ranking and a relevance
set, agreement between two rankings, and a memory-bounded evaluator over embeddings.

Conventions (one place for all of them):

* A *ranking* is a sequence of distinct item ids, best first; ranks are 1-based (1 = best).
* Relevance is binary. ``R`` (``n_relevant``) is the number of relevant items a metric divides by. Relevant items
  that never appear in the ranking (missing from the gallery, or past the end of a truncated list) are misses
  when they are counted in ``R`` (``missing="miss"``: the Oxford/Paris and revisitop protocol) and are left out of
  ``R`` with ``missing="ignore"``.
* Junk items are taken out of the ranking before anything is counted, so the items after them move up (Oxford).
  An id listed as both relevant and junk counts as relevant.

With r_1 < ... < r_m the ranks of the m relevant items found (junk removed) and R >= m:

* AP, ``form="step"`` (non-interpolated): (1/R) * sum_j j / r_j, the mean over the relevant items of the precision
  at their rank, 0 for the missed ones. This is scikit-learn's ``average_precision_score`` on the same ranking
  when every relevant item is ranked (m = R) and no two items tie.
* AP, ``form="trapezoid"``: (1/R) * sum_j [(j - 1) / (r_j - 1) + j / r_j] / 2, with (j - 1) / (r_j - 1) = 1 when
  r_j = 1: the area under the precision-recall curve by the trapezoidal rule with recall steps of 1/R, as the
  revisited Oxford/Paris ``compute_ap`` (what ``tasks.image_retrieval`` reports).
* P@k = #{r_j <= k} / k. For k past the end of the ranking the missing positions count as non-relevant (trec_eval's
  P_k), so P@k <= (length of the ranking) / k.
* R@k = #{r_j <= k} / R.   R-precision = #{r_j <= R} / R (precision at rank R).
* nDCG@k = sum_{r_j <= k} 1 / log2(r_j + 1) / sum_{i=1}^{min(k, R)} 1 / log2(i + 1): binary gains, log2 discount,
  the ideal list puts min(k, R) relevant items first (k past the end of the ranking: as for P@k, nothing is
  added). It equals ``sklearn.metrics.ndcg_score(y_true, y_score, k=k)`` on a ranking without tied scores and
  without missed relevant items; it differs where (a) scores tie: scikit-learn (``ignore_ties=False``) gives each
  tied item the mean gain of its tie group, here ties are broken before scoring (the evaluator: by gallery index);
  (b) a query has no relevant item: scikit-learn scores 0, here NaN; (c) relevant items are missed: scikit-learn
  cannot know them, here they enlarge the ideal DCG.
* With R = 0 (no relevant item) AP, R@k, R-precision and nDCG@k are NaN and P@k is 0; means skip such queries.

Agreement between two rankings: overlap@k and the extrapolated rank-biased overlap RBO_ext of Webber, Moffat &
Zobel (2010), both on lists without ties.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplab.errors import ParameterError
from cliplab.progress import bar_total, progress_bar
from cliplab.tasks.metrics import l2_normalize

ROW_CHUNK = 2048
COL_CHUNK = 65536
KS = (1, 5, 10)
AP_FORMS = ("step", "trapezoid")
MISSING = ("miss", "ignore")
SCORE_BUDGET = 2 ** 24  # scores held at once by evaluate_rankings when no chunk is given (64 MB of float32)
TIE_SCAN = 64  # tied relevant items of one query counted by a scan each; more: one stable sort of the row


def task_device(device) -> torch.device:
    """The torch device for task math: ``device`` if given, else CUDA when available, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_cpu(device) -> bool:
    """Whether task math for ``device`` (as :func:`task_device` resolves it) runs on the CPU, where it is done in
    numpy: known without importing torch unless no device is given on a machine with an NVIDIA driver (is CUDA
    usable? only torch can tell). A study on cached embeddings then imports no torch (issue 23)."""
    if device is not None:
        return str(device).split(":")[0] == "cpu"
    from cliplab.models.memo import gpu_may_be_present

    return not gpu_may_be_present() or task_device(None).type == "cpu"


# ---- distances -----------------------------------------------------------------------------------------------
METRICS = ("cosine", "dot", "euclidean")
TRAINED_FOR = "cosine"  # CLIP's contrastive loss compares L2-normalised embeddings (a scaled cosine similarity)


def check_metric(metric: str, choices=METRICS) -> str:
    if metric not in choices:
        raise ParameterError("metric", metric, f"choose one of {', '.join(choices)}")
    return metric


def metric_note(metric: str) -> str | None:
    """What a person should know about ranking by ``metric`` (None for cosine, what CLIP models are trained for)."""
    if metric == TRAINED_FOR:
        return None
    return (f"ranking by {metric} on raw (not L2-normalised) embeddings: CLIP models are trained for cosine "
            "similarity (their contrastive loss compares normalised embeddings), so the embeddings' lengths, which "
            "training does not constrain, now change the ranking")


def inner_product_space(queries: np.ndarray, keys: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(q, k)`` float32 such that ``q @ k.T`` ranks the keys of each query as ``metric`` does, best first:

    * cosine: both L2-normalised, ``q @ k.T`` is the cosine similarity;
    * dot: both as they are (raw embeddings), ``q @ k.T`` is the dot product;
    * euclidean: ``q = [2 x, -1]``, ``k = [y, |y|^2]``, so ``q @ k.T = 2 x.y - |y|^2 = |x|^2 - |x - y|^2``: for one
      query, larger means nearer (ascending L2 distance), the query's own ``|x|^2`` being the same for every key.
    """
    check_metric(metric)
    q = np.asarray(queries, dtype=np.float32)
    kk = np.asarray(keys, dtype=np.float32)
    if metric == "cosine":
        return l2_normalize(q), l2_normalize(kk)
    if metric == "dot":
        return q, kk
    q2 = np.concatenate([2 * q, -np.ones((len(q), 1), np.float32)], axis=1)
    k2 = np.concatenate([kk, np.einsum("ij,ij->i", kk, kk)[:, None]], axis=1).astype(np.float32)
    return q2, k2


def pairwise_scores(queries: np.ndarray, keys: np.ndarray, metric: str) -> np.ndarray:
    """The (Q, N) scores a person reads: cosine similarity, dot product, or L2 distance (euclidean: smaller is
    nearer), in float64."""
    check_metric(metric)
    q, kk = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        kk = kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)
    if metric != "euclidean":
        return q @ kk.T
    d2 = (q * q).sum(1)[:, None] - 2 * q @ kk.T + (kk * kk).sum(1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


def readable_scores(queries: np.ndarray, keys: np.ndarray, indices: np.ndarray, metric: str) -> np.ndarray:
    """The score (cosine, dot or L2 distance) of each query with the keys ``indices[q]`` names, (Q, k) float32."""
    q, kk = np.asarray(queries, np.float32), np.asarray(keys, np.float32)
    idx = np.asarray(indices)
    if idx.size == 0:
        return np.zeros(idx.shape, np.float32)
    if metric == "euclidean":
        return np.linalg.norm(q[:, None, :] - kk[idx], axis=2).astype(np.float32)
    if metric == "cosine":
        q, kk = l2_normalize(q), l2_normalize(kk)
    return np.einsum("qd,qkd->qk", q, kk[idx]).astype(np.float32)


def chunked_topk(queries: np.ndarray, keys: np.ndarray, k: int, *, device=None, row_chunk: int = ROW_CHUNK,
                 col_chunk: int = COL_CHUNK, normalize: bool = True,
                 metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine (or dot, ``normalize=False``; or ``metric``: cosine | dot | euclidean) of every query over all
    keys: ``(scores, indices)`` (Q, k), best first; equal to sorting the full score matrix, ties resolved towards
    the lower key index. With ``metric="euclidean"`` the keys come in ascending L2 distance and the scores are those
    distances (computed directly for the k kept, not from the ranking's inner products)."""
    if metric is not None:
        q_ip, k_ip = inner_product_space(queries, keys, metric)
        s, idx = chunked_topk(q_ip, k_ip, k, device=device, row_chunk=row_chunk, col_chunk=col_chunk,
                              normalize=False)
        return (readable_scores(queries, keys, idx, metric) if metric == "euclidean" else s), idx
    k = min(k, len(keys))
    q_all = queries if not normalize else l2_normalize(queries)
    kk = keys if not normalize else l2_normalize(keys)
    if on_cpu(device):
        return _topk_numpy(np.asarray(q_all, np.float32), np.asarray(kk, np.float32), k, row_chunk, col_chunk)
    return _topk_torch(q_all, kk, k, task_device(device), row_chunk, col_chunk)


def _best_first(s: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row of scores ``s`` (item ids ``idx``, same shape): score descending, then id ascending."""
    order = np.lexsort((idx, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(idx, order, 1)


def _block_topk(s: np.ndarray, k: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row of the block ``s`` (columns numbered from ``start``), best first, ties by
    column: every column scoring at least the k-th best score is a candidate (so tied ones are never dropped
    arbitrarily), and the candidates are sorted by (score descending, column ascending)."""
    n = s.shape[1]
    if 4 * k >= n:
        cols = np.broadcast_to(np.arange(start, start + n), s.shape)
        return _best_first(s, cols, k)
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(s >= kth[:, None])
    counts = np.bincount(rows, minlength=len(s))
    if counts.min() < k:  # NaN scores: no threshold holds k columns; sort the rows whole
        cols = np.broadcast_to(np.arange(start, start + n), s.shape)
        return _best_first(s, cols, k)
    vals = s[rows, cols]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = (np.arange(len(rows)) - first[rows]) < k
    return vals[keep].reshape(len(s), k), cols[keep].reshape(len(s), k) + start


def _topk_numpy(q_all: np.ndarray, kk: np.ndarray, k: int, row_chunk: int,
                col_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`chunked_topk` on the CPU, in numpy (float32 matrix products of the same blocks)."""
    out_s = np.empty((len(q_all), k), np.float32)
    out_i = np.empty((len(q_all), k), np.int64)
    if k == 0:
        return out_s, out_i
    with progress_bar(bar_total(len(q_all), len(q_all) * len(kk)), "ranking", unit="queries") as bar:
        for r in range(0, len(q_all), row_chunk):
            q = q_all[r:r + row_chunk]
            best_s = best_i = None
            for start in range(0, len(kk), col_chunk):
                s = q @ kk[start:start + col_chunk].T
                vs, vi = _block_topk(s, min(k, s.shape[1]), start)
                if best_s is None:
                    best_s, best_i = vs, vi
                else:
                    best_s, best_i = _best_first(np.concatenate([best_s, vs], 1), np.concatenate([best_i, vi], 1), k)
            out_s[r:r + len(q)], out_i[r:r + len(q)] = best_s, best_i
            bar.advance(len(q))
    return out_s, out_i


def _topk_torch(q_all: np.ndarray, kk: np.ndarray, k: int, dev, row_chunk: int,
                col_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`chunked_topk` on a GPU, in torch."""
    import torch

    out_s = np.empty((len(q_all), k), np.float32)
    out_i = np.empty((len(q_all), k), np.int64)
    key_chunks = [(s, torch.as_tensor(kk[s:s + col_chunk], device=dev, dtype=torch.float32))
                  for s in range(0, len(kk), col_chunk)]
    with progress_bar(bar_total(len(q_all), len(q_all) * len(kk)), "ranking", unit="queries") as bar:
        for r in range(0, len(q_all), row_chunk):
            q = torch.as_tensor(q_all[r:r + row_chunk], device=dev, dtype=torch.float32)
            best_s = best_i = None
            for start, kc in key_chunks:
                s = q @ kc.T
                kc_k = min(k, s.shape[1])
                vs, vi = torch.topk(s, kc_k, dim=1, sorted=True)
                if bool(((s >= vs[:, -1:]).sum(1) > kc_k).any()):
                    # items tied with the k-th best: topk keeps any of them; the lowest indices are kept instead
                    vi = torch.argsort(-s, dim=1, stable=True)[:, :kc_k]
                    vs = s.gather(1, vi)
                vi = vi + start
                if best_s is None:
                    best_s, best_i = vs, vi
                else:
                    cat_s, cat_i = torch.cat([best_s, vs], 1), torch.cat([best_i, vi], 1)
                    # order by score desc, then index asc (stable tie rule independent of chunking)
                    order = torch.argsort(cat_i, dim=1)
                    cat_s, cat_i = cat_s.gather(1, order), cat_i.gather(1, order)
                    top = torch.argsort(-cat_s, dim=1, stable=True)[:, :k]
                    best_s, best_i = cat_s.gather(1, top), cat_i.gather(1, top)
            # within one chunk torch.topk may order ties arbitrarily: re-sort by (score desc, index asc)
            order = torch.argsort(best_i, dim=1)
            best_s, best_i = best_s.gather(1, order), best_i.gather(1, order)
            top = torch.argsort(-best_s, dim=1, stable=True)
            out_s[r:r + len(q)] = best_s.gather(1, top).cpu().numpy()
            out_i[r:r + len(q)] = best_i.gather(1, top).cpu().numpy()
            bar.advance(len(q))
    return out_s, out_i


# ---- per-query metrics -----------------------------------------------------------------------------------------
@dataclass
class RankingMetrics:
    """Per-query metrics, each an array over the Q queries (dicts keyed by k for the @k metrics)."""
    ks: tuple[int, ...]
    ap: np.ndarray
    precision: dict[int, np.ndarray]
    recall: dict[int, np.ndarray]
    r_precision: np.ndarray
    ndcg: dict[int, np.ndarray]
    n_relevant: np.ndarray  # R: the relevant items each query's metrics divide by (found + missed)
    n_found: np.ndarray  # the relevant items found in the ranking

    def __len__(self) -> int:
        return len(self.ap)

    def row(self, i: int) -> dict[str, float]:
        """Query ``i``'s metrics by name: AP, P@k, R@k, R-precision, nDCG@k, relevant, found."""
        out = {"AP": float(self.ap[i])}
        out.update({f"P@{k}": float(self.precision[k][i]) for k in self.ks})
        out.update({f"R@{k}": float(self.recall[k][i]) for k in self.ks})
        out["R-precision"] = float(self.r_precision[i])
        out.update({f"nDCG@{k}": float(self.ndcg[k][i]) for k in self.ks})
        out["relevant"], out["found"] = int(self.n_relevant[i]), int(self.n_found[i])
        return out

    def means(self) -> dict[str, float]:
        """Means over the queries that have relevant items (mAP, P@k, R@k, R-precision, nDCG@k) and the counts."""
        valid = self.n_relevant > 0

        def mean(a):
            return float(a[valid].mean()) if valid.any() else float("nan")

        out = {"mAP": mean(self.ap)}
        out.update({f"P@{k}": mean(self.precision[k]) for k in self.ks})
        out.update({f"R@{k}": mean(self.recall[k]) for k in self.ks})
        out["R-precision"] = mean(self.r_precision)
        out.update({f"nDCG@{k}": mean(self.ndcg[k]) for k in self.ks})
        out["queries"], out["queries_without_relevant"] = len(self), int((~valid).sum())
        return out


def _check_ks(ks) -> tuple[int, ...]:
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ParameterError("ks", tuple(ks), "every k must be an integer >= 1")
        if int(k) not in out:
            out.append(int(k))
    return tuple(out)


def _check_choice(param: str, value, choices) -> None:
    if value not in choices:
        raise ParameterError(param, value, f"choose one of {', '.join(choices)}")


def metrics_from_ranks(ranks, n_relevant, ks=KS, *, form: str = "step", query=None) -> RankingMetrics:
    """Per-query metrics from the 1-based ranks of the relevant items found and the number of relevant items.

    ``ranks`` holds one entry per relevant item found (any order); ``query`` the query each belongs to (0..Q-1;
    None: all to one query); ``n_relevant`` is R, an int or one per query (Q = its length), at least the number
    found. Every formula of the module docstring is computed here, for every caller.
    """
    _check_choice("form", form, AP_FORMS)
    ks = _check_ks(ks)
    r_all = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    nq = len(r_all)
    if nq and r_all.min() < 0:
        raise ParameterError("n_relevant", int(r_all.min()), "counts of relevant items are >= 0")
    r = np.asarray(ranks).reshape(-1)
    q = np.zeros(len(r), np.int64) if query is None else np.asarray(query, dtype=np.int64).reshape(-1)
    if len(q) != len(r):
        raise ParameterError("query", len(q), f"needs one query index per rank ({len(r)})")
    if len(r) and (not np.issubdtype(r.dtype, np.integer) or r.min() < 1):
        raise ParameterError("ranks", r.min(), "ranks are integers >= 1 (1 = best)")
    if len(q) and (q.min() < 0 or q.max() >= nq):
        raise ParameterError("query", int(q.max() if q.max() >= nq else q.min()),
                             f"query indices run from 0 to {nq - 1} (one {{p:n_relevant}} per query)")
    order = np.lexsort((r, q))
    q, r = q[order], r[order].astype(np.float64)
    if np.any((q[1:] == q[:-1]) & (r[1:] == r[:-1])):
        raise ParameterError("ranks", None, "two relevant items of one query share a rank")
    found = np.bincount(q, minlength=nq)
    if np.any(found > r_all):
        i = int(np.argmax(found > r_all))
        raise ParameterError("n_relevant", int(r_all[i]), f"query {i} has {found[i]} relevant items ranked")
    j = np.arange(1, len(r) + 1) - (np.cumsum(found) - found)[q]  # 1-based index of each hit within its query
    if form == "step":
        terms = j / r
    else:  # precision just before and at each hit, averaged; revisitop takes 1 before a hit at rank 1
        terms = (np.where(r == 1, 1.0, (j - 1) / np.maximum(r - 1, 1)) + j / r) / 2.0
    denom = np.where(r_all > 0, r_all, np.nan)

    def per_query(weights):
        return np.bincount(q, weights=weights, minlength=nq)

    kmax = max(ks, default=1)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, kmax + 2)))])  # ideal[m]: m gains of 1
    gain = 1.0 / np.log2(r + 1)
    precision, recall, ndcg = {}, {}, {}
    for k in ks:
        hits = per_query(r <= k)
        precision[k], recall[k] = hits / k, hits / denom
        ndcg[k] = per_query(np.where(r <= k, gain, 0.0)) / np.where(r_all > 0, ideal[np.minimum(k, r_all)], np.nan)
    return RankingMetrics(ks=ks, ap=per_query(terms) / denom, precision=precision, recall=recall,
                          r_precision=per_query(r <= r_all[q]) / denom, ndcg=ndcg, n_relevant=r_all, n_found=found)


def _ids(values) -> np.ndarray:
    return np.asarray(values if isinstance(values, np.ndarray) else list(values)).reshape(-1)


def _distinct(param: str, values) -> np.ndarray:
    arr = _ids(values)
    if len(np.unique(arr)) != len(arr):
        raise ParameterError(param, None, "lists an item twice; a ranking orders distinct items")
    return arr


def relevant_ranks(ranking, relevant, junk=()) -> np.ndarray:
    """1-based ranks, ascending, of the relevant ids found in ``ranking`` once the junk ids are taken out of it."""
    ranking = _distinct("ranking", ranking)
    rel = np.unique(_ids(relevant))
    jk = np.setdiff1d(_ids(junk), rel)  # an id both relevant and junk counts as relevant
    kept = ranking[~np.isin(ranking, jk)] if len(jk) else ranking
    return np.flatnonzero(np.isin(kept, rel)) + 1


def _n_relevant(relevant, ranks: np.ndarray, missing: str) -> int:
    _check_choice("missing", missing, MISSING)
    return len(np.unique(_ids(relevant))) if missing == "miss" else len(ranks)


def query_metrics(ranking, relevant, junk=(), *, ks=KS, form: str = "step", missing: str = "miss") -> dict:
    """AP, P@k, R@k, R-precision, nDCG@k (and the relevant / found counts) of one ranking against relevant ids."""
    ranks = relevant_ranks(ranking, relevant, junk)
    return metrics_from_ranks(ranks, _n_relevant(relevant, ranks, missing), ks, form=form).row(0)


def average_precision(ranking, relevant, junk=(), *, form: str = "step", missing: str = "miss") -> float:
    """Average precision of one ranking (``form`` step or trapezoid, junk taken out); NaN without relevant ids."""
    ranks = relevant_ranks(ranking, relevant, junk)
    return float(metrics_from_ranks(ranks, _n_relevant(relevant, ranks, missing), (), form=form).ap[0])


# ---- agreement between two rankings ----------------------------------------------------------------------------
def overlap_at_k(a, b, k: int) -> float:
    """|A_k ∩ B_k| / k: the fraction of their first k items two rankings share; both need at least k items."""
    a, b = _distinct("a", a), _distinct("b", b)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError("k", k, "must be an integer >= 1")
    for name, x in (("a", a), ("b", b)):
        if len(x) < k:
            raise ParameterError("k", k, f"{{p:{name}}} has only {len(x)} items")
    return len(np.intersect1d(a[:k], b[:k])) / k


def rank_biased_overlap(a, b, p: float = 0.9) -> float:
    """RBO_ext of two finite rankings (Webber, Moffat & Zobel 2010, eq. 32; eq. 30 when equally long), in [0, 1].

    With L the longer list (length l), S the shorter (length s) and X_d the number of items the first d of L share
    with the first min(d, s) of S, RBO_ext = (1 - p)/p * [sum_{d=1..l} X_d/d p^d + sum_{d=s+1..l} X_s (d - s)/(s d)
    p^d] + [(X_l - X_s)/l + X_s/s] p^l: the agreement seen so far, extrapolated as constant past depth l (and the
    agreement X_s/s of S assumed for its unseen items). Identical lists, or S a prefix of L, give 1; 0 < p < 1 is
    the persistence (the weight of the first d ranks is 1 - p^d).
    """
    if not 0 < p < 1:
        raise ParameterError("p", p, "the persistence must lie strictly between 0 and 1")
    a, b = _distinct("a", a), _distinct("b", b)
    if not len(a) or not len(b):
        raise ParameterError("a" if not len(a) else "b", None, "RBO needs two non-empty rankings")
    long, short = (a, b) if len(a) >= len(b) else (b, a)
    l, s = len(long), len(short)
    _, in_long, in_short = np.intersect1d(long, short, assume_unique=True, return_indices=True)
    # an item shared by both lists joins the overlap at the depth where the later of its two positions is seen
    joins = np.bincount(np.maximum(in_long, in_short), minlength=l)
    d = np.arange(1, l + 1, dtype=np.float64)
    x = np.cumsum(joins).astype(np.float64)  # X_d, d = 1..l
    weights = p ** d
    x_s, x_l = x[s - 1], x[l - 1]
    seen = np.sum(x / d * weights)
    extrapolated = np.sum((x_s * (d - s) / (s * d) * weights)[s:])
    return float((1 - p) / p * (seen + extrapolated) + ((x_l - x_s) / l + x_s / s) * p ** l)


# ---- memory-bounded evaluation over embeddings -----------------------------------------------------------------
def _as_matrix(param: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ParameterError(param, x.shape, "needs a (rows, dim) matrix of vectors")
    if not all(np.isfinite(x[i:i + 8192]).all() for i in range(0, len(x), 8192)):  # no (rows, dim) temporary
        raise ParameterError(param, None, "holds NaN or infinite values")
    return x


def _hit_ranks(scores: np.ndarray, ascending: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """1-based rank of each (row, col) item in its row ordered by score descending, ties by column ascending
    (``ascending``: each row of ``scores`` sorted; ``rows`` in ascending order)."""
    ranks = np.empty(len(rows), np.int64)
    n = scores.shape[1]
    bounds = np.searchsorted(rows, np.arange(len(scores) + 1))
    for i in range(len(scores)):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        target = scores[i, cols[lo:hi]]
        not_below = np.searchsorted(ascending[i], target, side="right")  # items scoring <= each target
        ranks[lo:hi] = n - not_below + 1  # 1 + the items scoring strictly higher
        tied = np.flatnonzero(not_below - np.searchsorted(ascending[i], target, side="left") > 1)
        if len(tied) > TIE_SCAN:  # many ties (e.g. quantised scores): the full order of the row, ties by index
            position = np.empty(n, np.int64)
            position[np.argsort(-scores[i], kind="stable")] = np.arange(1, n + 1)
            ranks[lo:hi] = position[cols[lo:hi]]
        else:  # float32 ties are common in large galleries: count the tied items before each, by index
            for t in tied:
                col = cols[lo + t]
                ranks[lo + t] += np.count_nonzero(scores[i, :col] == target[t])
    return ranks


def evaluate_rankings(queries, gallery, query_labels, gallery_labels, ks=KS, *, form: str = "step",
                      normalize: bool = True, chunk: int | None = None, exclude=None, n_relevant=None,
                      device=None) -> RankingMetrics:
    """Per-query AP, P@k, R@k, R-precision and nDCG@k of each query's ranking of the gallery (same label = relevant).

    Scores are cosine similarities (``normalize=False``: dot products) in float32, computed ``chunk`` queries at a
    time, so at most ``chunk x N`` scores exist at once (default: ``SCORE_BUDGET // N`` queries). Memory beyond the
    inputs: three chunk x N buffers allocated once (scores, their sorted copy, the relevance mask: 9 bytes a
    score); the gallery is not copied (cosine = (q / |q|) . g / |g|, the division by |g| applied to the scores).

    Ties: items are ordered by score descending, then by gallery index ascending (as :func:`chunked_topk`), so an
    item's rank is 1 + the items scoring strictly higher + the tied items with a lower index. Float32 ties are not
    rare: with 100,000 items most queries have a relevant item tied with another (``benchmarks/ranking_scale.py``).
    Between chunk sizes the scores can differ in the last bit (the BLAS kernel depends on the chunk's shape), which
    may swap items whose scores agree to ~1e-7; with exact scores (e.g. small integer vectors and
    ``normalize=False``) every chunk size gives the same numbers.

    ``exclude``: gallery indices taken out of a query's ranking and relevant set, (Q,) or (Q, m), -1 = none (the
    query itself in image->image retrieval, or per-query junk). ``n_relevant``: R per query (Q,), at least the
    relevant items in the gallery, to count relevant items missing from the gallery as misses.
    """
    _check_choice("form", form, AP_FORMS)
    ks = _check_ks(ks)
    q_vec, g_vec = _as_matrix("queries", queries), _as_matrix("gallery", gallery)
    nq, n = len(q_vec), len(g_vec)
    if q_vec.shape[1] != g_vec.shape[1]:
        raise ParameterError("queries", q_vec.shape, f"vectors of dimension {g_vec.shape[1]} (as the gallery)")
    q_lab, g_lab = np.asarray(query_labels).reshape(-1), np.asarray(gallery_labels).reshape(-1)
    for name, lab, size in (("query_labels", q_lab, nq), ("gallery_labels", g_lab, n)):
        if len(lab) != size:
            raise ParameterError(name, len(lab), f"needs one label per vector ({size})")
    if chunk is None:
        chunk = max(1, SCORE_BUDGET // max(n, 1))
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ParameterError("chunk", chunk, "must be an integer >= 1 (queries scored at once)")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64).reshape(nq, -1)
        if exclude.size and (exclude.min() < -1 or exclude.max() >= n):
            raise ParameterError("exclude", None, f"gallery indices run from 0 to {n - 1} (-1 = none)")
    if n_relevant is not None:
        n_relevant = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
        if len(n_relevant) != nq:
            raise ParameterError("n_relevant", len(n_relevant), f"needs one count per query ({nq})")
    _, codes = np.unique(np.concatenate([q_lab, g_lab]), return_inverse=True)
    q_code, g_code = codes[:nq], codes[nq:]
    cpu = on_cpu(device)  # numpy on the CPU (no torch needed), torch on a GPU
    # cosine = (q / |q|) . g / |g|: the gallery is scaled column by column in the scores, not copied normalised
    q_vec = l2_normalize(q_vec) if normalize else q_vec
    g_scale = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", g_vec, g_vec)), 1e-12) if normalize else None
    if not cpu:
        import torch

        dev = task_device(device)
        g_t = torch.as_tensor(g_vec, device=dev)
    # three buffers of chunk x N, allocated once: the scores, their sorted copy, the relevance mask
    rows_max = min(chunk, nq)
    score_buf, sorted_buf = np.empty((rows_max, n), np.float32), np.empty((rows_max, n), np.float32)
    relevant_buf = np.empty((rows_max, n), bool)
    parts = []
    with progress_bar(bar_total(nq, nq * n), "ranking the gallery", unit="queries") as bar:
        for start in range(0, nq, chunk):
            stop = min(start + chunk, nq)
            scores, ascending, relevant = score_buf[:stop - start], sorted_buf[:stop - start], relevant_buf[:stop - start]
            if cpu:
                np.matmul(q_vec[start:stop], g_vec.T, out=scores)
            else:
                scores[...] = (torch.as_tensor(q_vec[start:stop], device=dev) @ g_t.T).cpu().numpy()
            if g_scale is not None:
                scores *= g_scale[None, :]
            if not (np.isfinite(scores.min()) and np.isfinite(scores.max())):
                raise ParameterError("queries", None, "scores overflow float32; pass smaller vectors or normalize=True")
            np.equal(g_code[None, :], q_code[start:stop, None], out=relevant)
            if exclude is not None:
                rows, slot = np.nonzero(exclude[start:stop] >= 0)
                cols = exclude[start:stop][rows, slot]
                scores[rows, cols] = -np.inf  # below every finite score: never ahead of a relevant item
                relevant[rows, cols] = False
            np.copyto(ascending, scores)
            ascending.sort(axis=1)
            rows, cols = np.nonzero(relevant)
            r_chunk = relevant.sum(axis=1)
            if n_relevant is not None:
                given = n_relevant[start:stop]
                if np.any(given < r_chunk):
                    i = int(np.argmax(given < r_chunk))
                    raise ParameterError("n_relevant", int(given[i]),
                                         f"query {start + i} has {r_chunk[i]} relevant items in the gallery")
                r_chunk = given
            ranks = _hit_ranks(scores, ascending, rows, cols)
            parts.append(metrics_from_ranks(ranks, r_chunk, ks, form=form, query=rows))
            bar.advance(stop - start)
    return _concatenate(parts, ks)


def _concatenate(parts: list[RankingMetrics], ks: tuple[int, ...]) -> RankingMetrics:
    if not parts:
        empty = np.empty(0)
        return RankingMetrics(ks, empty, {k: empty for k in ks}, {k: empty for k in ks}, empty,
                              {k: empty for k in ks}, np.empty(0, np.int64), np.empty(0, np.int64))

    def cat(get):
        return np.concatenate([get(m) for m in parts])

    return RankingMetrics(ks=ks, ap=cat(lambda m: m.ap),
                          precision={k: cat(lambda m: m.precision[k]) for k in ks},
                          recall={k: cat(lambda m: m.recall[k]) for k in ks},
                          r_precision=cat(lambda m: m.r_precision), ndcg={k: cat(lambda m: m.ndcg[k]) for k in ks},
                          n_relevant=cat(lambda m: m.n_relevant), n_found=cat(lambda m: m.n_found))
