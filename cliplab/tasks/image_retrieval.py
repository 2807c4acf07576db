"""Image->image retrieval on descriptors: PCA-whitening, R-MAC aggregation, query expansion, mAP.

PCA-whitening uses scikit-learn's ``PCA(whiten=True)`` (learned on a separate set when one is given) followed
by L2 normalisation. Average precision follows the Oxford5k/Paris6k protocol: junk images are removed from the
ranking, then AP is the area under the precision-recall curve by the trapezoidal rule (as the benchmark's
``compute_ap``); labelled folders use same-class = relevant with the query itself removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplab.tasks.metrics import l2_normalize


@dataclass
class Whitening:
    mean: np.ndarray  # (d,)
    projection: np.ndarray  # (d, k): components / sqrt(variance) when whitened

    @classmethod
    def fit(cls, X: np.ndarray, dim: int | None = None, whiten: bool = True) -> "Whitening":
        from sklearn.decomposition import PCA

        X = np.asarray(X, np.float64)
        k = min(dim or X.shape[1], X.shape[1], X.shape[0] - 1 if whiten else X.shape[0])
        pca = PCA(n_components=k, whiten=whiten, svd_solver="full").fit(X)
        proj = pca.components_.T.copy()
        if whiten:
            proj /= np.sqrt(pca.explained_variance_)[None, :]
        return cls(pca.mean_.astype(np.float32), proj.astype(np.float32))

    def transform(self, X: np.ndarray, normalize: bool = True) -> np.ndarray:
        out = (np.asarray(X, np.float32) - self.mean) @ self.projection
        return l2_normalize(out) if normalize else out

    def save(self, path: str | Path) -> None:
        from cliplab.io import atomic_path

        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, mean=self.mean, projection=self.projection)

    @classmethod
    def load(cls, path: str | Path) -> "Whitening":
        with np.load(path) as z:
            return cls(z["mean"], z["projection"])


def rmac_aggregate(regions: np.ndarray, whitening: Whitening | None = None) -> np.ndarray:
    """(N, R, C) region MACs -> (N, k): L2 per region, PCA-whiten per region, L2, sum over regions, L2."""
    n, r, c = regions.shape
    flat = l2_normalize(regions.reshape(n * r, c))
    if whitening is not None:
        flat = whitening.transform(flat)
    return l2_normalize(flat.reshape(n, r, -1).sum(axis=1))


def average_query_expansion(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Each query replaced by the normalised mean of itself and its top-k database neighbours."""
    from cliplab.tasks.retrieval import chunked_topk

    if k <= 0:
        return l2_normalize(queries)
    _, idx = chunked_topk(queries, database, k)
    db = l2_normalize(database)
    return l2_normalize(l2_normalize(queries) + db[idx].sum(axis=1))


def average_precision(ranking: np.ndarray, positives, junk=()) -> float:
    """Oxford-protocol AP of one ranked list of database indices (junk removed, trapezoidal rule)."""
    pos, jk = set(int(p) for p in positives), set(int(j) for j in junk)
    if not pos:
        return float("nan")
    kept = [int(i) for i in ranking if int(i) not in jk]
    ranks = [r for r, i in enumerate(kept) if i in pos]
    ap = 0.0
    for j, r in enumerate(ranks):
        prec_before = 1.0 if r == 0 else j / r
        prec_after = (j + 1) / (r + 1)
        ap += (prec_before + prec_after) / 2.0
    return ap / len(pos)


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
                               query_desc: np.ndarray | None = None) -> dict:
    """Every image queries all others: mAP (full ranking), mAP@k, P@k with same-class = relevant."""
    from cliplab.tasks.retrieval import chunked_topk

    n = len(desc)
    q = desc if query_desc is None else query_desc
    _, idx = chunked_topk(q, desc, n)  # full ranking (n is a labelled folder, not a web-scale index)
    aps, apks, pks = [], [], []
    for i in range(n):
        order = idx[i][idx[i] != i]
        rel = labels[order] == labels[i]
        n_rel = int(rel.sum())
        aps.append(average_precision(np.arange(len(order)), np.flatnonzero(rel)) if n_rel else np.nan)
        pk, apk = precision_and_ap_at_k(order, rel, k, n_rel)
        pks.append(pk)
        apks.append(apk)
    return {"mAP": float(np.nanmean(aps)), f"mAP@{k}": float(np.nanmean(apks)), f"P@{k}": float(np.mean(pks)),
            "queries": n}
