"""k-means clustering of embeddings and its agreement with labels (NMI, ARI from scikit-learn; purity)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplab.errors import CliplabError, ParameterError
from cliplab.progress import bar_total, progress_bar
from cliplab.tasks.metrics import l2_normalize


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Fraction of items whose cluster's majority label is their label."""
    from sklearn.metrics.cluster import contingency_matrix

    cm = contingency_matrix(labels, clusters)
    return float(cm.max(axis=0).sum() / cm.sum())


@dataclass
class Clustering:
    k: int
    assignments: np.ndarray
    centers: np.ndarray
    inertia: float
    metrics: dict


KMEANS = ("sklearn", "faiss")  # the k-means implementations
# k-means minimises the squared Euclidean distance of each point to its cluster's mean: on L2-normalised embeddings
# that is cosine geometry (|x - c|^2 = 2 - 2 cos for unit x and c), on raw embeddings Euclidean. There is no dot-product
# k-means: a dot product is not a distance (a point is not most similar to itself; a longer centre scores higher with
# everything), and the mean, k-means' centre update, does not maximise the summed dot product, which grows without
# bound with the centre's length.
CLUSTER_METRICS = ("cosine", "euclidean")
WHY_NO_DOT = ("k-means needs a distance and the dot product is not one (no centre maximises a summed dot product, "
              "it grows with the centre's length)")


def check_implementation(implementation: str) -> None:
    """Raises for a k-means implementation that is not one of ``KMEANS`` (callers check before embedding)."""
    if implementation not in KMEANS:
        raise ParameterError("kmeans", implementation, f"choose {' or '.join(KMEANS)}")


def kmeans(X: np.ndarray, k: int, *, implementation: str = "sklearn", seed: int = 0, n_init: int = 4,
           labels: np.ndarray | None = None) -> Clustering:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    if k < 2 or k > len(X):
        raise CliplabError(f"k = {k}: need 2 <= k <= number of images ({len(X)})")
    check_implementation(implementation)
    X = np.ascontiguousarray(X, dtype=np.float32)
    if implementation == "sklearn":
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(X)
        assign, centers, inertia = km.labels_, km.cluster_centers_, float(km.inertia_)
    else:
        import faiss  # faiss: slow to import, only the faiss backend needs it

        km = faiss.Kmeans(X.shape[1], k, niter=50, nredo=n_init, seed=seed, verbose=False)
        km.train(X)
        dist, assign = km.index.search(X, 1)
        assign, centers, inertia = assign[:, 0], km.centroids, float(dist.sum())
    metrics = {"inertia": inertia}
    if len(np.unique(assign)) > 1 and len(X) <= 20000:
        metrics["silhouette"] = float(silhouette_score(X, assign, random_state=seed))
    if labels is not None:
        metrics.update(nmi=float(normalized_mutual_info_score(labels, assign)),
                       ari=float(adjusted_rand_score(labels, assign)), purity=purity(labels, assign))
    return Clustering(k, np.asarray(assign), np.asarray(centers), inertia, metrics)


def prepare(X: np.ndarray, pca_dim: int | None = None, seed: int = 0, metric: str = "cosine") -> np.ndarray:
    """L2-normalise (``metric`` cosine: cosine geometry; euclidean: the raw embeddings, as float32), optionally PCA
    to ``pca_dim`` dimensions."""
    from sklearn.decomposition import PCA

    if metric not in CLUSTER_METRICS:
        raise ParameterError("metric", metric, f"choose one of {', '.join(CLUSTER_METRICS)}"
                             + (f": {WHY_NO_DOT}" if metric == "dot" else ""))
    X = l2_normalize(X) if metric == "cosine" else np.asarray(X, dtype=np.float32)
    if pca_dim:
        with progress_bar(bar_total(1, X.shape[0] * X.shape[1] ** 2 / 100), "PCA", unit="fits") as bar:
            X = PCA(n_components=min(pca_dim, X.shape[1], len(X)), random_state=seed).fit_transform(X)
            bar.advance()
        X = X.astype(np.float32)
    return X
