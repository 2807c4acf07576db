"""Image->image retrieval on descriptors: PCA-whitening, R-MAC aggregation, query expansion, mAP.

PCA-whitening uses scikit-learn's ``PCA(whiten=True)`` (learned on a separate set when one is given) followed
by L2 normalisation. Average precision follows the Oxford5k/Paris6k and revisited Oxford/Paris (revisitop)
protocol, computed by the shared ranking metrics (:mod:`cliplab.tasks.ranking`, ``form="trapezoid"``): junk
images are removed from the ranking, AP is the area under the precision-recall curve by the trapezoidal rule with
recall steps of 1 / (number of ground-truth positives), so a positive that is never ranked (e.g. missing from the
gallery) counts as a miss; mP@k and the exclusion of queries without positives
follow revisitop's ``compute_map``. Labelled folders use same-class = relevant with the query itself removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplab.io import atomic_path
from cliplab.tasks.metrics import l2_normalize
from cliplab.progress import bar_total, progress_bar
from cliplab.tasks.ranking import average_precision as ranking_ap
from cliplab.tasks.ranking import chunked_topk, metrics_from_ranks, relevant_ranks


@dataclass
class Whitening:
    mean: np.ndarray  # (d,)
    projection: np.ndarray  # (d, k): components / sqrt(variance) when whitened

    @classmethod
    def fit(cls, X: np.ndarray, dim: int | None = None, whiten: bool = True) -> "Whitening":
        from sklearn.decomposition import PCA

        X = np.asarray(X, np.float64)
        k = min(dim or X.shape[1], X.shape[1], X.shape[0] - 1 if whiten else X.shape[0])
        with progress_bar(bar_total(1, X.shape[0] * X.shape[1] ** 2 / 100), "PCA-whitening" if whiten else "PCA",
                          unit="fits") as bar:
            pca = PCA(n_components=k, whiten=whiten, svd_solver="full").fit(X)
            bar.advance()
        proj = pca.components_.T.copy()
        if whiten:
            proj /= np.sqrt(pca.explained_variance_)[None, :]
        return cls(pca.mean_.astype(np.float32), proj.astype(np.float32))

    def transform(self, X: np.ndarray, normalize: bool = True) -> np.ndarray:
        out = (np.asarray(X, np.float32) - self.mean) @ self.projection
        return l2_normalize(out) if normalize else out

    def save(self, path: str | Path) -> None:
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, mean=self.mean, projection=self.projection)

    @classmethod
    def load(cls, path: str | Path) -> "Whitening":
        with np.load(path) as z:
            return cls(z["mean"], z["projection"])


def rmac_aggregate(regions: np.ndarray, whitening: Whitening | None = None, normalize: bool = True) -> np.ndarray:
    """(N, R, C) region MACs -> (N, k): L2 per region, PCA-whiten per region, L2, sum over regions, L2 (the last
    one left out when not ``normalize``)."""
    n, r, c = regions.shape
    flat = l2_normalize(regions.reshape(n * r, c))
    if whitening is not None:
        flat = whitening.transform(flat)
    out = flat.reshape(n, r, -1).sum(axis=1)
    return l2_normalize(out) if normalize else np.asarray(out, np.float32)


def average_query_expansion(queries: np.ndarray, database: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """Each query replaced by the normalised mean of itself and its top-k database neighbours (``metric`` dot or
    euclidean: the neighbours by that metric, and the plain mean of the raw vectors, not normalised)."""
    if metric != "cosine":
        if k <= 0:
            return np.asarray(queries, np.float32)
        _, idx = chunked_topk(queries, database, k, metric=metric)
        db = np.asarray(database, np.float32)
        return ((np.asarray(queries, np.float32) + db[idx].sum(axis=1)) / (idx.shape[1] + 1)).astype(np.float32)
    if k <= 0:
        return l2_normalize(queries)
    _, idx = chunked_topk(queries, database, k)
    db = l2_normalize(database)
    return l2_normalize(l2_normalize(queries) + db[idx].sum(axis=1))


KAPPAS = (1, 5, 10)
PROTOCOLS = ("easy", "medium", "hard")


def precision_at_kappa(ranks: np.ndarray, kappa: int) -> float:
    """revisitop's P@k: with the 1-based ranks p of the retrieved positives, k' = min(max(p), k) and
    P = #(p <= k') / k' (k is cut at the last retrieved positive); 0 when no positive is retrieved."""
    if not len(ranks):
        return 0.0
    p = np.asarray(ranks)
    kq = min(int(p.max()), int(kappa))
    return float((p <= kq).sum() / kq)


def average_precision(ranking: np.ndarray, positives, junk=()) -> float:
    """Oxford-protocol AP of one ranked list of database indices: the shared trapezoid AP
    (:func:`cliplab.tasks.ranking.average_precision`) with junk removed and every id in ``positives`` counted,
    found in ``ranking`` or not."""
    return ranking_ap(ranking, positives, junk, form="trapezoid", missing="miss")


