"""The vector index every search uses: ``exact`` (chunked brute force; bounded memory) or a FAISS index (``flat``:
exact; ``ivf`` and ``hnsw``: approximate, for large collections), built for one metric: ``cosine`` (unit vectors,
inner product: ``IndexFlatIP`` on normalised rows), ``dot`` (inner product of the raw vectors: ``IndexFlatIP`` on raw
rows) or ``euclidean`` (L2 distance of the raw vectors: ``IndexFlatL2``; searches return distances, ascending).

An index carries what it was built from (``meta``: model and gallery fingerprints, rows, dimension, metric) and is
reused
only while that matches (:meth:`VectorIndex.load_or_build`), so a long-lived process (a web server) can build one
per model and gallery and keep it in memory; on disk it is the index file plus a JSON sidecar (``<file>.json``:
kind, ids, meta), each written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cliplab.errors import CliplabError, ParameterError
from cliplab.io import atomic_path, write_json_atomic
from cliplab.progress import bar_total, progress_bar
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.ranking import METRICS, check_metric, chunked_topk

KINDS = ("exact", "flat", "ivf", "hnsw")
FAISS_KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    try:
        import faiss  # faiss: slow to import, only FAISS indexes need it
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise CliplabError("FAISS is not installed: pip install faiss-cpu") from None
    return faiss


@dataclass
class VectorIndex:
    """Vectors searchable by ``metric`` (``meta["metric"]``: cosine, dot or euclidean): ``index`` is the FAISS
    index, or the (n, d) array for ``exact`` (unit rows for cosine, raw rows otherwise); ``ids`` name the rows
    (positions returned by :meth:`search` index them)."""
    index: object
    kind: str
    ids: list[str]
    meta: dict = field(default_factory=dict)

    @classmethod
    def build(cls, emb: np.ndarray, ids: list[str], kind: str = "exact", *, nlist: int | None = None,
              nprobe: int = 16, hnsw_m: int = 32, meta: dict | None = None,
              metric: str = "cosine") -> "VectorIndex":
        """An index of ``emb`` for ``metric`` (cosine: stored unit-length; dot and euclidean: stored as given)."""
        if kind not in KINDS:
            raise ParameterError("index_type", kind, f"choose one of {', '.join(KINDS)}")
        check_metric(metric)
        x = np.asarray(emb, dtype=np.float32)
        x = np.ascontiguousarray(l2_normalize(x) if metric == "cosine" else x, dtype=np.float32)
        meta = {"rows": int(len(x)), "dim": int(x.shape[1]) if x.ndim == 2 else 0, **(meta or {}), "metric": metric}
        if kind == "exact":
            return cls(x, kind, list(ids), meta)
        with progress_bar(bar_total(len(x), len(x) * x.shape[1] * (100 if kind == "hnsw" else 4)),
                          f"building the {kind} index", unit="vectors") as bar:
            return cls(_faiss_index(x, kind, nlist, nprobe, hnsw_m, bar, metric), kind, list(ids), meta)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def metric(self) -> str:
        return self.meta.get("metric", "cosine")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (Q, min(k, n)), best first: cosine similarities, dot products, or (euclidean)
        L2 distances, ascending; exact: ties towards the lower position."""
        metric = self.metric
        q = np.asarray(queries, dtype=np.float32)
        q = np.ascontiguousarray(l2_normalize(q) if metric == "cosine" else q, dtype=np.float32)
        if self.kind == "exact":
            if metric == "cosine":
                return chunked_topk(q, self.index, k, normalize=False)
            return chunked_topk(q, self.index, k, metric=metric)
        scores, pos = self.index.search(q, min(k, len(self.ids)))
        if metric == "euclidean":  # FAISS's L2 indexes return squared distances
            scores = np.sqrt(np.maximum(scores, 0)).astype(np.float32)
        return scores, pos

    def save(self, path: str | Path) -> None:
        """The index and its JSON sidecar (``<path>.json``), each written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            if self.kind == "exact":
                with open(tmp, "wb") as fh:
                    np.save(fh, self.index)
            else:
                _faiss().write_index(self.index, str(tmp))
        write_json_atomic(sidecar(path), {"kind": self.kind, "ids": self.ids, **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "VectorIndex":
        path = Path(path)
        side = sidecar(path)
        if not path.is_file() or not side.is_file():
            raise CliplabError(f"index {path} (and its {side.name}) not found")
        meta = json.loads(side.read_text())
        meta.setdefault("metric", "cosine")  # written before indexes had a metric: they were all cosine
        kind = meta.pop("kind")
        index = np.load(path, allow_pickle=False) if kind == "exact" else _faiss().read_index(str(path))
        return cls(index, kind, meta.pop("ids"), meta)

    @classmethod
    def load_or_build(cls, path: str | Path | None, emb: np.ndarray, ids: list[str], kind: str = "exact", *,
                      meta: dict | None = None, metric: str = "cosine") -> tuple["VectorIndex", bool]:
        """(index, whether it was read back): the index saved at ``path`` when it was built from the same model,
        gallery, kind and metric, else a new one (saved at ``path`` when given)."""
        want = {"rows": int(len(emb)), **(meta or {}), "metric": metric}
        if path is not None and Path(path).is_file() and sidecar(Path(path)).is_file():
            try:
                old = cls.load(path)
            except (OSError, ValueError, KeyError, json.JSONDecodeError, RuntimeError):
                old = None  # unreadable: rebuilt below
            if old is not None and old.kind == kind and old.matches(want) and old.ids == list(ids):
                return old, True
        idx = cls.build(emb, ids, kind, meta=meta, metric=metric)
        if path is not None:
            idx.save(path)
        return idx, False

    def matches(self, meta: dict) -> bool:
        return all(self.meta.get(k) == v for k, v in meta.items())


def _faiss_index(x: np.ndarray, kind: str, nlist: int | None, nprobe: int, hnsw_m: int, bar, metric: str = "cosine",
                 chunk: int = 8192):
    """A FAISS index of the rows ``x`` for ``metric`` (inner product for cosine, on unit rows, and dot; L2 for
    euclidean), trained where the kind needs it, added ``chunk`` rows at a time."""
    faiss = _faiss()
    d = x.shape[1]
    l2 = metric == "euclidean"
    if kind == "flat":
        index = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist or max(1, min(4096, int(4 * np.sqrt(len(x)))))
        if len(x) < nlist:
            raise ParameterError("index_type", kind, f"IVF index with {nlist} lists needs at least {nlist} vectors "
                                 f"(have {len(x)}); use {{p:index_type}} flat", prefix=False)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d), d, nlist,
                                   faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = min(nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * hnsw_m)
    for s in range(0, len(x), chunk):
        index.add(x[s:s + chunk])
        bar.advance(len(x[s:s + chunk]))
    return index


def sidecar(path: Path) -> Path:
    """The JSON file beside an index file."""
    return path.with_name(path.name + ".json")


__all__ = ["VectorIndex", "KINDS", "FAISS_KINDS", "METRICS", "sidecar"]
