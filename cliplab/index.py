"""The vector index every search uses: ``exact`` (chunked brute force over unit vectors, cosine; bounded memory) or a
FAISS index (``flat``: exact inner product = cosine; ``ivf`` and ``hnsw``: approximate, for large collections).

An index carries what it was built from (``meta``: model and gallery fingerprints, rows, dimension) and is reused
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
from cliplab.tasks.ranking import chunked_topk

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
    """Unit vectors searchable by cosine: ``index`` is the FAISS index, or the (n, d) array for ``exact``; ``ids``
    name the rows (positions returned by :meth:`search` index them)."""
    index: object
    kind: str
    ids: list[str]
    meta: dict = field(default_factory=dict)

    @classmethod
    def build(cls, emb: np.ndarray, ids: list[str], kind: str = "exact", *, nlist: int | None = None,
              nprobe: int = 16, hnsw_m: int = 32, meta: dict | None = None) -> "VectorIndex":
        """An index of ``emb`` (raw or unit rows; stored unit-length)."""
        if kind not in KINDS:
            raise ParameterError("index_type", kind, f"choose one of {', '.join(KINDS)}")
        x = np.ascontiguousarray(l2_normalize(np.asarray(emb, dtype=np.float32)), dtype=np.float32)
        meta = {"rows": int(len(x)), "dim": int(x.shape[1]) if x.ndim == 2 else 0, **(meta or {})}
        if kind == "exact":
            return cls(x, kind, list(ids), meta)
        with progress_bar(bar_total(len(x), len(x) * x.shape[1] * (100 if kind == "hnsw" else 4)),
                          f"building the {kind} index", unit="vectors") as bar:
            return cls(_faiss_index(x, kind, nlist, nprobe, hnsw_m, bar), kind, list(ids), meta)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (Q, min(k, n)), best first; exact: ties towards the lower position."""
        q = np.ascontiguousarray(l2_normalize(np.asarray(queries, dtype=np.float32)), dtype=np.float32)
        if self.kind == "exact":
            return chunked_topk(q, self.index, k, normalize=False)
        return self.index.search(q, min(k, len(self.ids)))

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
        kind = meta.pop("kind")
        index = np.load(path, allow_pickle=False) if kind == "exact" else _faiss().read_index(str(path))
        return cls(index, kind, meta.pop("ids"), meta)

    @classmethod
    def load_or_build(cls, path: str | Path | None, emb: np.ndarray, ids: list[str], kind: str = "exact", *,
                      meta: dict | None = None) -> tuple["VectorIndex", bool]:
        """(index, whether it was read back): the index saved at ``path`` when it was built from the same model,
        gallery and kind, else a new one (saved at ``path`` when given)."""
        want = {"rows": int(len(emb)), **(meta or {})}
        if path is not None and Path(path).is_file() and sidecar(Path(path)).is_file():
            try:
                old = cls.load(path)
            except (OSError, ValueError, KeyError, json.JSONDecodeError, RuntimeError):
                old = None  # unreadable: rebuilt below
            if old is not None and old.kind == kind and old.matches(want) and old.ids == list(ids):
                return old, True
        idx = cls.build(emb, ids, kind, meta=meta)
        if path is not None:
            idx.save(path)
        return idx, False

    def matches(self, meta: dict) -> bool:
        return all(self.meta.get(k) == v for k, v in meta.items())


def _faiss_index(x: np.ndarray, kind: str, nlist: int | None, nprobe: int, hnsw_m: int, bar, chunk: int = 8192):
    """A FAISS index of the unit rows ``x`` (trained where the kind needs it), added ``chunk`` rows at a time."""
    faiss = _faiss()
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist or max(1, min(4096, int(4 * np.sqrt(len(x)))))
        if len(x) < nlist:
            raise ParameterError("index_type", kind, f"IVF index with {nlist} lists needs at least {nlist} vectors "
                                 f"(have {len(x)}); use {{p:index_type}} flat", prefix=False)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = min(nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * hnsw_m)
    for s in range(0, len(x), chunk):
        index.add(x[s:s + chunk])
        bar.advance(len(x[s:s + chunk]))
    return index


def sidecar(path: Path) -> Path:
    """The JSON file beside an index file."""
    return path.with_name(path.name + ".json")


__all__ = ["VectorIndex", "KINDS", "FAISS_KINDS", "sidecar"]