def gt_map(rankings, ground_truth, kappas=KAPPAS) -> dict:
    """mAP and mP@k over queries, as revisitop's ``compute_map``.

    ``rankings[i]`` is query i's ranked database ids; ``ground_truth[i]`` is ``(positives, junk)``, lists of ids.
    Ids that do not occur in the ranking (positives missing from the gallery) count as misses. Queries without
    positives get NaN and are left out of the means (counted in ``queries_without_positives``).
    """
    aps, prs = [], []
    for ranking, (pos, junk) in zip(rankings, ground_truth):
        n = len(set(int(p) for p in pos))
        if n == 0:
            aps.append(float("nan"))
            prs.append([float("nan")] * len(kappas))
            continue
        ranks = relevant_ranks(ranking, pos, junk)
        aps.append(float(metrics_from_ranks(ranks, n, (), form="trapezoid").ap[0]))
        prs.append([precision_at_kappa(ranks, k) for k in kappas])
    aps_a, prs_a = np.asarray(aps, float), np.asarray(prs, float).reshape(len(aps), len(kappas))
    valid = ~np.isnan(aps_a)
    out = {"mAP": float(aps_a[valid].mean()) if valid.any() else float("nan")}
    for j, k in enumerate(kappas):
        out[f"mP@{k}"] = float(prs_a[valid, j].mean()) if valid.any() else float("nan")
    out["per_query_ap"] = aps
    out["queries_without_positives"] = int((~valid).sum())
    return out


def revisited_ground_truth(easy, hard, junk, protocol: str) -> tuple[list, list]:
    """(positives, junk) of one query under the revisited Oxford/Paris protocols: Easy = easy positives, hard
    ignored; Medium = easy + hard positives; Hard = hard positives, easy ignored (junk is always ignored)."""
    easy, hard, junk = list(easy), list(hard), list(junk)
    if protocol == "easy":
        return easy, junk + hard
    if protocol == "medium":
        return easy + hard, junk
    if protocol == "hard":
        return hard, junk + easy
    raise ValueError(f"protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")


def precision_and_ap_at_k(ranking: np.ndarray, relevant: np.ndarray, k: int, n_relevant: int) -> tuple[float, float]:
    """P@k and AP@k (normalised by min(k, number of relevant items)) for one query; ``relevant`` is boolean
    per ranked position."""
    rel = np.asarray(relevant[:k], dtype=bool)
    p_at_k = float(rel.sum() / k)
    if n_relevant == 0:
        return p_at_k, float("nan")
    hits = np.cumsum(rel)
    precisions = hits / np.arange(1, len(rel) + 1)
    return p_at_k, float((precisions * rel).sum() / min(k, n_relevant))


def labelled_retrieval_metrics(desc: np.ndarray, labels: np.ndarray, k: int = 10, *,
                               query_desc: np.ndarray | None = None, metric: str = "cosine",
                               per_query: bool = False) -> dict:
    """Every image queries all others: mAP (full ranking by ``metric``), mAP@k, P@k with same-class = relevant
    (``per_query``: each query's AP too, as ``per_query_ap``)."""
    n = len(desc)
    q = desc if query_desc is None else query_desc
    # full ranking (n is a labelled folder, not a web-scale index)
    _, idx = chunked_topk(q, desc, n) if metric == "cosine" else chunked_topk(q, desc, n, metric=metric)
    return labelled_metrics_of_ranking(idx, labels, k, per_query=per_query)


def labelled_metrics_of_ranking(idx: np.ndarray, labels: np.ndarray, k: int = 10, *, per_query: bool = False) -> dict:
    """mAP, mAP@k and P@k of full rankings ``idx`` (row i: image i's ranking of every image, itself included and
    then removed) with same-class = relevant."""
    n = len(idx)
    aps, apks, pks = [], [], []
    with progress_bar(bar_total(n, n * n), "scoring rankings", unit="queries") as bar:
        for i in range(n):
            order = idx[i][idx[i] != i]
            rel = labels[order] == labels[i]
            n_rel = int(rel.sum())
            aps.append(average_precision(np.arange(len(order)), np.flatnonzero(rel)) if n_rel else np.nan)
            pk, apk = precision_and_ap_at_k(order, rel, k, n_rel)
            pks.append(pk)
            apks.append(apk)
            bar.advance()
    out = {"mAP": float(np.nanmean(aps)), f"mAP@{k}": float(np.nanmean(apks)), f"P@{k}": float(np.mean(pks)),
           "queries": n}
    if per_query:
        out["per_query_ap"] = [float(a) for a in aps]
    return out


# ---- clustering to help retrieval ----
def nearest_centre(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The cluster of each row of ``X``: its nearest centre by squared Euclidean distance (ties: the lower
    cluster index), as k-means assigns."""
    X, C = np.asarray(X, np.float64), np.asarray(centers, np.float64)
    d = (X * X).sum(1)[:, None] - 2 * X @ C.T + (C * C).sum(1)[None, :]
    return np.argmin(d, axis=1)


def cluster_rerank(rankings: np.ndarray, gallery_clusters: np.ndarray, query_clusters: np.ndarray) -> np.ndarray:
    """Each query's ranking with the gallery items of the query's cluster first: a stable partition, so the items of
    that cluster keep their order, then every other item in its order (nothing is dropped)."""
    rankings = np.asarray(rankings)
    gallery_clusters = np.asarray(gallery_clusters)
    out = np.empty_like(rankings)
    for i, r in enumerate(rankings):
        inside = gallery_clusters[r] == query_clusters[i]
        out[i] = np.concatenate([r[inside], r[~inside]])
    return out
